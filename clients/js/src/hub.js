// @ts-check
/**
 * One connection for many tabs: the worker side of a shared client (`SharedClient`).
 *
 * A `Hub` owns one `TickMeshClient` (one WebSocket, its reconnects, its seq, epoch and gap
 * checks) and the tabs attached to it, each over a MessagePort. What the tabs hold is
 * counted per subscription (`Holders`): one is asked for once, at the richest mode and
 * shortest interval of its tabs, and given up when its last tab gives it up or goes (an
 * account likewise: one subscription for all its tabs, which the connection resumes after
 * every reconnect). A tab that joins a key another tab holds gets what the connection
 * passed on of it (`Replay`; an account's state, or its events from the tab's seq),
 * since the edge sends a snapshot and a history only once per subscription; a tab gets
 * each key at its own interval (`Pacer`). Everything a tab is sent within one turn goes in
 * one message, in order: `['state', ...]`, `['ev', type, detail]`, `['drop', key]`,
 * `['reply', id, ok, value]` and `['token?', n]`.
 *
 * @module tickmesh/hub
 */

import { TickMeshClient } from './tickmesh.js';
import { ACCOUNT_REFUSAL_CODES, REFUSAL_CODES, TIMEFRAMES, accountFields, barKey, chainSymbolPattern, subscribeFields, unsubscribeFields } from './ledger.js';
import { Holders, keysNaming, keysOf, parseKey } from './holders.js';
import { Pacer } from './pace.js';
import { Replay } from './replay.js';

/** Events about the connection, sent to every tab with the connection's state. */
const CONNECTION_EVENTS = ['open', 'transport', 'welcome', 'heartbeat', 'reconnecting', 'close', 'status'];

/**
 * @typedef {{id: number, port: MessagePort, out: any[], getToken: boolean, raw: boolean}} Tab
 * @typedef {{url: string, encoding?: 'json' | 'msgpack', token?: string | null} & Record<string, any>} HubConfig
 * @typedef {{t: 'hello', config: HubConfig, lock?: string | null, getToken?: boolean, raw?: boolean}} Hello
 * @typedef {{setTimeout?: (fn: () => void, ms: number) => any, clearTimeout?: (h: any) => void, now?: () => number,
 *   random?: () => number, WebSocket?: any, locks?: {request: (name: string, fn: () => any) => Promise<any>}}} HubEnv
 */

/** Tabs with the same stream URL, encoding and token share a connection. @param {HubConfig} config */
export function hubKey(config) {
  return JSON.stringify([config.url, config.encoding ?? 'json', config.token ?? null]);
}

export class Hub {
  /**
   * @param {HubConfig} config the first tab's: the stream URL, token, encoding and timings
   * @param {HubEnv} [env] timers, WebSocket and Web Locks (tests give fakes)
   * @param {() => void} [onEmpty] called once the last tab has gone (the connection is closed)
   */
  constructor(config, env = {}, onEmpty = () => {}) {
    const { locks, ...clientEnv } = env;
    this.client = new TickMeshClient({ ...config, ...clientEnv, getToken: () => this._askToken() });
    this.locks = locks ?? null;
    this.onEmpty = onEmpty;
    const c = /** @type {any} */ (this.client);
    this._clock = { setTimeout: c._setTimeout, clearTimeout: c._clearTimeout, now: c._now };
    /** @type {Map<number, Tab>} */
    this.tabs = new Map();
    this._nextTab = 1;
    this.holders = new Holders();
    /** @type {Map<number, {tab: number, id: number}>} the connection's request id -> the tab's */
    this.routes = new Map();
    /** @type {Map<number, (token: string | null) => void>} */
    this._asks = new Map();
    this._nextAsk = 1;
    this.replay = new Replay();
    this.pacer = new Pacer(this._clock, (tab, kind, detail) => this._push(tab, ['ev', kind, detail]));
    this._wire();
  }

  // ---- tabs ---------------------------------------------------------------------------

  /**
   * Attaches a tab; returns its id. The tab is detached when its Web Lock `hello.lock`
   * is released (the tab closed or crashed), or by `detach` (it said `bye`).
   * @param {MessagePort} port @param {Hello} hello
   */
  attach(port, hello) {
    const id = this._nextTab++;
    this.tabs.set(id, { id, port, out: [], getToken: hello.getToken === true, raw: hello.raw === true });
    if (hello.lock && this.locks) this.locks.request(hello.lock, () => this.detach(id)).catch(() => {});
    const { status } = this.client;
    this._push(id, ['state', this._state()]);
    if (status === 'idle' || status === 'closed') {
      this.client.connect();
    } else {
      this._push(id, ['ev', 'status', { status }]);
      if (this.client.welcome) this._push(id, ['ev', 'welcome', this.client.welcome]);
    }
    return id;
  }

  /** A message from tab `id`. @param {number} id @param {any} msg */
  receive(id, msg) {
    const tab = this.tabs.get(id);
    if (!tab || !msg || typeof msg !== 'object') return;
    if (msg.t === 'req') this._request(tab, msg.id, msg.op, msg.fields ?? {});
    else if (msg.t === 'token') this._asks.get(msg.n)?.(typeof msg.token === 'string' ? msg.token : null);
    else if (msg.t === 'raw') tab.raw = msg.on === true;
    else if (msg.t === 'connect' && this.client.status === 'closed') this.client.connect();
  }

  /** Detaches tab `id`: what only it held is unsubscribed; the last tab closes the connection. @param {number} id */
  detach(id) {
    if (!this.tabs.delete(id)) return;
    this._giveUp(id, this.holders.heldBy(id)).catch(() => {});
    this.pacer.dropTab(id);
    if (this.tabs.size) return;
    this.client.close(1000, 'no tab left');
    this.onEmpty();
  }

  /** @param {number} id @param {any[]} entry */
  _push(id, entry) {
    const tab = this.tabs.get(id);
    if (!tab) return;
    tab.out.push(entry);
    if (tab.out.length > 1) return;
    queueMicrotask(() => {
      const out = tab.out;
      tab.out = [];
      if (this.tabs.has(tab.id)) tab.port.postMessage({ t: 'batch', out });
    });
  }

  _state() {
    const c = this.client;
    return { status: c.status, welcome: c.welcome, transport: c.transport, lagMs: c.lagMs, stats: { ...c.stats } };
  }

  /** A fresh token from the first tab that has `getToken`, or null. */
  _askToken() {
    const tab = [...this.tabs.values()].find((t) => t.getToken);
    if (!tab) return null;
    const n = this._nextAsk++;
    return new Promise((resolve) => {
      const timer = this._clock.setTimeout(() => done(null), this.client.requestTimeoutMs);
      /** @param {string | null} token */
      const done = (token) => {
        this._clock.clearTimeout(timer);
        this._asks.delete(n);
        resolve(token);
      };
      this._asks.set(n, done);
      this._push(tab.id, ['token?', n]);
    });
  }

  // ---- requests -----------------------------------------------------------------------

  /** @param {Tab} tab @param {number} rid @param {string} op @param {Record<string, any>} fields */
  async _request(tab, rid, op, fields) {
    try {
      const value = await this._answer(tab, rid, op, fields);
      this._push(tab.id, ['reply', rid, true, { ...value, id: rid }]);
    } catch (err) {
      const e = /** @type {any} */ (err);
      this._push(tab.id, ['reply', rid, false, { name: e?.name, code: e?.code, message: String(e?.message ?? e), detail: e?.detail }]);
    }
  }

  /** @param {Tab} tab @param {number} rid @param {string} op @param {Record<string, any>} fields */
  async _answer(tab, rid, op, fields) {
    const c = this.client;
    switch (op) {
      case 'subscribe':
        if (typeof fields.account === 'string') return this._subscribeAccount(tab.id, rid, accountFields(fields.account, { fromSeq: fields.from_seq }));
        return this._subscribe(tab.id, rid, subscribeFields(fields));
      case 'unsubscribe': {
        const f = typeof fields.account === 'string' ? accountFields(fields.account) : unsubscribeFields(fields);
        const keys = keysOf(f).map(([k]) => k).filter((k) => this.holders.holds(k, tab.id));
        await this._giveUp(tab.id, keys, rid);
        return { type: 'unsubscribed', ...f };
      }
      case 'list':
        return this._own(tab.id, await this._routed(tab.id, rid, c.list()));
      case 'chains':
        return this._routed(tab.id, rid, c.chains(fields.underlying));
      case 'ping':
        return this._routed(tab.id, rid, c.ping());
      case 'auth':
        return this._routed(tab.id, rid, c.auth(fields.token));
      default:
        throw new TypeError(`unknown op ${op}`);
    }
  }

  /**
   * Waits for a request of the connection, routing its `error` events to the tab.
   * @template T @param {number} tab @param {number} rid @param {Promise<T> & {id?: number}} reply
   */
  async _routed(tab, rid, reply) {
    const id = reply.id;
    if (id !== undefined) this.routes.set(id, { tab, id: rid });
    try {
      return await reply;
    } finally {
      if (id !== undefined) this.routes.delete(id);
    }
  }

  /**
   * Adds the tab to each key, asks the connection for them at their holders' richest mode
   * and shortest interval, and gives the tab what the connection has of keys other tabs
   * held already.
   * @param {number} tab @param {number} rid @param {Record<string, any>} f
   */
  async _subscribe(tab, rid, f) {
    const keys = keysOf(f);
    const joined = this.holders.add(tab, keys);
    const asks = this.holders.subscribes(keys.map(([k]) => k), f).map((g) => this._routed(tab, rid, this.client.subscribe(g)));
    for (const key of joined) this._catchUp(tab, key);
    const replies = await Promise.all(asks);
    /** @type {Record<string, any>} */
    const reply = { ...replies[0], type: 'subscribed' };
    for (const field of ['symbols', 'chains', 'delayed']) {
      const all = [...new Set(replies.flatMap((r) => r?.[field] ?? []))];
      if (all.length || field === 'symbols') reply[field] = all;
    }
    if (f.stream !== 'trades') reply.interval_ms = Math.max(f.interval_ms, this.client.welcome?.limits?.min_interval_ms ?? 0);
    if (f.mode) reply.mode = f.mode;
    return reply;
  }

  /**
   * Adds the tab to an account's holders. The first asks the connection for it (from the
   * tab's seq, if it asked for one); a tab that joins gets what the connection has of it
   * (`Replay.accountOf`), then the events after it.
   * @param {number} tab @param {number} rid @param {{account: string, from_seq?: number}} f
   */
  async _subscribeAccount(tab, rid, f) {
    const key = `a:${f.account}`;
    const first = !this.holders.tabsOf(key)?.size;
    this.holders.add(tab, [[key, {}]]);
    if (first) {
      const opts = f.from_seq === undefined ? {} : { fromSeq: f.from_seq };
      const reply = await this._routed(tab, rid, this.client.subscribeAccount(f.account, opts));
      return { ...reply, type: 'subscribed' };
    }
    for (const [type, detail] of this.replay.accountOf(f.account, f.from_seq)) this._push(tab, ['ev', type, detail]);
    return { type: 'subscribed', ...f };
  }

  /**
   * Takes `keys` from the tab: those it was the last to hold are unsubscribed, those whose
   * joint mode or interval changes are subscribed again at the new one.
   * @param {number} tab @param {string[]} keys @param {number} [rid] the tab's request, if any
   */
  async _giveUp(tab, keys, rid) {
    const { released, changed } = this.holders.remove(tab, keys);
    for (const key of keys) this.pacer.drop(tab, key);
    for (const key of released) this._forget(key);
    /** @type {Array<Promise<any>>} */
    const asks = [];
    const send = (/** @type {Promise<any> & {id?: number}} */ p) => asks.push(rid === undefined ? p : this._routed(tab, rid, p));
    for (const f of this.holders.unsubscribes(released)) send(f.account ? this.client.unsubscribeAccount(f.account) : this.client.unsubscribe(f));
    // The edge drops a chain's legs with the chain, those held by themselves too.
    const legs = released.filter((k) => k[0] === 'c').flatMap((k) => this.holders.legsHeld(parseKey(k).name));
    for (const f of this.holders.subscribes([...changed, ...legs])) send(this.client.subscribe(f));
    await Promise.all(asks);
  }

  /** Forgets what was kept of a key no tab holds. @param {string} key */
  _forget(key) {
    const { kind, name, tf } = parseKey(key);
    if (kind === 'a') return this.replay.forgetAccount(name);
    if (kind === 'p') return this.replay.forgetPrints(name);
    if (kind === 'b') return this.replay.forgetBars(barKey(name, tf));
    const pattern = kind === 'c' ? chainSymbolPattern(name) : null;
    const symbols = kind === 'c' ? (pattern ? this.replay.symbolsMatching(pattern) : []) : [name];
    for (const s of symbols) if (!this.holders.tickRoute(s).size) this.replay.forgetTicks(s);
  }

  /** The reply to `list`, of the tab's own subscriptions and accounts. @param {number} tab @param {{subscriptions?: any[], accounts?: string[]}} reply */
  _own(tab, reply) {
    const h = this.holders;
    const subscriptions = (reply.subscriptions ?? []).filter((s) =>
      s.stream === 'trades' ? h.holds(`p:${s.symbol}`, tab) : s.stream === 'bars' ? h.holds(`b:${barKey(s.symbol, s.tf)}`, tab) : h.tickRoute(s.symbol).has(tab),
    );
    /** @type {Record<string, any>} */
    const own = { ...reply, subscriptions };
    const accounts = (reply.accounts ?? []).filter((/** @type {string} */ a) => h.holds(`a:${a}`, tab));
    if (accounts.length) own.accounts = accounts;
    else delete own.accounts;
    return own;
  }

  /** What the connection has of `key`, for a tab that joins it. @param {number} tab @param {string} key */
  _catchUp(tab, key) {
    const { kind, name, tf } = parseKey(key);
    const history = this.holders.tabsOf(key)?.get(tab)?.history ?? 0;
    /** @type {Array<[string, any]>} */
    let events;
    if (kind === 'p') events = [['trades', this.replay.printsOf(name, history)]];
    else if (kind === 'b') events = [['bars', this.replay.barsOf(name, tf, barKey(name, tf), history)]];
    else if (kind === 't') events = this.replay.ticksOf(name);
    else events = this.replay.symbolsMatching(this.holders.chainPattern(name)).flatMap((s) => this.replay.ticksOf(s));
    for (const [type, detail] of events) if (detail) this._push(tab, ['ev', type, detail]);
  }

  // ---- the connection's events ----------------------------------------------------------

  /**
   * Sends a symbol's event to the tabs that hold it, each at its own interval.
   * @param {string} kind @param {string} symbol @param {any} detail
   */
  _toTicks(kind, symbol, detail) {
    const route = this.holders.tickRoute(symbol);
    if (!route.size) return false;
    const fastest = Math.min(...route.values());
    for (const [tab, every] of route) this.pacer.offer(tab, `t:${symbol}`, every > fastest ? every : 0, kind, detail);
    return true;
  }

  _wire() {
    const c = this.client;
    for (const type of CONNECTION_EVENTS) {
      c.on(/** @type {any} */ (type), (detail) => {
        for (const id of this.tabs.keys()) {
          this._push(id, ['state', this._state()]);
          this._push(id, ['ev', type, detail]);
        }
      });
    }
    c.on('message', (msg) => {
      for (const tab of this.tabs.values()) if (tab.raw) this._push(tab.id, ['ev', 'message', msg]);
    });
    for (const kind of /** @type {const} */ (['snapshot', 'tick'])) {
      c.on(kind, (tick) => {
        if (this._toTicks(kind, tick.symbol, tick)) this.replay.tick(tick);
      });
    }
    c.on('symbolstatus', (s) => {
      if (this._toTicks('symbolstatus', s.symbol, s)) this.replay.symbolStatus(s);
    });
    c.on('gap', (g) => this._toTicks('gap', g.symbol, g));
    c.on('continuity', (e) => this._toTicks('continuity', e.symbol, e));
    c.on('trades', (e) => {
      const h = this.holders.tabsOf(`p:${e.symbol}`);
      const joint = this.holders.joint(`p:${e.symbol}`);
      if (!h || !joint) return;
      this.replay.addPrints(e.symbol, e.trades, joint.history);
      for (const tab of h.keys()) this._push(tab, ['ev', 'trades', e]);
    });
    c.on('bars', (e) => {
      const key = `b:${barKey(e.symbol, e.tf)}`;
      const h = this.holders.tabsOf(key);
      const joint = this.holders.joint(key);
      if (!h || !joint) return;
      this.replay.addBars(barKey(e.symbol, e.tf), e.bars, joint.history);
      for (const [tab, p] of h) this.pacer.offer(tab, key, (p.interval_ms ?? 0) > joint.interval_ms ? p.interval_ms ?? 0 : 0, 'bars', e);
    });
    // Never paced or folded: every event of an account goes to each of its tabs.
    c.on('accountsnapshot', (snap) => {
      const h = this.holders.tabsOf(`a:${snap.account}`);
      if (!h?.size) return;
      this.replay.accountSnapshot(snap);
      for (const tab of h.keys()) this._push(tab, ['ev', 'accountsnapshot', snap]);
    });
    c.on('account', (e) => {
      const h = this.holders.tabsOf(`a:${e.account}`);
      if (!h?.size) return;
      this.replay.accountEvent(e);
      for (const tab of h.keys()) this._push(tab, ['ev', 'account', e]);
    });
    c.on('error', (msg) => this._onError(msg));
  }

  /**
   * Sends a server error to the tab whose request it answers (with that tab's id), or to
   * the tabs holding its symbol, or to every tab. A refusal that ended a subscription of
   * the connection ends it for each tab holding it: they are sent `['drop', key]` first.
   * @param {import('./tickmesh.js').ServerError} msg
   */
  _onError(msg) {
    const route = msg.id != null ? this.routes.get(msg.id) : undefined;
    /** @type {Map<number, number | undefined>} tab -> the id it is shown with */
    const to = new Map();
    if (route) to.set(route.tab, route.id);
    const symbol = msg.symbol;
    if (symbol && REFUSAL_CODES.has(msg.code)) {
      const held = this.client.subscriptions();
      for (const key of keysNaming(symbol, TIMEFRAMES)) {
        const h = this.holders.tabsOf(key);
        if (!h || stillHeld(held, key)) continue;
        for (const tab of h.keys()) {
          this._push(tab, ['drop', key]);
          this.pacer.drop(tab, key);
          if (!to.has(tab)) to.set(tab, undefined);
        }
        this.holders.drop(key);
        this._forget(key);
      }
    }
    const account = msg.account;
    if (account) {
      const key = `a:${account}`;
      const h = this.holders.tabsOf(key);
      const ended = ACCOUNT_REFUSAL_CODES.has(msg.code) && !this.client.subscriptions().accounts.includes(account);
      for (const tab of h?.keys() ?? []) {
        if (ended) this._push(tab, ['drop', key]);
        if (!to.has(tab)) to.set(tab, undefined);
      }
      if (ended && h) {
        this.holders.drop(key);
        this._forget(key);
      }
    }
    if (!route && symbol) for (const key of keysNaming(symbol, TIMEFRAMES)) for (const tab of this.holders.tabsOf(key)?.keys() ?? []) if (!to.has(tab)) to.set(tab, undefined);
    if (!route && !symbol && !account) for (const tab of this.tabs.keys()) to.set(tab, undefined);
    for (const [tab, id] of to) {
      const { id: _, ...rest } = msg;
      this._push(tab, ['ev', 'error', id === undefined ? rest : { ...rest, id }]);
    }
  }

}

/**
 * Whether the connection still holds `key` (a refusal it heard may have ended it).
 * @param {ReturnType<TickMeshClient['subscriptions']>} held @param {string} key
 */
function stillHeld(held, key) {
  const { kind, name, tf } = parseKey(key);
  if (kind === 'a') return held.accounts.includes(name);
  if (kind === 't') return name in held.symbols;
  if (kind === 'c') return name in held.chains;
  if (kind === 'p') return name in held.trades;
  return name in (held.bars[/** @type {import('./tickmesh.js').Timeframe} */ (tf)] ?? {});
}

/**
 * Serves tabs on `port`: its first message, a `hello`, attaches it to the hub of its
 * stream URL, encoding and token (made on first use, dropped when its last tab goes);
 * a `bye` detaches it, and a later `hello` attaches it again.
 * @param {MessagePort} port @param {Map<string, Hub>} hubs @param {HubEnv} [env]
 */
export function servePort(port, hubs, env = {}) {
  /** @type {{hub: Hub, id: number} | null} */
  let at = null;
  port.onmessage = (ev) => {
    const msg = ev.data;
    if (msg?.t === 'hello' && !at && msg.config) {
      const key = hubKey(msg.config);
      let hub = hubs.get(key);
      if (!hub) {
        const made = new Hub(msg.config, env, () => hubs.get(key) === made && hubs.delete(key));
        hubs.set(key, (hub = made));
      }
      at = { hub, id: hub.attach(port, msg) };
    } else if (msg?.t === 'bye' && at) {
      at.hub.detach(at.id);
      at = null;
    } else if (at) {
      at.hub.receive(at.id, msg);
    }
  };
}
