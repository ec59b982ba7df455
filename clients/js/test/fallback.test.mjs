// Where no WebSocket gets through, the client falls back on Server-Sent Events, then on
// polling snapshots, says which carries it, and goes back to the WebSocket first on the
// next connection.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { harness, settle } from './fakes.mjs';

/** A scripted EventSource: the test plays the edge's side. */
function fakeEventSourceClass() {
  class FakeEventSource {
    /** @type {FakeEventSource[]} */
    static instances = [];
    constructor(url) {
      this.url = new URL(url);
      this.listeners = new Map();
      this.closed = false;
      this.onopen = this.onerror = null;
      FakeEventSource.instances.push(this);
    }
    addEventListener(type, fn) {
      this.listeners.set(type, fn);
    }
    close() {
      this.closed = true;
    }
    // ---- the edge's side ----
    open() {
      this.onopen?.();
    }
    event(obj, name = obj.type) {
      this.listeners.get(name)?.({ data: JSON.stringify(obj) });
    }
    welcome() {
      this.event({ type: 'welcome', protocol: 1, session: 'e-1', edge: 'edge-sse', heartbeat_ms: 5000, limits: { max_symbols: 500, max_msgs_per_s: 50, min_interval_ms: 0 } });
    }
  }
  return FakeEventSource;
}

/** A scripted fetch: answers from `routes` (path -> status and body), and records each call. */
function fakeFetch(routes) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const u = new URL(url);
    calls.push({ url: u, headers: init.headers ?? {} });
    const answer = routes[u.pathname];
    if (!answer) throw new TypeError('fetch failed');
    const { status, body } = typeof answer === 'function' ? answer(u) : answer;
    return { ok: status >= 200 && status < 300, status, json: async () => body };
  };
  return { fetch, calls };
}

test('a WebSocket that fails before open twice in a row falls back on SSE, which carries the subscriptions and says so', async () => {
  const ES = fakeEventSourceClass();
  const h = harness({ transports: ['websocket', 'sse', 'poll'], EventSource: ES, token: 'jwt.1' });
  const transports = [];
  h.client.on('transport', (t) => transports.push(t));
  h.client.connect();
  const sub = h.client.subscribe({ symbols: ['AAPL', 'MSFT'], interval_ms: 500 });
  // Once (a gateway restarting): the WebSocket again, after the backoff.
  h.ws.serverClose(1006);
  await h.clock.advance(0);
  assert.equal(ES.instances.length, 0, 'no fallback after one failure');
  await h.clock.advance(h.of('reconnecting').at(-1).delayMs);
  assert.equal(h.WS.instances.length, 2);
  h.ws.serverClose(1006);
  await h.clock.advance(0);
  assert.equal(ES.instances.length, 1, 'SSE tried at once after the second failure');
  let es = ES.instances[0];
  assert.equal(es.url.pathname, '/v1/sse');
  assert.equal(es.url.protocol, 'http:');
  assert.equal(es.url.searchParams.get('token'), 'jwt.1');
  es.open();
  es.welcome();
  assert.deepEqual(transports, [{ transport: 'sse', previous: null }]);
  assert.equal(h.client.transport, 'sse');
  // The held subscribe is sent after the welcome: the stream opens again with it.
  await h.clock.advance(0);
  assert.ok(es.closed, 'the bare stream was closed');
  es = ES.instances.at(-1);
  assert.equal(es.url.searchParams.get('symbols'), 'AAPL,MSFT');
  assert.equal(es.url.searchParams.get('interval_ms'), '500');
  es.open();
  es.welcome(); // the new stream's own: not passed on a second time
  es.event({ type: 'error', id: 1, code: 'not_entitled', symbol: 'MSFT', message: 'no' });
  es.event({ type: 'subscribed', id: 1, symbols: ['AAPL'], interval_ms: 500, mode: 'quote' });
  const reply = await sub;
  assert.deepEqual(reply.symbols, ['AAPL']);
  es.event({ type: 'snapshot', symbol: 'AAPL', seq: 10, epoch: 1, last: 1.5 });
  es.event({ type: 'ticks', ticks: [{ symbol: 'AAPL', seq: 11, epoch: 1, last: 1.6 }] });
  es.event({ type: 'ticks', ticks: [{ symbol: 'AAPL', seq: 11, epoch: 1, last: 1.6 }] });
  assert.equal(h.of('welcome').length, 1);
  assert.deepEqual(h.of('snapshot').map((t) => t.seq), [10]);
  assert.deepEqual(h.of('tick').map((t) => t.seq), [11], 'a repeated seq is dropped');
  assert.deepEqual(h.of('error').map((e) => [e.code, e.symbol]), [['not_entitled', 'MSFT']]);

  // The stream ends with the edge's close: the next connection tries the WebSocket first.
  let before = h.WS.instances.length;
  es.event({ code: 4008, reason: 'slow consumer' }, 'close');
  assert.deepEqual(h.of('close').at(-1), { code: 4008, reason: 'slow consumer', wasClean: true, terminal: false, willReconnect: true });
  await h.clock.advance(h.of('reconnecting').at(-1).delayMs);
  assert.equal(h.WS.instances.length, before + 1, 'the WebSocket is tried again');
  h.ws.accept();
  assert.deepEqual(transports.at(-1), { transport: 'websocket', previous: 'sse' });
  assert.deepEqual(h.ws.lastOp('subscribe').symbols, ['AAPL'], 'what SSE accepted is replayed');

  // Welcomed, the WebSocket counts its failures afresh: one drop and one failure do not
  // move it to SSE again.
  before = ES.instances.length;
  h.ws.serverClose(1006);
  await h.clock.advance(h.of('reconnecting').at(-1).delayMs);
  h.ws.serverClose(1006);
  await h.clock.advance(0);
  assert.equal(ES.instances.length, before, 'one failed attempt after a welcome is not two');
});

test('a fallback stream ends after retryWebSocketMs so that the WebSocket is tried again', async () => {
  const ES = fakeEventSourceClass();
  const h = harness({ transports: ['websocket', 'sse'], EventSource: ES, fallbackAfter: 1, retryWebSocketMs: 5000 });
  h.client.connect();
  h.ws.serverClose(1006);
  await h.clock.advance(0);
  const es = ES.instances[0];
  es.open();
  es.welcome();
  assert.equal(h.client.transport, 'sse');
  const before = h.WS.instances.length;
  await h.clock.advance(5000);
  assert.ok(es.closed, 'the stream was closed');
  assert.deepEqual(h.of('close').at(-1), { code: 1000, reason: 'trying the WebSocket again', wasClean: true, terminal: false, willReconnect: true });
  await h.clock.advance(h.of('reconnecting').at(-1).delayMs);
  assert.equal(h.WS.instances.length, before + 1);
  h.ws.accept();
  assert.equal(h.client.transport, 'websocket');
});

test('where neither stream gets through, snapshots are polled and passed on, and the poll makes way for a stream again', async () => {
  const ES = fakeEventSourceClass();
  let value = 1.5;
  let seq = 10;
  const { fetch, calls } = fakeFetch({
    '/readyz': { status: 200, body: null },
    '/v1/snapshot': (u) => ({
      status: 200,
      body: {
        snapshots: u.searchParams.get('symbols').split(',').filter((s) => s === 'AAPL').map((symbol) => ({ symbol, seq, epoch: 1, last: value })),
        errors: u.searchParams.get('symbols').includes('TSLA') ? [{ type: 'error', code: 'not_entitled', symbol: 'TSLA', message: 'no' }] : [],
      },
    }),
  });
  const h = harness({ transports: ['websocket', 'sse', 'poll'], EventSource: ES, fetch, token: 'jwt.2', fallbackAfter: 1, pollIntervalMs: 1000, retryWebSocketMs: 10000 });
  const transports = [];
  h.client.on('transport', (t) => transports.push(t.transport));
  h.client.connect();
  h.ws.serverClose(1006);
  await h.clock.advance(0);
  ES.instances[0].onerror(); // the stream is refused too
  await h.clock.advance(0);
  for (let i = 0; i < 4; i++) await settle();
  assert.deepEqual(transports, ['poll']);
  assert.equal(h.client.status, 'open');
  const reply = await Promise.all([h.client.subscribe({ symbols: ['AAPL', 'TSLA'], mode: 'ltp', interval_ms: 250 }), h.clock.advance(0)]);
  assert.deepEqual(reply[0].symbols, ['AAPL']);
  assert.equal(reply[0].interval_ms, 1000, 'no faster than the poll');
  const polls = calls.filter((c) => c.url.pathname === '/v1/snapshot');
  assert.equal(polls[0].url.searchParams.get('mode'), 'ltp');
  assert.equal(polls[0].headers.authorization, 'Bearer jwt.2', 'the token in the header, never the URL');
  assert.equal(polls[0].url.searchParams.get('token'), null);
  assert.deepEqual(h.of('snapshot').map((t) => [t.symbol, t.last]), [['AAPL', 1.5]]);
  assert.deepEqual(h.of('error').map((e) => [e.code, e.symbol]), [['not_entitled', 'TSLA']]);
  // Each poll passes on a newer value; the same one again is dropped by seq.
  await h.clock.advance(1000);
  [value, seq] = [1.7, 12];
  await h.clock.advance(1000);
  assert.deepEqual(h.of('snapshot').map((t) => t.last), [1.5, 1.7]);
  assert.equal(calls.filter((c) => c.url.pathname === '/v1/snapshot').at(-1).url.searchParams.get('symbols'), 'AAPL', 'a refused symbol is not asked for again');

  // After `retryWebSocketMs` the poll ends and the WebSocket is tried first again.
  const before = h.WS.instances.length;
  await h.clock.advance(10000);
  await h.clock.advance(h.of('reconnecting').at(-1).delayMs);
  assert.equal(h.WS.instances.length, before + 1);
  h.ws.accept();
  assert.deepEqual(transports, ['poll', 'websocket']);
});

test('a refused token over the poll is a terminal close', async () => {
  const { fetch } = fakeFetch({
    '/readyz': { status: 200, body: null },
    '/v1/snapshot': { status: 401, body: { type: 'error', code: 'unauthorized', message: 'token revoked' } },
  });
  const h = harness({ transports: ['poll'], fetch, token: 'jwt.3' });
  h.client.connect();
  for (let i = 0; i < 4; i++) await settle();
  const sub = h.client.subscribe({ symbols: ['AAPL'] });
  sub.catch(() => {});
  await h.clock.advance(0);
  for (let i = 0; i < 4; i++) await settle();
  assert.deepEqual(h.of('close').at(-1), { code: 4401, reason: 'token revoked', wasClean: true, terminal: true, willReconnect: false });
  assert.equal(h.client.status, 'closed');
});

test('over SSE, stopping the tape or bars of a symbol leaves its ticks on the stream', async () => {
  const ES = fakeEventSourceClass();
  const h = harness({ transports: ['websocket', 'sse'], EventSource: ES, fallbackAfter: 1 });
  h.client.connect();
  h.ws.serverClose(1006);
  await h.clock.advance(0);
  ES.instances[0].open();
  ES.instances[0].welcome();
  const sub = h.client.subscribe({ symbols: ['AAPL'] });
  await h.clock.advance(0);
  let es = ES.instances.at(-1);
  assert.equal(es.url.searchParams.get('symbols'), 'AAPL');
  es.open();
  es.welcome();
  es.event({ type: 'subscribed', id: 1, symbols: ['AAPL'], interval_ms: 250, mode: 'quote' });
  await sub;
  const streams = ES.instances.length;
  await h.client.unsubscribe({ symbols: ['AAPL'], stream: 'trades' }).catch(() => {});
  await h.client.unsubscribe({ symbols: ['AAPL'], stream: 'bars', tf: '1m' }).catch(() => {});
  await h.clock.advance(0);
  assert.equal(ES.instances.length, streams, 'the stream is not opened again without AAPL');
  assert.ok(!es.closed, 'the stream carrying AAPL stays open');
  assert.deepEqual(Object.keys(h.client.subscriptions().symbols), ['AAPL']);
});
