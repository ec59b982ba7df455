// @ts-check
/**
 * TickMesh browser client for the client protocol v1.
 *
 * One `TickMeshClient` owns one WebSocket at a time to `/v1/stream`. It keeps, across
 * reconnects, the two things a user would otherwise lose: the subscriptions (each with
 * its own mode and interval, replayed after every `welcome`) and the last `seq` seen per
 * symbol (so a snapshot or tick that is not newer than what was already delivered is
 * dropped, on this connection or the next one). Tapes (time and sales, `stream: "trades"`)
 * are kept the same way: replayed after every `welcome`, each with its own `history`, and
 * the last print's `seq` per symbol, so that the fresh history a replayed tape starts
 * with never delivers a print twice. Bars (`stream: "bars"`) are kept per symbol and
 * timeframe, replayed the same way with their `history` and `interval_ms`; a bar is
 * identified by symbol, timeframe and start `t`, so a replayed subscription's fresh
 * history passes on only the bars from the newest one delivered on, and never a bar
 * after its `final`.
 *
 * Reconnects use exponential backoff with full jitter, except after a `reconnect` notice
 * (the gateway is draining: wait its `after_ms`). Close codes 4400-4499 are terminal for
 * the token that was used: the client reconnects only if `getToken` yields a different one.
 *
 * @module tickmesh
 */

import { encode as msgpackEncode, decode as msgpackDecode } from './msgpack.js';

/** WebSocket subprotocol per encoding. */
export const SUBPROTOCOLS = Object.freeze({
  json: 'tickmesh.v1.json',
  msgpack: 'tickmesh.v1.msgpack',
});

/** Protocol defaults for a subscription, sent explicitly so a replay is exact. */
export const DEFAULT_MODE = 'quote';
export const DEFAULT_INTERVAL_MS = 250;
/** Prints of history a tape starts with unless asked (the protocol's default; at most 500). */
export const DEFAULT_TRADES_HISTORY = 50;
/** Closed bars of history a bars subscription starts with unless asked (at most 1000). */
export const DEFAULT_BARS_HISTORY = 100;
/** The timeframes of stream `bars`. */
export const TIMEFRAMES = Object.freeze(['1s', '1m', '5m', '1h', '1d']);

/** @type {Readonly<Record<string, string>>} request op -> reply type */
const REPLY_TYPE = Object.freeze({
  subscribe: 'subscribed',
  unsubscribe: 'unsubscribed',
  list: 'subscriptions',
  chains: 'chains',
  ping: 'pong',
  auth: 'authed',
});

const MODES = new Set(['ltp', 'quote', 'full']);
const STREAMS = new Set(['ticks', 'trades', 'bars']);

/** Error codes that mean "this symbol is not part of the session": never replayed. */
const REFUSAL_CODES = new Set(['invalid_symbol', 'unknown_symbol', 'not_entitled', 'too_many_symbols']);

const OPEN = 1;

/**
 * @typedef {'ltp' | 'quote' | 'full'} Mode
 *
 * @typedef {object} Tick
 * @property {string} symbol
 * @property {number} seq
 * @property {number} [from_seq] the first seq a live update stands for, when below `seq`
 * @property {number} [epoch]
 * @property {number} [ts]
 * @property {number} [src_ts]
 * @property {string} [kind]
 * @property {number} [last]
 * @property {number} [last_size]
 * @property {number} [bid]
 * @property {number} [ask]
 * @property {number} [bid_size]
 * @property {number} [ask_size]
 * @property {number} [volume]
 * @property {number} [open]
 * @property {number} [high]
 * @property {number} [low]
 * @property {number} [prev_close]
 * @property {{bids: Array<[number, number]>, asks: Array<[number, number]>}} [depth]
 * @property {string} [underlying]
 * @property {string} [expiry]
 * @property {number} [strike]
 * @property {'C' | 'P'} [right]
 * @property {number} [iv]
 * @property {number} [delta]
 * @property {number} [gamma]
 * @property {number} [theta]
 * @property {number} [vega]
 * @property {'pre_open' | 'open' | 'halted' | 'closed'} [state] the instrument's trading state
 *
 * @typedef {object} Trade one print of a symbol's tape
 * @property {string} symbol
 * @property {number} seq the seq of the tick at which it printed
 * @property {number} trade_id unique per symbol
 * @property {number} price
 * @property {number} size
 * @property {number} ts µs since the Unix epoch
 * @property {number} [src_ts] µs, when the source stamped it
 * @property {string[]} conditions `["opening"]` for the opening print, else empty
 *
 * @typedef {object} TradesEvent prints of one symbol, oldest first, none delivered before
 * @property {string} symbol
 * @property {boolean} snapshot from the history a tape starts with (after a reconnect,
 *   only its prints newer than those delivered): never a reason to clear what is shown
 * @property {Trade[]} trades
 *
 * @typedef {'1s' | '1m' | '5m' | '1h' | '1d'} Timeframe
 *
 * @typedef {object} Bar one OHLCV bar of a symbol and timeframe
 * @property {string} symbol
 * @property {number} t its start, µs since the Unix epoch (a multiple of the timeframe;
 *   days start at 00:00 UTC): with the symbol and timeframe, what identifies the bar
 * @property {number} open
 * @property {number} high
 * @property {number} low
 * @property {number} close
 * @property {number} volume
 * @property {number} trades prints in it
 * @property {boolean} final true once it closed: it never changes again
 *
 * @typedef {object} BarsEvent bars of one symbol and timeframe, oldest first
 * @property {string} symbol
 * @property {Timeframe} tf
 * @property {boolean} snapshot from the history a subscription starts with (its closed
 *   bars, then the bar in progress); after a reconnect only the bars from the newest one
 *   delivered on: never a reason to clear what is shown
 * @property {Bar[]} bars each replaces a bar delivered before with the same `t`, if any
 *   (the bar in progress, updated; or its `final`)
 *
 * @typedef {object} SymbolStatus a subscribed symbol's trading state changed (right before
 *   the first update in the new state), or it turned stale or fresh again
 * @property {string} symbol
 * @property {'pre_open' | 'open' | 'halted' | 'closed'} [state]
 * @property {boolean} stale
 * @property {string} reason
 * @property {number} ts
 *
 * @typedef {object} Welcome
 * @property {'welcome'} type
 * @property {number} protocol
 * @property {string} session
 * @property {string} edge
 * @property {number} heartbeat_ms
 * @property {{max_symbols: number, max_msgs_per_s: number, min_interval_ms: number}} limits
 *
 * @typedef {object} ServerError
 * @property {'error'} type
 * @property {number} [id]
 * @property {string} code
 * @property {string} message
 * @property {string} [symbol]
 * @property {number} [interval_ms]
 *
 * @typedef {object} SubscribeRequest
 * @property {string[]} [symbols]
 * @property {string[]} [chains] `"UNDERLYING:YYYY-MM-DD"`
 * @property {Mode} [mode] default `quote`
 * @property {number} [interval_ms] default 250; 0 = every tick
 * @property {'ticks' | 'trades' | 'bars'} [stream] default `ticks`; `trades` follows the
 *   tapes of `symbols` (no `chains`; `mode` and `interval_ms` are not used); `bars` their
 *   bars of timeframe `tf` (no `chains`; `mode` is not used)
 * @property {number} [history] `trades`: prints of history first, default 50 (the
 *   server serves at most 500); `bars`: closed bars first, default 100 (at most 1000)
 * @property {Timeframe} [tf] `bars`: the timeframe, required
 *
 * @typedef {object} CloseInfo
 * @property {number} code
 * @property {string} reason
 * @property {boolean} wasClean
 * @property {boolean} terminal the code is 4400-4499
 * @property {boolean} willReconnect
 *
 * @typedef {object} ReconnectInfo
 * @property {number} attempt 1 for the first try after a drop
 * @property {number} delayMs
 * @property {number} code the close code that caused it
 *
 * @typedef {'idle' | 'connecting' | 'open' | 'draining' | 'reconnecting' | 'closed'} Status
 *
 * @typedef {object} StatusInfo
 * @property {Status} status
 * @property {number} [code]
 * @property {string} [reason]
 * @property {number} [delayMs]
 * @property {number} [afterMs]
 *
 * @typedef {object} EventMap
 * @property {{url: string, protocol: string}} open
 * @property {Welcome} welcome
 * @property {Tick} snapshot
 * @property {Tick} tick
 * @property {{type: 'hb', ts: number, lag_ms: number}} heartbeat
 * @property {ServerError} error
 * @property {ReconnectInfo} reconnecting
 * @property {CloseInfo} close
 * @property {StatusInfo} status
 * @property {SymbolStatus} symbolstatus
 * @property {TradesEvent} trades prints of a tape, per symbol: its history first
 *   (`snapshot: true`), then every later print; each print once, across reconnects too
 * @property {BarsEvent} bars bars, per symbol and timeframe: the history (`snapshot:
 *   true`), then the bar in progress as it changes and each bar once more with `final:
 *   true` when it closes; keep them by `t`, replacing a bar with the same `t`. Nothing
 *   older than the newest bar delivered, and nothing after a bar's `final`, is passed on,
 *   across reconnects too
 * @property {Record<string, any>} message every decoded server message, before the others
 *
 * @typedef {object} ClientOptions
 * @property {string} [url] `ws(s)://host/v1/stream`; default: the page's host
 * @property {string | null} [token] sent as the `token` query parameter
 * @property {() => Promise<string | null | undefined> | string | null | undefined} [getToken]
 *   called before each reconnect (and before the first connect when `token` is absent)
 * @property {'json' | 'msgpack'} [encoding] default `json`
 * @property {number} [backoffBaseMs] first backoff ceiling, default 500
 * @property {number} [backoffMaxMs] backoff cap, default 30000
 * @property {number} [requestTimeoutMs] a request without reply is rejected after this, default 10000
 * @property {number} [maxQueued] requests held while disconnected; past it they are rejected, default 256
 * @property {number} [connectTimeoutMs] no `welcome` within this: the attempt is abandoned, default 10000
 * @property {number} [idleHeartbeats] heartbeat periods without any message before the
 *   connection is declared dead and replaced, default 3
 * @property {new (url: string, protocols?: string | string[]) => WebSocket} [WebSocket]
 * @property {(fn: () => void, ms: number) => any} [setTimeout]
 * @property {(handle: any) => void} [clearTimeout]
 * @property {() => number} [random] in [0, 1)
 * @property {() => number} [now] milliseconds
 */

/**
 * Why a request failed. `code` is the server's error code (with the `error` message as
 * `detail`), or one of the client's own: `disconnected` (the connection dropped before
 * the reply), `timeout`, `queue_full` (too many requests held while disconnected),
 * `closed` (the client was closed, or closed for good by a terminal close code).
 */
export class TickMeshError extends Error {
  /** @param {string} code @param {string} message @param {Record<string, any>} [detail] */
  constructor(code, message, detail) {
    super(message);
    this.name = 'TickMeshError';
    this.code = code;
    this.detail = detail;
  }
}

/**
 * The stream URL for a page served by the edge.
 * @param {{protocol: string, host: string}} loc usually `window.location`
 */
export function streamUrl(loc) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/v1/stream`;
}

/** @param {number} code */
export function isTerminalClose(code) {
  return code >= 4400 && code <= 4499;
}

/**
 * Full-jitter backoff: uniform in [0, min(max, base * 2^attempt)].
 * @param {number} attempt 0 for the first retry
 * @param {number} baseMs
 * @param {number} maxMs
 * @param {number} r a random number in [0, 1)
 */
export function backoffDelay(attempt, baseMs, maxMs, r) {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(r * ceiling);
}

/**
 * The option symbols of a chain share the OCC prefix root + YYMMDD.
 * @param {string} chain `"AAPL:2026-12-18"`
 * @returns {RegExp | null}
 */
function chainSymbolPattern(chain) {
  const m = /^([A-Z0-9]+):(\d\d)(\d\d)-(\d\d)-(\d\d)$/.exec(chain);
  return m ? new RegExp(`^${m[1]}${m[3]}${m[4]}${m[5]}[CP]\\d{8}$`) : null;
}

/**
 * Why a request cannot name `stream` (and `chains`, and `tf`), if it cannot.
 * @param {unknown} stream @param {unknown} chains @param {unknown} tf
 * @returns {TypeError | null}
 */
function badStream(stream, chains, tf) {
  if (!STREAMS.has(/** @type {string} */ (stream))) return new TypeError(`unknown stream ${stream}`);
  if (stream !== 'ticks' && upper(chains).length) return new TypeError(`a ${stream} subscription takes symbols, not chains`);
  if (stream === 'bars' && !TIMEFRAMES.includes(/** @type {any} */ (tf))) {
    return new TypeError(`stream "bars" needs tf: one of ${TIMEFRAMES.join(', ')}, not ${tf}`);
  }
  return null;
}

/** Why `value` cannot be the request's `name`, if it cannot. @param {string} name @param {unknown} value */
function badCount(name, value) {
  return Number.isInteger(value) && /** @type {number} */ (value) >= 0 ? null : new TypeError(`${name} must be a whole number >= 0, not ${value}`);
}

/** The key of a symbol's bars of a timeframe (`/` is not in the symbol grammar). @param {string} symbol @param {string} tf */
function barKey(symbol, tf) {
  return `${symbol}/${tf}`;
}

/** @param {unknown} list @returns {string[]} */
function upper(list) {
  return Array.isArray(list) ? list.map((s) => String(s).trim().toUpperCase()).filter(Boolean) : [];
}

/**
 * @typedef {object} Pending
 * @property {Record<string, any>} msg
 * @property {(v: any) => void} resolve
 * @property {(e: Error) => void} reject
 * @property {any} timer
 */

export class TickMeshClient {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    const g = /** @type {any} */ (globalThis);
    this.url = options.url ?? (g.location ? streamUrl(g.location) : '');
    if (!this.url) throw new TypeError('TickMeshClient: no url and no page location');
    new URL(this.url); // throws now rather than at every connection attempt
    /** @type {string | null} */
    this.token = options.token ?? null;
    const encoding = options.encoding ?? 'json';
    if (!(encoding in SUBPROTOCOLS)) throw new TypeError(`TickMeshClient: unknown encoding ${encoding}`);
    /** @type {'json' | 'msgpack'} */
    this.encoding = encoding;
    this.getToken = options.getToken ?? null;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 30000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.maxQueued = options.maxQueued ?? 256;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.idleHeartbeats = options.idleHeartbeats ?? 3;
    this._WebSocket = options.WebSocket ?? g.WebSocket;
    this._setTimeout = options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
    this._clearTimeout = options.clearTimeout ?? ((h) => clearTimeout(h));
    this._random = options.random ?? Math.random;
    this._now = options.now ?? Date.now;

    /** @type {Status} */
    this.status = 'idle';
    /** @type {Welcome | null} */
    this.welcome = null;
    /** Latest `lag_ms` from a heartbeat. @type {number | null} */
    this.lagMs = null;
    /**
     * `reconnects`: connections opened after the first; `stale`: ticks dropped by seq;
     * `conflated`: ticks the gateway folded into the updates it sent; `lost`: ticks it said
     * never reached it (`gap`); `broken`: updates that skipped seqs neither folded nor told;
     * `prints`: trade prints delivered; `reprints`: prints dropped as delivered before (a
     * replayed tape's history); `bars`: bars (and updates of bars) delivered; `rebars`:
     * bars dropped as older than the newest delivered, or after its `final`.
     */
    this.stats = { reconnects: 0, ticks: 0, stale: 0, conflated: 0, lost: 0, broken: 0, prints: 0, reprints: 0, bars: 0, rebars: 0 };
    /** Per symbol since its last tick: the highest seq and the count of `gap`s told. @type {Map<string, {to: number, n: number}>} */
    this._told = new Map();
    /** Epoch of the last tick delivered per symbol. @type {Map<string, number | undefined>} */
    this._epoch = new Map();

    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** Subscriptions as sent, replayed after a reconnect. @type {Map<string, {mode: Mode, interval_ms: number}>} */
    this._symbols = new Map();
    /** @type {Map<string, {mode: Mode, interval_ms: number}>} */
    this._chains = new Map();
    /** Last seq delivered per symbol. @type {Map<string, number>} */
    this._seq = new Map();
    /** Tapes as sent, replayed after a reconnect. @type {Map<string, {history: number}>} */
    this._tapes = new Map();
    /** Seq of the last print delivered per symbol. @type {Map<string, number>} */
    this._tradeSeq = new Map();
    /** Bars as sent, per `barKey`, replayed after a reconnect. @type {Map<string, {symbol: string, tf: Timeframe, history: number, interval_ms: number}>} */
    this._bars = new Map();
    /** The newest bar delivered per `barKey`: its start and whether it was final. @type {Map<string, {t: number, final: boolean}>} */
    this._barLast = new Map();
    /** Sent, awaiting a reply. @type {Map<number, Pending>} */
    this._pending = new Map();
    /** Made while not connected, sent after the next `welcome`. @type {Pending[]} */
    this._outbox = [];
    /** Set while a subscribe answered `unavailable` waits to be asked again. @type {any} */
    this._unavailableTimer = null;
    this._nextId = 1;

    /** @type {WebSocket | null} */
    this._ws = null;
    this._ready = false; // welcome received on _ws
    this._connectedBefore = false;
    this._attempt = 0; // consecutive reconnects without a welcome
    this._retryTimer = null;
    this._idleTimer = null;
    this._lastRx = 0;
    /** Set by a `reconnect` notice: the earliest time to come back. @type {number | null} */
    this._drainUntil = null;
    this._stopped = true;
    this._generation = 0; // invalidates async work of an earlier connect()
  }

  // ---- events -------------------------------------------------------------------

  /**
   * @template {keyof EventMap} K
   * @param {K} type
   * @param {(detail: EventMap[K]) => void} fn
   * @returns {() => void} removes the listener
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /**
   * @template {keyof EventMap} K
   * @param {K} type
   * @param {(detail: EventMap[K]) => void} fn
   */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** @param {keyof EventMap} type @param {any} detail */
  _emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of set) {
      try {
        fn(detail);
      } catch (err) {
        // A failing listener must not break the stream; surface it outside this loop.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  /** @param {Status} status @param {Omit<StatusInfo, 'status'>} [detail] */
  _setStatus(status, detail) {
    this.status = status;
    this._emit('status', { status, ...detail });
  }

  // ---- connection -----------------------------------------------------------------

  /** Starts connecting (no-op while connected or already trying). */
  connect() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._generation++;
    this._attempt = 0;
    this._drainUntil = null;
    this._dial(this.token == null);
    return this;
  }

  /**
   * Closes for good: no reconnect; requests still waiting are rejected. Subscriptions and
   * seq state are kept, so a later `connect()` resumes where this left off.
   * @param {number} [code] @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    if (this._stopped && !this._ws) return;
    this._stopped = true;
    this._generation++;
    this._clearRetry();
    const ws = this._ws;
    if (ws) {
      this._drop(ws);
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
    const err = new TickMeshError('closed', 'client closed');
    this._failPending(err);
    for (const p of this._outbox.splice(0)) p.reject(err);
    this._emit('close', { code, reason, wasClean: true, terminal: false, willReconnect: false });
    this._setStatus('closed', { code, reason });
  }

  /** @param {boolean} refreshToken */
  async _dial(refreshToken) {
    const gen = this._generation;
    this._setStatus('connecting');
    if (refreshToken && this.getToken) {
      try {
        const fresh = await this.getToken();
        if (fresh) this.token = fresh;
      } catch {
        // keep the token we have; the server will say if it is no good
      }
      if (gen !== this._generation || this._stopped) return;
    }
    const url = new URL(this.url);
    if (this.token) url.searchParams.set('token', this.token);
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new this._WebSocket(url.toString(), [SUBPROTOCOLS[this.encoding]]);
    } catch {
      this._afterClose({ code: 1006, reason: 'could not create WebSocket', wasClean: false });
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._ready = false;
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (ev) => this._onMessage(ws, ev);
    ws.onclose = (ev) => this._onClose(ws, ev);
    ws.onerror = () => {}; // a close event always follows
    this._armIdle(this.connectTimeoutMs);
  }

  /** @param {WebSocket} ws */
  _onOpen(ws) {
    if (ws !== this._ws) return;
    if (this._connectedBefore) this.stats.reconnects++;
    this._connectedBefore = true;
    this._setStatus('open');
    this._emit('open', { url: this.url, protocol: ws.protocol || SUBPROTOCOLS[this.encoding] });
  }

  /** @param {WebSocket} ws @param {{code?: number, reason?: string, wasClean?: boolean}} ev */
  _onClose(ws, ev) {
    if (ws !== this._ws) return;
    this._drop(ws);
    this._afterClose({ code: ev.code ?? 1006, reason: ev.reason ?? '', wasClean: ev.wasClean ?? false });
  }

  /** Forgets the current socket and everything bound to it. @param {WebSocket} ws */
  _drop(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this._ws === ws) this._ws = null;
    this._ready = false;
    if (this._idleTimer !== null) this._clearTimeout(this._idleTimer);
    this._idleTimer = null;
  }

  /** @param {{code: number, reason: string, wasClean: boolean}} info */
  async _afterClose({ code, reason, wasClean }) {
    this._failPending(new TickMeshError('disconnected', `connection closed (${code})`, { code, reason }));
    const terminal = isTerminalClose(code);
    let delayMs;
    if (terminal) {
      const gen = this._generation;
      const used = this.token;
      let fresh = null;
      if (this.getToken) {
        try {
          fresh = (await this.getToken()) || null;
        } catch {
          fresh = null;
        }
        if (gen !== this._generation || this._stopped) return;
      }
      if (!fresh || fresh === used) {
        this._stopped = true;
        this._emit('close', { code, reason, wasClean, terminal, willReconnect: false });
        const err = new TickMeshError('closed', `connection closed for good (${code})`, { code, reason });
        for (const p of this._outbox.splice(0)) p.reject(err);
        this._setStatus('closed', { code, reason });
        return;
      }
      this.token = fresh;
      delayMs = this._nextBackoff();
    } else if (this._drainUntil !== null) {
      delayMs = Math.max(0, this._drainUntil - this._now());
      this._attempt = 0; // a drain is not a failure
    } else if (code === 4029) {
      // Rate limited: come back slowly, in the upper half of the cap.
      this._attempt++;
      delayMs = Math.floor(this.backoffMaxMs * (0.5 + this._random() / 2));
    } else {
      delayMs = this._nextBackoff();
    }
    this._drainUntil = null;
    this._emit('close', { code, reason, wasClean, terminal, willReconnect: true });
    this._scheduleReconnect(delayMs, code, !terminal);
  }

  _nextBackoff() {
    return backoffDelay(this._attempt++, this.backoffBaseMs, this.backoffMaxMs, this._random());
  }

  /** @param {number} delayMs @param {number} code @param {boolean} refreshToken */
  _scheduleReconnect(delayMs, code, refreshToken) {
    const gen = this._generation;
    this._emit('reconnecting', { attempt: Math.max(this._attempt, 1), delayMs, code });
    this._setStatus('reconnecting', { code, delayMs });
    this._retryTimer = this._setTimeout(() => {
      this._retryTimer = null;
      if (gen === this._generation && !this._stopped) this._dial(refreshToken);
    }, delayMs);
  }

  _clearRetry() {
    if (this._retryTimer !== null) this._clearTimeout(this._retryTimer);
    this._retryTimer = null;
  }

  /**
   * Watches the current socket: once nothing has arrived for `ms`, it is presumed dead
   * (a half-open TCP connection can stay silent for minutes) and replaced. Checked on a
   * timer rather than re-armed per message, which would cost a timer per tick frame.
   * @param {number} ms 0 disables the watch
   */
  _armIdle(ms) {
    if (this._idleTimer !== null) this._clearTimeout(this._idleTimer);
    this._idleTimer = null;
    this._lastRx = this._now();
    if (!(ms > 0)) return;
    const ws = this._ws;
    /** @param {number} wait */
    const check = (wait) => {
      this._idleTimer = this._setTimeout(() => {
        this._idleTimer = null;
        if (!ws || ws !== this._ws) return;
        const quiet = this._now() - this._lastRx;
        if (quiet < ms) return check(ms - quiet);
        this._drop(ws);
        try {
          ws.close(4000, 'no data');
        } catch {
          // it is going anyway
        }
        this._afterClose({ code: 1006, reason: `no data within ${ms} ms`, wasClean: false });
      }, wait);
    };
    check(ms);
  }

  // ---- inbound --------------------------------------------------------------------

  /** @param {WebSocket} ws @param {{data: any}} ev */
  _onMessage(ws, ev) {
    if (ws !== this._ws) return;
    let msg;
    try {
      msg = typeof ev.data === 'string' ? JSON.parse(ev.data) : msgpackDecode(ev.data);
    } catch (err) {
      this._emit('error', { type: 'error', code: 'client_decode', message: String(err) });
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    this._lastRx = this._now();
    this._emit('message', msg);
    switch (msg.type) {
      case 'ticks':
        if (Array.isArray(msg.ticks)) {
          for (const tick of msg.ticks) {
            const had = this._seq.get(tick?.symbol);
            if (!this._fresh(tick)) continue;
            this._continuity(tick, had);
            this._emit('tick', tick);
          }
        }
        return;
      case 'trades':
        if (Array.isArray(msg.trades)) this._onTrades(msg.snapshot === true, msg.trades);
        return;
      case 'bars':
        if (Array.isArray(msg.bars)) this._onBars(msg.tf, msg.snapshot === true, msg.bars);
        return;
      case 'status':
        // A subscribed symbol changed trading state, or turned stale or fresh (the
        // server's `status`, not the connection's, which is the `status` event).
        this._emit('symbolstatus', msg);
        return;
      case 'gap': {
        const n = Math.max(0, msg.to_seq - msg.from_seq + 1) || 0;
        this.stats.lost += n;
        const told = this._told.get(msg.symbol) ?? { to: 0, n: 0 };
        this._told.set(msg.symbol, { to: Math.max(told.to, msg.to_seq), n: told.n + n });
        this._emit('gap', msg);
        return;
      }
      case 'snapshot': {
        const { type, ...tick } = msg;
        if (this._fresh(tick)) {
          this._told.delete(tick.symbol);
          this._epoch.set(tick.symbol, tick.epoch);
          this._emit('snapshot', tick);
        }
        return;
      }
      case 'hb':
        this.lagMs = msg.lag_ms;
        this._emit('heartbeat', msg);
        return;
      case 'welcome':
        return this._onWelcome(msg);
      case 'reconnect': {
        const afterMs = Math.max(0, Number(msg.after_ms) || 0);
        this._drainUntil = this._now() + afterMs;
        this._setStatus('draining', { afterMs, reason: msg.reason });
        return;
      }
      case 'error':
        return this._onError(msg);
      default:
        this._settle(msg);
    }
  }

  /**
   * Passes a tick on only if its seq is above the last one delivered for its symbol.
   * @param {Tick} tick
   */
  _fresh(tick) {
    if (!tick || typeof tick.symbol !== 'string') return false;
    if (typeof tick.seq === 'number') {
      const last = this._seq.get(tick.symbol);
      if (last !== undefined && tick.seq <= last) {
        this.stats.stale++;
        return false;
      }
      this._seq.set(tick.symbol, tick.seq);
    }
    this.stats.ticks++;
    return true;
  }

  /**
   * Accounts for the seqs between what the client had of a symbol and a live update: each
   * was folded into an update (`from_seq`, docs/protocol.md) or told lost by a `gap`. An
   * update that skips seqs neither folded nor told is counted in `stats.broken` and
   * emitted as `continuity`. Overlap (after a reconnect) is not a break.
   * @param {Tick} tick
   * @param {number | undefined} had
   */
  _continuity(tick, had) {
    const told = this._told.get(tick.symbol) ?? { to: 0, n: 0 };
    this._told.delete(tick.symbol);
    const epoch = this._epoch.get(tick.symbol);
    this._epoch.set(tick.symbol, tick.epoch);
    // A new epoch (an ingest fail-over or restart) jumps seq forward: nothing is owed.
    if (had === undefined || typeof tick.seq !== 'number' || epoch !== tick.epoch) return;
    this.stats.conflated += Math.max(0, tick.seq - had - 1 - told.n);
    const from = typeof tick.from_seq === 'number' ? tick.from_seq : tick.seq;
    if (from > Math.max(had, told.to) + 1) {
      this.stats.broken++;
      this._emit('continuity', { symbol: tick.symbol, seq: tick.seq, from_seq: from, had });
    }
  }

  /**
   * Passes on, per symbol, the prints not delivered before: a tape replayed after a
   * reconnect starts with a fresh history that overlaps what was shown. Prints of a tape
   * no longer held (still in flight after its `unsubscribe`) are dropped, so they cannot
   * hide the history of a later subscribe.
   * @param {boolean} snapshot
   * @param {Trade[]} trades
   */
  _onTrades(snapshot, trades) {
    /** @type {Map<string, Trade[]>} */
    const bySymbol = new Map();
    for (const t of trades) {
      if (!t || typeof t.seq !== 'number' || !this._tapes.has(t.symbol)) continue;
      const last = this._tradeSeq.get(t.symbol);
      if (last !== undefined && t.seq <= last) {
        this.stats.reprints++;
        continue;
      }
      this._tradeSeq.set(t.symbol, t.seq);
      this.stats.prints++;
      const list = bySymbol.get(t.symbol);
      if (list) list.push(t);
      else bySymbol.set(t.symbol, [t]);
    }
    for (const [symbol, list] of bySymbol) this._emit('trades', { symbol, snapshot, trades: list });
  }

  /**
   * Passes on, per symbol, the bars not older than the newest one delivered: a bars
   * subscription replayed after a reconnect starts with a fresh history that overlaps
   * what was shown. The newest bar delivered is passed on again (an update, or its
   * `final`) until its `final` has been; bars of a subscription no longer held are dropped.
   * @param {Timeframe} tf
   * @param {boolean} snapshot
   * @param {Bar[]} bars
   */
  _onBars(tf, snapshot, bars) {
    /** @type {Map<string, Bar[]>} */
    const bySymbol = new Map();
    for (const b of bars) {
      if (!b || typeof b.t !== 'number') continue;
      const key = barKey(b.symbol, tf);
      if (!this._bars.has(key)) continue;
      const last = this._barLast.get(key);
      if (last !== undefined && (b.t < last.t || (b.t === last.t && last.final))) {
        this.stats.rebars++;
        continue;
      }
      this._barLast.set(key, { t: b.t, final: b.final === true });
      this.stats.bars++;
      const list = bySymbol.get(b.symbol);
      if (list) list.push(b);
      else bySymbol.set(b.symbol, [b]);
    }
    for (const [symbol, list] of bySymbol) this._emit('bars', { symbol, tf, snapshot, bars: list });
  }

  /** @param {Welcome} msg */
  _onWelcome(msg) {
    this.welcome = msg;
    this._ready = true;
    this._attempt = 0;
    this._armIdle(msg.heartbeat_ms > 0 ? msg.heartbeat_ms * this.idleHeartbeats : 0);
    this._resubscribe();
    for (const p of this._outbox.splice(0)) this._send(p);
    this._emit('welcome', msg);
  }

  /** @param {ServerError} msg */
  _onError(msg) {
    const id = msg.id;
    const p = id != null ? this._pending.get(id) : undefined;
    // The edge cannot serve yet (its reference data is loading, its upstream is down):
    // everything held is asked for again once `retry_ms` has passed, jittered.
    if (msg.code === 'unavailable' && p?.msg.op === 'subscribe' && this._unavailableTimer === null) {
      const wait = Math.max(100, Number(msg.retry_ms) || 1000) * (1 + this._random() * 0.25);
      this._unavailableTimer = this._setTimeout(() => {
        this._unavailableTimer = null;
        if (this._ready) this._resubscribe();
      }, wait);
    }
    // Only a refusal of a subscribe (or an event outside any request) ends a subscription:
    // `chains AAPL` answered with `unknown_symbol AAPL` says nothing about the AAPL quote.
    // A refusal outside any request may be about any stream: all of the symbol's are
    // dropped. A refusal of a bars subscribe drops that timeframe's bars of it only.
    if (msg.symbol && REFUSAL_CODES.has(msg.code) && (id == null || p?.msg.op === 'subscribe')) {
      const stream = id == null ? undefined : p?.msg.stream ?? 'ticks';
      if (stream === undefined || stream === 'ticks') {
        this._symbols.delete(msg.symbol);
        this._chains.delete(msg.symbol);
      }
      if (stream === undefined || stream === 'trades') this._tapes.delete(msg.symbol);
      if (stream === 'bars') this._bars.delete(barKey(msg.symbol, p?.msg.tf));
      if (stream === undefined) for (const [key, b] of this._bars) if (b.symbol === msg.symbol) this._bars.delete(key);
    }
    // A refused symbol does not fail its subscribe: `subscribed` lists what was accepted.
    if (id != null && p && !(p.msg.op === 'subscribe' && msg.symbol)) {
      this._finish(id);
      p.reject(new TickMeshError(msg.code, msg.message, { server: msg }));
    }
    this._emit('error', msg);
  }

  /** @param {Record<string, any>} msg */
  _settle(msg) {
    if (msg.id == null) return;
    const p = this._pending.get(msg.id);
    if (!p || REPLY_TYPE[p.msg.op] !== msg.type) return;
    this._finish(msg.id);
    if (msg.type === 'authed') this.token = p.msg.token;
    p.resolve(msg);
  }

  /** @param {number} id */
  _finish(id) {
    const p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    if (p.timer !== null) this._clearTimeout(p.timer);
  }

  /** @param {Error} err */
  _failPending(err) {
    for (const [id, p] of this._pending) {
      this._finish(id);
      p.reject(err);
    }
  }

  // ---- outbound -------------------------------------------------------------------

  /**
   * Replays every subscription: one request per (mode, interval) group, one per tape
   * history, one per (timeframe, history, interval) of bars.
   */
  _resubscribe() {
    /** @type {Map<string, {mode: Mode, interval_ms: number, symbols: string[], chains: string[]}>} */
    const groups = new Map();
    /** @param {Map<string, {mode: Mode, interval_ms: number}>} from @param {'symbols' | 'chains'} field */
    const collect = (from, field) => {
      for (const [name, { mode, interval_ms }] of from) {
        const key = `${mode}/${interval_ms}`;
        let g = groups.get(key);
        if (!g) groups.set(key, (g = { mode, interval_ms, symbols: [], chains: [] }));
        g[field].push(name);
      }
    };
    collect(this._symbols, 'symbols');
    collect(this._chains, 'chains');
    for (const { mode, interval_ms, symbols, chains } of groups.values()) {
      /** @type {Record<string, any>} */
      const msg = { op: 'subscribe', id: this._nextId++, mode, interval_ms };
      if (symbols.length) msg.symbols = symbols;
      if (chains.length) msg.chains = chains;
      this._send({ msg, resolve: () => {}, reject: () => {}, timer: null });
    }
    /** @type {Map<number, string[]>} history -> symbols */
    const tapes = new Map();
    for (const [symbol, { history }] of this._tapes) {
      const symbols = tapes.get(history);
      if (symbols) symbols.push(symbol);
      else tapes.set(history, [symbol]);
    }
    for (const [history, symbols] of tapes) {
      const msg = { op: 'subscribe', id: this._nextId++, stream: 'trades', history, symbols };
      this._send({ msg, resolve: () => {}, reject: () => {}, timer: null });
    }
    /** @type {Map<string, {tf: Timeframe, history: number, interval_ms: number, symbols: string[]}>} */
    const bars = new Map();
    for (const { symbol, tf, history, interval_ms } of this._bars.values()) {
      const key = `${tf}/${history}/${interval_ms}`;
      let g = bars.get(key);
      if (!g) bars.set(key, (g = { tf, history, interval_ms, symbols: [] }));
      g.symbols.push(symbol);
    }
    for (const { tf, history, interval_ms, symbols } of bars.values()) {
      const msg = { op: 'subscribe', id: this._nextId++, stream: 'bars', tf, history, interval_ms, symbols };
      this._send({ msg, resolve: () => {}, reject: () => {}, timer: null });
    }
  }

  /**
   * Sends a request now if the session is ready, else holds it for the next `welcome`.
   * @param {string} op
   * @param {Record<string, any>} [fields]
   * @returns {Promise<any>}
   */
  _request(op, fields = {}) {
    return new Promise((resolve, reject) => {
      const p = { msg: { op, id: this._nextId++, ...fields }, resolve, reject, timer: null };
      if (this._ready) return this._send(p);
      if (this._stopped && this.status === 'closed') return reject(new TickMeshError('closed', 'client closed'));
      if (this._outbox.length >= this.maxQueued) return reject(new TickMeshError('queue_full', 'too many requests while disconnected'));
      this._outbox.push(p);
    });
  }

  /** @param {Pending} p */
  _send(p) {
    const { msg } = p;
    this._record(msg);
    this._pending.set(msg.id, p);
    p.timer = this._setTimeout(() => {
      if (!this._pending.has(msg.id)) return;
      this._pending.delete(msg.id);
      p.reject(new TickMeshError('timeout', `no reply to ${msg.op} within ${this.requestTimeoutMs} ms`));
    }, this.requestTimeoutMs);
    const ws = /** @type {WebSocket} */ (this._ws);
    ws.send(this.encoding === 'msgpack' ? msgpackEncode(msg) : JSON.stringify(msg));
  }

  /** Keeps the replay list in step with what the server was asked. @param {Record<string, any>} msg */
  _record(msg) {
    if (msg.stream === 'bars') {
      for (const symbol of msg.symbols ?? []) {
        const key = barKey(symbol, msg.tf);
        if (msg.op === 'subscribe') {
          this._bars.set(key, { symbol, tf: msg.tf, history: msg.history, interval_ms: msg.interval_ms });
        } else if (msg.op === 'unsubscribe') {
          this._bars.delete(key);
          this._barLast.delete(key);
        }
      }
    } else if (msg.stream === 'trades') {
      for (const s of msg.symbols ?? []) {
        if (msg.op === 'subscribe') {
          this._tapes.set(s, { history: msg.history });
        } else if (msg.op === 'unsubscribe') {
          this._tapes.delete(s);
          this._tradeSeq.delete(s);
        }
      }
    } else if (msg.op === 'subscribe') {
      const sub = { mode: msg.mode, interval_ms: msg.interval_ms };
      for (const s of msg.symbols ?? []) this._symbols.set(s, sub);
      for (const c of msg.chains ?? []) this._chains.set(c, sub);
    } else if (msg.op === 'unsubscribe') {
      for (const s of msg.symbols ?? []) {
        this._symbols.delete(s);
        this._seq.delete(s);
      }
      for (const c of msg.chains ?? []) {
        this._chains.delete(c);
        const pattern = chainSymbolPattern(c);
        if (pattern) for (const s of this._seq.keys()) if (pattern.test(s)) this._seq.delete(s);
      }
    }
  }

  // ---- requests -------------------------------------------------------------------

  /**
   * Subscribes (or changes the mode/interval of) symbols and chains. Kept across
   * reconnects. Resolves with the `subscribed` reply; refused symbols arrive as
   * `error` events and are dropped from the replay list. Made while disconnected, it is
   * sent after the next `welcome`; if the connection drops before the reply, the promise
   * rejects but the subscription is still replayed on the next connection.
   *
   * With `stream: "trades"`, follows the tapes of `symbols` instead: `history` prints
   * first, then every print, as `trades` events. Replayed after a reconnect like ticks;
   * the fresh history it gets then is passed on only from the first print not delivered
   * yet. A tape held already is not changed (and gets no second history).
   *
   * With `stream: "bars"` and `tf`, follows the bars of that timeframe of `symbols`:
   * `history` closed bars and the bar in progress first, then the bar in progress at most
   * every `interval_ms` and each bar once more with `final: true`, as `bars` events.
   * Replayed after a reconnect; the fresh history it gets then is passed on from the
   * newest bar delivered on. Bars held already get no second history: their interval is
   * changed in place.
   * @param {SubscribeRequest} req
   */
  subscribe({ symbols, chains, mode = DEFAULT_MODE, interval_ms = DEFAULT_INTERVAL_MS, stream = 'ticks', history, tf }) {
    // Checked here: a bad value would otherwise be replayed after every reconnect.
    const bad = badStream(stream, chains, tf) ?? (stream === 'trades' ? null : badCount('interval_ms', interval_ms));
    if (bad) return Promise.reject(bad);
    if (stream !== 'ticks') {
      history ??= stream === 'trades' ? DEFAULT_TRADES_HISTORY : DEFAULT_BARS_HISTORY;
      const badHistory = badCount('history', history);
      if (badHistory) return Promise.reject(badHistory);
      const fields = stream === 'trades' ? { stream, history } : { stream, tf, history, interval_ms };
      return this._request('subscribe', { ...fields, symbols: upper(symbols) });
    }
    if (!MODES.has(mode)) return Promise.reject(new TypeError(`unknown mode ${mode}`));
    /** @type {Record<string, any>} */
    const fields = { mode, interval_ms };
    const s = upper(symbols);
    const c = upper(chains);
    if (s.length) fields.symbols = s;
    if (c.length) fields.chains = c;
    return this._request('subscribe', fields);
  }

  /**
   * Stops symbols and chains and forgets their seq, so a later subscribe starts afresh.
   * With `stream: "trades"`, stops the tapes of `symbols`: a later subscribe of one gets
   * its history again; with `stream: "bars"`, their bars of timeframe `tf`, likewise.
   * @param {{symbols?: string[], chains?: string[], stream?: 'ticks' | 'trades' | 'bars', tf?: Timeframe}} req
   */
  unsubscribe({ symbols, chains, stream = 'ticks', tf }) {
    const bad = badStream(stream, chains, tf);
    if (bad) return Promise.reject(bad);
    if (stream === 'trades') return this._request('unsubscribe', { stream, symbols: upper(symbols) });
    if (stream === 'bars') return this._request('unsubscribe', { stream, tf, symbols: upper(symbols) });
    /** @type {Record<string, any>} */
    const fields = {};
    const s = upper(symbols);
    const c = upper(chains);
    if (s.length) fields.symbols = s;
    if (c.length) fields.chains = c;
    return this._request('unsubscribe', fields);
  }

  /** @returns {Promise<{subscriptions: Array<{symbol: string, mode: Mode, interval_ms: number, stream?: 'trades' | 'bars', tf?: Timeframe}>}>} */
  list() {
    return this._request('list');
  }

  /**
   * @param {string} underlying
   * @returns {Promise<{underlying: string, expiries: Array<{expiry: string, strikes: number[]}>}>}
   */
  chains(underlying) {
    return this._request('chains', { underlying: String(underlying).trim().toUpperCase() });
  }

  ping() {
    return this._request('ping');
  }

  /**
   * Replaces the session's token in place; on success it is also the one used to reconnect.
   * @param {string} token
   */
  auth(token) {
    return this._request('auth', { token });
  }

  /**
   * The subscriptions that will be replayed after a reconnect; `bars`: timeframe ->
   * symbol -> `{history, interval_ms}`.
   */
  subscriptions() {
    /** @type {Record<string, Record<string, {history: number, interval_ms: number}>>} */
    const bars = {};
    for (const { symbol, tf, history, interval_ms } of this._bars.values()) (bars[tf] ??= {})[symbol] = { history, interval_ms };
    return {
      symbols: Object.fromEntries(this._symbols),
      chains: Object.fromEntries(this._chains),
      trades: Object.fromEntries(this._tapes),
      bars,
    };
  }

  /** @param {string} symbol @returns {number | undefined} */
  lastSeq(symbol) {
    return this._seq.get(symbol);
  }

  /** The seq of the last print of `symbol` delivered. @param {string} symbol @returns {number | undefined} */
  lastTradeSeq(symbol) {
    return this._tradeSeq.get(symbol);
  }

  /**
   * The start `t` of the newest bar of `symbol` and `tf` delivered, and whether it was final.
   * @param {string} symbol @param {Timeframe} tf @returns {{t: number, final: boolean} | undefined}
   */
  lastBar(symbol, tf) {
    const last = this._barLast.get(barKey(symbol, tf));
    return last && { ...last };
  }
}
