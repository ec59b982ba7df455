// Live prices where no WebSocket gets through, in headless Chromium against a real local
// mesh: a bare EventSource on `/v1/sse`, and the dashboard's client falling back on
// Server-Sent Events, then on polling `/v1/snapshot`, and saying so.
//
//   bash tests/browser/setup.sh && node --test tests/browser/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { PRICE, meshAndChromium, metric, nextPrice, openPage } from './page.mjs';

/** @type {import('./page.mjs').Mesh} */
let mesh;
/** @type {import('./page.mjs').Chromium} */
let browser;

meshAndChromium((m, b) => {
  [mesh, browser] = [m, b];
});

test('an EventSource on /v1/sse gets the welcome, the subscription, a snapshot, then live ticks in seq order', { timeout: 60000 }, async () => {
  const page = await browser.context.newPage();
  try {
    await page.goto(`${mesh.httpUrl}/healthz`);
    const seen = await page.evaluate(
      () =>
        new Promise((resolve, reject) => {
          const es = new EventSource('/v1/sse?symbols=AAPL,MSFT&interval_ms=100&mode=quote');
          /** @type {{types: string[], ticks: any[], misnamed: string[]}} */
          const seen = { types: [], ticks: [], misnamed: [] };
          for (const type of ['welcome', 'subscribed', 'snapshot', 'ticks', 'hb', 'error', 'close']) {
            es.addEventListener(type, (ev) => {
              const msg = JSON.parse(/** @type {MessageEvent} */ (ev).data);
              seen.types.push(type);
              if (type !== 'close' && msg.type !== type) seen.misnamed.push(`${type}: ${msg.type}`);
              if (type === 'snapshot') seen.ticks.push({ ...msg, snapshot: true });
              if (type === 'ticks') seen.ticks.push(...msg.ticks);
            });
          }
          es.onerror = () => {
            es.close();
            reject(new Error(`the event stream failed after ${seen.types.length} events`));
          };
          setTimeout(() => {
            es.close();
            resolve(seen);
          }, 3000);
        }),
    );
    assert.deepEqual(seen.misnamed, [], 'every event is named by its message type');
    assert.deepEqual(seen.types.slice(0, 2), ['welcome', 'subscribed']);
    assert.ok(!seen.types.includes('error') && !seen.types.includes('close'), seen.types.join(','));
    for (const symbol of ['AAPL', 'MSFT']) {
      const ticks = seen.ticks.filter((t) => t.symbol === symbol);
      assert.ok(ticks.length >= 10, `${symbol}: ${ticks.length} ticks in 3 s`);
      assert.equal(ticks[0].snapshot, true, `${symbol}: the snapshot first`);
      for (let i = 1; i < ticks.length; i++) {
        assert.ok(ticks[i].seq > ticks[i - 1].seq, `${symbol}: seq ${ticks[i].seq} after ${ticks[i - 1].seq}`);
        assert.ok(!ticks[i].snapshot);
      }
      assert.ok(ticks.every((t) => PRICE.test(String(t.last.toFixed(2)))), `${symbol} has prices`);
      assert.ok(new Set(ticks.map((t) => t.last)).size > 1, `${symbol}: the price moves`);
    }
  } finally {
    await page.close();
  }
});

/**
 * Opens the dashboard (a connection of its own, so that the page's routes govern it) with
 * WebSocket upgrades failing as behind a proxy that strips them; `blockSse` fails
 * `/v1/sse` too.
 * @param {boolean} blockSse
 */
async function dashboardWithoutWebSocket(blockSse) {
  return openPage(browser.context, `${mesh.httpUrl}/?symbols=AAPL,MSFT&shared=0`, async (page) => {
    await page.routeWebSocket(/\/v1\/stream/, (ws) => ws.close({ code: 1002, reason: 'upgrade stripped' }));
    if (blockSse) await page.route(/\/v1\/sse/, (route) => route.abort('failed'));
  });
}

/** @param {import('playwright-core').Page} page @param {string} transport */
async function carriedBy(page, transport) {
  await page.waitForFunction((t) => document.getElementById('status-transport')?.textContent?.trim() === t, transport, { timeout: 20000, polling: 100 });
  const log = await page.evaluate(() => [...document.querySelectorAll('#log li')].map((li) => li.textContent ?? ''));
  assert.ok(log.some((l) => l.includes(`over ${transport === 'poll' ? 'polling' : transport}`)), `the page says so: ${log.join(' | ')}`);
}

test('the dashboard whose WebSocket cannot connect shows live prices over SSE and says so', { timeout: 60000 }, async () => {
  const before = metric(await mesh.metrics(), 'tickmesh_edge_sse_sessions_total') ?? 0;
  const { page, pageErrors, cspViolations } = await dashboardWithoutWebSocket(false);
  try {
    await carriedBy(page, 'sse');
    for (const symbol of ['AAPL', 'MSFT']) {
      const first = await nextPrice(page, symbol, '');
      assert.match(first, PRICE);
      assert.notEqual(await nextPrice(page, symbol, first), first, `${symbol} moves`);
    }
    assert.ok((metric(await mesh.metrics(), 'tickmesh_edge_sse_sessions_total') ?? 0) > before, 'the edge served SSE');
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspViolations, []);
  } finally {
    await page.close();
  }
});

test('the dashboard that gets neither a WebSocket nor SSE through polls snapshots and says so', { timeout: 60000 }, async () => {
  const { page, pageErrors, cspViolations } = await dashboardWithoutWebSocket(true);
  try {
    await carriedBy(page, 'poll');
    const first = await nextPrice(page, 'AAPL', '');
    assert.match(first, PRICE);
    assert.notEqual(await nextPrice(page, 'AAPL', first), first, 'AAPL moves with each poll');
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspViolations, []);
  } finally {
    await page.close();
  }
});
