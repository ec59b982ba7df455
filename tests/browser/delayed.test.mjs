// A delayed symbol on the dashboard in headless Chromium, against a real local mesh: the
// visitor sees which row is delayed and by how much, beside a real-time row, and its
// prices still move.
//
//   bash tests/browser/setup.sh && node --test tests/browser/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import { ARTIFACTS } from './mesh.mjs';
import { PRICE, meshAndChromium, nextPrice, openPage, waitForStatus } from './page.mjs';

/** The edge's delay, ms: short, so that the test sees delayed prices within seconds. */
const DELAY_MS = 3000;

/** @type {import('./page.mjs').Mesh} */
let mesh;
/** @type {import('./page.mjs').Chromium} */
let browser;

// Anonymous visitors see AAPL in real time and every other symbol delayed (the demo's
// model: `dly: ["*"]` beside a real-time watchlist).
meshAndChromium(
  (m, b) => {
    [mesh, browser] = [m, b];
  },
  {
    edgeEnv: {
      TICKMESH_EDGE_AUTH__ANONYMOUS_ENT: '["AAPL"]',
      TICKMESH_EDGE_AUTH__ANONYMOUS_DLY: '["*"]',
      TICKMESH_EDGE_DELAYED__DELAY_MS: String(DELAY_MS),
      TICKMESH_EDGE_DELAYED__POLL_MS: '100',
    },
  },
);

test('a delayed row says so and by how much, and its prices still move', { timeout: 40000 }, async () => {
  const { page, pageErrors } = await openPage(browser.context, `${mesh.httpUrl}/?symbols=AAPL,MSFT`);
  try {
    await waitForStatus(page, (s) => s.state === 'open', 'open');
    // Samples older than the delay exist only once the mesh has run that long.
    const first = await nextPrice(page, 'MSFT', '', 20000);
    assert.match(first, PRICE);
    const rows = await page.$$eval('#watchlist-body tr[data-symbol]', (trs) =>
      trs.map((tr) => ({
        symbol: tr.getAttribute('data-symbol'),
        delayed: tr.classList.contains('delayed'),
        label: tr.querySelector('.sym')?.textContent?.trim(),
        title: tr.querySelector('.sym')?.getAttribute('title') ?? '',
        style: getComputedStyle(/** @type {Element} */ (tr.querySelector('.last'))).fontStyle,
      })),
    );
    const seconds = Math.round(DELAY_MS / 1000);
    assert.deepEqual(
      rows.map((r) => [r.symbol, r.delayed, r.label]),
      [
        ['AAPL', false, 'AAPL'],
        ['MSFT', true, `MSFT ·${seconds}s`],
      ],
    );
    const msft = rows[1];
    assert.equal(msft.title, `delayed ${seconds} s`);
    assert.equal(msft.style, 'italic', 'a delayed row is set apart');
    assert.equal(rows[0].style, 'normal');
    // Still live: the next delayed price comes.
    const second = await nextPrice(page, 'MSFT', first, 10000);
    assert.match(second, PRICE);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-delayed.png') });
    assert.deepEqual(pageErrors, []);
  } finally {
    await page.close();
  }
});
