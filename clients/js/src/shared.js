// @ts-check
/**
 * One connection for all tabs. `createClient` returns a `SharedClient` where the browser
 * has SharedWorker (a `TickMeshClient` of the tab's own elsewhere, or when asked with
 * `shared: false`): the WebSocket, its reconnects and its seq, epoch and gap checks live
 * once in the worker (`worker.js`, `hub.js`), and each tab talks to it over a MessagePort
 * with the same methods, properties and events as a `TickMeshClient`. Each tab keeps its
 * own subscriptions and what it passed on (a `Ledger`): it gets only what it subscribed
 * to, never a seq at or below one it passed on, and its subscriptions come back if it is
 * moved to another worker (a worker that fails to start: the tab then runs the same hub
 * in the page, on a connection of its own).
 *
 * A tab leaves when it calls `close()`, when the page is hidden for good (`pagehide`) and,
 * whatever ends it (a crash included), when the Web Lock it holds while attached is
 * released: the worker waits for that lock and detaches the tab once it gets it.
 *
 * @module tickmesh/shared
 */

import { ClientApi } from './api.js';
import { Ledger } from './ledger.js';
import { TickMeshClient, TickMeshError } from './tickmesh.js';

/** The options of a `TickMeshClient` that the worker's connection is made with (the first tab's). */
const CONFIG = ['url', 'token', 'encoding', 'backoffBaseMs', 'backoffMaxMs', 'requestTimeoutMs', 'maxQueued', 'connectTimeoutMs', 'idleHeartbeats', 'transports', 'fallbackAfter', 'pollIntervalMs', 'retryWebSocketMs'];

/**
 * @typedef {import('./tickmesh.js').ClientOptions} ClientOptions
 * @typedef {import('./tickmesh.js').EventMap} EventMap
 * @typedef {import('./tickmesh.js').Status} Status
 * @typedef {{port?: MessagePort, worker?: {port: MessagePort, addEventListener?: Function}, locks?: any}} SharedOptions
 *   `worker`: the SharedWorker to attach to; `port`: a port served by `servePort` (tests);
 *   `locks`: the Web Locks (default `navigator.locks`)
 * @typedef {{msg: {op: string, id: number, fields: Record<string, any>}, resolve: (v: any) => void, reject: (e: Error) => void}} Pending
 */

/** The key a hub names a subscription by, as the tab's ledger drops it. @param {Ledger} ledger @param {string} key */
function dropKey(ledger, key) {
  const [name, tf] = key.slice(2).split('/');
  if (key[0] === 'a') return ledger.dropAccount(name);
  /** @type {Record<string, 'ticks' | 'trades' | 'bars'>} */
  const streams = { t: 'ticks', c: 'ticks', p: 'trades', b: 'bars' };
  ledger.drop(streams[key[0]] ?? 'ticks', name, tf);
}

export class SharedClient extends ClientApi {
  /** @param {ClientOptions & SharedOptions} [options] */
  constructor(options = {}) {
    // This tab's subscriptions and what it passed on: its own guarantees.
    super(new Ledger({ ticks: 0, stale: 0, prints: 0, reprints: 0, bars: 0, rebars: 0, accountEvents: 0, accountRepeats: 0 }), options, 'SharedClient');
    const g = /** @type {any} */ (globalThis);
    /** The connection is the worker's, shared with the other tabs. @type {true} */
    this.shared = true;
    /** The shared connection's, as of its last heartbeat or change of status. */
    this.stats = { reconnects: 0, ticks: 0, stale: 0, conflated: 0, lost: 0, broken: 0, prints: 0, reprints: 0, bars: 0, rebars: 0, accountEvents: 0, accountRepeats: 0 };
    /** @type {Record<string, any>} */
    this._config = {};
    for (const k of CONFIG) if (/** @type {any} */ (options)[k] != null) this._config[k] = /** @type {any} */ (options)[k];
    this._config.url = this.url;
    this._config.encoding = this.encoding;
    /** Sent to the worker, awaiting its reply. @type {Map<number, Pending>} */
    this._pending = new Map();
    /** Made before `connect()`. @type {Pending[]} */
    this._outbox = [];
    this._nextId = 1;
    /** Between `connect()` and `close()`. */
    this._wanted = false;
    /** `hello` sent: requests go to the worker (before it, they wait in `_outbox`). */
    this._attached = false;
    /** The worker has answered: it runs. */
    this._ready = false;
    /** @type {string | null} the Web Lock this tab holds while attached */
    this._lock = null;
    /** @type {(() => void) | null} releases it */
    this._unlock = null;
    this._locks = options.locks ?? g.navigator?.locks ?? null;
    this._worker = options.worker ?? null;
    /** @type {MessagePort | null} */
    this._port = null;
    this._bind(options.port ?? this._worker?.port ?? null);
    // A worker that cannot start (a browser without module workers, a script that fails
    // to load): the same hub runs in the page instead.
    this._worker?.addEventListener?.('error', () => this._local());
    // Hidden for good, or into the back-forward cache: leave; shown from that cache: come back.
    g.addEventListener?.('pagehide', () => this._leave());
    g.addEventListener?.('pageshow', (/** @type {any} */ ev) => ev.persisted && this._wanted && this._join());
  }

  /** @param {MessagePort | null} port */
  _bind(port) {
    if (!port) throw new TypeError('SharedClient: no worker port');
    this._port = port;
    port.onmessage = (ev) => this._onBatch(ev.data);
    port.start?.();
  }

  /** Runs the hub in this page, on a connection of its own, and attaches to it again. */
  async _local() {
    if (this._ready) return;
    this._ready = true;
    const { servePort } = await import('./hub.js');
    const { port1, port2 } = new MessageChannel();
    servePort(port2, new Map(), {});
    this._port?.close();
    this._bind(port1);
    if (this._attached) this._hello(this._lock);
  }

  // ---- connection ----------------------------------------------------------------------

  /**
   * Attaches to the shared connection (which connects if no tab had); once attached, starts
   * it again if it was closed for good.
   */
  connect() {
    if (this._wanted) {
      if (this._attached && this.status === 'closed') this._port?.postMessage({ t: 'connect' });
      return this;
    }
    this._wanted = true;
    this._join();
    return this;
  }

  _join() {
    if (this._attached) return;
    if (!this._locks) return this._hello(null);
    // Held while attached: the worker learns that the tab is gone when it is released.
    const lock = `tickmesh-tab-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    this._locks.request(lock, () => {
      if (!this._wanted || this._attached) return undefined;
      this._hello(lock);
      return new Promise((resolve) => (this._unlock = () => resolve(undefined)));
    });
  }

  /**
   * Leaves the shared connection (it stays open for the other tabs); requests still waiting
   * are rejected. Subscriptions and seq state are kept, so a later `connect()` resumes.
   * @param {number} [code] @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    if (!this._wanted) return;
    this._wanted = false;
    this._leave();
    const err = new TickMeshError('closed', 'client closed');
    for (const p of [...this._pending.values(), ...this._outbox.splice(0)]) p.reject(err);
    this._pending.clear();
    this._emit('close', { code, reason, wasClean: true, terminal: false, willReconnect: false });
    this._setStatus('closed', { code, reason });
  }

  _leave() {
    if (!this._attached) return;
    this._attached = false;
    this._port?.postMessage({ t: 'bye' });
    this._unlock?.();
    this._unlock = null;
    this._lock = null;
  }

  /** Attaches to the hub, then asks again for what this tab holds and what it asked before. @param {string | null} lock */
  _hello(lock) {
    const port = /** @type {MessagePort} */ (this._port);
    this._attached = true;
    this._lock = lock;
    // Sent to a worker that failed, if any: asked again of the hub that replaced it.
    const unanswered = [...this._pending.values()];
    port.postMessage({ t: 'hello', config: { ...this._config, token: this.token }, lock, getToken: !!this.getToken, raw: this.listens('message') });
    for (const fields of this._ledger.replay()) this._post({ msg: { op: 'subscribe', id: this._nextId++, fields }, resolve: () => {}, reject: () => {} });
    for (const p of unanswered) port.postMessage({ t: 'req', ...p.msg });
    for (const p of this._outbox.splice(0)) this._post(p);
  }

  /** @template {keyof EventMap} K @param {K} type @param {(detail: EventMap[K]) => void} fn */
  on(type, fn) {
    const off = super.on(type, fn);
    if (type === 'message') this._port?.postMessage({ t: 'raw', on: true });
    return off;
  }

  // ---- from the worker -----------------------------------------------------------------

  /** @param {{t: string, out: any[]}} batch */
  _onBatch(batch) {
    if (batch?.t !== 'batch') return;
    this._ready = true;
    for (const entry of batch.out) {
      if (!this._attached && entry[0] !== 'reply') continue;
      switch (entry[0]) {
        case 'state':
          this._onState(entry[1]);
          break;
        case 'ev':
          this._onEvent(entry[1], entry[2]);
          break;
        case 'drop':
          dropKey(this._ledger, entry[1]);
          break;
        case 'reply':
          this._onReply(entry[1], entry[2], entry[3]);
          break;
        case 'token?':
          this._giveToken(entry[1]);
          break;
      }
    }
  }

  /** @param {{welcome: any, transport: any, lagMs: number | null, stats: Record<string, number>}} st */
  _onState(st) {
    this.welcome = st.welcome;
    this.transport = st.transport ?? null;
    this.lagMs = st.lagMs;
    Object.assign(this.stats, st.stats);
  }

  /** @param {keyof EventMap} type @param {any} detail */
  _onEvent(type, detail) {
    const ledger = this._ledger;
    switch (type) {
      case 'snapshot':
      case 'tick':
        if (ledger.fresh(detail)) this._emit(type, detail);
        return;
      case 'trades':
        for (const e of ledger.prints(detail.snapshot === true, detail.trades)) this._emit('trades', e);
        return;
      case 'bars':
        for (const e of ledger.newBars(detail.tf, detail.snapshot === true, detail.bars)) this._emit('bars', e);
        return;
      // An account's events are checked again here: a tab that joins, or moves to another
      // worker, passes each seq on once, in order, as a connection of its own does.
      case 'accountsnapshot':
        return this._accountSnapshot(detail);
      case 'account':
        return this._accountEvent(detail);
      case 'error':
        if (detail.account && detail.code === 'unavailable') ledger.resyncAccount(detail.account);
        break;
      case 'status':
        this.status = detail.status;
        break;
      case 'welcome':
        this.welcome = detail;
        break;
      case 'transport':
        this.transport = detail.transport;
        break;
    }
    this._emit(type, detail);
  }

  /** @param {number} id @param {boolean} ok @param {any} value */
  _onReply(id, ok, value) {
    const p = this._pending.get(id);
    if (!p) return;
    this._pending.delete(id);
    if (ok) {
      if (p.msg.op === 'auth') this.token = p.msg.fields.token;
      return p.resolve(value);
    }
    if (value.name === 'TypeError') return p.reject(new TypeError(value.message));
    p.reject(new TickMeshError(value.code ?? 'error', value.message, value.detail));
  }

  /** @param {number} n */
  async _giveToken(n) {
    let token = null;
    try {
      token = (await this.getToken?.()) || null;
    } catch {
      token = null;
    }
    this._port?.postMessage({ t: 'token', n, token });
  }

  // ---- requests ------------------------------------------------------------------------

  /** @param {string} op @param {Record<string, any>} [fields] */
  _request(op, fields = {}) {
    return new Promise((resolve, reject) => {
      const p = { msg: { op, id: this._nextId++, fields }, resolve, reject };
      if (this._attached) return this._post(p);
      if (!this._wanted && this.status === 'closed') return reject(new TickMeshError('closed', 'client closed'));
      if (this._outbox.length >= this.maxQueued) return reject(new TickMeshError('queue_full', 'too many requests while disconnected'));
      this._outbox.push(p);
    });
  }

  /** @param {Pending} p */
  _post(p) {
    this._ledger.record({ op: p.msg.op, ...p.msg.fields });
    this._pending.set(p.msg.id, p);
    /** @type {MessagePort} */ (this._port).postMessage({ t: 'req', ...p.msg });
  }
}

/**
 * A client for this page: a `SharedClient` on the origin's SharedWorker where there is
 * one, else (or with `shared: false`, or a `WebSocket` of the caller's) a `TickMeshClient`
 * with a connection of its own. `workerUrl` is the worker script (default: `worker.js`
 * beside this module; a SharedWorker must come from the page's own origin).
 * @param {ClientOptions & {shared?: boolean, workerUrl?: string | URL}} [options]
 * @returns {TickMeshClient | SharedClient}
 */
export function createClient(options = {}) {
  const { shared = true, workerUrl, ...rest } = options;
  const Worker = /** @type {any} */ (globalThis).SharedWorker;
  if (shared && typeof Worker === 'function' && !rest.WebSocket) {
    try {
      const worker = new Worker(workerUrl ?? new URL('./worker.js', import.meta.url), { type: 'module', name: 'tickmesh' });
      return new SharedClient({ ...rest, worker });
    } catch {
      // A worker script on another origin, or a policy that forbids workers.
    }
  }
  return new TickMeshClient(rest);
}

