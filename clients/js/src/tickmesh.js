// @ts-check
/**
 * The TickMesh client's connection, for the client protocol v1 (browsers and Node).
 *
 * One `TickMeshClient` owns one WebSocket at a time to `/v1/stream`. It keeps (in its
 * `Ledger`, ledger.js), across
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
 * Each connection tries the WebSocket first; once it has failed before `welcome`
 * `fallbackAfter` times in a row, Server-Sent Events (`/v1/sse`), then polling
 * (`/v1/snapshot`) are tried at once after it, in that order (fallback.js); `transport`
 * says which one carries the session. A fallback connection ends after
 * `retryWebSocketMs`, so that the WebSocket is tried again.
 *
 * Reconnects use exponential backoff with full jitter, except after a `reconnect` notice
 * (the gateway is draining: wait its `after_ms`). Close codes 4400-4499 are terminal for
 * the token that was used: the client reconnects only if `getToken` yields a different one.
 *
 * @module tickmesh/tickmesh
 */

import { encode as msgpackEncode, decode as msgpackDecode } from './msgpack.js';
import { ClientApi, SUBPROTOCOLS } from './api.js';
import { ACCOUNT_REFUSAL_CODES, Ledger, REFUSAL_CODES } from './ledger.js';
import { PollSocket, SseSocket } from './fallback.js';

export { SUBPROTOCOLS, streamUrl } from './api.js';
export { DEFAULT_MODE, DEFAULT_INTERVAL_MS, DEFAULT_TRADES_HISTORY, DEFAULT_BARS_HISTORY, TIMEFRAMES } from './ledger.js';


/** @type {Readonly<Record<string, string>>} request op -> reply type */
const REPLY_TYPE = Object.freeze({
  subscribe: 'subscribed',
  unsubscribe: 'unsubscribed',
  list: 'subscriptions',
  chains: 'chains',
  ping: 'pong',
  auth: 'authed',
});

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
 * @property {'equity' | 'etf' | 'index' | 'option'} [kind]
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
 * @property {number} [delayed_ms] present on delayed data (a symbol the token covers by
 *   `dly` only): how late it is served
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
 * @typedef {'buy' | 'sell'} Side
 *
 * @typedef {object} Order an order's whole state after a change
 * @property {string} order_id
 * @property {string} symbol
 * @property {Side} side
 * @property {'market' | 'limit'} type
 * @property {number} qty
 * @property {number} [limit_price] limit orders
 * @property {'new' | 'partially_filled' | 'filled' | 'cancelled' | 'rejected'} status
 * @property {number} filled_qty
 * @property {number} [avg_price] when anything filled
 * @property {string} [reason] when rejected or cancelled
 *
 * @typedef {object} Fill one execution of an order
 * @property {string} fill_id
 * @property {string} order_id
 * @property {string} symbol
 * @property {Side} side
 * @property {number} qty
 * @property {number} price
 * @property {number} [trade_id] the market print it filled against
 *
 * @typedef {object} Position a position's whole state after a change
 * @property {string} symbol
 * @property {number} qty negative when short
 * @property {number} avg_price of the open quantity
 * @property {number} realized_pnl
 * @property {number} [mark_price] the writer's, when it wrote it
 * @property {number} [unrealized_pnl] at `mark_price`: mark it to the prices streamed instead
 *
 * @typedef {object} Balance a cash balance's whole state after a change
 * @property {string} currency
 * @property {number} cash
 * @property {number} realized_pnl
 *
 * @typedef {{kind: 'order', data: Order} | {kind: 'fill', data: Fill} | {kind: 'position', data: Position} | {kind: 'balance', data: Balance}} AccountData
 *
 * @typedef {{account: string, seq: number, ts: number} & AccountData} AccountEvent one event
 *   of an account: `seq` +1 per event from 1, `ts` µs (the writer's stamp)
 *
 * @typedef {object} AccountSnapshot an account's state as of `seq` (0 before any event)
 * @property {string} account
 * @property {number} seq
 * @property {Position[]} positions by symbol
 * @property {Balance[]} balances by currency
 * @property {Order[]} open_orders by order id
 *
 * @typedef {object} AccountContinuity an account event that skips seqs: `had + 1` to
 *   `seq - 1` never came
 * @property {string} account
 * @property {number} seq
 * @property {number} had the seq passed on before it
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
 * @property {string} [account] when about an account: `unavailable` (a fresh snapshot
 *   follows), `not_entitled` (the subscription ended)
 * @property {number} [interval_ms] with `slow_consumer`: the interval the session was moved to
 * @property {number} [retry_ms] with `unavailable`: when to ask again
 * @property {number} [count] in a summary of refusals (no `symbol`): how many entries it stands for
 *
 * @typedef {object} Gap ticks of a subscribed symbol that never reached the gateway
 * @property {'gap'} type
 * @property {string} symbol
 * @property {number} epoch
 * @property {number} from_seq the first missing, inclusive
 * @property {number} to_seq the last missing, inclusive
 * @property {string} reason `snapshot`, `reconnect`, or another cause upstream
 *
 * @typedef {object} Continuity a live update that skips seqs neither folded nor told lost
 * @property {string} symbol
 * @property {number} seq
 * @property {number} from_seq
 * @property {number} had the seq passed on before it
 *
 * @typedef {object} Stats
 * @property {number} reconnects connections opened after the first
 * @property {number} ticks ticks and snapshots passed on
 * @property {number} stale ticks dropped by seq
 * @property {number} conflated ticks the gateway folded into the updates it sent
 * @property {number} lost ticks it said never reached it (`gap`)
 * @property {number} broken updates that skipped seqs neither folded nor told
 * @property {number} prints trade prints passed on
 * @property {number} reprints prints dropped as passed on before
 * @property {number} bars bars (and updates of bars) passed on
 * @property {number} rebars bars dropped as older than the newest passed on, or after its `final`
 * @property {number} accountEvents account events passed on
 * @property {number} accountRepeats account events dropped as passed on before
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
 * @typedef {'websocket' | 'sse' | 'poll'} Transport
 *
 * @typedef {object} TransportInfo
 * @property {Transport} transport what carries the session since its `welcome`
 * @property {Transport | null} previous what carried the one before
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
 * @property {Gap} gap
 * @property {Continuity} continuity
 * @property {TradesEvent} trades prints of a tape, per symbol: its history first
 *   (`snapshot: true`), then every later print; each print once, across reconnects too
 * @property {BarsEvent} bars bars, per symbol and timeframe: the history (`snapshot:
 *   true`), then the bar in progress as it changes and each bar once more with `final:
 *   true` when it closes; keep them by `t`, replacing a bar with the same `t`. Nothing
 *   older than the newest bar delivered, and nothing after a bar's `final`, is passed on,
 *   across reconnects too
 * @property {AccountSnapshot} accountsnapshot an account's state: when it is subscribed
 *   (without `fromSeq`), and after an `error` `unavailable` about it; replaces what was shown
 * @property {AccountEvent} account each event of an account held, once, in seq order,
 *   across reconnects too
 * @property {AccountContinuity} accountcontinuity right before an account event that
 *   skips seqs
 * @property {Record<string, any>} message every decoded server message, before the others
 * @property {TransportInfo} transport the session is carried by another transport than
 *   the last one (before its `welcome` event)
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
 * @property {Transport[]} [transports] tried in this order at each connection until one
 *   welcomes, default `['websocket', 'sse', 'poll']`
 * @property {any} [EventSource] for `sse`, default the global one
 * @property {typeof fetch} [fetch] for `poll`, default the global one
 * @property {number} [pollIntervalMs] `poll`: the least time between two snapshots, default 1000
 * @property {number} [fallbackAfter] failed attempts of the first transport in a row
 *   before the others are tried after it, default 2 (a gateway that restarts fails once)
 * @property {number} [retryWebSocketMs] `sse`, `poll`: after this long the connection
 *   ends and the first transport is tried again, default 60000
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
 * @typedef {object} Pending
 * @property {Record<string, any>} msg
 * @property {(v: any) => void} resolve
 * @property {(e: Error) => void} reject
 * @property {any} timer
 * @property {boolean} [summarized] a summary of refusals (`count`) came for this subscribe
 */

export class TickMeshClient extends ClientApi {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    /** @type {Stats} */
    const stats = { reconnects: 0, ticks: 0, stale: 0, conflated: 0, lost: 0, broken: 0, prints: 0, reprints: 0, bars: 0, rebars: 0, accountEvents: 0, accountRepeats: 0 };
    // What it holds (replayed after a reconnect) and what it passed on of each.
    super(new Ledger(stats), options, 'TickMeshClient');
    const g = /** @type {any} */ (globalThis);
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 30000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.idleHeartbeats = options.idleHeartbeats ?? 3;
    this._WebSocket = options.WebSocket ?? g.WebSocket;
    /** @type {Transport[]} */
    this._transports = options.transports?.length ? [...options.transports] : ['websocket', 'sse', 'poll'];
    this._fallback = {
      EventSource: options.EventSource,
      fetch: options.fetch,
      pollIntervalMs: options.pollIntervalMs,
      retryWebSocketMs: options.retryWebSocketMs,
    };
    /** The transport tried next (an index in `_transports`). */
    this._tried = 0;
    /** The transport of the current attempt. @type {Transport} */
    this._kind = 'websocket';
    /** Whether the current attempt was welcomed. */
    this._welcomedHere = false;
    this._fallbackAfter = options.fallbackAfter ?? 2;
    /** Attempts of the first transport that failed before `welcome`, in a row. */
    this._firstFailed = 0;
    this._setTimeout = options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
    this._clearTimeout = options.clearTimeout ?? ((h) => clearTimeout(h));
    this._random = options.random ?? Math.random;
    this._now = options.now ?? Date.now;

    /**
     * `reconnects`: connections opened after the first; `stale`: ticks dropped by seq;
     * `conflated`: ticks the gateway folded into the updates it sent; `lost`: ticks it said
     * never reached it (`gap`); `broken`: updates that skipped seqs neither folded nor told;
     * `prints`: trade prints delivered; `reprints`: prints dropped as delivered before (a
     * replayed tape's history); `bars`: bars (and updates of bars) delivered; `rebars`:
     * bars dropped as older than the newest delivered, or after its `final`;
     * `accountEvents`: account events delivered; `accountRepeats`: account events dropped
     * as delivered before (a replay after a reconnect that overlaps).
     */
    this.stats = stats;
    /** Per symbol since its last tick: the highest seq and the count of `gap`s told. @type {Map<string, {to: number, n: number}>} */
    this._told = new Map();
    /** Epoch of the last tick delivered per symbol. @type {Map<string, number | undefined>} */
    this._epoch = new Map();

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

  // ---- connection -----------------------------------------------------------------

  /** Starts connecting (no-op while connected or already trying). */
  connect() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._generation++;
    this._attempt = 0;
    this._tried = 0;
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
    const kind = this._transports[this._tried] ?? 'websocket';
    /** @type {WebSocket} */
    let ws;
    try {
      if (kind === 'websocket') {
        ws = new this._WebSocket(url.toString(), [SUBPROTOCOLS[this.encoding]]);
      } else {
        const options = { ...this._fallback, token: this.token, setTimeout: this._setTimeout, clearTimeout: this._clearTimeout };
        const Fallback = kind === 'sse' ? SseSocket : PollSocket;
        ws = /** @type {any} */ (new Fallback(this.url, options));
      }
    } catch {
      this._afterClose({ code: 1006, reason: `could not open ${kind}`, wasClean: false });
      return;
    }
    this._kind = kind;
    this._welcomedHere = false;
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
    if (this._tried === 0 && !this._welcomedHere) this._firstFailed++;
    const fallBack =
      !terminal &&
      !this._welcomedHere &&
      this._drainUntil === null &&
      this._tried + 1 < this._transports.length &&
      (this._tried > 0 || this._firstFailed >= this._fallbackAfter);
    // Every connection after a welcomed one, or after every transport failed, starts over
    // with the first.
    if (!fallBack) this._tried = 0;
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
    } else if (fallBack) {
      // Never welcomed on this transport: the next one is tried at once.
      this._tried++;
      delayMs = 0;
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
            if (this._ledger.side(tick)) this._startOver(tick.symbol);
            const had = this._ledger.seq.get(tick?.symbol);
            if (!this._ledger.fresh(tick)) continue;
            this._continuity(tick, had);
            this._emit('tick', tick);
          }
        }
        return;
      case 'trades':
        if (Array.isArray(msg.trades)) for (const e of this._ledger.prints(msg.snapshot === true, msg.trades)) this._emit('trades', e);
        return;
      case 'bars':
        if (Array.isArray(msg.bars)) for (const e of this._ledger.newBars(msg.tf, msg.snapshot === true, msg.bars)) this._emit('bars', e);
        return;
      case 'account': {
        const { type, ...event } = msg;
        return this._accountEvent(/** @type {any} */ (event));
      }
      case 'account_snapshot': {
        const { type, ...snap } = msg;
        return this._accountSnapshot(/** @type {any} */ (snap));
      }
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
        if (this._ledger.side(tick)) this._startOver(tick.symbol);
        if (this._ledger.fresh(tick)) {
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
      case 'unsubscribed':
        // Without an id, the gateway's doing: the symbols left the reference data (an
        // option that expired at the day roll; a `status` with reason "delisted" came
        // first). They are not asked for again.
        if (msg.id == null) {
          for (const s of msg.symbols ?? []) {
            this._ledger.drop(msg.stream ?? 'ticks', s, msg.tf);
            if ((msg.stream ?? 'ticks') === 'ticks') this._ledger.seq.delete(s);
          }
          return;
        }
        this._settle(msg);
        return;
      default:
        this._settle(msg);
    }
  }

  /**
   * A symbol moved between real time and delayed: nothing is owed across the move.
   * @param {string} symbol
   */
  _startOver(symbol) {
    this._told.delete(symbol);
    this._epoch.delete(symbol);
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

  /** @param {Welcome} msg */
  _onWelcome(msg) {
    this.welcome = msg;
    this._ready = true;
    this._welcomedHere = true;
    if (this._tried === 0) this._firstFailed = 0;
    this._attempt = 0;
    if (this.transport !== this._kind) {
      const previous = this.transport;
      this.transport = this._kind;
      this._emit('transport', { transport: this._kind, previous });
    }
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
      this._ledger.drop(id == null ? undefined : p?.msg.stream ?? 'ticks', msg.symbol, p?.msg.tf);
    }
    // An account refused (or no longer entitled after an `auth`) is not asked for again;
    // one the edge cannot serve from where it was starts over from the snapshot that follows.
    if (msg.account && ACCOUNT_REFUSAL_CODES.has(msg.code) && (id == null || p?.msg.op === 'subscribe')) this._ledger.dropAccount(msg.account);
    if (msg.account && msg.code === 'unavailable') this._ledger.resyncAccount(msg.account);
    // A refused symbol does not fail its subscribe: `subscribed` lists what was accepted.
    // Nor does a summary of refusals (`count`, no `symbol`): which entries it stands for
    // is told by what `subscribed` leaves out (see `_settle`).
    const summary = msg.count != null && !msg.symbol;
    if (summary && p?.msg.op === 'subscribe') p.summarized = true;
    if (id != null && p && !(p.msg.op === 'subscribe' && (msg.symbol || summary))) {
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
    // Entries refused in a summary are the request's that `subscribed` does not list:
    // they are not asked for again after a reconnect.
    if (msg.type === 'subscribed' && p.summarized) {
      const accepted = new Set(msg.symbols ?? []);
      const expanded = new Set(msg.chains ?? []);
      for (const s of p.msg.symbols ?? []) if (!accepted.has(s)) this._ledger.drop(p.msg.stream ?? 'ticks', s, p.msg.tf);
      for (const c of p.msg.chains ?? []) if (!expanded.has(c)) this._ledger.drop('ticks', c);
    }
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

  /** Replays every subscription (`Ledger.replay`). */
  _resubscribe() {
    for (const fields of this._ledger.replay()) {
      const msg = { op: 'subscribe', id: this._nextId++, ...fields };
      this._send({ msg, resolve: () => {}, reject: () => {}, timer: null });
    }
  }

  /**
   * Sends a request now if the session is ready, else holds it for the next `welcome`.
   * @param {string} op
   * @param {Record<string, any>} [fields]
   * @returns {Promise<any> & {id: number}}
   */
  _request(op, fields = {}) {
    const id = this._nextId++;
    const reply = new Promise((resolve, reject) => {
      const p = { msg: { op, id, ...fields }, resolve, reject, timer: null };
      if (this._ready) return this._send(p);
      if (this._stopped && this.status === 'closed') return reject(new TickMeshError('closed', 'client closed'));
      if (this._outbox.length >= this.maxQueued) return reject(new TickMeshError('queue_full', 'too many requests while disconnected'));
      this._outbox.push(p);
    });
    // The request's id, which its `error` events carry: a shared connection routes them by it.
    return Object.assign(reply, { id });
  }

  /** @param {Pending} p */
  _send(p) {
    const { msg } = p;
    this._ledger.record(msg);
    this._pending.set(msg.id, p);
    p.timer = this._setTimeout(() => {
      if (!this._pending.has(msg.id)) return;
      this._pending.delete(msg.id);
      p.reject(new TickMeshError('timeout', `no reply to ${msg.op} within ${this.requestTimeoutMs} ms`));
    }, this.requestTimeoutMs);
    const ws = /** @type {WebSocket} */ (this._ws);
    ws.send(this._kind === 'websocket' && this.encoding === 'msgpack' ? msgpackEncode(msg) : JSON.stringify(msg));
  }
}
