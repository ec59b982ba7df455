import { test } from 'node:test';
import assert from 'node:assert/strict';
import { harness, inFlight, reconnect } from './fakes.mjs';

/** symbol or chain -> "mode/interval" over every subscribe sent on a socket. */
function subscribedOn(ws) {
  const out = {};
  for (const m of ws.messages().filter((m) => m.op === 'subscribe')) {
    for (const name of [...(m.symbols ?? []), ...(m.chains ?? [])]) out[name] = `${m.mode}/${m.interval_ms}`;
  }
  return out;
}

test('after a reconnect every subscription is replayed with its own mode and interval', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  inFlight(h.client.subscribe({ symbols: ['AAPL', 'MSFT'], mode: 'full', interval_ms: 0 }));
  inFlight(h.client.subscribe({ symbols: ['SPY', 'QQQ'], mode: 'ltp', interval_ms: 1000 }));
  inFlight(h.client.subscribe({ chains: ['AAPL:2026-12-18'], mode: 'quote', interval_ms: 500 }));
  inFlight(h.client.subscribe({ symbols: ['TSLA'] })); // protocol defaults
  inFlight(h.client.subscribe({ symbols: ['QQQ'], mode: 'quote', interval_ms: 100 })); // changed in place
  inFlight(h.client.unsubscribe({ symbols: ['MSFT'] }));

  await reconnect(h);
  assert.deepEqual(subscribedOn(h.ws), {
    AAPL: 'full/0',
    SPY: 'ltp/1000',
    QQQ: 'quote/100',
    'AAPL:2026-12-18': 'quote/500',
    TSLA: 'quote/250',
  });
  const ids = h.ws.messages().map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, 'each replayed request has its own id');
});

test('a subscribe with a bad mode or interval is refused before it is sent, and never replayed', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  await assert.rejects(h.client.subscribe({ symbols: ['AAPL'], mode: 'tick' }), TypeError);
  await assert.rejects(h.client.subscribe({ symbols: ['AAPL'], interval_ms: -1 }), TypeError);
  assert.equal(h.ws.sent.length, 0);
  await reconnect(h);
  assert.equal(h.ws.sent.length, 0);
});

test('symbols are upper-cased before they are sent', () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  inFlight(h.client.subscribe({ symbols: ['aapl', ' brk-b '], chains: ['spy:2026-12-18'] }));
  const sent = h.ws.lastOp('subscribe');
  assert.deepEqual(sent.symbols, ['AAPL', 'BRK-B']);
  assert.deepEqual(sent.chains, ['SPY:2026-12-18']);
});

test('a subscribe made before the connection is sent once, after welcome', async () => {
  const h = harness();
  const reply = h.client.subscribe({ symbols: ['NVDA'], mode: 'ltp', interval_ms: 1000 });
  h.client.connect();
  h.ws.open();
  assert.equal(h.ws.sent.length, 0, 'nothing is sent before welcome');
  h.ws.welcome();
  assert.deepEqual(subscribedOn(h.ws), { NVDA: 'ltp/1000' });
  assert.equal(h.ws.messages().length, 1);
  const { id } = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'subscribed', id, symbols: ['NVDA'], mode: 'ltp', interval_ms: 1000 });
  assert.deepEqual((await reply).symbols, ['NVDA']);
});

test('refused symbols are not replayed after a reconnect', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const reply = h.client.subscribe({ symbols: ['AAPL', 'SECRET'] });
  const { id } = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'error', id, code: 'not_entitled', message: 'no', symbol: 'SECRET' });
  h.ws.deliver({ type: 'subscribed', id, symbols: ['AAPL'], mode: 'quote', interval_ms: 250 });
  assert.deepEqual((await reply).symbols, ['AAPL'], 'a partial refusal still resolves');
  assert.equal(h.of('error')[0].symbol, 'SECRET', 'and the refusal is an error event');
  await reconnect(h);
  assert.deepEqual(subscribedOn(h.ws), { AAPL: 'quote/250' });
});

test('a summary of refusals resolves the subscribe, and what it stands for is not replayed', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const reply = h.client.subscribe({ symbols: ['AAPL', 'BAD1', 'BAD2'] });
  const { id } = h.ws.lastOp('subscribe');
  // Past max_errors_per_request the edge sums refusals up: a count, no symbol.
  h.ws.deliver({ type: 'error', id, code: 'unknown_symbol', message: 'no such instrument', count: 2 });
  h.ws.deliver({ type: 'subscribed', id, symbols: ['AAPL'], mode: 'quote', interval_ms: 250 });
  assert.deepEqual((await reply).symbols, ['AAPL'], 'the accepted part resolves');
  assert.equal(h.of('error')[0].count, 2, 'the summary is an error event');
  await reconnect(h);
  assert.deepEqual(subscribedOn(h.ws), { AAPL: 'quote/250' }, 'only AAPL is asked for again');
});

test('an error about a symbol in another request does not drop its subscription', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  h.client.subscribe({ symbols: ['AAPL'] }).catch(() => {});
  const sub = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'subscribed', id: sub.id, symbols: ['AAPL'], mode: 'quote', interval_ms: 250 });
  const chains = h.client.chains('AAPL');
  const { id } = h.ws.lastOp('chains');
  h.ws.deliver({ type: 'error', id, code: 'unknown_symbol', message: 'no chains', symbol: 'AAPL' });
  await assert.rejects(chains, { code: 'unknown_symbol' });
  assert.deepEqual(Object.keys(h.client.subscriptions().symbols), ['AAPL']);
  await reconnect(h);
  assert.deepEqual(subscribedOn(h.ws), { AAPL: 'quote/250' }, 'AAPL is still replayed');
});

function tick(symbol, seq, last = 100) {
  return { symbol, seq, epoch: 1, ts: seq, last };
}

test('ticks and snapshots whose seq is not above the last one seen are dropped', () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL', 10, 189.1) });
  h.ws.deliver({ type: 'ticks', ticks: [tick('AAPL', 10), tick('AAPL', 9), tick('AAPL', 11, 189.2), tick('MSFT', 3)] });
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL', 11) });
  h.ws.deliver({ type: 'ticks', ticks: [tick('MSFT', 2), tick('AAPL', 12, 189.3), tick('MSFT', 4)] });

  assert.deepEqual(h.of('snapshot'), [tick('AAPL', 10, 189.1)], 'the snapshot has no type field');
  assert.deepEqual(
    h.of('tick').map((t) => `${t.symbol}:${t.seq}`),
    ['AAPL:11', 'MSFT:3', 'AAPL:12', 'MSFT:4'],
  );
  assert.equal(h.client.stats.stale, 4);
  assert.equal(h.client.lastSeq('AAPL'), 12);
});

test('seq state survives a reconnect: an older snapshot from the next gateway is dropped', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  inFlight(h.client.subscribe({ symbols: ['AAPL'] }));
  h.ws.deliver({ type: 'ticks', ticks: [tick('AAPL', 500, 190)] });
  await reconnect(h);
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL', 499, 189) }); // a lagging KV mirror
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL', 500, 190) });
  h.ws.deliver({ type: 'ticks', ticks: [tick('AAPL', 500), tick('AAPL', 501, 191)] });
  assert.equal(h.of('snapshot').length, 0);
  assert.deepEqual(h.of('tick').map((t) => t.seq), [500, 501]);
});

test('a new epoch jumps seq forward and is accepted', () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const epoch1 = 1_700_000_000_000_000;
  const epoch2 = 1_700_000_900_000_000;
  h.ws.deliver({ type: 'ticks', ticks: [tick('SPY', epoch1 + 42)] });
  h.ws.deliver({ type: 'ticks', ticks: [tick('SPY', epoch2 + 1)] });
  assert.deepEqual(h.of('tick').map((t) => t.seq), [epoch1 + 42, epoch2 + 1]);
});

test('unsubscribing forgets the seq, so subscribing again shows the snapshot', () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  inFlight(h.client.subscribe({ symbols: ['AMD'], chains: ['AAPL:2026-12-18'] }));
  h.ws.deliver({ type: 'snapshot', ...tick('AMD', 7) });
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL261218C00150000', 3) });
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL270115C00150000', 3) });
  inFlight(h.client.unsubscribe({ symbols: ['AMD'], chains: ['AAPL:2026-12-18'] }));
  inFlight(h.client.subscribe({ symbols: ['AMD'], chains: ['AAPL:2026-12-18'] }));
  h.ws.deliver({ type: 'snapshot', ...tick('AMD', 7) });
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL261218C00150000', 3) });
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL270115C00150000', 3) });
  assert.deepEqual(
    h.of('snapshot').map((t) => t.symbol),
    ['AMD', 'AAPL261218C00150000', 'AAPL270115C00150000', 'AMD', 'AAPL261218C00150000'],
    'only the other expiry keeps its seq',
  );
});

test('a subscribe answered `unavailable` is asked again after its retry_ms', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  h.client.subscribe({ symbols: ['AAPL', 'NVDA'], interval_ms: 250 }).catch(() => {});
  const first = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'error', id: first.id, code: 'unavailable', message: 'reference data is not loaded yet', retry_ms: 2000 });
  await h.clock.advance(1000);
  assert.equal(h.ws.messages().filter((m) => m.op === 'subscribe').length, 1, 'not before retry_ms');
  await h.clock.advance(2000);
  const again = h.ws.lastOp('subscribe');
  assert.notEqual(again.id, first.id);
  assert.deepEqual(again.symbols, ['AAPL', 'NVDA']);
  assert.equal(again.interval_ms, 250);
});

test('every seq between two updates is accounted for: folded (from_seq) or told lost (gap)', () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL', 10) });
  h.ws.deliver({ type: 'ticks', ticks: [{ from_seq: 11, ...tick('AAPL', 14) }] });
  h.ws.deliver({ type: 'gap', symbol: 'AAPL', epoch: 1, from_seq: 16, to_seq: 18, reason: 'upstream' });
  h.ws.deliver({ type: 'ticks', ticks: [{ from_seq: 19, ...tick('AAPL', 20) }] });
  assert.deepEqual(h.of('gap').map((g) => [g.from_seq, g.to_seq]), [[16, 18]]);
  // 11-13 and 15, 19 folded; 16-18 lost; nothing unaccounted for.
  assert.deepEqual(
    [h.client.stats.conflated, h.client.stats.lost, h.client.stats.broken],
    [5, 3, 0],
  );
  // A new epoch jumps seq forward: nothing is owed.
  h.ws.deliver({ type: 'ticks', ticks: [{ ...tick('MSFT', 3), epoch: 1 }] });
  h.ws.deliver({ type: 'ticks', ticks: [{ ...tick('MSFT', 900), epoch: 2 }] });
  assert.equal(h.client.stats.broken, 0);
  // 21 and 22 neither folded into 23 nor told: a break.
  h.ws.deliver({ type: 'ticks', ticks: [tick('AAPL', 23)] });
  assert.equal(h.client.stats.broken, 1);
  assert.deepEqual(h.of('continuity'), [{ symbol: 'AAPL', seq: 23, from_seq: 23, had: 20 }]);
});

test('a symbol moved to delayed and back starts over from each side: nothing dropped, nothing owed', () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const delayed = (seq) => ({ ...tick('AAPL', seq), delayed_ms: 900000 });
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL', 5000) });
  h.ws.deliver({ type: 'ticks', ticks: [{ from_seq: 5001, ...tick('AAPL', 5002) }] });
  // An `auth` moved AAPL to delayed: its snapshot and samples are 15 minutes behind.
  h.ws.deliver({ type: 'subscribed', symbols: ['AAPL'], delayed: ['AAPL'] });
  h.ws.deliver({ type: 'snapshot', ...delayed(1200) });
  h.ws.deliver({ type: 'ticks', ticks: [{ from_seq: 1201, ...delayed(1230) }] });
  // And back to real time.
  h.ws.deliver({ type: 'subscribed', symbols: ['AAPL'] });
  h.ws.deliver({ type: 'snapshot', ...tick('AAPL', 5100) });
  h.ws.deliver({ type: 'ticks', ticks: [{ from_seq: 5101, ...tick('AAPL', 5103) }] });
  assert.deepEqual(h.of('snapshot').map((t) => t.seq), [5000, 1200, 5100]);
  assert.deepEqual(h.of('tick').map((t) => t.seq), [5002, 1230, 5103]);
  assert.deepEqual([h.client.stats.stale, h.client.stats.broken], [0, 0]);
});

test('symbols the gateway unsubscribes (delisted at the day roll) are not replayed', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const option = 'AAPL261211C00230000';
  inFlight(h.client.subscribe({ symbols: [option, 'AAPL'] }));
  h.ws.deliver({ type: 'status', symbol: option, state: 'closed', stale: false, reason: 'delisted', ts: 1 });
  h.ws.deliver({ type: 'unsubscribed', symbols: [option] });
  assert.deepEqual(h.of('symbolstatus').map((m) => m.reason), ['delisted']);
  await reconnect(h);
  assert.deepEqual(subscribedOn(h.ws), { AAPL: 'quote/250' });
});

test("the server's status of a symbol is its own event, not the connection's", () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const before = h.of('status').length;
  h.ws.deliver({ type: 'status', symbol: 'AAPL', stale: true, reason: 'feed quiet', ts: 1 });
  assert.deepEqual(h.of('symbolstatus'), [
    { type: 'status', symbol: 'AAPL', stale: true, reason: 'feed quiet', ts: 1 },
  ]);
  assert.equal(h.of('status').length, before);
});
