import { test } from 'node:test';
import assert from 'node:assert/strict';
import { harness, inFlight, reconnect } from './fakes.mjs';

/** A print as the edge sends it; the simulator's trade_id is the seq. */
function print(symbol, seq, price = 100 + seq / 100, conditions = []) {
  return { symbol, seq, trade_id: seq, price, size: 100, ts: 1_700_000_000_000_000 + seq, conditions };
}

/** The `trades` events as `SYMBOL:seq` lists, with `*` for those from a history. */
function printsOf(h) {
  return h.of('trades').map((e) => `${e.snapshot ? '*' : ''}${e.symbol}:${e.trades.map((t) => t.seq).join(',')}`);
}

/** The tape subscribes sent on a socket: symbol -> history. */
function tapesOn(ws) {
  const out = {};
  for (const m of ws.messages().filter((m) => m.op === 'subscribe' && m.stream === 'trades')) {
    for (const s of m.symbols) out[s] = m.history;
  }
  return out;
}

/** A connected harness holding the tapes of `symbols`, their `subscribed` answered. */
async function holding(symbols, history, options) {
  const h = harness(options);
  h.client.connect();
  h.ws.accept();
  const reply = h.client.subscribe({ symbols, stream: 'trades', history });
  const sent = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'subscribed', id: sent.id, symbols, chains: [], mode: 'quote', interval_ms: 0, stream: 'trades' });
  await reply;
  return { h, sent };
}

test('a tape is asked for with stream "trades" and its history, and only symbols go out', async () => {
  const { h, sent } = await holding(['AAPL'], 120);
  assert.deepEqual(
    { stream: sent.stream, history: sent.history, symbols: sent.symbols, mode: sent.mode, interval_ms: sent.interval_ms },
    { stream: 'trades', history: 120, symbols: ['AAPL'], mode: undefined, interval_ms: undefined },
  );
  inFlight(h.client.subscribe({ symbols: ['msft'], stream: 'trades' }));
  assert.deepEqual(h.ws.lastOp('subscribe').symbols, ['MSFT'], 'upper-cased');
  assert.equal(h.ws.lastOp('subscribe').history, 50, 'the protocol default');
  assert.deepEqual(h.client.subscriptions().trades, { AAPL: { history: 120 }, MSFT: { history: 50 } });
  assert.deepEqual(h.client.subscriptions().symbols, {}, 'a tape is not a tick subscription');
});

test('a tape shows its history at once, then every live print, per symbol and in order', async () => {
  const { h } = await holding(['AAPL', 'MSFT'], 3);
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [print('AAPL', 7), print('AAPL', 9), print('AAPL', 12)] });
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [] }); // MSFT has not printed yet
  h.ws.deliver({ type: 'trades', trades: [print('MSFT', 4), print('AAPL', 13), print('MSFT', 5), print('AAPL', 15)] });
  assert.deepEqual(printsOf(h), ['*AAPL:7,9,12', 'MSFT:4,5', 'AAPL:13,15']);
  const [history] = h.of('trades');
  assert.deepEqual(history.trades[0], print('AAPL', 7), 'prints pass on as the edge sent them');
  assert.equal(h.of('tick').length + h.of('snapshot').length, 0, 'prints are not ticks');
  assert.equal(h.client.lastTradeSeq('AAPL'), 15);
  assert.equal(h.client.stats.prints, 7);
});

test('prints arrive the same way over MessagePack', async () => {
  const { h } = await holding(['SPY'], 50, { encoding: 'msgpack' });
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [print('SPY', 1, 500.25, ['opening'])] });
  h.ws.deliver({ type: 'trades', trades: [print('SPY', 2, 500.5)] });
  assert.deepEqual(h.of('trades'), [
    { symbol: 'SPY', snapshot: true, trades: [print('SPY', 1, 500.25, ['opening'])] },
    { symbol: 'SPY', snapshot: false, trades: [print('SPY', 2, 500.5)] },
  ]);
});

test('after a reconnect the tape is asked for again, and its fresh history repeats no print', async () => {
  const { h } = await holding(['AAPL'], 100);
  inFlight(h.client.subscribe({ symbols: ['AAPL'], mode: 'full', interval_ms: 0 }));
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [print('AAPL', 1), print('AAPL', 2), print('AAPL', 3)] });
  h.ws.deliver({ type: 'trades', trades: [print('AAPL', 4), print('AAPL', 5)] });

  await reconnect(h);
  assert.deepEqual(tapesOn(h.ws), { AAPL: 100 }, 'the tape is replayed with its history');
  const ticks = h.ws.messages().find((m) => m.op === 'subscribe' && m.stream === undefined);
  assert.deepEqual([ticks?.symbols, ticks?.mode, ticks?.interval_ms], [['AAPL'], 'full', 0], 'so are its ticks, apart');

  // The new edge's history overlaps what was shown, and holds what printed meanwhile.
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [2, 3, 4, 5, 6, 7].map((s) => print('AAPL', s)) });
  h.ws.deliver({ type: 'trades', trades: [print('AAPL', 7), print('AAPL', 8)] });
  assert.deepEqual(printsOf(h), ['*AAPL:1,2,3', 'AAPL:4,5', '*AAPL:6,7', 'AAPL:8']);
  const seqs = h.of('trades').flatMap((e) => e.trades.map((t) => t.seq));
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6, 7, 8], 'each print once, in order');
  assert.equal(h.client.stats.reprints, 5);
});

test('a history that holds nothing new after a reconnect emits nothing', async () => {
  const { h } = await holding(['NVDA'], 2);
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [print('NVDA', 10), print('NVDA', 11)] });
  await reconnect(h);
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [print('NVDA', 10), print('NVDA', 11)] });
  assert.deepEqual(printsOf(h), ['*NVDA:10,11']);
});

test('a tape subscribed while disconnected is sent after welcome, once', async () => {
  const h = harness();
  const reply = h.client.subscribe({ symbols: ['TSLA'], stream: 'trades', history: 10 });
  h.client.connect();
  h.ws.accept();
  assert.deepEqual(tapesOn(h.ws), { TSLA: 10 });
  assert.equal(h.ws.messages().length, 1);
  const { id } = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'subscribed', id, symbols: ['TSLA'], chains: [], mode: 'quote', interval_ms: 0, stream: 'trades' });
  assert.equal((await reply).stream, 'trades');
});

test('an unsubscribed tape is not replayed, its prints in flight are dropped, and a new subscribe shows its history again', async () => {
  const { h } = await holding(['AAPL', 'MSFT'], 50);
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [print('AAPL', 1), print('AAPL', 2)] });
  const reply = h.client.unsubscribe({ symbols: ['aapl'], stream: 'trades' });
  const sent = h.ws.lastOp('unsubscribe');
  assert.deepEqual([sent.stream, sent.symbols], ['trades', ['AAPL']]);
  h.ws.deliver({ type: 'trades', trades: [print('AAPL', 3), print('MSFT', 8)] }); // written before the edge read it
  h.ws.deliver({ type: 'unsubscribed', id: sent.id, symbols: ['AAPL'], stream: 'trades' });
  assert.equal((await reply).stream, 'trades');
  assert.deepEqual(printsOf(h), ['*AAPL:1,2', 'MSFT:8']);
  assert.equal(h.client.lastTradeSeq('AAPL'), undefined);

  await reconnect(h);
  assert.deepEqual(tapesOn(h.ws), { MSFT: 50 });
  inFlight(h.client.subscribe({ symbols: ['AAPL'], stream: 'trades' }));
  h.ws.deliver({ type: 'trades', snapshot: true, trades: [1, 2, 3, 4].map((s) => print('AAPL', s)) });
  assert.deepEqual(printsOf(h).at(-1), '*AAPL:1,2,3,4', 'the whole history, shown before or not');
});

test('unsubscribing a tape leaves the ticks of the symbol alone, and the other way round', async () => {
  const { h } = await holding(['AAPL'], 50);
  inFlight(h.client.subscribe({ symbols: ['AAPL'] }));
  h.ws.deliver({ type: 'ticks', ticks: [{ symbol: 'AAPL', seq: 5, epoch: 1, ts: 5, last: 100 }] });
  h.ws.deliver({ type: 'trades', trades: [print('AAPL', 5)] });
  inFlight(h.client.unsubscribe({ symbols: ['AAPL'], stream: 'trades' }));
  assert.deepEqual(Object.keys(h.client.subscriptions().symbols), ['AAPL']);
  assert.equal(h.client.lastSeq('AAPL'), 5, 'the tick seq is kept');
  inFlight(h.client.subscribe({ symbols: ['AAPL'], stream: 'trades' }));
  inFlight(h.client.unsubscribe({ symbols: ['AAPL'] }));
  assert.deepEqual(Object.keys(h.client.subscriptions().trades), ['AAPL']);
  assert.deepEqual(h.client.subscriptions().symbols, {});
});

test('a refused tape is not replayed; the ticks of the same symbol still are', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  inFlight(h.client.subscribe({ symbols: ['AAPL'] }));
  const reply = h.client.subscribe({ symbols: ['AAPL', 'ZZZZ'], stream: 'trades' });
  const { id } = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'error', id, code: 'too_many_symbols', message: 'full', symbol: 'AAPL' });
  h.ws.deliver({ type: 'error', id, code: 'unknown_symbol', message: 'no such instrument', symbol: 'ZZZZ' });
  h.ws.deliver({ type: 'subscribed', id, symbols: [], chains: [], mode: 'quote', interval_ms: 0, stream: 'trades' });
  assert.deepEqual((await reply).symbols, []);
  await reconnect(h);
  assert.deepEqual(tapesOn(h.ws), {});
  assert.deepEqual(h.ws.lastOp('subscribe').symbols, ['AAPL'], 'the AAPL ticks');
});

test('a tape request the client cannot replay is refused before it is sent', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  await assert.rejects(h.client.subscribe({ chains: ['AAPL:2026-12-18'], stream: 'trades' }), TypeError);
  await assert.rejects(h.client.subscribe({ symbols: ['AAPL'], stream: 'trades', history: -1 }), TypeError);
  await assert.rejects(h.client.subscribe({ symbols: ['AAPL'], stream: 'trades', history: 2.5 }), TypeError);
  await assert.rejects(h.client.subscribe({ symbols: ['AAPL'], stream: 'bars' }), TypeError);
  await assert.rejects(h.client.unsubscribe({ symbols: ['AAPL'], stream: 'bars' }), TypeError);
  assert.equal(h.ws.sent.length, 0);
  await reconnect(h);
  assert.equal(h.ws.sent.length, 0);
});
