// Test doubles for the TickMesh JS client: a scripted WebSocket and a manual clock.

import { TickMeshClient } from '../src/tickmesh.js';
import { servePort } from '../src/hub.js';
import { SharedClient } from '../src/shared.js';
import { encode, decode } from '../src/msgpack.js';

/** A clock whose timers run only when the test advances it. */
export class FakeClock {
  constructor() {
    this.time = 0;
    this.nextId = 1;
    /** @type {Map<number, {at: number, fn: () => void, delay: number}>} */
    this.timers = new Map();
    this.now = () => this.time;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.time + Math.max(0, ms), fn, delay: ms });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Runs every timer due within `ms`, in time order, letting promises settle between. */
  async advance(ms) {
    const end = this.time + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
      await settle();
    }
    this.time = end;
  }
}

/** Lets pending promise callbacks (an async getToken, say) run. */
export function settle() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A fresh WebSocket class whose instances the test drives from the server side. */
export function fakeWebSocketClass() {
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    /** @type {FakeWebSocket[]} */
    static instances = [];

    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.protocol = '';
      this.readyState = 0;
      this.binaryType = 'blob';
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeWebSocket.instances.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`);
      this.sent.push(data);
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 2;
    }

    // ---- the server's side ----

    open() {
      this.readyState = 1;
      this.protocol = [].concat(this.protocols)[0];
      this.onopen?.({ type: 'open' });
    }

    /** Delivers one server message in the negotiated encoding. */
    deliver(obj) {
      const data =
        this.protocol === 'tickmesh.v1.msgpack'
          ? toArrayBuffer(encode(obj))
          : JSON.stringify(obj);
      this.onmessage?.({ type: 'message', data });
    }

    welcome(extra = {}) {
      this.deliver({
        type: 'welcome',
        protocol: 1,
        session: 's1',
        edge: 'edge-test-1',
        heartbeat_ms: 5000,
        limits: { max_symbols: 500, max_msgs_per_s: 50, min_interval_ms: 0 },
        ...extra,
      });
    }

    /** Open and welcome: the session is ready. */
    accept() {
      this.open();
      this.welcome();
    }

    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ type: 'close', code, reason, wasClean: code !== 1006 });
    }

    /** Client messages sent on this socket, decoded. */
    messages() {
      return this.sent.map((d) => (typeof d === 'string' ? JSON.parse(d) : decode(d)));
    }

    /** The last client message with this op. */
    lastOp(op) {
      return this.messages().filter((m) => m.op === op).at(-1);
    }

    /** The token query parameter the client connected with. */
    token() {
      return new URL(this.url).searchParams.get('token');
    }
  }
  return FakeWebSocket;
}

function toArrayBuffer(u8) {
  return u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength);
}

/** Every event of a client, in order, as `{type, detail}`. */
function recorded(client) {
  const events = [];
  for (const type of ['open', 'welcome', 'snapshot', 'tick', 'heartbeat', 'error', 'reconnecting', 'close', 'status', 'gap', 'continuity', 'symbolstatus', 'trades', 'bars', 'accountsnapshot', 'account', 'accountcontinuity']) {
    client.on(type, (detail) => events.push({ type, detail }));
  }
  return events;
}

/**
 * A client wired to a fake clock and fake sockets.
 * `random` defaults to 0.5 so that backoff delays are exact halves of their ceilings.
 */
export function harness(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const client = new TickMeshClient({
    url: 'ws://edge.test/v1/stream',
    WebSocket: WS,
    // The WebSocket alone, unless a test asks for the fallbacks (fallback.test.mjs).
    transports: ['websocket'],
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    ...options,
  });
  const events = recorded(client);
  return {
    clock,
    WS,
    client,
    events,
    /** The most recent socket. */
    get ws() {
      return WS.instances.at(-1);
    },
    of(type) {
      return events.filter((e) => e.type === type).map((e) => e.detail);
    },
  };
}

/** Requests left in flight by a drop reject; tests that look at what is replayed ignore that. */
export function inFlight(promise) {
  promise.catch(() => {});
}

/** Drops the harness's connection and accepts the next one, after any backoff. */
export async function reconnect(h) {
  h.ws.serverClose(1006);
  await h.clock.advance(h.client.backoffMaxMs);
  h.ws.accept();
}

/** Lets messages between MessagePorts (and the promises they settle) arrive. */
export async function drain() {
  for (let i = 0; i < 8; i++) await settle();
}

/** Web Locks as a browser grants them: in order per name; `crash` ends a holder without its release. */
export class FakeLocks {
  constructor() {
    /** @type {Map<string, Array<{fn: () => any, resolve: (v: any) => void}>>} */
    this.queues = new Map();
  }

  request(name, fn) {
    return new Promise((resolve) => {
      let q = this.queues.get(name);
      if (!q) this.queues.set(name, (q = []));
      q.push({ fn, resolve });
      // Granted later, as a browser does: a request is never granted within the call.
      if (q.length === 1) queueMicrotask(() => this._grant(name));
    });
  }

  _grant(name) {
    const q = this.queues.get(name);
    if (!q?.length) return this.queues.delete(name);
    const head = q[0];
    Promise.resolve(head.fn()).then((v) => {
      if (q[0] !== head) return;
      q.shift();
      head.resolve(v);
      this._grant(name);
    });
  }

  /** The names held now. */
  held() {
    return [...this.queues.keys()];
  }

  /** The holder of `name` is gone (its tab closed or crashed): the next request is granted. */
  crash(name) {
    this.queues.get(name)?.shift();
    this._grant(name);
  }
}

/**
 * Tabs of one shared connection: a hub served as the SharedWorker serves it, on a fake
 * clock and fake sockets, and `tab()` attaches another `SharedClient` to it.
 */
export function sharedHarness(options = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const locks = new FakeLocks();
  const hubs = new Map();
  const env = { WebSocket: WS, transports: ['websocket'], setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now, random: () => 0.5, locks };
  const ports = [];
  /** Every request answered so far, by socket. */
  const answered = new WeakMap();
  const h = {
    clock,
    WS,
    locks,
    hubs,
    get ws() {
      return WS.instances.at(-1);
    },
    /** A tab: a SharedClient on a port of its own, recording its events. */
    tab(tabOptions = {}) {
      const { port1, port2 } = new MessageChannel();
      ports.push(port1, port2);
      servePort(port2, hubs, env);
      const client = new SharedClient({ url: 'ws://edge.test/v1/stream', port: port1, locks, ...options, ...tabOptions });
      const events = recorded(client);
      return {
        client,
        events,
        of: (type) => events.filter((e) => e.type === type).map((e) => e.detail),
        /** `SYMBOL:seq` of each tick and snapshot (`*` before a snapshot's). */
        seqs: () => events.filter((e) => e.type === 'tick' || e.type === 'snapshot').map((e) => `${e.type === 'snapshot' ? '*' : ''}${e.detail.symbol}:${e.detail.seq}`),
      };
    },
    /** Answers every request of the current socket not answered yet, as an edge that accepts everything. */
    answer() {
      const ws = h.ws;
      const done = answered.get(ws) ?? new Set();
      answered.set(ws, done);
      for (const m of ws.messages()) {
        if (done.has(m.id)) continue;
        done.add(m.id);
        const type = { subscribe: 'subscribed', unsubscribe: 'unsubscribed', list: 'subscriptions', ping: 'pong', chains: 'chains' }[m.op];
        const { op: _, ...fields } = m;
        ws.deliver({ type, ...fields, symbols: m.symbols ?? [], chains: m.chains ?? [] });
      }
    },
    /** The requests sent on the current socket, without ids. */
    sent() {
      return h.ws.messages().map(({ id: _, ...m }) => m);
    },
    close() {
      for (const p of ports) p.close();
    },
  };
  return h;
}

/** A shared harness of `n` tabs, connected and welcomed; closed after test `t`. */
export async function connectedTabs(t, n = 1, options = {}) {
  const h = sharedHarness(options);
  t.after(() => h.close());
  const tabs = Array.from({ length: n }, () => h.tab());
  for (const tab of tabs) tab.client.connect();
  await drain();
  h.ws.accept();
  await drain();
  return { h, tabs };
}
