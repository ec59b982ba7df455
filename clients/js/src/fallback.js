// @ts-check
/**
 * The connections a client falls back on where no WebSocket gets through (a proxy that
 * strips upgrades): Server-Sent Events (`GET /v1/sse`), then polling (`GET
 * /v1/snapshot`). Each looks like a WebSocket to `TickMeshClient` (`onopen`,
 * `onmessage`, `onclose`, `send`, `close`): it answers the client's JSON requests as the
 * edge would and hands it the edge's messages, so that the client's ledger (seq checks,
 * the replay of subscriptions) works unchanged.
 *
 * Both carry tick subscriptions (`symbols`, and over SSE `chains`); a `trades`, `bars` or
 * account subscription, `auth` and unknown ops are refused with `error` `bad_request`
 * (the client keeps them, and asks again on its next WebSocket). One stream carries every
 * symbol, so each symbol gets the richest mode and the shortest interval asked of any.
 *
 * @module tickmesh/fallback
 */

/** Server message types an SSE stream names its events by. */
const EVENT_TYPES = [
  'welcome', 'subscribed', 'unsubscribed', 'snapshot', 'ticks', 'hb', 'error', 'status', 'gap',
  'reconnect', 'pong', 'subscriptions', 'chains', 'close',
];

const MODE_RANK = { ltp: 0, quote: 1, full: 2 };

/**
 * `path` on the HTTP side of stream URL `url` (`ws:` → `http:`, `wss:` → `https:`).
 * @param {string} url @param {string} path
 */
export function httpUrl(url, path) {
  const u = new URL(url);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = path;
  u.search = '';
  u.hash = '';
  return u;
}

/**
 * @typedef {object} FallbackOptions
 * @property {string | null} token
 * @property {any} [EventSource]
 * @property {typeof fetch} [fetch]
 * @property {(fn: () => void, ms: number) => any} setTimeout
 * @property {(handle: any) => void} clearTimeout
 * @property {number} [pollIntervalMs] polling: the least time between two snapshots, default 1000
 * @property {number} [retryWebSocketMs] after this long a fallback connection ends (1000)
 *   so that the client tries the WebSocket again, default 60000
 */

/** What both fallbacks share: the WebSocket look-alike and the tick subscriptions held. */
class Fallback {
  /** @param {string} url the stream URL @param {FallbackOptions} options */
  constructor(url, options) {
    this.url = url;
    this.protocol = 'tickmesh.v1.json';
    this.binaryType = 'arraybuffer';
    this.readyState = 0;
    /** @type {any} */ this.onopen = null;
    /** @type {any} */ this.onmessage = null;
    /** @type {any} */ this.onclose = null;
    /** @type {any} */ this.onerror = null;
    this._o = options;
    /** symbol -> its subscription. @type {Map<string, {mode: string, interval_ms: number}>} */
    this.symbols = new Map();
    /** @type {Map<string, {mode: string, interval_ms: number}>} */
    this.chains = new Map();
    /** Subscribes waiting for what the next stream or poll accepts. @type {any[]} */
    this.waiting = [];
    /** Ends the connection so that the WebSocket is tried again. @type {any} */
    this._retry = null;
  }

  /** Opened: the connection ends after `retryWebSocketMs`, for the WebSocket to be tried again. */
  _opened() {
    this.readyState = 1;
    this._retry = this._o.setTimeout(() => this._closed(1000, 'trying the WebSocket again'), this._o.retryWebSocketMs ?? 60000);
    this.onopen?.();
  }

  /** @param {Record<string, any>} msg */
  _deliver(msg) {
    if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(msg) });
  }

  /** A reply, after the request's `send` returned (as one over a socket). @param {Record<string, any>} msg */
  _reply(msg) {
    Promise.resolve().then(() => this._deliver(msg));
  }

  /** @param {number} code @param {string} reason */
  _closed(code, reason) {
    if (this.readyState === 3) return;
    this.close();
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }

  _stop() {}

  /** @param {string} data a JSON request */
  send(data) {
    const req = JSON.parse(data);
    switch (req.op) {
      case 'subscribe':
        return this._subscribe(req);
      case 'unsubscribe': {
        // Tapes, bars and accounts are not carried here (the client keeps them for its
        // next WebSocket): stopping one leaves the symbols' ticks as they are.
        if (req.account) return this._reply({ type: 'unsubscribed', id: req.id, account: req.account });
        if (req.stream && req.stream !== 'ticks') {
          return this._reply({ type: 'unsubscribed', id: req.id, symbols: req.symbols ?? [], stream: req.stream, ...(req.tf ? { tf: req.tf } : {}) });
        }
        for (const s of req.symbols ?? []) this.symbols.delete(s);
        for (const c of req.chains ?? []) this.chains.delete(c);
        this._reply({ type: 'unsubscribed', id: req.id, symbols: req.symbols ?? [], ...(req.chains ? { chains: req.chains } : {}) });
        return this._changed();
      }
      case 'ping':
        return this._reply({ type: 'pong', id: req.id });
      case 'list': {
        const subscriptions = [...this.symbols].map(([symbol, s]) => ({ symbol, ...s }));
        return this._reply({ type: 'subscriptions', id: req.id, subscriptions });
      }
      default:
        return this._refuse(req, `${req.op} needs a WebSocket`);
    }
  }

  /** @param {Record<string, any>} req @param {string} message */
  _refuse(req, message) {
    this._reply({ type: 'error', id: req.id, code: 'bad_request', message });
  }

  /** @param {Record<string, any>} req */
  _subscribe(req) {
    if ((req.stream && req.stream !== 'ticks') || req.account) {
      return this._refuse(req, `${req.account ? 'an account' : req.stream} subscription needs a WebSocket`);
    }
    if (req.chains?.length && !this.carriesChains) return this._refuse(req, 'chains need a stream (WebSocket or SSE)');
    const sub = { mode: req.mode ?? 'quote', interval_ms: req.interval_ms ?? 250 };
    for (const s of req.symbols ?? []) this.symbols.set(s, sub);
    for (const c of req.chains ?? []) this.chains.set(c, sub);
    this.waiting.push(req);
    this._changed();
  }

  get carriesChains() {
    return false;
  }

  /** The richest mode and shortest interval of what is held. */
  _merged() {
    let mode = 'ltp';
    let interval = Infinity;
    for (const s of [...this.symbols.values(), ...this.chains.values()]) {
      if (MODE_RANK[/** @type {'ltp'} */ (s.mode)] > MODE_RANK[/** @type {'ltp'} */ (mode)]) mode = s.mode;
      interval = Math.min(interval, s.interval_ms);
    }
    return { mode, interval_ms: interval === Infinity ? 250 : interval };
  }

  /** What is held changed. */
  _changed() {}

  /**
   * Answers the waiting subscribes from what was accepted: each gets its own symbols
   * among them (and, for chains, the options they expanded to).
   * @param {string[]} accepted @param {number} interval_ms @param {string} mode
   */
  _answer(accepted, interval_ms, mode) {
    const plain = new Set(this.symbols.keys());
    for (const req of this.waiting.splice(0)) {
      const asked = new Set(req.symbols ?? []);
      const symbols = accepted.filter((s) => asked.has(s) || (req.chains?.length && !plain.has(s)));
      this._deliver({ type: 'subscribed', id: req.id, symbols, interval_ms, mode, ...(req.chains ? { chains: req.chains } : {}) });
    }
  }

  /**
   * The waiting subscribe an `error` about `symbol` belongs to (the edge's own id is not
   * the client's). @param {string | undefined} symbol
   */
  _askedBy(symbol) {
    const req = this.waiting.find((r) => symbol && (r.symbols ?? []).includes(symbol)) ?? this.waiting[0];
    return req?.id;
  }

  /** @param {number} [_code] @param {string} [_reason] */
  close(_code, _reason) {
    this.readyState = 3;
    if (this._retry !== null) this._o.clearTimeout(this._retry);
    this._retry = null;
    this._stop();
  }
}

/** A session over Server-Sent Events, opened again (with the new query) when what it holds changes. */
export class SseSocket extends Fallback {
  /** @param {string} url @param {FallbackOptions} options */
  constructor(url, options) {
    super(url, options);
    this.transport = 'sse';
    this._EventSource = options.EventSource ?? /** @type {any} */ (globalThis).EventSource;
    /** @type {any} */ this._es = null;
    this._welcomed = false;
    this._reopen = null;
    if (!this._EventSource) {
      Promise.resolve().then(() => this._closed(1006, 'no EventSource'));
      return;
    }
    this._open();
  }

  get carriesChains() {
    return true;
  }

  _open() {
    this._es?.close();
    const u = httpUrl(this.url, '/v1/sse');
    const { mode, interval_ms } = this._merged();
    if (this.symbols.size) u.searchParams.set('symbols', [...this.symbols.keys()].join(','));
    if (this.chains.size) u.searchParams.set('chains', [...this.chains.keys()].join(','));
    if (this.symbols.size || this.chains.size) {
      u.searchParams.set('mode', mode);
      u.searchParams.set('interval_ms', String(interval_ms));
    }
    // An EventSource sets no header: the token goes in the query, as a WebSocket's does.
    if (this._o.token) u.searchParams.set('token', this._o.token);
    const es = new this._EventSource(u.toString());
    this._es = es;
    es.onopen = () => {
      if (es === this._es && this.readyState === 0) this._opened();
    };
    // A failed or broken stream is the connection's end: the client reconnects its own
    // way (the EventSource's own retry would skip the client's backoff and replay).
    es.onerror = () => {
      if (es !== this._es) return;
      this._closed(1006, 'the event stream failed');
    };
    for (const type of EVENT_TYPES) {
      es.addEventListener(type, (/** @type {MessageEvent} */ ev) => {
        if (es === this._es) this._event(type, JSON.parse(ev.data));
      });
    }
  }

  /** @param {string} type @param {Record<string, any>} msg */
  _event(type, msg) {
    switch (type) {
      case 'close':
        return this._closed(msg.code, msg.reason);
      case 'welcome':
        // A stream opened again for new subscriptions welcomes again: the client has been.
        if (this._welcomed) return;
        this._welcomed = true;
        return this._deliver(msg);
      case 'subscribed':
        return this._answer(msg.symbols ?? [], msg.interval_ms, msg.mode);
      case 'error':
        if (msg.id != null) {
          // Refused for good: not asked for again when the stream opens anew.
          if (msg.symbol && msg.code !== 'unavailable') this.symbols.delete(msg.symbol);
          const id = this._askedBy(msg.symbol);
          if (id === undefined) delete msg.id;
          else msg.id = id;
        }
        return this._deliver(msg);
      default:
        return this._deliver(msg);
    }
  }

  _changed() {
    // A burst of requests (the client's replay after `welcome`) opens one stream.
    if (this._reopen !== null) return;
    this._reopen = this._o.setTimeout(() => {
      this._reopen = null;
      if (this.readyState === 1) this._open();
    }, 0);
  }

  _stop() {
    if (this._reopen !== null) this._o.clearTimeout(this._reopen);
    this._reopen = null;
    this._es?.close();
    this._es = null;
  }
}

/** Polling: the held symbols' snapshots from `GET /v1/snapshot`, each passed on as a `snapshot`. */
export class PollSocket extends Fallback {
  /** @param {string} url @param {FallbackOptions} options */
  constructor(url, options) {
    super(url, options);
    this.transport = 'poll';
    this._fetch = options.fetch ?? /** @type {any} */ (globalThis).fetch?.bind(globalThis);
    this._pollMs = options.pollIntervalMs ?? 1000;
    this._timer = null;
    this._start();
  }

  async _start() {
    let ready = false;
    try {
      ready = (await this._fetch(httpUrl(this.url, '/readyz').toString())).ok;
    } catch {
      ready = false;
    }
    if (this.readyState !== 0) return;
    if (!ready) return this._closed(1006, 'the edge did not answer over HTTP');
    this._opened();
    const u = new URL(this.url);
    // No session on the edge: heartbeat_ms 0 turns the client's watch for silence off.
    this._deliver({ type: 'welcome', protocol: 1, session: 'poll', edge: u.host, heartbeat_ms: 0, limits: {} });
    this._schedule(0);
  }

  /** @param {number} ms */
  _schedule(ms) {
    if (this._timer !== null) this._o.clearTimeout(this._timer);
    this._timer = this._o.setTimeout(() => {
      this._timer = null;
      this._poll();
    }, ms);
  }

  _changed() {
    if (this.readyState === 1) this._schedule(0);
  }

  async _poll() {
    if (this.readyState !== 1) return;
    const { mode, interval_ms } = this._merged();
    const every = Math.max(this._pollMs, interval_ms);
    if (!this.symbols.size) {
      this._answer([], every, mode);
      return this._schedule(every);
    }
    const u = httpUrl(this.url, '/v1/snapshot');
    u.searchParams.set('symbols', [...this.symbols.keys()].join(','));
    u.searchParams.set('mode', mode);
    /** @type {Record<string, string>} */
    const headers = this._o.token ? { authorization: `Bearer ${this._o.token}` } : {};
    let res;
    let body;
    try {
      res = await this._fetch(u.toString(), { headers });
      body = await res.json();
    } catch {
      return this._closed(1006, 'polling failed');
    }
    if (this.readyState !== 1) return;
    if (res.status === 401) return this._closed(4401, body?.message ?? 'unauthorized');
    if (!res.ok) {
      // Over the rate, or the edge cannot serve yet: asked again when it says.
      const wait = Math.max(every, Number(body?.retry_ms) || 0);
      if (res.status === 429 || res.status === 503) return this._schedule(wait);
      return this._closed(1006, `polling answered ${res.status}`);
    }
    const snapshots = Array.isArray(body.snapshots) ? body.snapshots : [];
    const errors = Array.isArray(body.errors) ? body.errors : [];
    for (const e of errors) if (e.symbol && e.code !== 'unavailable') this.symbols.delete(e.symbol);
    const accepted = [...this.symbols.keys()];
    // A value not read in time comes with the next poll.
    for (const e of errors) {
      if (e.code !== 'unavailable') this._deliver({ type: 'error', ...e, ...(this.waiting.length ? { id: this._askedBy(e.symbol) } : {}) });
    }
    this._answer(accepted, every, mode);
    for (const tick of snapshots) this._deliver({ type: 'snapshot', ...tick });
    this._schedule(every);
  }

  _stop() {
    if (this._timer !== null) this._o.clearTimeout(this._timer);
    this._timer = null;
  }
}
