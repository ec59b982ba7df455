// The dashboard page in headless Chromium against a real local mesh (nats-server, ingest,
// edge as processes): what a person looking at the page would see.
//
//   bash tests/browser/setup.sh && node --test tests/browser/
//
// Screenshots go to tests/artifacts/ (git-ignored).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import { ARTIFACTS, sleep, waitFor } from './mesh.mjs';
import { PRICE, cellText, firstTapeFrame, meshAndChromium, metric, nextPrice, openPage, waitForStatus } from './page.mjs';

/** @type {import('./page.mjs').Mesh} */
let mesh;
/** @type {import('./page.mjs').Chromium} */
let browser;
/** When the mesh (and its ingest) started, ms. */
let meshStartedAt = 0;

meshAndChromium((m, b) => {
  [mesh, browser, meshStartedAt] = [m, b, Date.now()];
});

/**
 * A page of the dashboard; collects uncaught page errors.
 * @param {string} query
 * @param {(page: import('playwright-core').Page) => Promise<void>} [prepare] run before the page loads
 */
const openDashboard = (query, prepare) => openPage(browser.context, `${mesh.httpUrl}/${query}`, prepare);

test('the page connects to the edge and shows prices that change', { timeout: 30000 }, async () => {
  const { page, pageErrors, cspViolations, headers } = await openDashboard('?symbols=AAPL,MSFT,SPY');
  try {
    assert.match(headers['content-security-policy'] ?? '', /frame-ancestors 'none'/);
    assert.equal(headers['referrer-policy'], 'no-referrer');
    const status = await waitForStatus(page, (s) => s.state === 'open' && s.edge === mesh.edgeName, `open on ${mesh.edgeName}`);
    assert.equal(status.enc, 'json');
    const rows = await page.$$eval('#watchlist-body tr[data-symbol]', (trs) => trs.map((tr) => tr.getAttribute('data-symbol')));
    assert.deepEqual(rows, ['AAPL', 'MSFT', 'SPY'], 'the watchlist is the ?symbols= list, in order');

    const first = await nextPrice(page, 'AAPL', '');
    assert.match(first, PRICE, `AAPL last "${first}" is a price`);
    const second = await nextPrice(page, 'AAPL', first);
    assert.match(second, PRICE);
    assert.notEqual(second, first);

    for (const symbol of rows) {
      await nextPrice(page, symbol, '');
      // One read of the whole row: the page may redraw it between two reads.
      const row = await page.$eval(`tr[data-symbol="${symbol}"]`, (tr) =>
        Object.fromEntries(['bid', 'ask', 'chg'].map((c) => [c, tr.querySelector(`.${c}`)?.textContent?.trim() ?? ''])),
      );
      const [bid, ask] = [Number(row.bid), Number(row.ask)];
      assert.ok(bid > 0 && ask > 0 && bid <= ask, `${symbol} bid ${bid} / ask ${ask}`);
      assert.match(row.chg, /^[+-]?\d+\.\d{2}$/, `${symbol} change`);
    }
    const flowing = await waitForStatus(page, (s) => s.ups > 0 && /^\d+ ms$/.test(s.lag), 'updates per second and lag');
    assert.equal(flowing.reconnects, 0);

    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png') });
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
    // Everything the page needs (its scripts, styles, favicon and stream) is allowed ...
    assert.deepEqual(cspViolations, [], 'the page works within its Content-Security-Policy');
    // ... and the policy is in force: an injected inline script does not run.
    await page.addScriptTag({ content: 'window.__injected = true;' }).catch(() => {});
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).__injected === true), false, 'an inline script ran');
    assert.ok(cspViolations.length > 0, 'the refused inline script was reported');
  } finally {
    await page.close();
  }
});

/** Rows the tape keeps (the page's TAPE_ROWS). */
const TAPE_ROWS = 200;
const UP = 'rgb(31, 191, 117)';
const DOWN = 'rgb(240, 67, 90)';
const FLAT = 'rgb(255, 255, 255)';

/**
 * The time-and-sales panel as it is on screen, top row first, and the page's local time
 * of day in seconds.
 * @param {import('playwright-core').Page} page
 */
const tapeOf = (page) =>
  page.evaluate(() => {
    const rows = [...document.querySelectorAll('#tape-rows tr')].map((tr) => {
      const [time, price, size, cond] = [.../** @type {HTMLTableRowElement} */ (tr).cells].map((td) => td.textContent?.trim() ?? '');
      const priceCell = /** @type {HTMLTableRowElement} */ (tr).cells[1];
      return { seq: Number(/** @type {HTMLElement} */ (tr).dataset.seq), time, price, size, cond, color: getComputedStyle(priceCell).color };
    });
    const d = new Date();
    return {
      label: document.getElementById('tape-symbol')?.textContent?.trim() ?? '',
      rows,
      now: d.getHours() * 3600 + d.getMinutes() * 60 + d.getSeconds() + d.getMilliseconds() / 1000,
    };
  });

/**
 * Waits until a print newer than `seq` is on top of the tape.
 * @param {import('playwright-core').Page} page @param {number} seq
 */
async function newerOnTop(page, seq, timeoutMs = 10000) {
  await page.waitForFunction(
    (s) => Number(/** @type {HTMLElement | null} */ (document.querySelector('#tape-rows tr'))?.dataset.seq) > s,
    seq,
    { polling: 100, timeout: timeoutMs },
  );
}

/** @param {string} hms `HH:MM:SS.mmm` @returns {number} seconds of the day */
function secondsOfDay(hms) {
  const [h, m, s] = hms.split(':').map(Number);
  return h * 3600 + m * 60 + s;
}

/**
 * What a reader of the tape relies on: newest print on top, each print once, times that
 * are now, and every price coloured by its move from the print below it.
 * @param {Awaited<ReturnType<typeof tapeOf>>} tape @param {string} symbol
 */
function checkTape(tape, symbol) {
  const { rows } = tape;
  assert.equal(tape.label, symbol, 'the panel names the selected symbol');
  assert.ok(rows.length > 0 && rows.length <= TAPE_ROWS, `${rows.length} rows, at most ${TAPE_ROWS}`);
  for (const [i, r] of rows.entries()) {
    assert.match(r.time, /^\d\d:\d\d:\d\d\.\d{3}$/, `row ${i} time`);
    assert.match(r.price, PRICE, `row ${i} price`);
    assert.match(r.size, /^[1-9]\d*$/, `row ${i} size`);
    if (i === 0) continue;
    assert.ok(rows[i - 1].seq > r.seq, `row ${i - 1} (seq ${rows[i - 1].seq}) is newer than row ${i} (seq ${r.seq}): newest on top, each print once`);
    const [newer, older] = [Number(rows[i - 1].price), Number(r.price)];
    const want = newer > older ? UP : newer < older ? DOWN : FLAT;
    assert.equal(rows[i - 1].color, want, `row ${i - 1}: ${newer} after ${older}`);
  }
  const age = (tape.now - secondsOfDay(rows[0].time) + 86400) % 86400;
  assert.ok(age < 60, `the newest print is ${age.toFixed(1)} s old (${rows[0].time})`);
}

/**
 * Waits until the edge follows `n` tapes (the page's: no other page is open).
 * @param {number} n
 */
async function edgeFollows(n) {
  await waitFor(`the edge to follow ${n} tape(s)`, async () => metric(await mesh.metrics(), 'tickmesh_edge_tapes') === n, 5000, mesh.procs());
}

/**
 * Whether every price on the tape is within 3 % of `last` (the watchlist's, of the same
 * moment): the tape is that symbol's.
 * @param {Awaited<ReturnType<typeof tapeOf>>} tape @param {string} last
 */
function pricedNear(tape, last) {
  return tape.rows.every((r) => Math.abs(Number(r.price) / Number(last) - 1) < 0.03);
}

test('the time and sales panel shows the selected symbol\'s prints, newest on top, and follows the selection', { timeout: 60000 }, async () => {
  const { page, pageErrors, cspViolations } = await openDashboard('?symbols=AAPL,MSFT&depth=AAPL');
  try {
    await waitForStatus(page, (s) => s.state === 'open', 'open');
    // The history: a panel of prints at once, not one print after another.
    const shown = await firstTapeFrame(page, 'AAPL');
    assert.ok(shown >= 10, `the first frame of the AAPL tape showed ${shown} prints`);
    let tape = await tapeOf(page);
    checkTape(tape, 'AAPL');
    const aapl = await nextPrice(page, 'AAPL', '');
    const msft = await nextPrice(page, 'MSFT', '');
    assert.ok(pricedNear(tape, aapl), `AAPL's prints near its last ${aapl}: ${tape.rows.map((r) => r.price).slice(0, 5)}`);
    assert.ok(!pricedNear(tape, msft), 'and not near MSFT\'s');
    await edgeFollows(1);

    // Live prints come in on top and push the others down; the tape stays bounded.
    const top = tape.rows[0].seq;
    await newerOnTop(page, top);
    tape = await tapeOf(page);
    checkTape(tape, 'AAPL');
    assert.ok(tape.rows.findIndex((r) => r.seq === top) > 0, 'the print that was on top moved down');
    await page.waitForFunction((n) => document.querySelectorAll('#tape-rows tr').length === n, TAPE_ROWS, { timeout: 15000, polling: 100 });
    await newerOnTop(page, (await tapeOf(page)).rows[0].seq);
    tape = await tapeOf(page);
    assert.equal(tape.rows.length, TAPE_ROWS, 'a full tape drops its oldest rows');
    checkTape(tape, 'AAPL');

    // A new edge: the tape is asked for again and goes on where it was, each print once.
    const beforeDrop = tape.rows[0].seq;
    await mesh.stopEdge('SIGKILL');
    await mesh.startEdge();
    await waitForStatus(page, (s) => s.state === 'open' && s.edge === mesh.edgeName && s.reconnects === 1, `open on ${mesh.edgeName}`);
    await newerOnTop(page, beforeDrop);
    await newerOnTop(page, (await tapeOf(page)).rows[0].seq);
    tape = await tapeOf(page);
    checkTape(tape, 'AAPL');
    assert.ok(tape.rows.some((r) => r.seq === beforeDrop), 'the prints from before the drop are still shown');

    // Another symbol selected: its tape replaces the one on show, history first.
    await page.click('tr[data-symbol="MSFT"] td.sym');
    const msftShown = await firstTapeFrame(page, 'MSFT');
    assert.ok(msftShown >= 10, `the first frame of the MSFT tape showed ${msftShown} prints`);
    tape = await tapeOf(page);
    checkTape(tape, 'MSFT');
    const msftLast = await cellText(page, 'MSFT', 'last');
    assert.ok(pricedNear(tape, msftLast), `MSFT's prints near its last ${msftLast}: ${tape.rows.map((r) => r.price).slice(0, 5)}`);
    await newerOnTop(page, tape.rows[0].seq);
    tape = await tapeOf(page);
    checkTape(tape, 'MSFT');
    assert.ok(pricedNear(tape, await cellText(page, 'MSFT', 'last')), 'no AAPL print comes in after the switch');
    await edgeFollows(1); // the AAPL tape was given up
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-tape.png') });

    // And back: AAPL's history again, though it was shown before.
    await page.click('tr[data-symbol="AAPL"] td.sym');
    const again = await firstTapeFrame(page, 'AAPL');
    assert.ok(again >= 10, `the first frame of the AAPL tape, again, showed ${again} prints`);
    tape = await tapeOf(page);
    checkTape(tape, 'AAPL');
    assert.ok(pricedNear(tape, await cellText(page, 'AAPL', 'last')));

    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
    assert.deepEqual(cspViolations, [], 'the page works within its Content-Security-Policy');
  } finally {
    await page.close();
  }
});

/**
 * Records, in the page, the JSON messages its own WebSockets send and the `bars` messages they
 * receive (`window.__tx`, `window.__rx`), before the page's own code sees them. Test-only:
 * an init script, which the page's Content-Security-Policy does not govern.
 * @param {import('playwright-core').Page} page
 */
async function recordFrames(page) {
  await page.addInitScript(() => {
    const w = /** @type {any} */ (window);
    const tx = (w.__tx = /** @type {any[]} */ ([]));
    const rx = (w.__rx = /** @type {any[]} */ ([]));
    const Native = WebSocket;
    w.WebSocket = class extends Native {
      /** @param {ConstructorParameters<typeof WebSocket>} args */
      constructor(...args) {
        super(...args);
        this.addEventListener('message', (/** @type {MessageEvent} */ ev) => {
          const msg = typeof ev.data === 'string' ? JSON.parse(ev.data) : null;
          if (msg?.type === 'bars') rx.push(msg);
        });
      }
      /** @param {any} data */
      send(data) {
        if (typeof data === 'string') tx.push(JSON.parse(data));
        super.send(data);
      }
    };
  });
}

const RGB = { up: [31, 191, 117], down: [240, 67, 90] };

/**
 * The chart as drawn in one frame, and the bars the page had received by then: read in a
 * requestAnimationFrame callback, which runs after the page's own pass of that frame.
 * `runs` are the candles, left to right: the columns of one colour side by side (a green
 * or red body with its wick), with the top and bottom of all of them and of the first
 * (the body alone). `bars` are those of the chart's symbol and timeframe, one per `t`,
 * oldest first, as the edge sent them.
 * @param {import('playwright-core').Page} page
 */
const chartOf = (page) =>
  page.evaluate(
    (rgb) =>
      new Promise((resolve) =>
        requestAnimationFrame(() => {
          const canvas = /** @type {HTMLCanvasElement} */ (document.getElementById('chart'));
          const symbol = document.getElementById('chart-symbol')?.textContent?.trim() ?? '';
          const tf = /** @type {HTMLElement | null} */ (document.querySelector('#chart-tf button[aria-pressed="true"]'))?.dataset.tf ?? '';
          const { width, height } = canvas;
          const data = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d')).getImageData(0, 0, width, height).data;
          /** @param {number} i @param {number[]} c */
          const is = (i, c) => data[i + 3] === 255 && c.every((v, k) => Math.abs(data[i + k] - v) <= 2);
          /** @type {Array<{color: string, x0: number, x1: number, top: number, bottom: number, bodyTop: number, bodyBottom: number}>} */
          const runs = [];
          for (let x = 0; x < width; x++) {
            let color = '';
            let [top, bottom] = [-1, -1];
            for (let y = 0; y < height; y++) {
              const i = (y * width + x) * 4;
              const c = is(i, rgb.up) ? 'up' : is(i, rgb.down) ? 'down' : '';
              if (!c) continue;
              color = color && color !== c ? 'mixed' : c;
              if (top < 0) top = y;
              bottom = y;
            }
            if (!color) continue;
            const run = runs.at(-1);
            if (run && run.x1 === x - 1 && run.color === color) {
              run.x1 = x;
              run.top = Math.min(run.top, top);
              run.bottom = Math.max(run.bottom, bottom);
            } else {
              runs.push({ color, x0: x, x1: x, top, bottom, bodyTop: top, bodyBottom: bottom });
            }
          }
          // The last close's label on the price axis reaches the right edge: not a candle.
          if (runs.at(-1)?.x1 === width - 1) runs.pop();
          /** @type {Map<number, any>} */
          const byT = new Map();
          for (const m of /** @type {any} */ (window).__rx) {
            if (m.tf !== tf) continue;
            for (const b of m.bars) if (b.symbol === symbol && !byT.get(b.t)?.final) byT.set(b.t, b);
          }
          resolve({
            symbol,
            tf,
            legend: document.getElementById('chart-ohlc')?.textContent ?? '',
            width,
            height,
            cssWidth: canvas.getBoundingClientRect().width,
            cssHeight: canvas.getBoundingClientRect().height,
            dpr: devicePixelRatio,
            runs,
            bars: [...byT.values()].sort((a, b) => a.t - b.t),
          });
        }),
      ),
    RGB,
  );

/**
 * What a reader of the chart relies on: a candle per bar, the newest on the right, green
 * when it closed above its open and red below (a bar that closed at its open is drawn in
 * neither), and the wicks and bodies of all of them on one price scale: high at the top of
 * the wick, low at its bottom, open and close at the ends of the body. Returns the bars
 * drawn in green or red.
 * @param {Awaited<ReturnType<typeof chartOf>>} chart @param {string} symbol @param {string} tf
 */
function checkChart(chart, symbol, tf) {
  assert.equal(chart.symbol, symbol, 'the chart names the selected symbol');
  assert.equal(chart.tf, tf, 'the timeframe pressed');
  assert.equal(chart.width, Math.round(chart.cssWidth * chart.dpr), 'the canvas has a pixel per device pixel, across');
  assert.equal(chart.height, Math.round(chart.cssHeight * chart.dpr), 'and down');
  const { runs } = chart;
  assert.ok(runs.length > 0, 'candles are drawn');
  assert.ok(!runs.some((r) => r.color === 'mixed'), 'no candle is green and red');
  const tfUs = { '1s': 1e6, '1m': 60e6, '5m': 300e6 }[tf] ?? 0;
  for (const b of chart.bars) assert.equal(b.t % tfUs, 0, `bar ${b.t} starts on a multiple of ${tf}`);
  const colored = chart.bars.filter((b) => b.close !== b.open);
  assert.ok(colored.length >= runs.length, `${runs.length} candles drawn, ${colored.length} bars received`);
  const drawn = colored.slice(-runs.length);
  const dir = (/** @type {any} */ b) => (b.close > b.open ? 'up' : 'down');
  assert.deepEqual(runs.map((r) => r.color).join(' '), drawn.map(dir).join(' '), 'a candle per bar, the newest on the right, green up, red down');
  // One scale for every candle: y = a + b·price, fitted by least squares.
  const points = runs.flatMap((r, i) => {
    const b = drawn[i];
    return [[b.high, r.top], [b.low, r.bottom], [Math.max(b.open, b.close), r.bodyTop], [Math.min(b.open, b.close), r.bodyBottom]];
  });
  const n = points.length;
  const [mp, my] = [points.reduce((s, [p]) => s + p, 0) / n, points.reduce((s, [, y]) => s + y, 0) / n];
  const slope = points.reduce((s, [p, y]) => s + (p - mp) * (y - my), 0) / (points.reduce((s, [p]) => s + (p - mp) ** 2, 0) || 1);
  assert.ok(slope < 0, `higher prices are drawn higher (slope ${slope})`);
  const worst = Math.max(...points.map(([p, y]) => Math.abs(my + slope * (p - mp) - y)));
  assert.ok(worst <= 2 + chart.dpr, `every high, low, open and close within ${2 + chart.dpr} px of one price scale (worst ${worst.toFixed(1)} px)`);
  const newest = chart.bars.at(-1);
  assert.equal(Number(/C (\S+)/.exec(chart.legend)?.[1]), newest.close, `the legend "${chart.legend}" shows the close of the newest bar`);
  return drawn;
}

/**
 * Waits until the chart, read frame by frame, passes `checkChart` for `symbol` and `tf`
 * and `pred`; returns that frame.
 * @param {import('playwright-core').Page} page @param {string} symbol @param {string} tf
 * @param {(c: Awaited<ReturnType<typeof chartOf>>) => boolean} [pred] @param {number} [timeoutMs]
 */
async function chartShows(page, symbol, tf, pred = () => true, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const chart = await chartOf(page);
    try {
      if (chart.symbol === symbol && chart.tf === tf && chart.runs.length > 0 && pred(chart)) {
        checkChart(chart, symbol, tf);
        return chart;
      }
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) {
      assert.fail(`the chart never showed ${symbol} ${tf} as asked: ${chart.symbol} ${chart.tf}, ${chart.runs.length} candles, ${chart.bars.length} bars`);
    }
    await sleep(50);
  }
}

/**
 * The number of candles in the first frame of the chart that has any for `symbol` and
 * `tf`, read in each frame (a history arrives whole, live bars one at a time).
 * @param {import('playwright-core').Page} page @param {string} symbol @param {string} tf
 */
async function firstChartFrame(page, symbol, tf, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const chart = await chartOf(page);
    if (chart.symbol === symbol && chart.tf === tf && chart.runs.length > 0) return chart.runs.length;
    if (Date.now() > deadline) assert.fail(`no candle of ${symbol} ${tf} within ${timeoutMs} ms`);
  }
}

/**
 * The bars requests the page sent, as `op SYMBOL tf`, from the `from`th on.
 * @param {import('playwright-core').Page} page @param {number} [from]
 */
const barRequests = (page, from = 0) =>
  page.evaluate(
    (n) => /** @type {any[]} */ (/** @type {any} */ (window).__tx).filter((m) => m.stream === 'bars').slice(n).map((m) => `${m.op} ${m.symbols.join(',')} ${m.tf}`),
    from,
  );

/** Waits until the edge follows `n` bar feeds (the page's: no other page is open). @param {number} n */
async function edgeFollowsBars(n) {
  await waitFor(`the edge to follow ${n} bar feed(s)`, async () => metric(await mesh.metrics(), 'tickmesh_edge_bar_feeds') === n, 5000, mesh.procs());
}

test('the chart draws the selected symbol\'s candles, a new one as each bar closes, and follows the timeframe and the selection', { timeout: 90000 }, async () => {
  // The 1s history holds a bar per second of prints: give it a few.
  await sleep(Math.max(0, 15000 - (Date.now() - meshStartedAt)));
  // `shared=0`: the page holds its own WebSocket, where `recordFrames` can see its frames.
  const { page, pageErrors, cspViolations } = await openDashboard('?symbols=AAPL,MSFT&depth=AAPL&tf=1s&shared=0', recordFrames);
  try {
    await waitForStatus(page, (s) => s.state === 'open', 'open');
    // The history: a chart of candles at once, not one candle after another.
    const shown = await firstChartFrame(page, 'AAPL', '1s');
    assert.ok(shown >= 8, `the first frame of the AAPL chart showed ${shown} candles`);
    let chart = await chartShows(page, 'AAPL', '1s');
    const aapl = Number(await nextPrice(page, 'AAPL', ''));
    assert.ok(Math.abs(chart.bars.at(-1).close / aapl - 1) < 0.03, `AAPL's bars near its last ${aapl}`);
    assert.deepEqual(await barRequests(page), ['subscribe AAPL 1s']);
    await edgeFollowsBars(1);

    // A bar closes: its candle stays, final, and the next one is drawn on its right.
    const first = chart.bars.at(-1);
    chart = await chartShows(page, 'AAPL', '1s', (c) => c.bars.at(-1).t > first.t && c.bars.some((b) => b.t === first.t && b.final));
    assert.ok(!chart.bars.slice(0, -1).some((b) => !b.final), 'every bar but the newest is final');
    chart = await chartShows(page, 'AAPL', '1s', (c) => c.bars.at(-1).t >= first.t + 2e6);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-chart.png') });

    // Another timeframe: the 1s bars are given up, the 1m ones drawn.
    await page.click('#chart-tf button[data-tf="1m"]');
    await chartShows(page, 'AAPL', '1m');
    assert.deepEqual(await barRequests(page, 1), ['unsubscribe AAPL 1s', 'subscribe AAPL 1m']);
    await edgeFollowsBars(1);

    // Another symbol: the chart follows the selection, in the timeframe chosen.
    await page.click('tr[data-symbol="MSFT"] td.sym');
    chart = await chartShows(page, 'MSFT', '1m');
    const msft = Number(await cellText(page, 'MSFT', 'last'));
    assert.ok(Math.abs(chart.bars.at(-1).close / msft - 1) < 0.03, `MSFT's bars near its last ${msft}`);
    assert.deepEqual(await barRequests(page, 3), ['unsubscribe AAPL 1m', 'subscribe MSFT 1m']);
    await page.click('#chart-tf button[data-tf="1s"]');
    const msftShown = await firstChartFrame(page, 'MSFT', '1s');
    assert.ok(msftShown >= 8, `the first frame of the MSFT 1s chart showed ${msftShown} candles`);
    await chartShows(page, 'MSFT', '1s');
    assert.deepEqual(await barRequests(page, 5), ['unsubscribe MSFT 1m', 'subscribe MSFT 1s']);
    await edgeFollowsBars(1);

    // A smaller window, then a screen of twice the pixel density: the canvas follows both.
    await page.setViewportSize({ width: 1000, height: 700 });
    await chartShows(page, 'MSFT', '1s', (c) => c.cssWidth < 600);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Emulation.setDeviceMetricsOverride', { width: 1000, height: 700, deviceScaleFactor: 2, mobile: false });
    chart = await chartShows(page, 'MSFT', '1s', (c) => c.dpr === 2);
    assert.ok(chart.runs.every((r) => r.x1 - r.x0 >= 5), 'candles twice as wide, in device pixels');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-chart-hidpi.png') });
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
    assert.deepEqual(cspViolations, [], 'the page works within its Content-Security-Policy');
  } finally {
    await page.close();
  }
});

test('the opening print is marked on the tape', { timeout: 45000 }, async () => {
  // A trading day that starts five seconds before the open: nothing prints until then.
  await mesh.stopIngest();
  mesh.startIngest({ TICKMESH_INGEST_SIM__SESSION__START: '09:29:55' });
  const { page, pageErrors } = await openDashboard('?symbols=NVDA&depth=NVDA');
  try {
    await waitForStatus(page, (s) => s.state === 'open', 'open');
    // The history: the prints of the day before (md_trades keeps them).
    await firstTapeFrame(page, 'NVDA');
    const before = (await tapeOf(page)).rows[0].seq;
    await newerOnTop(page, before, 15000);
    const tape = await tapeOf(page);
    checkTape(tape, 'NVDA');
    const today = tape.rows.slice(0, tape.rows.findIndex((r) => r.seq === before));
    assert.equal(today.at(-1)?.cond, 'OPEN', 'the first print of the day is marked OPEN');
    assert.deepEqual(today.slice(0, -1).filter((r) => r.cond !== ''), [], 'and no other');
    const row = await page.$(`#tape-rows tr[data-seq="${today.at(-1)?.seq}"]`);
    assert.equal(await row?.getAttribute('title'), 'opening');
    await row?.scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-tape-open.png') });
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } finally {
    await page.close();
  }
});

test('the page reconnects and resubscribes by itself when its edge is replaced', { timeout: 45000 }, async () => {
  const { page, pageErrors } = await openDashboard('?symbols=AAPL,NVDA&enc=msgpack');
  try {
    const first = mesh.edgeName;
    const status = await waitForStatus(page, (s) => s.state === 'open' && s.edge === first, `open on ${first}`);
    assert.equal(status.enc, 'msgpack');
    assert.equal(status.reconnects, 0);
    const price = await nextPrice(page, 'AAPL', '');

    // Killed without notice: the page sees the socket drop and retries with backoff.
    await mesh.stopEdge('SIGKILL');
    await waitForStatus(page, (s) => s.state !== 'open', 'that the connection dropped', 5000);
    await mesh.startEdge();
    const second = mesh.edgeName;
    await waitForStatus(page, (s) => s.state === 'open' && s.edge === second && s.reconnects === 1, `open on ${second} after 1 reconnect`);
    // The new edge process had no subscriptions: prices moving again means the page
    // subscribed again by itself.
    const after1 = await nextPrice(page, 'AAPL', price);
    await nextPrice(page, 'AAPL', after1);
    await nextPrice(page, 'NVDA', await cellText(page, 'NVDA', 'last'));
    const metrics = await mesh.metrics();
    assert.equal(metric(metrics, 'tickmesh_edge_sessions{encoding="msgpack"}'), 1, 'the page holds one session on the new edge');
    assert.ok((metric(metrics, 'tickmesh_edge_updates_out_total') ?? 0) > 0, 'the new edge sent it updates');

    // Drained (SIGTERM): the edge tells the page to come back after a short random delay.
    await mesh.stopEdge('SIGTERM');
    await mesh.startEdge();
    const third = mesh.edgeName;
    await waitForStatus(page, (s) => s.state === 'open' && s.edge === third && s.reconnects === 2, `open on ${third} after 2 reconnects`);
    const after2 = await nextPrice(page, 'AAPL', await cellText(page, 'AAPL', 'last'));
    assert.match(after2, PRICE);
    const log = (await page.textContent('#log')) ?? '';
    assert.match(log, /edge draining/, 'the page logged the drain notice');
    await waitForStatus(page, (s) => s.ups > 0, 'updates per second');

    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-reconnected.png') });
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } finally {
    await page.close();
  }
});

test('rows turn grey while the feed is quiet and come back when another ingest takes over', { timeout: 45000 }, async () => {
  const { page, pageErrors } = await openDashboard('?symbols=AAPL,MSFT');
  try {
    await waitForStatus(page, (s) => s.state === 'open', 'open');
    const price = await nextPrice(page, 'AAPL', '');
    const stale = (symbol) => `tr[data-symbol="${symbol}"].stale`;
    assert.equal(await page.$(stale('AAPL')), null, 'stale while the feed is alive');

    // The ingest stops: the edge hears no announcement for stale_after_ms (2000).
    await mesh.stopIngest();
    await page.waitForSelector(stale('AAPL'), { timeout: 8000 });
    await page.waitForSelector(stale('MSFT'), { timeout: 2000 });
    assert.match((await page.getAttribute('tr[data-symbol="AAPL"]', 'title')) ?? '', /stale: feed quiet/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-stale.png') });

    // Another ingest takes the feed over: fresh again, and prices move.
    mesh.startIngest();
    await page.waitForSelector(stale('AAPL'), { state: 'detached', timeout: 15000 });
    await nextPrice(page, 'AAPL', price);
    const log = (await page.textContent('#log')) ?? '';
    assert.match(log, /AAPL: fresh \(feed back\)/);
    assert.doesNotMatch(log, /neither folded nor told/, 'a new epoch is not a loss');
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } finally {
    await page.close();
  }
});

test('a halted name is marked until it resumes', { timeout: 45000 }, async () => {
  // A simulated market ten times as fast, with about two halts a second across the
  // universe, each three seconds long.
  await mesh.stopIngest();
  mesh.startIngest({
    TICKMESH_INGEST_SIM__SESSION__SPEED: '10',
    TICKMESH_INGEST_SIM__SESSION__HALTS_PER_HOUR: '720',
    TICKMESH_INGEST_SIM__SESSION__HALT_S: '30',
  });
  const symbols = 'AAPL,MSFT,NVDA,TSLA,AMZN,GOOGL,META,AVGO,JPM,LLY,UNH,XOM,MA,JNJ,PG,HD';
  const { page, pageErrors } = await openDashboard(`?symbols=${symbols}`);
  try {
    await waitForStatus(page, (s) => s.state === 'open', 'open');
    const halted = await page.waitForSelector('#watchlist tr[data-state="halted"]', { timeout: 20000 });
    const symbol = await halted.getAttribute('data-symbol');
    assert.match((await halted.getAttribute('title')) ?? '', /halted: trading halted/);
    assert.equal(await halted.evaluate((tr) => getComputedStyle(tr.querySelector('td.sym'), '::before').content), '"HALT "');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-halted.png') });
    // Three wall seconds later it trades again.
    await page.waitForSelector(`#watchlist tr[data-symbol="${symbol}"][data-state="open"]`, { timeout: 10000 });
    const log = (await page.textContent('#log')) ?? '';
    assert.match(log, new RegExp(`${symbol}: halted \\(trading halted\\)`));
    assert.match(log, new RegExp(`${symbol}: open \\(trading resumed\\)`));
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } finally {
    await page.close();
  }
});
