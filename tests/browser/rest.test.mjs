// The edge's REST answers read with Node's own `fetch`, against a real local mesh whose
// edge wants a token: snapshots and chains are the WebSocket's objects, bars are the
// stream's completed bars, 401 without a token, 429 with `Retry-After` past the rate.
// No browser: the WebSocket side runs in a child Node (its WebSocket needs a flag in
// Node 20).
//
//   node --test tests/browser/rest.test.mjs

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';

import { startMesh, waitFor } from './mesh.mjs';

const SECRET = 'a-secret-for-the-rest-tests-of-32-bytes+';
/** REST requests a second per user (bursts of twice that), low enough to be seen. */
const RATE_PER_USER = 2;
const SYMBOLS = ['AAPL', 'MSFT', 'SPY'];

/** @type {Awaited<ReturnType<typeof startMesh>>} */
let mesh;

/** An HS256 token for `sub`, as `cargo xtask token` mints them. @param {string} sub */
function token(sub) {
  const b64 = (/** @type {any} */ v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + 3600, ent: ['*'], tier: 'realtime' })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

/** `GET path` with `sub`'s token (none: `null`): status, headers and JSON body. @param {string} path @param {string | null} sub */
async function rest(path, sub) {
  /** @type {Record<string, string>} */
  const headers = sub ? { authorization: `Bearer ${token(sub)}` } : {};
  const res = await fetch(`${mesh.httpUrl}${path}`, { headers, signal: AbortSignal.timeout(5000) });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/**
 * The messages a WebSocket straight to the edge gets in `ms` after sending `requests`
 * (a child Node with `--experimental-websocket`; the token in the query, as browsers send
 * it). `whileOpen` runs once the requests are sent.
 * @param {object[]} requests @param {number} ms @param {() => Promise<any>} [whileOpen]
 */
async function overWebSocket(requests, ms, whileOpen) {
  const script = `
    const ws = new WebSocket(process.argv[1]);
    ws.onopen = () => { for (const r of JSON.parse(process.argv[2])) ws.send(JSON.stringify(r)); console.log('{"type":"open"}'); };
    ws.onmessage = (e) => console.log(e.data);
    ws.onerror = () => process.exit(3);
    setTimeout(() => process.exit(0), Number(process.argv[3]));`;
  const url = `${mesh.wsUrl}?token=${token('ws-side')}`;
  const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', '-e', script, url, JSON.stringify(requests), String(ms)]);
  /** @type {any[]} */
  const msgs = [];
  let buf = '';
  let opened = () => {};
  const open = new Promise((resolve) => (opened = resolve));
  child.stdout.on('data', (d) => {
    buf += d;
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const line of lines) {
      const msg = JSON.parse(line);
      if (msg.type === 'open') opened(null);
      else msgs.push(msg);
    }
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await Promise.race([open, exited]);
  const during = whileOpen ? await whileOpen() : undefined;
  assert.equal(await exited, 0, 'the WebSocket opened and stayed open');
  return { msgs, during };
}

before(
  async () => {
    mesh = await startMesh({
      ticksPerSec: 1000,
      edgeEnv: {
        TICKMESH_EDGE_AUTH__ANONYMOUS: 'false',
        TICKMESH_EDGE_AUTH__HS256_SECRET: SECRET,
        TICKMESH_EDGE_LIMITS__REST_REQUESTS_PER_S_PER_USER: String(RATE_PER_USER),
      },
    });
    // Ready as it is once it read `md_ref`, the edge may not know every symbol yet. Each
    // poll as a user of its own: one user polling every 50 ms would be held at 429 by
    // its own rate (RATE_PER_USER) for as long as it polls.
    let polls = 0;
    await waitFor(
      'the three symbols over REST',
      async () => (await rest(`/v1/snapshot?symbols=${SYMBOLS.join(',')}`, `ready-${++polls}`)).body.snapshots?.length === 3,
      40000,
      mesh.procs(),
    );
  },
  { timeout: 90000 },
);

after(() => mesh?.stop(), { timeout: 30000 });

test('a snapshot over REST is the WebSocket tick at its seq, in the snapshot object; chains are the chains reply', { timeout: 30000 }, async () => {
  const subscribe = { op: 'subscribe', id: 1, symbols: SYMBOLS, mode: 'full', interval_ms: 0 };
  const chainsReq = { op: 'chains', id: 2, underlying: 'AAPL' };
  // The WebSocket holds the symbols at every tick, so the edge answers from what it carries.
  const { msgs, during } = await overWebSocket([subscribe, chainsReq], 2500, async () => {
    await new Promise((r) => setTimeout(r, 1000));
    return [await rest(`/v1/snapshot?symbols=${SYMBOLS.join(',')}&mode=full`, 'rest-1'), await rest('/v1/chains/AAPL', 'rest-1')];
  });
  const [snap, chains] = during;
  assert.equal(snap.status, 200, JSON.stringify(snap.body));
  assert.match(snap.headers.get('content-type'), /^application\/json/);
  assert.equal(snap.headers.get('cache-control'), 'no-store');
  assert.deepEqual(snap.body.errors, []);
  assert.deepEqual(snap.body.snapshots.map((/** @type {any} */ s) => s.symbol), SYMBOLS);
  /** @type {Map<string, any>} */
  const ticks = new Map();
  /** @type {Map<string, string[]>} */
  const snapshotFields = new Map();
  for (const m of msgs) {
    if (m.type === 'snapshot') {
      const { type, ...tick } = m;
      ticks.set(`${m.symbol}/${m.seq}`, tick);
      if (!snapshotFields.has(m.symbol)) snapshotFields.set(m.symbol, Object.keys(tick));
    }
    if (m.type === 'ticks') for (const t of m.ticks) ticks.set(`${t.symbol}/${t.seq}`, t);
  }
  for (const s of snap.body.snapshots) {
    assert.deepEqual(s, ticks.get(`${s.symbol}/${s.seq}`), `${s.symbol}: the WebSocket's tick at seq ${s.seq}`);
    const order = /** @type {string[]} */ (snapshotFields.get(s.symbol));
    assert.deepEqual(Object.keys(s).filter((k) => order.includes(k)), order.filter((k) => k in s), 'the snapshot order of fields');
  }
  assert.equal(chains.status, 200);
  const { id, ...reply } = msgs.find((m) => m.type === 'chains');
  assert.equal(id, 2);
  assert.deepEqual(chains.body, reply);
});

test('bars over REST are completed bars, oldest first, as the stream has them', { timeout: 40000 }, async () => {
  const got = await waitFor(
    'three completed 1s bars',
    async () => {
      const r = await rest('/v1/bars/AAPL?tf=1s&n=5', 'bars');
      return r.status === 200 && r.body.bars.length >= 3 ? r : null;
    },
    20000,
    mesh.procs(),
  );
  assert.equal(got.body.type, 'bars');
  assert.equal(got.body.tf, '1s');
  assert.ok(!('snapshot' in got.body));
  const bars = got.body.bars;
  assert.ok(bars.length <= 5);
  for (const b of bars) assert.ok(b.final === true && b.symbol === 'AAPL', JSON.stringify(b));
  for (let i = 1; i < bars.length; i++) assert.ok(bars[i].t > bars[i - 1].t, 'oldest first');
  const { msgs } = await overWebSocket([{ op: 'subscribe', id: 1, symbols: ['AAPL'], stream: 'bars', tf: '1s', history: 30 }], 1500);
  const streamed = new Map();
  for (const m of msgs) if (m.type === 'bars') for (const b of m.bars) streamed.set(b.t, b);
  for (const b of bars) assert.deepEqual(streamed.get(b.t), b, `the stream's bar at ${b.t}`);
});

test('without a token: 401 with WWW-Authenticate; past the rate: 429 with Retry-After', { timeout: 20000 }, async () => {
  const none = await rest('/v1/snapshot?symbols=AAPL', null);
  assert.equal(none.status, 401);
  assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer/);
  assert.deepEqual([none.body.code, none.body.message], ['unauthorized', 'a token is required']);
  const spec = await fetch(`${mesh.httpUrl}/v1/openapi.json`);
  assert.equal(spec.status, 200, 'the description needs no token');
  assert.ok(Object.keys((await spec.json()).paths).includes('/v1/snapshot'));

  const answers = [];
  for (let i = 0; i < 2 * RATE_PER_USER + 2; i++) answers.push(await rest('/v1/chains/AAPL', 'rate'));
  assert.deepEqual(answers.slice(0, 2 * RATE_PER_USER).map((a) => a.status), Array(2 * RATE_PER_USER).fill(200), 'a burst');
  const over = answers[answers.length - 1];
  assert.equal(over.status, 429);
  assert.equal(over.body.code, 'rate_limited');
  assert.match(over.body.message, /this user/);
  assert.ok(Number(over.headers.get('retry-after')) >= 1 && over.body.retry_ms > 0);
});
