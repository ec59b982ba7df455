// Tabs of the dashboard in one headless Chromium against a real local mesh: they share
// one WebSocket (the client's SharedWorker), each shows live prices, and what a closed tab
// alone held is given up at the edge.
//
//   bash tests/browser/setup.sh && node --test tests/browser/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import { ARTIFACTS, waitFor } from './mesh.mjs';
import { PRICE, firstTapeFrame, meshAndChromium, metric, nextPrice, openPage, waitForStatus } from './page.mjs';

/** @type {import('./page.mjs').Mesh} */
let mesh;
/** @type {import('./page.mjs').Chromium} */
let browser;

meshAndChromium((m, b) => {
  [mesh, browser] = [m, b];
});

/** The edge's gauges that tell connections and subscriptions apart. */
async function gauges() {
  const text = await mesh.metrics();
  return {
    connections: metric(text, 'tickmesh_edge_connections') ?? 0,
    sessions: metric(text, 'tickmesh_edge_sessions{encoding="json"}') ?? 0,
    subscriptions: metric(text, 'tickmesh_edge_subscriptions') ?? 0,
    tapes: metric(text, 'tickmesh_edge_tapes') ?? 0,
    barFeeds: metric(text, 'tickmesh_edge_bar_feeds') ?? 0,
  };
}

/**
 * Waits until the edge's gauges satisfy `pred`; returns them.
 * @param {string} what @param {(g: Awaited<ReturnType<typeof gauges>>) => boolean} pred
 */
async function edgeShows(what, pred, timeoutMs = 10000) {
  let last = null;
  try {
    return await waitFor(what, async () => ((last = await gauges()), pred(last) && last), timeoutMs, mesh.procs());
  } catch (err) {
    throw new Error(`${/** @type {Error} */ (err).message}\nlast: ${JSON.stringify(last)}`);
  }
}

/**
 * Makes the page go without a word: its client's `bye` to the worker is never posted, so
 * only the Web Lock it holds tells the worker when it is gone (as after a crash). Test-only:
 * an init script, which the page's Content-Security-Policy does not govern.
 * @param {import('playwright-core').Page} page
 */
async function withoutBye(page) {
  await page.addInitScript(() => {
    const post = MessagePort.prototype.postMessage;
    MessagePort.prototype.postMessage = function (/** @type {any} */ msg, /** @type {any} */ ...rest) {
      if (msg?.t !== 'bye') post.call(this, msg, ...rest);
    };
  });
}

/** @param {import('playwright-core').Page} page @param {string[]} symbols */
async function pricesMove(page, symbols) {
  for (const symbol of symbols) {
    const first = await nextPrice(page, symbol, '');
    assert.match(first, PRICE, `${symbol} last "${first}" is a price`);
    assert.notEqual(await nextPrice(page, symbol, first), first);
  }
}

test('three tabs hold one connection to the edge, each shows live prices, and a closed tab gives up what only it held', { timeout: 120000 }, async () => {
  /** @param {string} query @param {(page: import('playwright-core').Page) => Promise<void>} [prepare] */
  const open = (query, prepare) => openPage(browser.context, `${mesh.httpUrl}/${query}`, prepare);
  const tabs = [];
  try {
    tabs.push(await open('?symbols=AAPL,MSFT&depth=AAPL&chain=AAPL'));
    await waitForStatus(tabs[0].page, (s) => s.state === 'open' && s.edge === mesh.edgeName, `tab 1 open on ${mesh.edgeName}`);
    await pricesMove(tabs[0].page, ['AAPL']);
    assert.ok((await firstTapeFrame(tabs[0].page, 'AAPL')) >= 10, 'tab 1 shows the AAPL tape\'s history');

    tabs.push(await open('?symbols=AAPL,MSFT&depth=AAPL&chain=AAPL'));
    tabs.push(await open('?symbols=AAPL,AMD&depth=AMD&chain=AAPL', withoutBye));
    for (const [i, { page }] of tabs.entries()) {
      const s = await waitForStatus(page, (st) => st.state === 'open' && st.edge === mesh.edgeName, `tab ${i + 1} open`);
      assert.equal(s.reconnects, 0);
    }
    // The edge sent the AAPL tape's history once, to the first tab: the second shows it at
    // once all the same, from what the shared connection kept.
    const shown = await firstTapeFrame(tabs[1].page, 'AAPL');
    assert.ok(shown >= 10, `the first frame of tab 2's AAPL tape showed ${shown} prints`);
    await pricesMove(tabs[1].page, ['AAPL', 'MSFT']);
    await pricesMove(tabs[2].page, ['AAPL', 'AMD']);

    const three = await edgeShows('one connection for three tabs', (g) => g.connections === 1 && g.tapes === 2 && g.barFeeds === 2);
    assert.equal(three.sessions, 1, 'one session');
    for (const [i, { page }] of tabs.entries()) await page.screenshot({ path: path.join(ARTIFACTS, `tabs-${i + 1}.png`) });

    // Tab 3 alone held AMD (its watchlist row, ladder, tape and chart): closed, all of it
    // goes, though the tab said nothing: its Web Lock was released.
    await tabs[2].page.close();
    const two = await edgeShows('AMD given up', (g) => g.tapes === 1 && g.barFeeds === 1 && g.subscriptions === three.subscriptions - 1);
    assert.equal(two.connections, 1);
    await pricesMove(tabs[0].page, ['AAPL', 'MSFT']);
    await pricesMove(tabs[1].page, ['AAPL']);

    // Tab 2 held nothing tab 1 does not: the edge keeps every subscription.
    await tabs[1].page.close();
    await pricesMove(tabs[0].page, ['MSFT']);
    assert.deepEqual(await gauges(), two, 'nothing changes at the edge');

    // A tab that asks for a connection of its own gets one.
    const own = await open('?symbols=NVDA&shared=0');
    tabs.push(own);
    await pricesMove(own.page, ['NVDA']);
    await edgeShows('a second connection', (g) => g.connections === 2 && g.sessions === 2);
    await own.page.close();

    await tabs[0].page.close();
    await edgeShows('no connection once every tab closed', (g) => g.connections === 0 && g.subscriptions === 0 && g.tapes === 0);
    for (const [i, t] of tabs.entries()) {
      assert.deepEqual(t.pageErrors, [], `no uncaught errors in tab ${i + 1}`);
      assert.deepEqual(t.cspViolations, [], `tab ${i + 1} works within its Content-Security-Policy`);
    }
  } finally {
    for (const { page } of tabs) if (!page.isClosed()) await page.close();
  }
});
