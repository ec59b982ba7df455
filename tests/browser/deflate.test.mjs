// permessage-deflate with a real browser: Chromium always offers it, so the edge answers
// with it, compresses what it sends and inflates what Chromium sends.
//
//   bash tests/browser/setup.sh && node --test tests/browser/deflate.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { meshAndChromium, metric } from './page.mjs';

/** @type {import('./page.mjs').Mesh} */
let mesh;
/** @type {import('./page.mjs').Chromium} */
let browser;

meshAndChromium((m, b) => {
  [mesh, browser] = [m, b];
});

const SYMBOLS = ['AAPL', 'MSFT', 'SPY', 'NVDA', 'TSLA'];

test('Chromium negotiates permessage-deflate and gets its subscription through it', { timeout: 30000 }, async () => {
  const page = await browser.context.newPage();
  try {
    // Any page of the edge's origin; the WebSocket is opened by hand from it.
    await page.goto(`${mesh.httpUrl}/healthz`);
    const before = metric(await mesh.metrics(), 'tickmesh_edge_deflate_inflated_total') ?? 0;
    const { extensions, msgs } = await page.evaluate(
      async ({ url, symbols }) => {
        const ws = new WebSocket(url, 'tickmesh.v1.json');
        /** @type {any[]} */
        const msgs = [];
        ws.onmessage = (e) => msgs.push(JSON.parse(e.data));
        await new Promise((resolve, reject) => {
          ws.onopen = resolve;
          ws.onerror = () => reject(new Error('the WebSocket failed'));
          setTimeout(() => reject(new Error('not open within 5 s')), 5000);
        });
        // Chromium compresses what it sends once deflate is negotiated.
        ws.send(JSON.stringify({ op: 'subscribe', id: 1, symbols, interval_ms: 250 }));
        await new Promise((r) => setTimeout(r, 2500));
        const extensions = ws.extensions;
        ws.close(1000);
        return { extensions, msgs };
      },
      { url: mesh.wsUrl, symbols: SYMBOLS },
    );
    assert.equal(extensions, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
    assert.equal(msgs[0]?.type, 'welcome');
    const subscribed = msgs.find((m) => m.type === 'subscribed');
    assert.deepEqual(subscribed?.symbols, SYMBOLS, JSON.stringify(msgs.slice(0, 3)));
    const snapshots = msgs.filter((m) => m.type === 'snapshot').map((m) => m.symbol);
    assert.deepEqual(snapshots.sort(), [...SYMBOLS].sort(), 'one snapshot of each symbol');
    const ticks = msgs.filter((m) => m.type === 'ticks').flatMap((m) => m.ticks);
    assert.ok(ticks.length >= SYMBOLS.length, `${ticks.length} live ticks in 2.5 s`);
    for (const t of ticks) {
      assert.ok(SYMBOLS.includes(t.symbol), t.symbol);
      assert.ok(t.bid > 0 && t.bid <= t.ask, JSON.stringify(t));
    }
    // The subscribe came compressed and was inflated by the edge.
    const after = metric(await mesh.metrics(), 'tickmesh_edge_deflate_inflated_total') ?? 0;
    assert.ok(after > before, `inflated messages ${before} → ${after}`);
  } finally {
    await page.close();
  }
});
