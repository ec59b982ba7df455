// The dashboard's blotter in headless Chromium against a real local mesh: the account the
// page's token names, from its snapshot, then the events a real writer appends (the
// process `tickmesh-test-account-writer`), live, with the positions marked to the streamed
// prices; across an edge killed and started again, each fill shown once and none missing.
//
//   cargo build -p tickmesh-edge -p tickmesh-ingest -p tickmesh-tests --bins
//   bash tests/browser/setup.sh && node --test tests/browser/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';

import { ARTIFACTS } from './mesh.mjs';
import { meshAndChromium, openPage, waitForStatus } from './page.mjs';

const SECRET = 'a-browser-blotter-suite-hs256-secret-of-32-bytes';
const ACCOUNT = 'DEMO1';

/** @type {import('./page.mjs').Mesh} */
let mesh;
/** @type {import('./page.mjs').Chromium} */
let browser;

meshAndChromium(
  (m, b) => {
    [mesh, browser] = [m, b];
  },
  { edgeEnv: { TICKMESH_EDGE_AUTH__HS256_SECRET: SECRET } },
);

/** An HS256 token the mesh's edge trusts: every symbol, and the accounts `acct`. @param {string[] | undefined} acct */
function token(acct) {
  const now = Math.floor(Date.now() / 1000);
  const part = (/** @type {object} */ v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: 'trader', iat: now - 1, exp: now + 600, ent: ['*'], tier: 'realtime', ...(acct ? { acct } : {}) })}`;
  return `${body}.${crypto.createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

// What the writer appends, as `tickmesh_tests::accounts::sample` makes it: event `seq` is
// an order (seq % 4 == 0, id `O{seq / 4 % 5}`, always working), a fill (1), a position
// (2, qty = seq, avg 100) or a balance (3, cash 1,000,000 − seq), of AAPL, MSFT or SPY by
// seq % 3.
const SYMBOLS = ['AAPL', 'MSFT', 'SPY'];
const range = (/** @type {number} */ from, /** @type {number} */ to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
/** The account after event `last`: what the blotter shows. @param {number} last */
function expected(last) {
  const seqs = range(1, last);
  /** @type {Record<string, number>} */
  const positions = {};
  for (const s of seqs.filter((s) => s % 4 === 2)) positions[SYMBOLS[s % 3]] = s;
  const orders = [...new Set(seqs.filter((s) => s % 4 === 0).map((s) => `O${Math.floor(s / 4) % 5}`))].sort();
  const cash = 1_000_000 - Math.max(...seqs.filter((s) => s % 4 === 3));
  return { positions, orders, cash: `${cash.toLocaleString('en-US', { minimumFractionDigits: 2 })} USD` };
}

/**
 * The blotter as it is on screen.
 * @param {import('playwright-core').Page} page
 */
const blotterOf = (page) =>
  page.evaluate(() => {
    const text = (/** @type {Element | null | undefined} */ el) => el?.textContent?.trim() ?? '';
    const cells = (/** @type {string} */ sel) => [...document.querySelectorAll(sel)].map((tr) => [.../** @type {HTMLTableRowElement} */ (tr).cells].map(text));
    return {
      shown: !document.getElementById('blotter-pane')?.hidden,
      account: text(document.getElementById('blotter-account')),
      seq: Number(text(document.getElementById('blotter-seq'))),
      cash: text(document.getElementById('blotter-cash')),
      upnl: text(document.getElementById('blotter-upnl')),
      positions: cells('#positions-body tr').map(([symbol, qty, avg, last, upnl, rpnl]) => ({ symbol, qty, avg, last, upnl, rpnl })),
      live: [...document.querySelectorAll('#positions-body td.mark')].map((td) => /** @type {HTMLElement} */ (td).dataset.live === 'true'),
      orders: cells('#orders-body tr').map(([id]) => id),
      fills: [...document.querySelectorAll('#fills-body tr')].map((tr) => Number(/** @type {HTMLElement} */ (tr).dataset.seq)),
      log: [...document.querySelectorAll('#log li')].map((li) => li.textContent ?? ''),
    };
  });

/**
 * Waits until the blotter satisfies `pred`; returns it.
 * @param {import('playwright-core').Page} page @param {(b: Awaited<ReturnType<typeof blotterOf>>) => boolean} pred
 * @param {string} what @param {number} [timeoutMs]
 */
async function blotterShows(page, pred, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let b = await blotterOf(page);
  while (!pred(b)) {
    if (Date.now() > deadline) assert.fail(`the blotter never showed ${what}; last: ${JSON.stringify({ ...b, log: b.log.slice(0, 8) })}`);
    await new Promise((r) => setTimeout(r, 100));
    b = await blotterOf(page);
  }
  return b;
}

/** A signed amount as shown: `+1,234.50`, `−12.00`. @param {string} s */
const amount = (s) => Number(s.replace('−', '-').replace(/,/g, ''));

/**
 * Each position as a reader checks it: the quantity and average price the account holds,
 * and an unrealised P&L of qty × (last − avg) at the price shown beside it.
 * @param {Awaited<ReturnType<typeof blotterOf>>} b @param {Record<string, number>} positions symbol -> qty
 */
function checkPositions(b, positions) {
  assert.deepEqual(Object.fromEntries(b.positions.map((p) => [p.symbol, Number(p.qty)])), positions);
  assert.deepEqual(b.positions.map((p) => p.symbol), Object.keys(positions).sort(), 'by symbol');
  for (const p of b.positions) {
    assert.equal(Number(p.avg), 100, `${p.symbol} avg`);
    const want = Number(p.qty) * (Number(p.last) - 100);
    assert.ok(Math.abs(amount(p.upnl) - want) < 0.006, `${p.symbol}: ${p.upnl} is ${p.qty} × (${p.last} − 100)`);
  }
}

test('the blotter shows the account the token names: its snapshot, then live fills and orders with P&L marked to the prices, each fill once across an edge restart', { timeout: 120000 }, async () => {
  // What the account holds before the page opens: its snapshot.
  const before = mesh.accountWriter({ account: ACCOUNT, count: 12, everyMs: 0 });
  assert.deepEqual(await before.exited, { code: 0, signal: null }, before.tail());

  // The first account of the token's `acct` claim.
  const { page, pageErrors, cspViolations } = await openPage(browser.context, `${mesh.httpUrl}/?symbols=AAPL,MSFT&token=${token([ACCOUNT, 'DEMO2'])}`);
  try {
    await waitForStatus(page, (s) => s.state === 'open', 'open');
    let b = await blotterShows(page, (x) => x.seq === 12 && x.positions.length === 3, 'the snapshot as of seq 12');
    assert.equal(b.account, ACCOUNT);
    const snap = expected(12);
    assert.deepEqual(b.orders, snap.orders, 'the open orders');
    assert.equal(b.cash, snap.cash);
    assert.deepEqual(b.fills, [], 'a snapshot holds no fills');
    // SPY is in no other pane: the blotter subscribed its ticks to mark it.
    b = await blotterShows(page, (x) => x.live.length === 3 && x.live.every(Boolean), 'every position marked to a streamed price');
    checkPositions(b, snap.positions);

    // The P&L moves with the prices.
    const aapl = b.positions.find((p) => p.symbol === 'AAPL');
    b = await blotterShows(page, (x) => x.positions.find((p) => p.symbol === 'AAPL')?.upnl !== aapl?.upnl, 'AAPL unrealised P&L move');
    checkPositions(b, snap.positions);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-blotter.png') });

    // Live: 40 events, one every 150 ms; the edge is killed while they come, and another
    // takes its place on the same port.
    const live = mesh.accountWriter({ account: ACCOUNT, count: 40, everyMs: 150 });
    b = await blotterShows(page, (x) => x.seq >= 20, 'live events up to seq 20');
    assert.deepEqual(b.fills, range(13, b.seq).filter((s) => s % 4 === 1).reverse(), 'live fills, newest on top');
    await mesh.stopEdge('SIGKILL');
    const killedAt = (await blotterOf(page)).seq;
    await mesh.startEdge();
    await waitForStatus(page, (s) => s.state === 'open' && s.edge === mesh.edgeName && s.reconnects === 1, `open on ${mesh.edgeName}`, 20000);
    assert.deepEqual(await live.exited, { code: 0, signal: null }, live.tail());

    b = await blotterShows(page, (x) => x.seq === 52, 'every event up to seq 52', 20000);
    assert.ok(killedAt < 52, `the edge was killed at seq ${killedAt}, while events came`);
    assert.deepEqual(b.fills, range(13, 52).filter((s) => s % 4 === 1).reverse(), 'each fill once, none missing, newest on top');
    const after = expected(52);
    assert.deepEqual(b.orders, after.orders);
    assert.equal(b.cash, after.cash);
    b = await blotterShows(page, (x) => x.live.every(Boolean), 'every position marked to a streamed price');
    checkPositions(b, after.positions);
    assert.deepEqual(b.log.filter((l) => /never came|DEMO1/.test(l)), [], 'no account error or skipped seq');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-blotter-resumed.png') });
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(cspViolations, []);
  } finally {
    await page.close();
  }
});

test('no blotter when the token names no account, or there is no token', { timeout: 30000 }, async () => {
  for (const query of [`?symbols=AAPL&token=${token(undefined)}`, '?symbols=AAPL']) {
    const { page, pageErrors } = await openPage(browser.context, `${mesh.httpUrl}/${query}`);
    try {
      await waitForStatus(page, (s) => s.state === 'open', 'open');
      const b = await blotterOf(page);
      assert.equal(b.shown, false, query);
      assert.equal(await page.isVisible('#blotter-pane'), false);
      assert.deepEqual(pageErrors, []);
    } finally {
      await page.close();
    }
  }
});
