// @ts-check
/**
 * The TickMesh dashboard: watchlist, candle chart, options chain, depth ladder, time
 * and sales (the chart and the tape are of the symbol the ladder shows), status bar, and
 * the blotter of the account the token names (blotter.js).
 *
 * Messages only update plain state objects and mark what changed; one
 * requestAnimationFrame pass writes the changed cells to the DOM. With hundreds of
 * symbols ticking, the page does work per frame, not per message, and watchlist rows
 * far outside the visible part of the list stay dirty until they scroll into view.
 * Cells are re-written only when their text changes, and nothing animates: an animated
 * background on hundreds of cells is repainted on every frame. The tape keeps at most
 * `TAPE_ROWS` rows: once full, its oldest rows are re-used for the newest prints. The
 * chart keeps at most `CHART_BARS` bars and is drawn on a canvas, in that same pass, only
 * when a bar, its size or the screen's pixel ratio changed.
 *
 * Page parameters: `?token=` (passed on to the stream; the first account of its `acct`
 * claim gets a blotter), `?enc=msgpack`,
 * `?symbols=A,B,C` (replaces the default watchlist), `?chain=AAPL`, `?depth=AAPL` (the
 * symbol of the ladder, the chart and the tape), `?tf=1m` (the chart's timeframe),
 * `?shared=0` (a connection of the page's own rather than the one its tabs share).
 */

import { createClient, TIMEFRAMES } from './index.js';
import { Blotter, accountOf } from './blotter.js';

const DEFAULT_WATCHLIST = ['AAPL', 'MSFT', 'NVDA', 'TSLA', 'SPY', 'QQQ', 'AMZN', 'GOOGL', 'META', 'AMD'];
const SYMBOL_RE = /^[A-Z0-9][A-Z0-9_-]{0,63}$/;

/**
 * Each view's subscription; a symbol several views want gets the richest of them.
 * @typedef {{mode: import('./tickmesh.js').Mode, interval_ms: number}} Sub
 * @type {Record<'watch' | 'depth' | 'spot' | 'chain' | 'mark', Sub>}
 */
const SUB = {
  watch: { mode: 'quote', interval_ms: 250 },
  depth: { mode: 'full', interval_ms: 100 },
  spot: { mode: 'ltp', interval_ms: 1000 }, // the chain's underlying, for in-the-money shading
  chain: { mode: 'quote', interval_ms: 500 },
  mark: { mode: 'ltp', interval_ms: 250 }, // the blotter's positions, for their live P&L
};
const MODE_RANK = { ltp: 0, quote: 1, full: 2 };

const FLASH_MS = 600;
const DEPTH_LEVELS = 5;
const LOG_LINES = 50;
/** Prints on show in the tape, and those of history asked for when it changes symbol. */
const TAPE_ROWS = 200;
const TAPE_HISTORY = 100;
/** Bars the chart keeps, those of history asked for when it changes, and how often the bar in progress is sent. */
const CHART_BARS = 300;
const CHART_HISTORY = 200;
const CHART_INTERVAL_MS = 250;
/** Room per candle, CSS px: as many of the newest bars as fit at the narrowest. */
const CANDLE_MIN = 5;
const CANDLE_MAX = 15;
/** Periods of the time axis's labels, s: the shortest multiple of the timeframe that leaves room. */
const TIME_STEPS = [1, 5, 10, 15, 30, 60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400, 604800, 2592000];
/** @type {Record<string, number>} timeframe -> its length, s */
const TF_SECONDS = { '1s': 1, '1m': 60, '5m': 300, '1h': 3600, '1d': 86400 };

const params = new URLSearchParams(location.search);
// One connection for all of this origin's tabs of the page (a SharedWorker), unless
// `?shared=0`. The client tries a WebSocket, then Server-Sent Events, then polling;
// `?transports=sse,poll` (say) picks among them.
const transports = /** @type {any} */ (params.get('transports')?.split(',').filter(Boolean));
const client = createClient({
  token: params.get('token'),
  encoding: params.get('enc') === 'msgpack' ? 'msgpack' : 'json',
  shared: params.get('shared') !== '0',
  ...(transports?.length ? { transports } : {}),
});

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Latest merged state per symbol (every tick carries absolute values). @type {Map<string, Record<string, any>>} */
const quotes = new Map();

// ---- formatting ----------------------------------------------------------------------

/** @param {unknown} v */
function price(v) {
  if (typeof v !== 'number') return '';
  const s = String(v);
  const dot = s.indexOf('.');
  const decimals = dot < 0 ? 0 : s.length - dot - 1;
  return v.toFixed(Math.min(6, Math.max(2, decimals)));
}

/** @param {unknown} v */
function volume(v) {
  if (typeof v !== 'number') return '';
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)}B`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(1)}K`;
  return String(v);
}

/** @param {unknown} v @param {number} digits */
function fixed(v, digits) {
  return typeof v === 'number' ? v.toFixed(digits) : '';
}

/** `HH:MM:SS.mmm`, local time, of a µs timestamp. @param {number} us */
function clockTime(us) {
  const d = new Date(Math.floor(us / 1000));
  const two = (/** @type {number} */ n) => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** @param {number} v */
function signed(v) {
  return (v > 0 ? '+' : '') + v.toFixed(2);
}

/**
 * Writes a cell only when its text changes, editing its text node in place: cheaper
 * for the browser than replacing the node, as `textContent =` does.
 * @param {HTMLElement} el @param {string} text
 */
function put(el, text) {
  const node = el.firstChild;
  if (node instanceof Text) {
    if (node.data !== text) node.data = text;
  } else {
    el.textContent = text;
  }
}

/** @param {string} text @param {'info' | 'warn' | 'error'} [level] */
function log(text, level = 'info') {
  const list = $('log');
  const li = document.createElement('li');
  li.className = level;
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  list.prepend(li);
  while (list.children.length > LOG_LINES) list.lastElementChild?.remove();
}

// ---- blotter ---------------------------------------------------------------------------

const account = accountOf(params.get('token'));
/** The account's blotter, when the token names one. */
const blotter = account ? new Blotter(account, { quotes, fmt: { put, price, clockTime }, onSymbols: () => reconcile() }) : null;

// ---- subscriptions -------------------------------------------------------------------

/** What is currently asked of the server, per symbol. @type {Map<string, Sub>} */
let subscribed = new Map();

function wantedSymbols() {
  /** @type {Map<string, Sub>} */
  const want = new Map();
  /** @param {string} sym @param {Sub} sub */
  const add = (sym, sub) => {
    const cur = want.get(sym);
    want.set(sym, cur
      ? {
          mode: MODE_RANK[cur.mode] >= MODE_RANK[sub.mode] ? cur.mode : sub.mode,
          interval_ms: Math.min(cur.interval_ms, sub.interval_ms),
        }
      : sub);
  };
  for (const sym of watch.symbols) add(sym, SUB.watch);
  if (chain.underlying) add(chain.underlying, SUB.spot);
  if (depth.symbol) add(depth.symbol, SUB.depth);
  for (const sym of blotter?.symbols() ?? []) add(sym, SUB.mark);
  return want;
}

/** Brings the server's subscriptions in line with what the views show. */
function reconcile() {
  const want = wantedSymbols();
  const gone = [...subscribed.keys()].filter((s) => !want.has(s));
  if (gone.length) client.unsubscribe({ symbols: gone }).catch(requestFailed);
  /** @type {Map<string, Sub & {symbols: string[]}>} */
  const groups = new Map();
  for (const [sym, sub] of want) {
    const cur = subscribed.get(sym);
    if (cur && cur.mode === sub.mode && cur.interval_ms === sub.interval_ms) continue;
    const key = `${sub.mode}/${sub.interval_ms}`;
    if (!groups.has(key)) groups.set(key, { ...sub, symbols: [] });
    groups.get(key)?.symbols.push(sym);
  }
  for (const g of groups.values()) client.subscribe(g).catch(requestFailed);
  subscribed = want;
}

/**
 * Server refusals are already logged from the `error` event; a request cut by a drop is
 * replayed by the client after the reconnect.
 * @param {import('./tickmesh.js').TickMeshError} err
 */
function requestFailed(err) {
  if (err.detail?.server || err.code === 'disconnected') return;
  log(err.message, 'warn');
}

// ---- watchlist -----------------------------------------------------------------------

const watch = {
  /** @type {string[]} */
  symbols: [],
  /** @type {Map<string, {tr: HTMLTableRowElement, cells: Record<string, HTMLElement>, flashAt: number}>} */
  rows: new Map(),
  /** @type {Set<string>} */
  dirty: new Set(),
  /** @type {Set<string>} rows with a flash to fade */
  flashing: new Set(),
  /** Rows on screen (or nearly): the only ones written to; the others wait, dirty. @type {Set<string>} */
  visible: new Set(),
};

const rowObserver = new IntersectionObserver(
  (entries) => {
    for (const e of entries) {
      const sym = /** @type {HTMLElement} */ (e.target).dataset.symbol ?? '';
      if (e.isIntersecting) watch.visible.add(sym);
      else watch.visible.delete(sym);
    }
  },
  { root: document.querySelector('#watchlist-pane .pane-body'), rootMargin: '300px 0px' },
);

/** @param {string} raw */
function addSymbol(raw) {
  const sym = raw.trim().toUpperCase();
  if (!SYMBOL_RE.test(sym)) {
    log(`not a symbol: ${raw}`, 'warn');
    return false;
  }
  if (watch.rows.has(sym)) return false;
  const tpl = /** @type {HTMLTemplateElement} */ ($('watch-row'));
  const tr = /** @type {HTMLTableRowElement} */ (tpl.content.firstElementChild?.cloneNode(true));
  tr.dataset.symbol = sym;
  /** @type {Record<string, HTMLElement>} */
  const cells = {};
  for (const name of ['sym', 'last', 'bid', 'ask', 'chg', 'pct', 'vol']) {
    cells[name] = /** @type {HTMLElement} */ (tr.querySelector(`.${name}`));
  }
  cells.sym.textContent = sym;
  tr.classList.toggle('selected', sym === depth.symbol);
  $('watchlist-body').append(tr);
  watch.symbols.push(sym);
  watch.rows.set(sym, { tr, cells, flashAt: 0, lost: 0 });
  rowObserver.observe(tr);
  if (quotes.has(sym)) watch.dirty.add(sym);
  return true;
}

/** @param {string} sym */
function removeSymbol(sym) {
  const row = watch.rows.get(sym);
  if (!row) return;
  rowObserver.unobserve(row.tr);
  row.tr.remove();
  watch.rows.delete(sym);
  watch.visible.delete(sym);
  watch.symbols = watch.symbols.filter((s) => s !== sym);
  watch.dirty.delete(sym);
  watch.flashing.delete(sym);
  reconcile();
  if (!subscribed.has(sym)) quotes.delete(sym);
}

/** @param {number} now */
function renderWatch(now) {
  for (const sym of watch.dirty) {
    if (!watch.visible.has(sym)) continue;
    watch.dirty.delete(sym);
    const row = watch.rows.get(sym);
    const q = quotes.get(sym);
    if (!row || !q) continue;
    const { cells } = row;
    put(cells.last, price(q.last));
    put(cells.bid, price(q.bid));
    put(cells.ask, price(q.ask));
    put(cells.vol, volume(q.volume));
    // Delayed data (the token covers the symbol by `dly` only): marked, and how late.
    const delayed = typeof q.delayed_ms === 'number' ? q.delayed_ms : 0;
    if (row.tr.classList.contains('delayed') !== delayed > 0) {
      row.tr.classList.toggle('delayed', delayed > 0);
      cells.sym.textContent = delayed > 0 ? `${sym} ·${Math.round(delayed / 1000)}s` : sym;
      cells.sym.title = delayed > 0 ? `delayed ${Math.round(delayed / 1000)} s` : '';
    }
    // The trading state: halted rows are marked, pre-open and closed ones noted.
    const state = typeof q.state === 'string' ? q.state : '';
    if (row.tr.dataset.state !== state) row.tr.dataset.state = state;
    if (typeof q.last === 'number' && typeof q.prev_close === 'number' && q.prev_close !== 0) {
      const chg = q.last - q.prev_close;
      put(cells.chg, signed(chg));
      put(cells.pct, `${signed((chg / q.prev_close) * 100)}%`);
      const dir = chg > 0 ? 'up' : chg < 0 ? 'down' : 'flat';
      if (row.tr.dataset.dir !== dir) row.tr.dataset.dir = dir;
    }
    if (q.flash && now - q.changedAt < FLASH_MS) {
      cells.last.classList.toggle('flash-up', q.flash > 0);
      cells.last.classList.toggle('flash-down', q.flash < 0);
      row.flashAt = q.changedAt;
      watch.flashing.add(sym);
    }
    q.flash = 0;
  }
  for (const sym of watch.flashing) {
    const row = watch.rows.get(sym);
    if (row && now - row.flashAt < FLASH_MS) continue;
    row?.cells.last.classList.remove('flash-up', 'flash-down');
    watch.flashing.delete(sym);
  }
}

// ---- options chain ---------------------------------------------------------------------

const chain = {
  underlying: '',
  expiry: '',
  /** subscribed chain key, `AAPL:2026-12-18` */
  key: '',
  /** @type {Array<{expiry: string, strikes: number[]}>} */
  expiries: [],
  /** @type {Map<number, {tr: HTMLTableRowElement, cells: Record<string, HTMLElement>, itm: string}>} */
  rows: new Map(),
  /** `${strike}C` / `${strike}P` -> option symbol @type {Map<string, string>} */
  legs: new Map(),
  /** @type {Set<number>} */
  dirty: new Set(),
  spotDirty: false,
};

const CHAIN_CELLS = ['c-bid', 'c-ask', 'c-iv', 'c-delta', 'strike', 'p-bid', 'p-ask', 'p-iv', 'p-delta'];

/** @param {string} raw */
async function loadChains(raw) {
  const underlying = raw.trim().toUpperCase();
  if (!SYMBOL_RE.test(underlying)) return log(`not a symbol: ${raw}`, 'warn');
  let reply;
  try {
    reply = await client.chains(underlying);
  } catch (err) {
    log(`chains ${underlying}: ${/** @type {Error} */ (err).message}`, 'warn');
    return;
  }
  const select = /** @type {HTMLSelectElement} */ ($('chain-expiry'));
  select.replaceChildren(...reply.expiries.map((e) => new Option(e.expiry, e.expiry)));
  chain.expiries = reply.expiries;
  if (!reply.expiries.length) log(`${underlying} has no listed options`, 'warn');
  showChain(underlying, reply.expiries[0]?.expiry ?? '');
}

/** @param {string} underlying @param {string} expiry */
function showChain(underlying, expiry) {
  if (chain.key) client.unsubscribe({ chains: [chain.key] }).catch(requestFailed);
  for (const sym of chain.legs.values()) if (!subscribed.has(sym)) quotes.delete(sym);
  chain.legs.clear();
  chain.rows.clear();
  chain.dirty.clear();
  $('chain-body').replaceChildren();
  chain.underlying = underlying;
  chain.expiry = expiry;
  chain.key = expiry ? `${underlying}:${expiry}` : '';
  chain.spotDirty = true;
  for (const strike of chain.expiries.find((e) => e.expiry === expiry)?.strikes ?? []) chainRow(strike);
  reconcile(); // the underlying's spot price
  if (chain.key) client.subscribe({ chains: [chain.key], ...SUB.chain }).catch(requestFailed);
}

/** The row of a strike, made in strike order if it is new. @param {number} strike */
function chainRow(strike) {
  let row = chain.rows.get(strike);
  if (row) return row;
  const tpl = /** @type {HTMLTemplateElement} */ ($('chain-row'));
  const tr = /** @type {HTMLTableRowElement} */ (tpl.content.firstElementChild?.cloneNode(true));
  tr.dataset.strike = String(strike);
  /** @type {Record<string, HTMLElement>} */
  const cells = {};
  for (const name of CHAIN_CELLS) cells[name] = /** @type {HTMLElement} */ (tr.querySelector(`.${name}`));
  cells.strike.textContent = price(strike);
  const body = $('chain-body');
  const after = [...chain.rows.keys()].filter((k) => k > strike).sort((a, b) => a - b)[0];
  body.insertBefore(tr, after === undefined ? null : /** @type {any} */ (chain.rows.get(after)).tr);
  row = { tr, cells, itm: '' };
  chain.rows.set(strike, row);
  return row;
}

/**
 * @param {Record<string, any>} q an option's merged state
 * @returns {boolean} whether it belongs to the chain on show
 */
function onOptionTick(q) {
  if (q.underlying !== chain.underlying || q.expiry !== chain.expiry) return false;
  if (typeof q.strike !== 'number' || (q.right !== 'C' && q.right !== 'P')) return false;
  chainRow(q.strike);
  chain.legs.set(`${q.strike}${q.right}`, q.symbol);
  chain.dirty.add(q.strike);
  return true;
}

function renderChain() {
  for (const strike of chain.dirty) {
    const row = chain.rows.get(strike);
    if (!row) continue;
    for (const right of ['C', 'P']) {
      const sym = chain.legs.get(`${strike}${right}`);
      const q = sym ? quotes.get(sym) : undefined;
      if (!q) continue;
      const p = right === 'C' ? 'c-' : 'p-';
      put(row.cells[`${p}bid`], price(q.bid));
      put(row.cells[`${p}ask`], price(q.ask));
      put(row.cells[`${p}iv`], typeof q.iv === 'number' ? `${(q.iv * 100).toFixed(1)}%` : '');
      put(row.cells[`${p}delta`], fixed(q.delta, 3));
    }
  }
  chain.dirty.clear();
  if (!chain.spotDirty) return;
  chain.spotDirty = false;
  const spot = quotes.get(chain.underlying)?.last;
  put($('chain-spot'), chain.underlying ? `${chain.underlying} ${price(spot)}`.trim() : '');
  if (typeof spot !== 'number') return;
  for (const [strike, row] of chain.rows) {
    const itm = strike < spot ? 'call' : strike > spot ? 'put' : '';
    if (row.itm !== itm) row.tr.dataset.itm = row.itm = itm;
  }
}

// ---- depth ladder ----------------------------------------------------------------------

const depth = {
  symbol: '',
  dirty: false,
  /** @type {Array<{tr: HTMLTableRowElement, bid: HTMLElement, price: HTMLElement, ask: HTMLElement}>} */
  asks: [],
  /** @type {Array<{tr: HTMLTableRowElement, bid: HTMLElement, price: HTMLElement, ask: HTMLElement}>} */
  bids: [],
  /** @type {HTMLElement | null} */
  spread: null,
};

function buildLadder() {
  const body = $('depth-body');
  /** @param {'ask' | 'bid'} side @param {number} level */
  const line = (side, level) => {
    const tr = document.createElement('tr');
    tr.className = side;
    tr.dataset.level = String(level);
    const [bid, px, ask] = ['bid-size', 'price', 'ask-size'].map((c) => {
      const td = document.createElement('td');
      td.className = c;
      tr.append(td);
      return td;
    });
    return { tr, bid, price: px, ask };
  };
  // Asks above, worst at the top; bids below, best at the top.
  for (let i = DEPTH_LEVELS - 1; i >= 0; i--) depth.asks[i] = line('ask', i);
  for (let i = 0; i < DEPTH_LEVELS; i++) depth.bids[i] = line('bid', i);
  const spreadRow = document.createElement('tr');
  spreadRow.className = 'spread';
  const td = document.createElement('td');
  td.colSpan = 3;
  td.id = 'depth-spread';
  spreadRow.append(td);
  depth.spread = td;
  body.append(...depth.asks.slice().reverse().map((r) => r.tr), spreadRow, ...depth.bids.map((r) => r.tr));
}

/** @param {string} raw */
function showDepth(raw) {
  const sym = raw.trim().toUpperCase();
  if (!SYMBOL_RE.test(sym)) return log(`not a symbol: ${raw}`, 'warn');
  const previous = depth.symbol;
  depth.symbol = sym;
  depth.dirty = true;
  put($('depth-symbol'), sym);
  for (const [s, row] of watch.rows) row.tr.classList.toggle('selected', s === sym);
  reconcile();
  if (previous && !subscribed.has(previous)) quotes.delete(previous);
  showTape(sym);
  showChart(sym, candles.tf);
}

function renderDepth() {
  if (!depth.dirty) return;
  depth.dirty = false;
  const book = quotes.get(depth.symbol)?.depth;
  const bids = book?.bids ?? [];
  const asks = book?.asks ?? [];
  let max = 1;
  for (const [, size] of bids.slice(0, DEPTH_LEVELS)) max = Math.max(max, size);
  for (const [, size] of asks.slice(0, DEPTH_LEVELS)) max = Math.max(max, size);
  /** @param {typeof depth.bids} rows @param {Array<[number, number]>} levels @param {'bid' | 'ask'} side */
  const fill = (rows, levels, side) => {
    rows.forEach((row, i) => {
      const level = levels[i];
      put(row.price, level ? price(level[0]) : '');
      put(row[side], level ? String(level[1]) : '');
      row.tr.style.setProperty('--w', level ? `${((level[1] / max) * 100).toFixed(1)}%` : '0%');
    });
  };
  fill(depth.bids, bids, 'bid');
  fill(depth.asks, asks, 'ask');
  const spread = bids[0] && asks[0] ? asks[0][0] - bids[0][0] : null;
  if (depth.spread) put(depth.spread, spread === null ? '' : `spread ${spread.toFixed(2)}`);
}

// ---- time and sales --------------------------------------------------------------------

const tape = {
  symbol: '',
  /** Prints not drawn yet, oldest first, at most TAPE_ROWS. @type {Array<{print: import('./tickmesh.js').Trade, dir: 'up' | 'down' | 'flat'}>} */
  pending: [],
  /** Price of the newest print taken in: the next one is an up or down tick from it. @type {number | undefined} */
  lastPrice: undefined,
  /** The rows on show are another symbol's. */
  clear: false,
};

/** Follows `sym`'s tape in place of the one on show. @param {string} sym */
function showTape(sym) {
  if (sym === tape.symbol) return;
  if (tape.symbol) client.unsubscribe({ symbols: [tape.symbol], stream: 'trades' }).catch(requestFailed);
  tape.symbol = sym;
  tape.pending = [];
  tape.lastPrice = undefined;
  tape.clear = true;
  put($('tape-symbol'), sym);
  client.subscribe({ symbols: [sym], stream: 'trades', history: TAPE_HISTORY }).catch(requestFailed);
}

/** @param {import('./tickmesh.js').TradesEvent} e */
function onTrades(e) {
  // Another symbol: prints of the tape given up, still in flight.
  if (e.symbol !== tape.symbol) return;
  for (const print of e.trades) {
    const last = tape.lastPrice;
    const dir = last === undefined || print.price === last ? 'flat' : print.price > last ? 'up' : 'down';
    tape.lastPrice = print.price;
    tape.pending.push({ print, dir });
  }
  if (tape.pending.length > TAPE_ROWS) tape.pending.splice(0, tape.pending.length - TAPE_ROWS);
}

function renderTape() {
  const body = $('tape-rows');
  if (tape.clear) {
    tape.clear = false;
    body.replaceChildren();
    $('tape').dataset.symbol = tape.symbol; // whose rows the table holds, from this frame on
  }
  if (!tape.pending.length) return;
  const tpl = /** @type {HTMLTemplateElement} */ ($('tape-row'));
  const rows = document.createDocumentFragment();
  // Newest first; once the tape is full, each new print takes the oldest row.
  for (let i = tape.pending.length - 1; i >= 0; i--) {
    const { print, dir } = tape.pending[i];
    const full = body.childElementCount + rows.childElementCount >= TAPE_ROWS;
    const tr = /** @type {HTMLTableRowElement} */ (full ? body.lastElementChild : tpl.content.firstElementChild?.cloneNode(true));
    const [time, px, size, cond] = tr.cells;
    put(time, clockTime(print.ts));
    put(px, price(print.price));
    put(size, String(print.size));
    const conditions = Array.isArray(print.conditions) ? print.conditions : [];
    const opening = conditions.includes('opening');
    put(cond, opening ? 'OPEN' : '');
    tr.dataset.dir = dir;
    tr.dataset.seq = String(print.seq);
    tr.dataset.cond = opening ? 'opening' : '';
    tr.title = conditions.join(', ');
    rows.append(tr);
  }
  tape.pending = [];
  body.prepend(rows);
}

// ---- candle chart ----------------------------------------------------------------------

const candles = {
  symbol: '',
  /** @type {import('./tickmesh.js').Timeframe} */
  tf: /** @type {any} */ (TIMEFRAMES.includes(/** @type {any} */ (params.get('tf'))) ? params.get('tf') : '1s'),
  /** Oldest first, one per `t`, at most CHART_BARS. @type {import('./tickmesh.js').Bar[]} */
  bars: [],
  dirty: false,
  /** The canvas's box, CSS px (from a ResizeObserver: no layout is read while drawing). */
  width: 0,
  height: 0,
  /** The devicePixelRatio the canvas was drawn for. */
  dpr: 0,
  /** Colours and font, from the style sheet. @type {Record<string, string> | null} */
  theme: null,
};

/** Follows `sym`'s `tf` bars in place of those on show. @param {string} sym @param {import('./tickmesh.js').Timeframe} tf */
function showChart(sym, tf) {
  if (sym === candles.symbol && tf === candles.tf) return;
  if (candles.symbol) client.unsubscribe({ symbols: [candles.symbol], stream: 'bars', tf: candles.tf }).catch(requestFailed);
  candles.symbol = sym;
  candles.tf = tf;
  candles.bars = [];
  candles.dirty = true;
  put($('chart-symbol'), sym);
  for (const b of $('chart-tf').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.tf === tf));
  client.subscribe({ symbols: [sym], stream: 'bars', tf, history: CHART_HISTORY, interval_ms: CHART_INTERVAL_MS }).catch(requestFailed);
}

/** Keeps bars by `t`: an update or a final replaces the bar of its `t`. @param {import('./tickmesh.js').BarsEvent} e */
function onBars(e) {
  // Another symbol or timeframe: bars of the one given up, still in flight.
  if (e.symbol !== candles.symbol || e.tf !== candles.tf) return;
  const bars = candles.bars;
  for (const bar of e.bars) {
    let i = bars.length;
    while (i > 0 && bars[i - 1].t > bar.t) i--;
    if (i > 0 && bars[i - 1].t === bar.t) bars[i - 1] = bar;
    else bars.splice(i, 0, bar);
  }
  if (bars.length > CHART_BARS) bars.splice(0, bars.length - CHART_BARS);
  candles.dirty = true;
}

/** A round step at least `raw` (1, 2, 2.5 or 5 times a power of ten), and the decimals it needs. @param {number} raw */
function niceStep(raw) {
  const exp = Math.floor(Math.log10(raw));
  const m = [1, 2, 2.5, 5, 10].find((f) => f * 10 ** exp >= raw) ?? 10;
  return { step: m * 10 ** exp, decimals: Math.max(0, (m === 2.5 ? 1 : 0) - exp) };
}

/** A time axis label of a bar start `us`, for labels `step` s apart. @param {number} us @param {number} step */
function timeLabel(us, step) {
  const d = new Date(us / 1000);
  const two = (/** @type {number} */ n) => String(n).padStart(2, '0');
  if (step >= 86400) return `${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())}`; // days start at 00:00 UTC
  const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
  return step < 60 ? `${hm}:${two(d.getSeconds())}` : hm;
}

function renderChart() {
  const dpr = window.devicePixelRatio || 1;
  if (dpr !== candles.dpr) candles.dirty = true; // zoomed, or moved to another screen
  if (!candles.dirty) return;
  candles.dirty = false;
  candles.dpr = dpr;
  const canvas = /** @type {HTMLCanvasElement} */ ($('chart'));
  const [w, h] = [Math.round(candles.width * dpr), Math.round(candles.height * dpr)];
  if (canvas.width !== w || canvas.height !== h) [canvas.width, canvas.height] = [w, h];
  const ctx = canvas.getContext('2d');
  if (ctx) drawChart(ctx, w, h, dpr);
  const last = candles.bars.at(-1);
  const legend = last ? `O ${price(last.open)}  H ${price(last.high)}  L ${price(last.low)}  C ${price(last.close)}  V ${volume(last.volume)}` : '';
  put($('chart-ohlc'), legend);
}

/** The chart's colours and font, as the style sheet names them. @param {CSSStyleDeclaration} css */
function themeOf(css) {
  return Object.fromEntries(['--up', '--down', '--text', '--muted', '--line', '--bg', '--mono'].map((v) => [v, css.getPropertyValue(v).trim()]));
}

/**
 * Draws the newest bars that fit, the newest at the right, in device pixels, every edge
 * on a whole pixel: candles, price grid and labels, time labels, and the last close.
 * @param {CanvasRenderingContext2D} ctx @param {number} w @param {number} h @param {number} dpr
 */
function drawChart(ctx, w, h, dpr) {
  const th = (candles.theme ??= themeOf(getComputedStyle(document.documentElement)));
  const px = (/** @type {number} */ v) => Math.round(v * dpr);
  const line = Math.max(1, Math.floor(dpr));
  const [left, top, right, bottom] = [px(8), px(10), w - px(64), h - px(20)];
  ctx.clearRect(0, 0, w, h);
  ctx.font = `${px(10)}px ${th['--mono']}`;
  ctx.textBaseline = 'middle';
  ctx.fillStyle = th['--muted'];
  if (right - left < px(40) || bottom - top < px(40)) return;
  if (!candles.bars.length) {
    ctx.textAlign = 'center';
    ctx.fillText(candles.symbol ? `waiting for ${candles.symbol} ${candles.tf} bars` : '', (left + right) / 2, (top + bottom) / 2);
    return;
  }
  const pitch = Math.max(px(CANDLE_MIN), Math.min(px(CANDLE_MAX), Math.floor((right - left) / candles.bars.length)));
  const bars = candles.bars.slice(-Math.floor((right - left) / pitch));
  let body = Math.max(line, Math.floor(pitch * 0.7));
  if ((body - line) % 2) body--; // the wick in the middle of the body
  let lo = Infinity;
  let hi = -Infinity;
  for (const b of bars) {
    lo = Math.min(lo, b.low);
    hi = Math.max(hi, b.high);
  }
  const pad = (hi - lo || Math.abs(hi) * 0.002 || 1) * 0.08;
  lo -= pad;
  hi += pad;
  const y = (/** @type {number} */ p) => top + Math.round(((hi - p) / (hi - lo)) * (bottom - top));
  const last = bars[bars.length - 1];
  const yl = y(last.close);

  // Price grid and labels, about every 40 CSS px.
  const { step, decimals } = niceStep(((hi - lo) * px(40)) / (bottom - top));
  ctx.textAlign = 'left';
  for (let k = Math.ceil(lo / step); k * step <= hi; k++) {
    const yy = y(k * step);
    ctx.fillStyle = th['--line'];
    ctx.fillRect(left, yy, right - left, line);
    ctx.fillStyle = th['--muted'];
    // The last close's label takes this place on the axis.
    if (Math.abs(yy - yl) >= px(14)) ctx.fillText((k * step).toFixed(Math.min(6, Math.max(2, decimals))), right + px(6), yy);
  }

  // Time labels where a bar starts a new period, at least 70 CSS px apart.
  const tf = TF_SECONDS[candles.tf];
  const period = TIME_STEPS.find((s) => s % tf === 0 && (s / tf) * pitch >= px(70)) ?? TIME_STEPS[TIME_STEPS.length - 1];
  const x0 = right - bars.length * pitch;
  let labelled = -Infinity;
  ctx.textAlign = 'center';
  bars.forEach((b, i) => {
    const x = x0 + i * pitch + Math.floor(pitch / 2);
    const n = Math.floor(b.t / 1e6 / period);
    if (i > 0 && n !== Math.floor(bars[i - 1].t / 1e6 / period) && x - labelled >= px(70) && x > px(24) && x < right - px(24)) {
      ctx.fillStyle = th['--line'];
      ctx.fillRect(x, top, line, bottom - top);
      ctx.fillStyle = th['--muted'];
      ctx.fillText(timeLabel(b.t, period), x, bottom + px(10));
      labelled = x;
    }
  });

  // The last close, across the plot and on the axis.
  const dir = (/** @type {typeof last} */ b) => (b.close > b.open ? th['--up'] : b.close < b.open ? th['--down'] : th['--text']);
  ctx.fillStyle = th['--muted'];
  for (let x = left; x < right; x += px(6)) ctx.fillRect(x, yl, Math.min(px(3), right - x), line);

  // Candles: wick high to low, body open to close; green up, red down.
  bars.forEach((b, i) => {
    const x = x0 + i * pitch + Math.floor((pitch - body) / 2);
    const [yh, yt, yb] = [y(b.high), y(Math.max(b.open, b.close)), y(Math.min(b.open, b.close))];
    ctx.fillStyle = dir(b);
    ctx.fillRect(x + (body - line) / 2, yh, line, Math.max(line, y(b.low) - yh));
    ctx.fillRect(x, yt, body, Math.max(line, yb - yt));
  });
  ctx.fillStyle = dir(last);
  ctx.fillRect(right, yl - px(8), w - right, px(16));
  ctx.fillStyle = th['--bg'];
  ctx.textAlign = 'left';
  ctx.fillText(price(last.close), right + px(6), yl);
}

// ---- status bar ------------------------------------------------------------------------

const status = { updates: 0, windowStart: performance.now(), ups: 0, shownAt: 0 };

/** @param {number} now */
function renderStatus(now) {
  if (now - status.windowStart >= 1000) {
    status.ups = Math.round((status.updates * 1000) / (now - status.windowStart));
    status.updates = 0;
    status.windowStart = now;
  }
  if (now - status.shownAt < 200) return;
  status.shownAt = now;
  const state = $('status-state');
  if (state.dataset.state !== client.status) {
    state.dataset.state = client.status;
    state.textContent = client.status;
  }
  put($('status-edge'), client.welcome?.edge ?? '—');
  put($('status-enc'), client.encoding === 'msgpack' && client.transport === 'websocket' ? 'msgpack' : 'json');
  put($('status-transport'), client.transport ?? '—');
  put($('status-lag'), client.lagMs == null ? '—' : `${client.lagMs} ms`);
  put($('status-ups'), String(status.ups));
  put($('status-reconnects'), String(client.stats.reconnects));
}

// ---- wiring ----------------------------------------------------------------------------

/** @param {import('./tickmesh.js').Tick} tick */
function onTick(tick) {
  status.updates++;
  const sym = tick.symbol;
  let q = quotes.get(sym);
  if (!q) quotes.set(sym, (q = {}));
  const before = q.last;
  // A symbol moved to real time sends ticks without `delayed_ms`.
  if (!('delayed_ms' in tick)) delete q.delayed_ms;
  Object.assign(q, tick);
  if (watch.rows.has(sym)) {
    if (typeof before === 'number' && typeof q.last === 'number' && q.last !== before) {
      q.flash = q.last > before ? 1 : -1;
      q.changedAt = performance.now();
    }
    watch.dirty.add(sym);
  }
  // A leg of a chain no longer shown (a tick still in flight) is not kept.
  if (q.underlying && !onOptionTick(q) && !subscribed.has(sym)) quotes.delete(sym);
  if (sym === depth.symbol) depth.dirty = true;
  if (sym === chain.underlying) chain.spotDirty = true;
  blotter?.priced(sym);
}

client.on('snapshot', onTick);
client.on('tick', onTick);
client.on('trades', onTrades);
client.on('bars', onBars);
client.on('welcome', (w) => log(`connected to ${w.edge} (session ${w.session})`));
client.on('transport', (t) => {
  const why = t.transport === 'websocket' ? '' : ': no WebSocket got through';
  log(`live data over ${t.transport === 'poll' ? 'polling (snapshots every second or so)' : t.transport}${why}`, t.transport === 'websocket' ? 'info' : 'warn');
});
client.on('accountsnapshot', (snap) => blotter?.onSnapshot(snap));
client.on('account', (e) => blotter?.onEvent(e));
client.on('accountcontinuity', (c) => log(`${c.account}: events ${c.had + 1}–${c.seq - 1} never came`, 'error'));
client.on('error', (e) => {
  const about = e.symbol ?? e.account;
  log(`${e.code}${about ? ` ${about}` : ''}: ${e.message}`, e.code === 'slow_consumer' ? 'warn' : 'error');
  // Struck out only if the client dropped the subscription (a refusal of it), not for
  // an error about the symbol in another request, such as `chains`.
  const refused = e.symbol && !(e.symbol in client.subscriptions().symbols);
  const row = refused ? watch.rows.get(e.symbol ?? '') : undefined;
  if (row) {
    row.tr.classList.add('refused');
    row.tr.title = `${e.code}: ${e.message}`;
  }
});
client.on('gap', (g) => {
  const n = g.to_seq - g.from_seq + 1;
  const what = {
    snapshot: 'between its snapshot and the stream',
    reconnect: "lost while the edge's NATS link was down",
  }[g.reason] ?? 'lost upstream';
  log(`${g.symbol}: ${n} ticks ${what} (seq ${g.from_seq}–${g.to_seq})`, g.reason === 'snapshot' ? 'info' : 'warn');
  // Ticks that were lost (upstream, or while the edge was cut off) mark the row; those
  // between a snapshot read from KV and the stream were never owed.
  const row = g.reason !== 'snapshot' ? watch.rows.get(g.symbol) : undefined;
  if (row) {
    row.lost += n;
    row.tr.classList.add('gapped');
    row.tr.title = `${row.lost} ticks never reached the edge; the last gap: seq ${g.from_seq}–${g.to_seq}`;
  }
});
client.on('symbolstatus', (s) => {
  // Watchlist rows only: a chain's legs would flood the log.
  const row = watch.rows.get(s.symbol);
  if (!row) return;
  // One message says either: stale or fresh again, or a change of trading state.
  const freshness = s.stale !== row.tr.classList.contains('stale');
  row.tr.classList.toggle('stale', s.stale);
  if (typeof s.state === 'string') row.tr.dataset.state = s.state;
  row.tr.title = s.stale ? `stale: ${s.reason}` : s.state === 'halted' ? `halted: ${s.reason}` : '';
  const what = freshness || !s.state ? (s.stale ? 'stale' : 'fresh') : s.state;
  log(`${s.symbol}: ${what} (${s.reason})`, s.stale || s.state === 'halted' ? 'warn' : 'info');
});
client.on('continuity', (c) => log(`${c.symbol}: seq ${c.seq} (from ${c.from_seq}, after ${c.had}) skips ticks neither folded nor told lost`, 'error'));
client.on('status', (s) => {
  if (s.status === 'draining') log(`edge draining, moving in ${s.afterMs} ms`, 'warn');
});
client.on('reconnecting', (r) => log(`closed (${r.code}), reconnecting in ${r.delayMs} ms`, 'warn'));
client.on('close', (c) => {
  if (!c.terminal) return;
  const note = c.code === 4400 ? 'protocol error' : 'the token was refused; reload with a fresh one';
  put($('status-note'), `session ended (${c.code}): ${note}`);
  log(`closed for good (${c.code} ${c.reason})`, 'error');
});

/** @param {number} now */
function frame(now) {
  renderWatch(now);
  renderChain();
  renderDepth();
  renderTape();
  renderChart();
  blotter?.render();
  renderStatus(now);
  requestAnimationFrame(frame);
}

function start() {
  $('watch-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($('watch-input'));
    const added = input.value
      .split(/[\s,]+/)
      .filter(Boolean)
      .map(addSymbol)
      .some(Boolean);
    if (added) reconcile();
    input.value = '';
  });
  $('watchlist-body').addEventListener('click', (ev) => {
    const target = /** @type {HTMLElement} */ (ev.target);
    const sym = target.closest('tr')?.dataset.symbol;
    if (!sym) return;
    if (target.closest('.remove')) removeSymbol(sym);
    else showDepth(sym);
  });
  $('chain-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const underlying = /** @type {HTMLInputElement} */ ($('chain-underlying')).value;
    if (underlying.trim().toUpperCase() !== chain.underlying) loadChains(underlying);
  });
  $('chain-expiry').addEventListener('change', (ev) => {
    showChain(chain.underlying, /** @type {HTMLSelectElement} */ (ev.target).value);
  });
  $('chart-tf').addEventListener('click', (ev) => {
    const tf = /** @type {HTMLElement} */ (ev.target).closest('button')?.dataset.tf;
    if (tf) showChart(candles.symbol, /** @type {any} */ (tf));
  });
  new ResizeObserver(([entry]) => {
    candles.width = entry.contentRect.width;
    candles.height = entry.contentRect.height;
    candles.dirty = true;
  }).observe(/** @type {HTMLElement} */ ($('chart').parentElement));
  $('depth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($('depth-input'));
    showDepth(input.value);
    input.value = '';
  });

  const listed = params.get('symbols');
  for (const sym of listed ? listed.split(',') : DEFAULT_WATCHLIST) addSymbol(sym);
  buildLadder();
  showDepth(params.get('depth') || watch.symbols[0] || 'SPY');
  const underlying = params.get('chain') || 'AAPL';
  /** @type {HTMLInputElement} */ ($('chain-underlying')).value = underlying;
  loadChains(underlying);
  if (blotter) client.subscribeAccount(blotter.account).catch(requestFailed);
  client.connect();
  requestAnimationFrame(frame);
}

start();
