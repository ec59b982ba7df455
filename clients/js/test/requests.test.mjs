import { test } from 'node:test';
import assert from 'node:assert/strict';
import { harness } from './fakes.mjs';
import { TickMeshError } from '../src/tickmesh.js';

function ready(options) {
  const h = harness(options);
  h.client.connect();
  h.ws.accept();
  return h;
}

test('replies are matched to their requests by id, in any order', async () => {
  const h = ready();
  const list = h.client.list();
  const chains = h.client.chains('aapl');
  const pong = h.client.ping();
  const [l, c, p] = ['list', 'chains', 'ping'].map((op) => h.ws.lastOp(op));
  assert.equal(new Set([l.id, c.id, p.id]).size, 3, 'distinct ids');
  assert.equal(c.underlying, 'AAPL');

  h.ws.deliver({ type: 'pong', id: p.id });
  h.ws.deliver({
    type: 'chains',
    id: c.id,
    underlying: 'AAPL',
    expiries: [{ expiry: '2026-12-18', strikes: [150, 155] }],
  });
  h.ws.deliver({ type: 'subscriptions', id: l.id, subscriptions: [{ symbol: 'SPY', mode: 'ltp', interval_ms: 0 }] });

  assert.equal((await pong).id, p.id);
  assert.deepEqual((await chains).expiries[0].strikes, [150, 155]);
  assert.equal((await list).subscriptions[0].symbol, 'SPY');
});

test('a reply of the wrong type or an unknown id resolves nothing', async () => {
  const h = ready({ requestTimeoutMs: 1000 });
  const pong = h.client.ping();
  const { id } = h.ws.lastOp('ping');
  h.ws.deliver({ type: 'pong', id: id + 100 });
  h.ws.deliver({ type: 'subscriptions', id, subscriptions: [] });
  let settled = false;
  pong.then(() => (settled = true), () => (settled = true));
  await h.clock.advance(999);
  assert.equal(settled, false);
  h.ws.deliver({ type: 'pong', id });
  assert.equal((await pong).type, 'pong');
});

test('an error reply rejects its request with the protocol code', async () => {
  const h = ready();
  const chains = h.client.chains('NOPE');
  const { id } = h.ws.lastOp('chains');
  h.ws.deliver({ type: 'error', id, code: 'unknown_symbol', message: 'no such underlying' });
  await assert.rejects(chains, (err) => err instanceof TickMeshError && err.code === 'unknown_symbol');
  assert.equal(h.of('error')[0].code, 'unknown_symbol');
});

test('auth resolves with authed and its token is used for the next connection', async () => {
  const h = ready({ token: 'old' });
  const authed = h.client.auth('new');
  const { id, token } = h.ws.lastOp('auth');
  assert.equal(token, 'new');
  h.ws.deliver({ type: 'authed', id, exp: 1900000000 });
  assert.equal((await authed).exp, 1900000000);
  h.ws.serverClose(1006);
  await h.clock.advance(1000);
  assert.equal(h.ws.token(), 'new');
});

test('unanswered requests are rejected when the connection drops or after the timeout', async () => {
  const h = ready({ requestTimeoutMs: 2000 });
  const lost = h.client.ping();
  h.ws.serverClose(1006);
  await assert.rejects(lost, /connection closed/);

  await h.clock.advance(1000);
  h.ws.accept();
  const slow = h.client.ping();
  const rejected = assert.rejects(slow, /no reply to ping/);
  await h.clock.advance(2000);
  await rejected;
});

test('requests made while disconnected are bounded', async () => {
  const h = harness({ maxQueued: 2 });
  h.client.ping();
  h.client.ping();
  await assert.rejects(h.client.ping(), /too many requests/);
});

test('requests after close() are rejected', async () => {
  const h = ready();
  h.client.close();
  await assert.rejects(h.client.ping(), /client closed/);
});

test('heartbeats report lag_ms', () => {
  const h = ready();
  h.ws.deliver({ type: 'hb', ts: 1_700_000_000_000_000, lag_ms: 12 });
  assert.equal(h.of('heartbeat')[0].lag_ms, 12);
  assert.equal(h.client.lagMs, 12);
});
