// One connection for many tabs: SharedClients attached over MessagePorts to a hub served
// as the SharedWorker serves it, against a fake WebSocket and a fake clock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectedTabs, drain, fakeWebSocketClass, sharedHarness } from './fakes.mjs';
import { createClient, SharedClient, TickMeshClient } from '../src/index.js';

const quote = (symbol, seq, extra = {}) => ({ symbol, seq, epoch: 1, last: 100 + seq / 100, bid: 99, ask: 101, ...extra });

const open = connectedTabs;

/** Subscribes in a tab, answering as the edge would; resolves with the tab's reply. */
async function sub(h, tab, req) {
  const reply = tab.client.subscribe(req);
  await drain();
  h.answer();
  await drain();
  return reply;
}

test('tabs share one WebSocket and a symbol two of them hold is subscribed once', async (t) => {
  const { h, tabs } = await open(t, 3);
  assert.equal(h.WS.instances.length, 1, 'one connection for three tabs');
  assert.deepEqual(tabs.map((t) => t.client.status), ['open', 'open', 'open']);
  assert.deepEqual(tabs.map((t) => t.of('welcome').length), [1, 1, 1], 'each tab is welcomed');
  await sub(h, tabs[0], { symbols: ['AAPL', 'MSFT'] });
  await sub(h, tabs[1], { symbols: ['aapl'], mode: 'full', interval_ms: 100 });
  await sub(h, tabs[2], { symbols: ['SPY'], mode: 'ltp', interval_ms: 1000 });
  assert.deepEqual(h.sent(), [
    { op: 'subscribe', mode: 'quote', interval_ms: 250, symbols: ['AAPL', 'MSFT'] },
    { op: 'subscribe', mode: 'full', interval_ms: 100, symbols: ['AAPL'] },
    { op: 'subscribe', mode: 'ltp', interval_ms: 1000, symbols: ['SPY'] },
  ], 'AAPL is asked for at the richest mode and shortest interval of its tabs');

  h.ws.deliver({ type: 'ticks', ticks: [quote('AAPL', 1), quote('MSFT', 1), quote('SPY', 1)] });
  await drain();
  assert.deepEqual(tabs.map((t) => t.seqs()), [['AAPL:1', 'MSFT:1'], ['AAPL:1'], ['SPY:1']], 'each tab gets what it holds, and only that');
  assert.deepEqual(tabs[1].client.subscriptions().symbols, { AAPL: { mode: 'full', interval_ms: 100 } });
});

test('a tab that joins a symbol held already gets its latest state and status at once, then the live ticks', async (t) => {
  const { h, tabs } = await open(t, 2);
  await sub(h, tabs[0], { symbols: ['AAPL'] });
  h.ws.deliver({ type: 'snapshot', ...quote('AAPL', 5) });
  h.ws.deliver({ type: 'ticks', ticks: [quote('AAPL', 6, { from_seq: 6 })] });
  h.ws.deliver({ type: 'status', symbol: 'AAPL', state: 'halted', stale: false, reason: 'trading halted', ts: 1 });
  await drain();
  const reply = await sub(h, tabs[1], { symbols: ['AAPL'] });
  assert.deepEqual(reply.symbols, ['AAPL']);
  assert.deepEqual(tabs[1].seqs(), ['*AAPL:6'], 'a snapshot of the latest tick, which the edge sends only once');
  assert.equal(tabs[1].of('snapshot')[0].from_seq, undefined, 'a snapshot stands for no folded ticks');
  assert.deepEqual(tabs[1].of('symbolstatus').map((s) => s.state), ['halted']);
  h.ws.deliver({ type: 'ticks', ticks: [quote('AAPL', 7)] });
  await drain();
  assert.deepEqual(tabs[0].seqs(), ['*AAPL:5', 'AAPL:6', 'AAPL:7'], 'the first tab is not sent anything twice');
  assert.deepEqual(tabs[1].seqs(), ['*AAPL:6', 'AAPL:7']);
});

test('a symbol is unsubscribed when its last tab drops it, and its interval follows the tabs that remain', async (t) => {
  const { h, tabs } = await open(t, 2);
  await sub(h, tabs[0], { symbols: ['AAPL'], mode: 'quote', interval_ms: 250 });
  await sub(h, tabs[1], { symbols: ['AAPL'], mode: 'full', interval_ms: 100 });
  const before = h.sent().length;
  const dropped = tabs[1].client.unsubscribe({ symbols: ['AAPL'] });
  await drain();
  h.answer();
  assert.equal((await dropped).type, 'unsubscribed');
  assert.deepEqual(h.sent().slice(before), [{ op: 'subscribe', mode: 'quote', interval_ms: 250, symbols: ['AAPL'] }], 'back to the remaining tab\'s mode and interval');
  h.ws.deliver({ type: 'ticks', ticks: [quote('AAPL', 1)] });
  await drain();
  assert.deepEqual([tabs[0].seqs(), tabs[1].seqs()], [['AAPL:1'], []], 'a tab that dropped it gets nothing more');
  const unsub = tabs[0].client.unsubscribe({ symbols: ['AAPL'] });
  await drain();
  h.answer();
  assert.equal((await unsub).type, 'unsubscribed');
  assert.deepEqual(h.sent().at(-1), { op: 'unsubscribe', symbols: ['AAPL'] });
});

test('a tab that closes, or whose page goes without a word, gives up what only it held; the last one closes the connection', async (t) => {
  const { h, tabs } = await open(t, 3);
  await sub(h, tabs[0], { symbols: ['AAPL'] });
  await sub(h, tabs[1], { symbols: ['AAPL', 'MSFT'] });
  await sub(h, tabs[2], { symbols: ['SPY'] });
  assert.equal(h.locks.held().length, 3, 'each attached tab holds a Web Lock');

  // Tab 2 crashes: it sends nothing, but its lock is released.
  const [lock2] = h.locks.held().slice(2);
  h.locks.crash(lock2);
  await drain();
  h.answer();
  assert.deepEqual(h.sent().at(-1), { op: 'unsubscribe', symbols: ['SPY'] });

  tabs[1].client.close();
  await drain();
  h.answer();
  assert.deepEqual(h.sent().at(-1), { op: 'unsubscribe', symbols: ['MSFT'] }, 'AAPL stays for tab 0');
  assert.equal(tabs[1].client.status, 'closed');
  assert.equal(h.ws.closedWith, null, 'the connection stays for the other tab');

  tabs[0].client.close();
  await drain();
  assert.deepEqual(h.ws.closedWith, { code: 1000, reason: 'no tab left' });
  assert.equal(h.hubs.size, 0);
  assert.deepEqual(h.locks.held(), [], 'no lock is left behind');
});

test('a tab that connects again after close() gets its subscriptions back', async (t) => {
  const { h, tabs } = await open(t, 2);
  await sub(h, tabs[0], { symbols: ['AAPL'] });
  await sub(h, tabs[1], { symbols: ['MSFT'] });
  h.ws.deliver({ type: 'ticks', ticks: [quote('MSFT', 3)] });
  await drain();
  tabs[1].client.close();
  await drain();
  h.answer();
  tabs[1].client.connect();
  await drain();
  h.answer();
  await drain();
  assert.deepEqual(h.sent().slice(-2), [
    { op: 'unsubscribe', symbols: ['MSFT'] },
    { op: 'subscribe', mode: 'quote', interval_ms: 250, symbols: ['MSFT'] },
  ]);
  h.ws.deliver({ type: 'snapshot', ...quote('MSFT', 3) });
  h.ws.deliver({ type: 'ticks', ticks: [quote('MSFT', 4)] });
  await drain();
  assert.deepEqual(tabs[1].seqs(), ['MSFT:3', 'MSFT:4'], 'the snapshot it had seen already is not passed on again');
  assert.equal(tabs[1].client.status, 'open');
});

test('each tab gets a symbol at its own interval: the latest update, standing for the ticks it folds', async (t) => {
  const { h, tabs } = await open(t, 2);
  await sub(h, tabs[0], { symbols: ['AAPL'], interval_ms: 100 });
  await sub(h, tabs[1], { symbols: ['AAPL'], interval_ms: 1000 });
  for (let seq = 1; seq <= 20; seq++) {
    h.ws.deliver({ type: 'ticks', ticks: [quote('AAPL', seq)] });
    await h.clock.advance(100);
  }
  await drain();
  assert.equal(tabs[0].seqs().length, 20, 'the 100 ms tab gets every update of the connection');
  const slow = tabs[1].of('tick');
  assert.deepEqual(slow.map((t) => t.seq), [1, 10, 20]);
  assert.deepEqual(slow.map((t) => t.from_seq), [undefined, 2, 11], 'each update stands for the ticks it folded');
});

test('tapes and bars: a joining tab gets their history from what the connection passed on', async (t) => {
  const { h, tabs } = await open(t, 2);
  const print = (seq) => ({ symbol: 'AAPL', seq, trade_id: seq, price: 100, size: 10, ts: seq, conditions: [] });
  const bar = (t, final) => ({ symbol: 'AAPL', t, open: 1, high: 2, low: 1, close: 2, volume: 5, trades: 1, final });
  await sub(h, tabs[0], { symbols: ['AAPL'], stream: 'trades', history: 3 });
  await sub(h, tabs[0], { symbols: ['AAPL'], stream: 'bars', tf: '1s', history: 2 });
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [print(1), print(2), print(3)] });
  h.ws.deliver({ type: 'trades', trades: [print(4)] });
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [bar(1, true), bar(2, true), bar(3, false)] });
  h.ws.deliver({ type: 'bars', tf: '1s', bars: [bar(3, true), bar(4, false)] });
  await drain();
  const sentBefore = h.sent().length;
  await sub(h, tabs[1], { symbols: ['AAPL'], stream: 'trades', history: 2 });
  await sub(h, tabs[1], { symbols: ['AAPL'], stream: 'bars', tf: '1s', history: 2 });
  assert.deepEqual(tabs[1].of('trades').map((e) => [e.snapshot, e.trades.map((t) => t.seq)]), [[true, [3, 4]]]);
  assert.deepEqual(tabs[1].of('bars').map((e) => [e.snapshot, e.bars.map((b) => `${b.t}${b.final ? 'f' : ''}`)]), [[true, ['2f', '3f', '4']]]);
  assert.equal(h.sent().length, sentBefore + 2, 'asked again (the edge keeps one subscription and sends no second history)');
  h.ws.deliver({ type: 'trades', trades: [print(5)] });
  await drain();
  assert.deepEqual(tabs.map((t) => t.of('trades').at(-1).trades.map((p) => p.seq)), [[5], [5]]);
  assert.equal((await tabs[0].client.unsubscribe({ symbols: ['AAPL'], stream: 'trades' })).type, 'unsubscribed');
  assert.ok(!h.sent().some((m) => m.op === 'unsubscribe'), 'the tape stays while tab 1 holds it');
});

test('a refusal goes to the tab that asked, with its own request id, and ends that subscription there', async (t) => {
  const { h, tabs } = await open(t, 2);
  await sub(h, tabs[0], { symbols: ['AAPL'] });
  const reply = tabs[1].client.subscribe({ symbols: ['AAPL', 'NOPE'] });
  await drain();
  const sent = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'error', id: sent.id, code: 'unknown_symbol', symbol: 'NOPE', message: 'unknown symbol NOPE' });
  h.ws.deliver({ type: 'subscribed', id: sent.id, symbols: ['AAPL'], mode: 'quote', interval_ms: 250 });
  await drain();
  assert.deepEqual((await reply).symbols, ['AAPL']);
  assert.deepEqual(tabs[1].of('error').map((e) => [e.id, e.code, e.symbol]), [[1, 'unknown_symbol', 'NOPE']], "the tab's own id");
  assert.deepEqual(Object.keys(tabs[1].client.subscriptions().symbols), ['AAPL'], 'NOPE is no longer held');
  assert.deepEqual(tabs[0].of('error'), [], 'the other tab hears nothing of it');

  // An error about the whole session reaches every tab.
  h.ws.deliver({ type: 'error', code: 'slow_consumer', message: 'moved to 1000 ms', interval_ms: 1000 });
  await drain();
  assert.deepEqual(tabs.map((t) => t.of('error').at(-1).code), ['slow_consumer', 'slow_consumer']);
});

test('reconnects, and the seq checks across them, happen once in the worker for every tab', async (t) => {
  const { h, tabs } = await open(t, 2);
  await sub(h, tabs[0], { symbols: ['AAPL'] });
  await sub(h, tabs[1], { symbols: ['AAPL', 'MSFT'] });
  h.ws.deliver({ type: 'ticks', ticks: [quote('AAPL', 10), quote('MSFT', 10)] });
  await drain();
  h.ws.serverClose(1006);
  await drain();
  assert.deepEqual(tabs.map((t) => t.client.status), ['reconnecting', 'reconnecting']);
  await h.clock.advance(1000);
  assert.equal(h.WS.instances.length, 2, 'one new connection for both tabs');
  h.ws.accept();
  await drain();
  const replayed = h.sent().filter((m) => m.op === 'subscribe');
  assert.deepEqual(replayed, [{ op: 'subscribe', mode: 'quote', interval_ms: 250, symbols: ['AAPL', 'MSFT'] }], 'replayed once');
  h.answer();
  h.ws.deliver({ type: 'snapshot', ...quote('AAPL', 10) });
  h.ws.deliver({ type: 'snapshot', ...quote('MSFT', 12) });
  await drain();
  assert.deepEqual(tabs.map((t) => t.seqs()), [['AAPL:10'], ['AAPL:10', 'MSFT:10', '*MSFT:12']], 'a snapshot not newer is not passed on');
  assert.deepEqual(tabs.map((t) => [t.client.status, t.client.stats.reconnects]), [['open', 1], ['open', 1]]);
});

test('a tab with getToken gives the shared connection its token', async (t) => {
  const h = sharedHarness();
  t.after(() => h.close());
  const tab = h.tab({ getToken: async () => 'jwt.fresh' });
  tab.client.connect();
  await drain();
  assert.equal(h.ws.token(), 'jwt.fresh');
});

test('createClient makes a connection of the tab\'s own without SharedWorker, or when asked', () => {
  assert.ok(createClient({ url: 'ws://edge.test/v1/stream' }) instanceof TickMeshClient, 'Node has no SharedWorker');
  const g = globalThis;
  const made = [];
  g.SharedWorker = class {
    constructor(url, options) {
      made.push([String(url), options]);
      this.port = new MessageChannel().port1;
    }
  };
  try {
    const shared = createClient({ url: 'ws://edge.test/v1/stream' });
    assert.ok(shared instanceof SharedClient);
    assert.match(made[0][0], /\/worker\.js$/);
    assert.deepEqual(made[0][1], { type: 'module', name: 'tickmesh' });
    shared._port.close();
    assert.ok(createClient({ url: 'ws://edge.test/v1/stream', shared: false }) instanceof TickMeshClient);
  } finally {
    delete g.SharedWorker;
  }
});

test('requests made before connect(), or before the worker took the tab in, are sent once it has', async (t) => {
  const h = sharedHarness();
  t.after(() => h.close());
  const tab = h.tab();
  const early = tab.client.subscribe({ symbols: ['AAPL'] });
  tab.client.connect();
  const soon = tab.client.subscribe({ symbols: ['MSFT'], mode: 'ltp', interval_ms: 1000 });
  await drain();
  h.ws.accept();
  await drain();
  h.answer();
  assert.deepEqual((await early).symbols, ['AAPL']);
  assert.deepEqual((await soon).symbols, ['MSFT']);
  assert.deepEqual(h.sent().map((m) => m.symbols.join()), ['AAPL', 'MSFT']);
});

test('a tab whose worker cannot start runs the same client in the page, with what it held', async () => {
  const g = globalThis;
  const WS = fakeWebSocketClass();
  /** @type {Array<{type: string, fn: Function}>} */
  const listeners = [];
  g.WebSocket = WS;
  g.SharedWorker = class {
    constructor() {
      this.port = new MessageChannel().port1; // nobody answers on it
    }
    addEventListener(type, fn) {
      listeners.push({ type, fn });
    }
  };
  try {
    const client = createClient({ url: 'ws://edge.test/v1/stream' });
    assert.ok(client instanceof SharedClient);
    client.connect();
    const reply = client.subscribe({ symbols: ['AAPL'] });
    await drain();
    assert.equal(WS.instances.length, 0, 'the worker never started');
    for (const { type, fn } of listeners) if (type === 'error') fn(new Event('error'));
    await drain();
    assert.equal(WS.instances.length, 1, 'a connection of the page\'s own');
    const ws = WS.instances[0];
    ws.accept();
    await drain();
    const sent = ws.lastOp('subscribe');
    assert.deepEqual(sent.symbols, ['AAPL']);
    ws.deliver({ type: 'subscribed', id: sent.id, symbols: ['AAPL'], mode: 'quote', interval_ms: 250 });
    await drain();
    assert.deepEqual((await reply).symbols, ['AAPL']);
    ws.deliver({ type: 'snapshot', ...quote('AAPL', 1) });
    await drain();
    assert.equal(client.lastSeq('AAPL'), 1);
    assert.equal(client.status, 'open');
    client.close();
    await drain();
    assert.deepEqual(ws.closedWith, { code: 1000, reason: 'no tab left' });
    client._port.close();
  } finally {
    delete g.SharedWorker;
    delete g.WebSocket;
  }
});

test('a chain given up by its last tab keeps the legs another tab holds by themselves', async (t) => {
  const { h, tabs } = await open(t, 2);
  const leg = 'AAPL261218C00150000';
  await sub(h, tabs[0], { symbols: [leg] });
  await sub(h, tabs[1], { chains: ['AAPL:2026-12-18'], mode: 'quote', interval_ms: 500 });
  h.ws.deliver({ type: 'ticks', ticks: [quote(leg, 1), quote('AAPL261218P00150000', 1)] });
  await drain();
  assert.deepEqual(tabs.map((t) => t.seqs()), [[`${leg}:1`], [`${leg}:1`, 'AAPL261218P00150000:1']], 'a chain\'s legs go to its tab');
  const before = h.sent().length;
  const dropped = tabs[1].client.unsubscribe({ chains: ['AAPL:2026-12-18'] });
  await drain();
  h.answer();
  await dropped;
  assert.deepEqual(h.sent().slice(before), [
    { op: 'unsubscribe', chains: ['AAPL:2026-12-18'] },
    { op: 'subscribe', mode: 'quote', interval_ms: 250, symbols: [leg] },
  ], 'the edge drops the legs with the chain: the one tab 0 holds is asked for again');
  h.ws.deliver({ type: 'snapshot', ...quote(leg, 1) });
  h.ws.deliver({ type: 'ticks', ticks: [quote(leg, 2)] });
  await drain();
  assert.deepEqual(tabs[0].seqs(), [`${leg}:1`, `${leg}:2`], 'and its snapshot, not newer, is not passed on again');
  assert.deepEqual(tabs[1].seqs().length, 2, 'tab 1 gets nothing more');
});
