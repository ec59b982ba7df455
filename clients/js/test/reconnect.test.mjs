import { test } from 'node:test';
import assert from 'node:assert/strict';
import { harness } from './fakes.mjs';

/** Makes each connection attempt fail before open and returns the delays chosen. */
async function failedAttemptDelays(h, n) {
  const delays = [];
  for (let i = 0; i < n; i++) {
    const before = h.WS.instances.length;
    h.ws.serverClose(1006);
    const { delayMs } = h.of('reconnecting').at(-1);
    delays.push(delayMs);
    await h.clock.advance(delayMs);
    assert.equal(h.WS.instances.length, before + 1, `attempt ${i + 1} dialled after its delay`);
  }
  return delays;
}

test('connects with the token as a query parameter and the JSON subprotocol by default', () => {
  const h = harness({ token: 'jwt.abc' });
  h.client.connect();
  assert.equal(h.WS.instances.length, 1);
  assert.equal(h.ws.token(), 'jwt.abc');
  assert.equal(new URL(h.ws.url).pathname, '/v1/stream');
  assert.deepEqual(h.ws.protocols, ['tickmesh.v1.json']);
  assert.equal(h.ws.binaryType, 'arraybuffer');
});

test('offers the MessagePack subprotocol and speaks it in binary frames', async () => {
  const h = harness({ encoding: 'msgpack' });
  h.client.connect();
  assert.deepEqual(h.ws.protocols, ['tickmesh.v1.msgpack']);
  h.ws.accept();
  assert.equal(h.of('welcome')[0].edge, 'edge-test-1');
  const pong = h.client.ping();
  assert.ok(h.ws.sent[0] instanceof Uint8Array, 'requests go out as binary');
  const { id } = h.ws.lastOp('ping');
  h.ws.deliver({ type: 'pong', id });
  assert.equal((await pong).type, 'pong');
});

test('backoff ceilings double up to the cap and the delay is the jittered share of it', async () => {
  const h = harness({ backoffBaseMs: 100, backoffMaxMs: 1000, random: () => 0.5 });
  h.client.connect();
  const delays = await failedAttemptDelays(h, 6);
  assert.deepEqual(delays, [50, 100, 200, 400, 500, 500]);
});

test('backoff delays are jittered within [0, ceiling] and nothing dials early', async () => {
  const draws = [0, 0.999, 0.25, 0.75, 0.1, 0.9, 0.5, 0.01];
  let i = 0;
  const h = harness({ backoffBaseMs: 200, backoffMaxMs: 3000, random: () => draws[i++ % draws.length] });
  h.client.connect();
  const delays = [];
  for (let attempt = 0; attempt < draws.length; attempt++) {
    const before = h.WS.instances.length;
    h.ws.serverClose(1006);
    const { delayMs } = h.of('reconnecting').at(-1);
    const ceiling = Math.min(3000, 200 * 2 ** attempt);
    assert.ok(delayMs >= 0 && delayMs <= ceiling, `delay ${delayMs} within [0, ${ceiling}]`);
    assert.equal(delayMs, Math.floor(draws[attempt] * ceiling));
    if (delayMs > 0) {
      await h.clock.advance(delayMs - 1);
      assert.equal(h.WS.instances.length, before, 'no dial before the delay is over');
    }
    await h.clock.advance(1);
    assert.equal(h.WS.instances.length, before + 1);
    delays.push(delayMs);
  }
  assert.equal(delays[0], 0);
  assert.ok(new Set(delays).size > 4, 'delays differ from one attempt to the next');
});

test('a welcomed connection resets the backoff', async () => {
  const h = harness({ backoffBaseMs: 100, backoffMaxMs: 10000, random: () => 0.5 });
  h.client.connect();
  await failedAttemptDelays(h, 4); // ceilings 100..800
  h.ws.accept();
  h.ws.serverClose(1006);
  assert.equal(h.of('reconnecting').at(-1).delayMs, 50);
  await h.clock.advance(50);
  assert.equal(h.client.stats.reconnects, 0, 'failed attempts are not reconnections');
  h.ws.accept();
  assert.equal(h.client.stats.reconnects, 1);
});

test('a rate-limit close (4029) comes back in the upper half of the cap', async () => {
  for (const r of [0, 0.999]) {
    const h = harness({ backoffBaseMs: 100, backoffMaxMs: 20000, random: () => r });
    h.client.connect();
    h.ws.accept();
    h.ws.serverClose(4029, 'rate limit');
    const { delayMs } = h.of('reconnecting').at(-1);
    assert.ok(delayMs >= 10000 && delayMs <= 20000, `delay ${delayMs}`);
  }
});

test('a reconnect notice delays the next connection by exactly after_ms', async () => {
  const h = harness({ backoffBaseMs: 100, backoffMaxMs: 1000, random: () => 0.999 });
  h.client.connect();
  h.ws.accept();
  h.ws.deliver({ type: 'reconnect', after_ms: 5000, reason: 'draining' });
  assert.equal(h.client.status, 'draining');
  await h.clock.advance(1200); // data keeps flowing until the close
  h.ws.serverClose(4001, 'draining');
  assert.equal(h.of('reconnecting').at(-1).delayMs, 3800, 'counted from the notice');
  await h.clock.advance(3799);
  assert.equal(h.WS.instances.length, 1);
  await h.clock.advance(1);
  assert.equal(h.WS.instances.length, 2);
});

test('a close long after the notice reconnects at once', async () => {
  const h = harness({ random: () => 0.999 });
  h.client.connect();
  h.ws.accept();
  h.ws.deliver({ type: 'reconnect', after_ms: 1000, reason: 'draining' });
  await h.clock.advance(4000);
  h.ws.serverClose(4001);
  assert.equal(h.of('reconnecting').at(-1).delayMs, 0);
});

test('4403 is terminal: no reconnect without getToken', async () => {
  const h = harness({ token: 'revoked' });
  h.client.connect();
  h.ws.accept();
  h.ws.serverClose(4403, 'forbidden');
  await h.clock.advance(120000);
  assert.equal(h.WS.instances.length, 1);
  assert.equal(h.client.status, 'closed');
  assert.deepEqual(h.of('close').at(-1), {
    code: 4403,
    reason: 'forbidden',
    wasClean: true,
    terminal: true,
    willReconnect: false,
  });
  assert.equal(h.of('reconnecting').length, 0);
});

test('a terminal close reconnects only when getToken yields a different token', async () => {
  const same = harness({ token: 'T1', getToken: async () => 'T1' });
  same.client.connect();
  same.ws.accept();
  same.ws.serverClose(4403);
  await same.clock.advance(120000);
  assert.equal(same.WS.instances.length, 1, 'the same token is not retried');
  assert.equal(same.client.status, 'closed');

  const tokens = ['T2'];
  const fresh = harness({ token: 'T1', getToken: async () => tokens.shift() ?? 'T3' });
  fresh.client.connect();
  fresh.ws.accept();
  fresh.ws.serverClose(4401, 'token expired');
  await fresh.clock.advance(1000);
  assert.equal(fresh.WS.instances.length, 2);
  assert.equal(fresh.ws.token(), 'T2', 'the reconnect uses the fresh token');
});

test('getToken is asked before each reconnect and its token is used', async () => {
  let n = 0;
  const h = harness({ token: 'T0', getToken: async () => `T${++n}` });
  h.client.connect();
  assert.equal(h.ws.token(), 'T0', 'a given token is used first');
  h.ws.serverClose(1006); // refused before open, e.g. the token had expired
  await h.clock.advance(1000);
  assert.equal(h.ws.token(), 'T1');
  h.ws.accept();
  h.ws.serverClose(4008, 'slow consumer');
  await h.clock.advance(1000);
  assert.equal(h.ws.token(), 'T2');
});

test('close() stops reconnecting', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  h.ws.serverClose(1006);
  h.client.close();
  await h.clock.advance(120000);
  assert.equal(h.WS.instances.length, 1);
  assert.equal(h.client.status, 'closed');
});

test('a connection silent for three heartbeats is replaced', async () => {
  const h = harness({ random: () => 0 });
  h.client.connect();
  h.ws.accept(); // heartbeat_ms 5000
  await h.clock.advance(10000);
  h.ws.deliver({ type: 'hb', ts: 1, lag_ms: 3 });
  await h.clock.advance(14999);
  assert.equal(h.WS.instances.length, 1, 'still alive: a heartbeat came 15 s ago at most');
  const old = h.ws;
  await h.clock.advance(1);
  assert.equal(old.closedWith?.code, 4000, 'the silent socket is closed');
  assert.equal(h.WS.instances.length, 2, 'and a new one dialled');
});

test('an attempt that gets no welcome within connectTimeoutMs is abandoned', async () => {
  const h = harness({ connectTimeoutMs: 3000, random: () => 0 });
  h.client.connect();
  const stuck = h.ws;
  await h.clock.advance(2999);
  assert.equal(h.WS.instances.length, 1);
  await h.clock.advance(1);
  assert.equal(stuck.closedWith?.code, 4000);
  assert.equal(h.WS.instances.length, 2);
  assert.equal(h.of('close').at(-1).willReconnect, true);
});

test('the status follows the connection', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  h.ws.serverClose(1006);
  await h.clock.advance(1000);
  h.ws.accept();
  assert.deepEqual(
    h.of('status').map((s) => s.status),
    ['connecting', 'open', 'reconnecting', 'connecting', 'open'],
  );
});
