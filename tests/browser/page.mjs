// What the browser tests share: a mesh and a Chromium for a test file, and what they read
// off a page of the dashboard (its status bar, watchlist and tape) and off the edge's
// metrics.

import { after, before } from 'node:test';
import assert from 'node:assert/strict';

import { launchChromium } from './chromium.mjs';
import { startMesh } from './mesh.mjs';

/**
 * @typedef {Awaited<ReturnType<typeof startMesh>>} Mesh
 * @typedef {Awaited<ReturnType<typeof launchChromium>>} Chromium
 */

/**
 * Starts a mesh (with `options`, see `startMesh`) and a Chromium side by side before the
 * file's tests and hands both to `ready`; after the tests, stops whichever started, even
 * if the other failed.
 * @param {(mesh: Mesh, browser: Chromium) => void} ready
 * @param {Parameters<typeof startMesh>[0]} [options]
 */
export function meshAndChromium(ready, options) {
  /** @type {Mesh | undefined} */
  let mesh;
  /** @type {Chromium | undefined} */
  let browser;
  before(
    async () => {
      const [m, b] = await Promise.allSettled([startMesh(options), launchChromium()]);
      if (m.status === 'fulfilled') mesh = m.value;
      if (b.status === 'fulfilled') browser = b.value;
      for (const r of [m, b]) if (r.status === 'rejected') throw r.reason;
      ready(/** @type {Mesh} */ (mesh), /** @type {Chromium} */ (browser));
    },
    { timeout: 60000 },
  );
  after(
    async () => {
      await browser?.close();
      await mesh?.stop();
    },
    { timeout: 30000 },
  );
}

export const PRICE = /^\d+\.\d{2,6}$/;

/**
 * A page of the dashboard at `url` in `context`; collects uncaught page errors and what
 * its Content-Security-Policy refused.
 * @param {import('playwright-core').BrowserContext} context @param {string} url
 * @param {(page: import('playwright-core').Page) => Promise<void>} [prepare] run before the page loads
 */
export async function openPage(context, url, prepare) {
  const page = await context.newPage();
  await prepare?.(page);
  /** @type {string[]} */
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  // What the page's Content-Security-Policy refused (Chromium reports it on the console).
  /** @type {string[]} */
  const cspViolations = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy/i.test(msg.text())) cspViolations.push(msg.text());
  });
  const response = await page.goto(url);
  return { page, pageErrors, cspViolations, headers: response?.headers() ?? {} };
}

/** @param {import('playwright-core').Page} page */
export const statusOf = (page) =>
  page.evaluate(() => {
    const text = (/** @type {string} */ id) => document.getElementById(id)?.textContent?.trim() ?? '';
    return {
      state: document.getElementById('status-state')?.dataset.state ?? '',
      edge: text('status-edge'),
      enc: text('status-enc'),
      lag: text('status-lag'),
      ups: Number(text('status-ups')),
      reconnects: Number(text('status-reconnects')),
    };
  });

/**
 * Waits until the status bar satisfies `pred` (the page refreshes it every 200 ms).
 * @param {import('playwright-core').Page} page
 * @param {(s: Awaited<ReturnType<typeof statusOf>>) => boolean} pred
 * @param {string} what
 * @param {number} [timeoutMs]
 */
export async function waitForStatus(page, pred, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let s = await statusOf(page);
  while (!pred(s)) {
    if (Date.now() > deadline) assert.fail(`status bar never showed ${what}; last: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
    s = await statusOf(page);
  }
  return s;
}

/** @param {string} symbol @param {string} cell */
export const cellSelector = (symbol, cell) => `tr[data-symbol="${symbol}"] .${cell}`;

/** @param {import('playwright-core').Page} page @param {string} symbol @param {string} cell */
export const cellText = async (page, symbol, cell) => ((await page.textContent(cellSelector(symbol, cell))) ?? '').trim();

/**
 * Waits until the watchlist shows a price for `symbol` that differs from `from`.
 * @param {import('playwright-core').Page} page @param {string} symbol @param {string} from
 */
export async function nextPrice(page, symbol, from, timeoutMs = 15000) {
  const handle = await page.waitForFunction(
    ([sel, prev]) => {
      const t = document.querySelector(sel)?.textContent?.trim();
      return t && t !== prev ? t : null;
    },
    [cellSelector(symbol, 'last'), from],
    { timeout: timeoutMs, polling: 100 },
  );
  return String(await handle.jsonValue());
}

/** @param {string} metrics @param {string} series */
export function metric(metrics, series) {
  const line = metrics.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * Waits frame by frame until the tape holds prints of `symbol`; returns how many its first
 * such frame showed (a history arrives whole, live prints a few at a time).
 * @param {import('playwright-core').Page} page @param {string} symbol
 */
export async function firstTapeFrame(page, symbol, timeoutMs = 10000) {
  const handle = await page.waitForFunction(
    (sym) => {
      if (document.getElementById('tape')?.dataset.symbol !== sym) return null;
      const n = document.querySelectorAll('#tape-rows tr').length;
      return n > 0 ? n : null;
    },
    symbol,
    { polling: 'raf', timeout: timeoutMs },
  );
  return Number(await handle.jsonValue());
}
