// @ts-check
/**
 * What a client holds and what it has passed on, apart from any socket: the
 * subscriptions to replay after a reconnect (each with its own mode and interval, tapes
 * with their `history`, bars per symbol and timeframe) and, per symbol, the last `seq`
 * passed on, the last print's `seq` and the newest bar. Both the connection
 * (`TickMeshClient`) and a tab of a shared connection (`SharedClient`) keep one, so the
 * protocol's ordering guarantees hold for what each of them passes on.
 *
 * @module tickmesh/ledger
 */

/** Protocol defaults for a subscription, sent explicitly so a replay is exact. */
export const DEFAULT_MODE = 'quote';
export const DEFAULT_INTERVAL_MS = 250;
/** Prints of history a tape starts with unless asked (the protocol's default; at most 500). */
export const DEFAULT_TRADES_HISTORY = 50;
/** Closed bars of history a bars subscription starts with unless asked (at most 1000). */
export const DEFAULT_BARS_HISTORY = 100;
/** The timeframes of stream `bars`. @type {readonly Timeframe[]} */
export const TIMEFRAMES = Object.freeze(/** @type {const} */ (['1s', '1m', '5m', '1h', '1d']));

const MODES = new Set(['ltp', 'quote', 'full']);
const STREAMS = new Set(['ticks', 'trades', 'bars']);

/** Error codes that mean "this symbol is not part of the session": never replayed. */
export const REFUSAL_CODES = new Set(['invalid_symbol', 'unknown_symbol', 'not_entitled', 'too_many_symbols']);
/** Error codes that mean "this account is not part of the session": never replayed. */
export const ACCOUNT_REFUSAL_CODES = new Set(['not_entitled', 'bad_request', 'too_many_symbols']);

/** An account name as the protocol takes it: a subject token, so no dots, wildcards or spaces. */
const ACCOUNT_RE = /^[A-Za-z0-9_-]{1,32}$/;

/**
 * @typedef {import('./tickmesh.js').Mode} Mode
 * @typedef {import('./tickmesh.js').Tick} Tick
 * @typedef {import('./tickmesh.js').Trade} Trade
 * @typedef {import('./tickmesh.js').Bar} Bar
 * @typedef {import('./tickmesh.js').Timeframe} Timeframe
 * @typedef {import('./tickmesh.js').SubscribeRequest} SubscribeRequest
 * @typedef {{symbols?: string[], chains?: string[], stream?: 'ticks' | 'trades' | 'bars', tf?: Timeframe}} UnsubscribeRequest
 * @typedef {import('./tickmesh.js').AccountEvent} AccountEvent
 * @typedef {import('./tickmesh.js').AccountSnapshot} AccountSnapshot
 * @typedef {{ticks: number, stale: number, prints: number, reprints: number, bars: number, rebars: number, accountEvents: number, accountRepeats: number}} Counts
 * @typedef {{last: number | undefined, resync: boolean}} HeldAccount the seq passed on last
 *   (undefined before the first snapshot), and whether the next snapshot starts the account
 *   over (after `unavailable`)
 */

/**
 * The option symbols of a chain share the OCC prefix root + YYMMDD.
 * @param {string} chain `"AAPL:2026-12-18"`
 * @returns {RegExp | null}
 */
export function chainSymbolPattern(chain) {
  const m = /^([A-Z0-9]+):(\d\d)(\d\d)-(\d\d)-(\d\d)$/.exec(chain);
  return m ? new RegExp(`^${m[1]}${m[3]}${m[4]}${m[5]}[CP]\\d{8}$`) : null;
}

/** The key of a symbol's bars of a timeframe (`/` is not in the symbol grammar). @param {string} symbol @param {string} tf */
export function barKey(symbol, tf) {
  return `${symbol}/${tf}`;
}

/** @param {unknown} list @returns {string[]} */
function upper(list) {
  return Array.isArray(list) ? list.map((s) => String(s).trim().toUpperCase()).filter(Boolean) : [];
}

/**
 * Why a request cannot name `stream` (and `chains`, and `tf`), if it cannot.
 * @param {unknown} stream @param {unknown} chains @param {unknown} tf
 */
function checkStream(stream, chains, tf) {
  if (!STREAMS.has(/** @type {string} */ (stream))) throw new TypeError(`unknown stream ${stream}`);
  if (stream !== 'ticks' && upper(chains).length) throw new TypeError(`a ${stream} subscription takes symbols, not chains`);
  if (stream === 'bars' && !TIMEFRAMES.includes(/** @type {any} */ (tf))) {
    throw new TypeError(`stream "bars" needs tf: one of ${TIMEFRAMES.join(', ')}, not ${tf}`);
  }
}

/** @param {string} name @param {unknown} value */
function checkCount(name, value) {
  if (!(Number.isInteger(value) && /** @type {number} */ (value) >= 0)) throw new TypeError(`${name} must be a whole number >= 0, not ${value}`);
}

/** `symbols` and `chains`, upper-cased, each only if not empty. @param {unknown} symbols @param {unknown} chains */
function names(symbols, chains) {
  /** @type {{symbols?: string[], chains?: string[]}} */
  const fields = {};
  const s = upper(symbols);
  const c = upper(chains);
  if (s.length) fields.symbols = s;
  if (c.length) fields.chains = c;
  return fields;
}

/**
 * The fields of the `subscribe` a request stands for, with the protocol's defaults
 * filled in; throws a TypeError for a value that would otherwise be replayed after every
 * reconnect.
 * @param {SubscribeRequest} req
 * @returns {Record<string, any>}
 */
export function subscribeFields({ symbols, chains, mode = DEFAULT_MODE, interval_ms = DEFAULT_INTERVAL_MS, stream = 'ticks', history, tf }) {
  checkStream(stream, chains, tf);
  if (stream !== 'trades') checkCount('interval_ms', interval_ms);
  if (stream !== 'ticks') {
    history ??= stream === 'trades' ? DEFAULT_TRADES_HISTORY : DEFAULT_BARS_HISTORY;
    checkCount('history', history);
    const fields = stream === 'trades' ? { stream, history } : { stream, tf, history, interval_ms };
    return { ...fields, symbols: upper(symbols) };
  }
  if (!MODES.has(mode)) throw new TypeError(`unknown mode ${mode}`);
  return { mode, interval_ms, ...names(symbols, chains) };
}

/**
 * The fields of the `subscribe` of an account; throws a TypeError for a name or seq the
 * edge would refuse (it would otherwise be replayed after every reconnect).
 * @param {string} account @param {{fromSeq?: number}} [opts]
 * @returns {{account: string, from_seq?: number}}
 */
export function accountFields(account, { fromSeq } = {}) {
  if (typeof account !== 'string' || !ACCOUNT_RE.test(account)) throw new TypeError(`an account name is 1 to 32 of A-Z a-z 0-9 _ -, not ${account}`);
  if (fromSeq === undefined) return { account };
  if (!(Number.isSafeInteger(fromSeq) && fromSeq >= 1)) throw new TypeError(`fromSeq must be a whole number >= 1, not ${fromSeq}`);
  return { account, from_seq: fromSeq };
}

/** The fields of the `unsubscribe` a request stands for. @param {UnsubscribeRequest} req @returns {Record<string, any>} */
export function unsubscribeFields({ symbols, chains, stream = 'ticks', tf }) {
  checkStream(stream, chains, tf);
  if (stream === 'trades') return { stream, symbols: upper(symbols) };
  if (stream === 'bars') return { stream, tf, symbols: upper(symbols) };
  return names(symbols, chains);
}

export class Ledger {
  /** @param {Counts} counts incremented as ticks, prints and bars are passed on or dropped */
  constructor(counts) {
    this.counts = counts;
    /** Subscriptions as sent, replayed after a reconnect. @type {Map<string, {mode: Mode, interval_ms: number}>} */
    this.symbols = new Map();
    /** @type {Map<string, {mode: Mode, interval_ms: number}>} */
    this.chains = new Map();
    /** Tapes as sent. @type {Map<string, {history: number}>} */
    this.tapes = new Map();
    /** Bars as sent, per `barKey`. @type {Map<string, {symbol: string, tf: Timeframe, history: number, interval_ms: number}>} */
    this.bars = new Map();
    /** Last seq passed on per symbol. @type {Map<string, number>} */
    this.seq = new Map();
    /** Whether the last tick passed on per symbol was delayed (`delayed_ms`). @type {Map<string, boolean>} */
    this.delayed = new Map();
    /** Seq of the last print passed on per symbol. @type {Map<string, number>} */
    this.tradeSeq = new Map();
    /** The newest bar passed on per `barKey`: its start and whether it was final. @type {Map<string, {t: number, final: boolean}>} */
    this.barLast = new Map();
    /** Accounts held, each with the seq passed on last: replayed with `from_seq` after it. @type {Map<string, HeldAccount>} */
    this.accounts = new Map();
  }

  /** Keeps the replay list in step with a request sent. @param {Record<string, any>} msg */
  record(msg) {
    if (typeof msg.account === 'string') {
      if (msg.op === 'unsubscribe') this.accounts.delete(msg.account);
      if (msg.op !== 'subscribe') return;
      const held = this.accounts.get(msg.account) ?? { last: undefined, resync: false };
      // From a seq: nothing before it is owed (and nothing passed on is passed on again).
      if (typeof msg.from_seq === 'number') held.last = Math.max(held.last ?? 0, msg.from_seq - 1);
      this.accounts.set(msg.account, held);
    } else if (msg.stream === 'bars') {
      for (const symbol of msg.symbols ?? []) {
        const key = barKey(symbol, msg.tf);
        if (msg.op === 'subscribe') {
          this.bars.set(key, { symbol, tf: msg.tf, history: msg.history, interval_ms: msg.interval_ms });
        } else if (msg.op === 'unsubscribe') {
          this.bars.delete(key);
          this.barLast.delete(key);
        }
      }
    } else if (msg.stream === 'trades') {
      for (const s of msg.symbols ?? []) {
        if (msg.op === 'subscribe') {
          this.tapes.set(s, { history: msg.history });
        } else if (msg.op === 'unsubscribe') {
          this.tapes.delete(s);
          this.tradeSeq.delete(s);
        }
      }
    } else if (msg.op === 'subscribe') {
      const sub = { mode: msg.mode, interval_ms: msg.interval_ms };
      for (const s of msg.symbols ?? []) this.symbols.set(s, sub);
      for (const c of msg.chains ?? []) this.chains.set(c, sub);
    } else if (msg.op === 'unsubscribe') {
      for (const s of msg.symbols ?? []) {
        this.symbols.delete(s);
        this.seq.delete(s);
      }
      for (const c of msg.chains ?? []) {
        this.chains.delete(c);
        const pattern = chainSymbolPattern(c);
        if (pattern) for (const s of this.seq.keys()) if (pattern.test(s)) this.seq.delete(s);
      }
    }
  }

  /**
   * Drops a refused symbol from the replay list: of `stream` (and, for bars, `tf`), or of
   * every stream when `stream` is undefined (a refusal outside any request).
   * @param {'ticks' | 'trades' | 'bars' | undefined} stream @param {string} symbol @param {string} [tf]
   */
  drop(stream, symbol, tf) {
    if (stream === undefined || stream === 'ticks') {
      this.symbols.delete(symbol);
      this.chains.delete(symbol);
    }
    if (stream === undefined || stream === 'trades') this.tapes.delete(symbol);
    if (stream === 'bars') this.bars.delete(barKey(symbol, tf ?? ''));
    if (stream === undefined) for (const [key, b] of this.bars) if (b.symbol === symbol) this.bars.delete(key);
  }

  /** Drops a refused account from the replay list. @param {string} account */
  dropAccount(account) {
    this.accounts.delete(account);
  }

  /**
   * The edge could not serve an account from where it was (`unavailable`): a fresh
   * snapshot follows, and it is asked for again after a reconnect until it came.
   * @param {string} account
   */
  resyncAccount(account) {
    const held = this.accounts.get(account);
    if (held) held.resync = true;
  }

  /**
   * The `subscribe` fields that replay every subscription: one per (mode, interval) group,
   * one per tape history, one per (timeframe, history, interval) of bars, and one per
   * account, from the seq after the last one passed on (from a snapshot the first time, and
   * after `unavailable` until the fresh snapshot came).
   * @returns {Array<Record<string, any>>}
   */
  replay() {
    /** @type {Map<string, {mode: Mode, interval_ms: number, symbols?: string[], chains?: string[]}>} */
    const ticks = new Map();
    /** @param {Map<string, {mode: Mode, interval_ms: number}>} from @param {'symbols' | 'chains'} field */
    const collect = (from, field) => {
      for (const [name, { mode, interval_ms }] of from) {
        const key = `${mode}/${interval_ms}`;
        let g = ticks.get(key);
        if (!g) ticks.set(key, (g = { mode, interval_ms }));
        (g[field] ??= []).push(name);
      }
    };
    collect(this.symbols, 'symbols');
    collect(this.chains, 'chains');
    /** @type {Map<number, {stream: 'trades', history: number, symbols: string[]}>} */
    const tapes = new Map();
    for (const [symbol, { history }] of this.tapes) {
      const g = tapes.get(history);
      if (g) g.symbols.push(symbol);
      else tapes.set(history, { stream: 'trades', history, symbols: [symbol] });
    }
    /** @type {Map<string, {stream: 'bars', tf: Timeframe, history: number, interval_ms: number, symbols: string[]}>} */
    const bars = new Map();
    for (const { symbol, tf, history, interval_ms } of this.bars.values()) {
      const key = `${tf}/${history}/${interval_ms}`;
      const g = bars.get(key);
      if (g) g.symbols.push(symbol);
      else bars.set(key, { stream: 'bars', tf, history, interval_ms, symbols: [symbol] });
    }
    const accounts = [...this.accounts].map(([account, { last, resync }]) => (last === undefined || resync ? { account } : { account, from_seq: last + 1 }));
    return [...ticks.values(), ...tapes.values(), ...bars.values(), ...accounts];
  }

  /** What `replay` sends, as `subscriptions()` of the client shows it. */
  subscriptions() {
    /** @type {Record<string, Record<string, {history: number, interval_ms: number}>>} */
    const bars = {};
    for (const { symbol, tf, history, interval_ms } of this.bars.values()) (bars[tf] ??= {})[symbol] = { history, interval_ms };
    return {
      symbols: Object.fromEntries(this.symbols),
      chains: Object.fromEntries(this.chains),
      trades: Object.fromEntries(this.tapes),
      bars,
      accounts: [...this.accounts.keys()].sort(),
    };
  }

  /**
   * Notes which side a tick of its symbol comes from, real time or delayed (`delayed_ms`),
   * and forgets the symbol's seq when it changed: an `auth` that moves a symbol between
   * them starts it over from the other side's snapshot, whose seqs may be lower (delayed)
   * or far higher (real time). True if the side changed.
   * @param {Tick} tick
   */
  side(tick) {
    if (!tick || typeof tick.symbol !== 'string') return false;
    const delayed = typeof tick.delayed_ms === 'number';
    const was = this.delayed.get(tick.symbol);
    this.delayed.set(tick.symbol, delayed);
    if (was === undefined || was === delayed) return false;
    this.seq.delete(tick.symbol);
    return true;
  }

  /**
   * Whether a tick is to be passed on: only if its seq is above the last one passed on for
   * its symbol (which it then becomes).
   * @param {Tick} tick
   */
  fresh(tick) {
    if (!tick || typeof tick.symbol !== 'string') return false;
    if (typeof tick.seq === 'number') {
      const last = this.seq.get(tick.symbol);
      if (last !== undefined && tick.seq <= last) {
        this.counts.stale++;
        return false;
      }
      this.seq.set(tick.symbol, tick.seq);
    }
    this.counts.ticks++;
    return true;
  }

  /**
   * The prints to pass on, per symbol: those not passed on before (a tape replayed after a
   * reconnect starts with a fresh history that overlaps what was shown). Prints of a tape
   * no longer held (still in flight after its `unsubscribe`) are dropped, so they cannot
   * hide the history of a later subscribe.
   * @param {boolean} snapshot
   * @param {Trade[]} trades
   * @returns {Array<{symbol: string, snapshot: boolean, trades: Trade[]}>}
   */
  prints(snapshot, trades) {
    /** @type {Map<string, Trade[]>} */
    const bySymbol = new Map();
    for (const t of trades) {
      if (!t || typeof t.seq !== 'number' || !this.tapes.has(t.symbol)) continue;
      const last = this.tradeSeq.get(t.symbol);
      if (last !== undefined && t.seq <= last) {
        this.counts.reprints++;
        continue;
      }
      this.tradeSeq.set(t.symbol, t.seq);
      this.counts.prints++;
      const list = bySymbol.get(t.symbol);
      if (list) list.push(t);
      else bySymbol.set(t.symbol, [t]);
    }
    return [...bySymbol].map(([symbol, list]) => ({ symbol, snapshot, trades: list }));
  }

  /**
   * The bars to pass on, per symbol: those not older than the newest one passed on (a
   * replayed subscription starts with a fresh history that overlaps what was shown). The
   * newest bar passed on is passed on again (an update, or its `final`) until its `final`
   * has been; bars of a subscription no longer held are dropped.
   * @param {Timeframe} tf
   * @param {boolean} snapshot
   * @param {Bar[]} bars
   * @returns {Array<{symbol: string, tf: Timeframe, snapshot: boolean, bars: Bar[]}>}
   */
  newBars(tf, snapshot, bars) {
    /** @type {Map<string, Bar[]>} */
    const bySymbol = new Map();
    for (const b of bars) {
      if (!b || typeof b.t !== 'number') continue;
      const key = barKey(b.symbol, tf);
      if (!this.bars.has(key)) continue;
      const last = this.barLast.get(key);
      if (last !== undefined && (b.t < last.t || (b.t === last.t && last.final))) {
        this.counts.rebars++;
        continue;
      }
      this.barLast.set(key, { t: b.t, final: b.final === true });
      this.counts.bars++;
      const list = bySymbol.get(b.symbol);
      if (list) list.push(b);
      else bySymbol.set(b.symbol, [b]);
    }
    return [...bySymbol].map(([symbol, list]) => ({ symbol, tf, snapshot, bars: list }));
  }

  /**
   * Whether an account's snapshot is to be passed on: one of an account held, the first,
   * one that starts the account over (after `unavailable`), or one not older than what was
   * passed on (a subscription asked for again). It sets the seq the events go on from.
   * @param {AccountSnapshot} snap
   */
  accountSnapshot(snap) {
    const held = snap && this.accounts.get(snap.account);
    if (!held || typeof snap.seq !== 'number') return false;
    if (!held.resync && held.last !== undefined && snap.seq < held.last) return false;
    held.resync = false;
    held.last = snap.seq;
    return true;
  }

  /**
   * What to do with an account event: `null` to drop it (of an account not held, or a seq
   * passed on already: a replay that overlaps what came before), else the seq passed on
   * before it (`had`; undefined for the first), which is below `seq - 1` when seqs were
   * skipped. Each seq of an account is passed on once, in order.
   * @param {AccountEvent} event
   * @returns {{had: number | undefined} | null}
   */
  accountEvent(event) {
    const held = event && this.accounts.get(event.account);
    if (!held || typeof event.seq !== 'number') return null;
    const had = held.last;
    if (had !== undefined && event.seq <= had) {
      this.counts.accountRepeats++;
      return null;
    }
    held.last = event.seq;
    this.counts.accountEvents++;
    return { had };
  }

  /** @param {string} symbol @param {Timeframe} tf @returns {{t: number, final: boolean} | undefined} */
  lastBar(symbol, tf) {
    const last = this.barLast.get(barKey(symbol, tf));
    return last && { ...last };
  }
}
