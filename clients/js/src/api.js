// @ts-check
/**
 * The requests and the state a client offers, the same for a connection of its own
 * (`TickMeshClient`) and for a tab of a shared one (`SharedClient`): each sends requests
 * its own way (`_request`) and keeps what it holds and passed on in a `Ledger`.
 *
 * @module tickmesh/api
 */

import { Emitter } from './events.js';
import { accountFields, subscribeFields, unsubscribeFields } from './ledger.js';

/** WebSocket subprotocol per encoding. */
export const SUBPROTOCOLS = Object.freeze({
  json: 'tickmesh.v1.json',
  msgpack: 'tickmesh.v1.msgpack',
});

/**
 * The stream URL for a page served by the edge.
 * @param {{protocol: string, host: string}} loc usually `window.location`
 */
export function streamUrl(loc) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/v1/stream`;
}

/**
 * @typedef {import('./tickmesh.js').EventMap} EventMap
 * @typedef {import('./tickmesh.js').Mode} Mode
 * @typedef {import('./tickmesh.js').Timeframe} Timeframe
 * @typedef {import('./tickmesh.js').SubscribeRequest} SubscribeRequest
 * @typedef {import('./ledger.js').UnsubscribeRequest} UnsubscribeRequest
 * @typedef {import('./tickmesh.js').ClientOptions} ClientOptions
 * @typedef {import('./tickmesh.js').Status} Status
 * @typedef {import('./tickmesh.js').Welcome} Welcome
 */

/** @extends {Emitter<EventMap>} */
export class ClientApi extends Emitter {
  /**
   * @param {import('./ledger.js').Ledger} ledger what it holds and passed on
   * @param {ClientOptions} options
   * @param {string} name the class's, for errors
   */
  constructor(ledger, options, name) {
    super();
    this._ledger = ledger;
    const g = /** @type {any} */ (globalThis);
    this.url = options.url ?? (g.location ? streamUrl(g.location) : '');
    if (!this.url) throw new TypeError(`${name}: no url and no page location`);
    new URL(this.url); // throws now rather than at every connection attempt
    /** @type {string | null} */
    this.token = options.token ?? null;
    const encoding = options.encoding ?? 'json';
    if (!(encoding in SUBPROTOCOLS)) throw new TypeError(`${name}: unknown encoding ${encoding}`);
    /** @type {'json' | 'msgpack'} */
    this.encoding = encoding;
    this.getToken = options.getToken ?? null;
    this.maxQueued = options.maxQueued ?? 256;
    /** @type {Status} */
    this.status = 'idle';
    /** The last `welcome`. @type {Welcome | null} */
    this.welcome = null;
    /** Latest `lag_ms` from a heartbeat. @type {number | null} */
    this.lagMs = null;
    /** What carries the session (`websocket`, `sse` or `poll`), once welcomed. @type {import('./tickmesh.js').Transport | null} */
    this.transport = null;
  }

  /** @param {Status} status @param {Omit<import('./tickmesh.js').StatusInfo, 'status'>} [detail] */
  _setStatus(status, detail) {
    this.status = status;
    this._emit('status', { status, ...detail });
  }

  /**
   * Passes an account's snapshot on, if it is not older than what was passed on.
   * @param {import('./tickmesh.js').AccountSnapshot} snap
   */
  _accountSnapshot(snap) {
    if (this._ledger.accountSnapshot(snap)) this._emit('accountsnapshot', snap);
  }

  /**
   * Passes an account event on once, in order; one that skips seqs is preceded by
   * `accountcontinuity`.
   * @param {import('./tickmesh.js').AccountEvent} event
   */
  _accountEvent(event) {
    const passed = this._ledger.accountEvent(event);
    if (!passed) return;
    if (passed.had !== undefined && event.seq > passed.had + 1) {
      this._emit('accountcontinuity', { account: event.account, seq: event.seq, had: passed.had });
    }
    this._emit('account', event);
  }

  /**
   * Sends a request (or holds it until it can be sent); resolves with its reply.
   * @param {string} op @param {Record<string, any>} [fields]
   * @returns {Promise<any>}
   */
  _request(op, fields) {
    void op;
    void fields;
    throw new Error('not implemented');
  }

  /**
   * The request of `req`'s fields, or a rejection with why they cannot be sent.
   * @template R @param {string} op @param {(req: R) => Record<string, any>} fields @param {R} req
   */
  _checked(op, fields, req) {
    let f;
    try {
      f = fields(req);
    } catch (err) {
      return Promise.reject(err);
    }
    return this._request(op, f);
  }

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
  subscribe(req) {
    // Checked here: a bad value would otherwise be replayed after every reconnect.
    return this._checked('subscribe', subscribeFields, req);
  }

  /**
   * Stops symbols and chains and forgets their seq, so a later subscribe starts afresh.
   * With `stream: "trades"`, stops the tapes of `symbols`: a later subscribe of one gets
   * its history again; with `stream: "bars"`, their bars of timeframe `tf`, likewise.
   * @param {UnsubscribeRequest} req
   */
  unsubscribe(req) {
    return this._checked('unsubscribe', unsubscribeFields, req);
  }

  /**
   * Follows an account's orders, fills, positions and balances (the token's `acct` claim
   * must name it): an `accountsnapshot` first (or, with `fromSeq`, every event from that
   * seq on instead), then each later event as an `account` event. Kept across reconnects:
   * the client resubscribes with `from_seq` after the last seq it passed on, and drops any
   * seq it has passed on already, so each event is passed on once, in order; a skipped seq
   * is told by `accountcontinuity`. Resolves with the `subscribed` reply; a refusal
   * (`not_entitled`, `too_many_symbols`) rejects it and ends the subscription.
   * @param {string} account @param {{fromSeq?: number}} [opts]
   */
  subscribeAccount(account, opts) {
    return this._checked('subscribe', (/** @type {[string, {fromSeq?: number} | undefined]} */ [name, o]) => accountFields(name, o), [account, opts]);
  }

  /**
   * Stops following an account and forgets its last seq: a later `subscribeAccount` starts
   * from a snapshot again. Events still in flight are dropped.
   * @param {string} account
   */
  unsubscribeAccount(account) {
    return this._checked('unsubscribe', (/** @type {string} */ name) => ({ account: accountFields(name).account }), account);
  }

  /** @returns {Promise<{subscriptions: Array<{symbol: string, mode: Mode, interval_ms: number, stream?: 'trades' | 'bars', tf?: Timeframe}>, accounts?: string[]}>} */
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
   * A tab of a shared connection replaces the token of that connection, for every tab on it.
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
    return this._ledger.subscriptions();
  }

  /** The seq of the last event (or snapshot) of `account` passed on. @param {string} account @returns {number | undefined} */
  lastAccountSeq(account) {
    return this._ledger.accounts.get(account)?.last;
  }

  /** @param {string} symbol @returns {number | undefined} */
  lastSeq(symbol) {
    return this._ledger.seq.get(symbol);
  }

  /** The seq of the last print of `symbol` delivered. @param {string} symbol @returns {number | undefined} */
  lastTradeSeq(symbol) {
    return this._ledger.tradeSeq.get(symbol);
  }

  /**
   * The start `t` of the newest bar of `symbol` and `tf` delivered, and whether it was final.
   * @param {string} symbol @param {Timeframe} tf @returns {{t: number, final: boolean} | undefined}
   */
  lastBar(symbol, tf) {
    return this._ledger.lastBar(symbol, tf);
  }
}
