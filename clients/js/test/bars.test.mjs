import { test } from 'node:test';
import assert from 'node:assert/strict';
import { harness, inFlight, reconnect } from './fakes.mjs';

const SECOND = 1_000_000; // µs
const T0 = 1_700_000_000 * SECOND;

/** A bar as the edge sends it: the `n`th second from T0, its close `close`. */
function bar(symbol, n, close = 100 + n, final = true) {
  return { symbol, t: T0 + n * SECOND, open: 100, high: Math.max(100, close) + 1, low: Math.min(100, close) - 1, close, volume: 100 * n, trades: n, final };
}

/** The `bars` events as `SYMBOL/tf:n,n'…` lists (`n'`: not final), `*` for those from a history. */
function barsOf(h) {
  return h.of('bars').map((e) => `${e.snapshot ? '*' : ''}${e.symbol}/${e.tf}:${e.bars.map((b) => `${(b.t - T0) / SECOND}${b.final ? '' : "'"}`).join(',')}`);
}

/** The bars subscribes sent on a socket: `SYMBOL/tf` -> `history/interval`. */
function barsOn(ws) {
  const out = {};
  for (const m of ws.messages().filter((m) => m.op === 'subscribe' && m.stream === 'bars')) {
    for (const s of m.symbols) out[`${s}/${m.tf}`] = `${m.history}/${m.interval_ms}`;
  }
  return out;
}

/** A connected harness holding the `tf` bars of `symbols`, their `subscribed` answered. */
async function holding(symbols, tf, options) {
  const h = harness(options);
  h.client.connect();
  h.ws.accept();
  const reply = h.client.subscribe({ symbols, stream: 'bars', tf, history: 3, interval_ms: 500 });
  const sent = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'subscribed', id: sent.id, symbols, chains: [], mode: 'quote', interval_ms: 500, stream: 'bars', tf });
  await reply;
  return { h, sent };
}

test('bars are asked for with stream "bars", tf, history and interval, and only symbols go out', async () => {
  const { h, sent } = await holding(['AAPL'], '1m');
  assert.deepEqual(
    { stream: sent.stream, tf: sent.tf, history: sent.history, interval_ms: sent.interval_ms, symbols: sent.symbols, mode: sent.mode },
    { stream: 'bars', tf: '1m', history: 3, interval_ms: 500, symbols: ['AAPL'], mode: undefined },
  );
  inFlight(h.client.subscribe({ symbols: ['msft'], stream: 'bars', tf: '1s' }));
  const defaults = h.ws.lastOp('subscribe');
  assert.deepEqual([defaults.symbols, defaults.history, defaults.interval_ms], [['MSFT'], 100, 250], 'upper-cased; the protocol defaults');
  assert.deepEqual(h.client.subscriptions().bars, {
    '1m': { AAPL: { history: 3, interval_ms: 500 } },
    '1s': { MSFT: { history: 100, interval_ms: 250 } },
  });
  assert.deepEqual([h.client.subscriptions().symbols, h.client.subscriptions().trades], [{}, {}], 'bars are neither ticks nor a tape');
});

test('bars show their history at once, then the bar in progress as it changes, and each bar once more when it closes', async () => {
  const { h } = await holding(['AAPL', 'MSFT'], '1s');
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [bar('AAPL', 1), bar('AAPL', 2), bar('AAPL', 3), bar('AAPL', 4, 103, false)] });
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [] }); // MSFT has not printed yet
  h.ws.deliver({ type: 'bars', tf: '1s', bars: [bar('AAPL', 4, 105, false), bar('MSFT', 4, 50, false)] });
  h.ws.deliver({ type: 'bars', tf: '1s', bars: [bar('AAPL', 4, 104), bar('MSFT', 4, 51), bar('AAPL', 5, 99, false)] });
  assert.deepEqual(barsOf(h), ["*AAPL/1s:1,2,3,4'", "AAPL/1s:4'", "MSFT/1s:4'", 'AAPL/1s:4,5\'', 'MSFT/1s:4']);
  const [history] = h.of('bars');
  assert.deepEqual(history.bars[0], bar('AAPL', 1), 'bars pass on as the edge sent them');
  assert.deepEqual(h.of('bars')[1].bars[0], bar('AAPL', 4, 105, false), 'the update of the bar in progress, whole');
  assert.equal(h.of('tick').length + h.of('trades').length, 0, 'bars are neither ticks nor prints');
  assert.deepEqual(h.client.lastBar('AAPL', '1s'), { t: T0 + 5 * SECOND, final: false });
  assert.equal(h.client.lastBar('AAPL', '1m'), undefined);
  assert.equal(h.client.stats.bars, 9);
});

test('bars arrive the same way over MessagePack', async () => {
  const { h } = await holding(['SPY'], '5m', { encoding: 'msgpack' });
  h.ws.deliver({ type: 'bars', tf: '5m', snapshot: true, bars: [bar('SPY', 1, 500.25), bar('SPY', 2, 500.5, false)] });
  h.ws.deliver({ type: 'bars', tf: '5m', bars: [bar('SPY', 2, 500.75)] });
  assert.deepEqual(h.of('bars'), [
    { symbol: 'SPY', tf: '5m', snapshot: true, bars: [bar('SPY', 1, 500.25), bar('SPY', 2, 500.5, false)] },
    { symbol: 'SPY', tf: '5m', snapshot: false, bars: [bar('SPY', 2, 500.75)] },
  ]);
});

test('after a reconnect bars are asked for again, and the fresh history goes on from the bar that was in progress', async () => {
  const { h } = await holding(['AAPL'], '1s');
  inFlight(h.client.subscribe({ symbols: ['AAPL', 'MSFT'], stream: 'bars', tf: '1m', history: 50, interval_ms: 1000 }));
  inFlight(h.client.subscribe({ symbols: ['NVDA'], stream: 'bars', tf: '1m' }));
  inFlight(h.client.subscribe({ symbols: ['AAPL'], mode: 'full', interval_ms: 0 }));
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [bar('AAPL', 1), bar('AAPL', 2), bar('AAPL', 3, 101, false)] });
  h.ws.deliver({ type: 'bars', tf: '1s', bars: [bar('AAPL', 3, 102, false)] });

  await reconnect(h);
  assert.deepEqual(barsOn(h.ws), { 'AAPL/1s': '3/500', 'AAPL/1m': '50/1000', 'MSFT/1m': '50/1000', 'NVDA/1m': '100/250' }, 'each with its history and interval');
  const ticks = h.ws.messages().find((m) => m.op === 'subscribe' && m.stream === undefined);
  assert.deepEqual([ticks?.symbols, ticks?.mode, ticks?.interval_ms], [['AAPL'], 'full', 0], 'the ticks apart');
  const bySubscribe = h.ws.messages().filter((m) => m.stream === 'bars').map((m) => `${m.tf}:${m.symbols}`);
  assert.deepEqual(bySubscribe, ['1s:AAPL', '1m:AAPL,MSFT', '1m:NVDA'], 'one subscribe per timeframe, history and interval');

  // The new edge's history overlaps what was shown: bar 3 closed meanwhile, 4 closed, 5 is in progress.
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [bar('AAPL', 2), bar('AAPL', 3, 103), bar('AAPL', 4), bar('AAPL', 5, 104, false)] });
  h.ws.deliver({ type: 'bars', tf: '1s', bars: [bar('AAPL', 5, 106)] });
  assert.deepEqual(barsOf(h), ["*AAPL/1s:1,2,3'", "AAPL/1s:3'", '*AAPL/1s:3,4,5\'', 'AAPL/1s:5']);
  assert.deepEqual(h.of('bars')[2].bars[0], bar('AAPL', 3, 103), 'the bar that was in progress, final, with its last values');
  assert.equal(h.client.stats.rebars, 1);
});

test('a final is final: nothing of that bar or an older one is passed on after it', async () => {
  const { h } = await holding(['NVDA'], '1s');
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [bar('NVDA', 7), bar('NVDA', 8)] });
  h.ws.deliver({ type: 'bars', tf: '1s', bars: [bar('NVDA', 8, 90, false), bar('NVDA', 8, 91), bar('NVDA', 6)] });
  await reconnect(h);
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [bar('NVDA', 7), bar('NVDA', 8)] });
  assert.deepEqual(barsOf(h), ['*NVDA/1s:7,8'], 'a history that holds nothing new emits nothing');
  assert.equal(h.client.stats.rebars, 5);
  h.ws.deliver({ type: 'bars', tf: '1s', bars: [bar('NVDA', 9, 95, false)] });
  assert.deepEqual(barsOf(h).at(-1), "NVDA/1s:9'");
});

test('each timeframe of a symbol is its own: its own newest bar, and unsubscribed alone', async () => {
  const { h } = await holding(['AAPL'], '1s');
  inFlight(h.client.subscribe({ symbols: ['AAPL'], stream: 'bars', tf: '1m' }));
  inFlight(h.client.subscribe({ symbols: ['AAPL'], stream: 'trades' }));
  inFlight(h.client.subscribe({ symbols: ['AAPL'] }));
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [bar('AAPL', 60), bar('AAPL', 61, 100, false)] });
  h.ws.deliver({ type: 'bars', tf: '1m', snapshot: true, bars: [bar('AAPL', 0), bar('AAPL', 60, 100, false)] });
  assert.deepEqual(barsOf(h), ["*AAPL/1s:60,61'", "*AAPL/1m:0,60'"], 'a 1m bar older than the newest 1s bar is passed on');

  const reply = h.client.unsubscribe({ symbols: ['aapl'], stream: 'bars', tf: '1s' });
  const sent = h.ws.lastOp('unsubscribe');
  assert.deepEqual([sent.stream, sent.tf, sent.symbols], ['bars', '1s', ['AAPL']]);
  h.ws.deliver({ type: 'bars', tf: '1s', bars: [bar('AAPL', 61, 101)] }); // written before the edge read it
  h.ws.deliver({ type: 'bars', tf: '1m', bars: [bar('AAPL', 60, 101, false)] });
  h.ws.deliver({ type: 'unsubscribed', id: sent.id, symbols: ['AAPL'], stream: 'bars', tf: '1s' });
  assert.equal((await reply).tf, '1s');
  assert.deepEqual(barsOf(h).slice(2), ["AAPL/1m:60'"], 'the 1s bar in flight is dropped');
  assert.equal(h.client.lastBar('AAPL', '1s'), undefined);
  assert.deepEqual(Object.keys(h.client.subscriptions().bars), ['1m']);
  assert.deepEqual([Object.keys(h.client.subscriptions().trades), Object.keys(h.client.subscriptions().symbols)], [['AAPL'], ['AAPL']]);

  await reconnect(h);
  assert.deepEqual(barsOn(h.ws), { 'AAPL/1m': '100/250' });
  inFlight(h.client.subscribe({ symbols: ['AAPL'], stream: 'bars', tf: '1s' }));
  h.ws.deliver({ type: 'bars', tf: '1s', snapshot: true, bars: [bar('AAPL', 60), bar('AAPL', 61), bar('AAPL', 62, 100, false)] });
  assert.deepEqual(barsOf(h).at(-1), "*AAPL/1s:60,61,62'", 'the whole history, shown before or not');
});

test('a refused bars subscription is not replayed; the symbol\'s other streams and timeframes still are', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  inFlight(h.client.subscribe({ symbols: ['AAPL'] }));
  inFlight(h.client.subscribe({ symbols: ['AAPL'], stream: 'trades' }));
  inFlight(h.client.subscribe({ symbols: ['AAPL'], stream: 'bars', tf: '1s' }));
  const reply = h.client.subscribe({ symbols: ['AAPL', 'ZZZZ'], stream: 'bars', tf: '1m' });
  const { id } = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'error', id, code: 'too_many_symbols', message: 'full', symbol: 'AAPL' });
  h.ws.deliver({ type: 'error', id, code: 'unknown_symbol', message: 'no such instrument', symbol: 'ZZZZ' });
  h.ws.deliver({ type: 'subscribed', id, symbols: [], chains: [], mode: 'quote', interval_ms: 250, stream: 'bars', tf: '1m' });
  assert.deepEqual((await reply).symbols, []);
  await reconnect(h);
  assert.deepEqual(barsOn(h.ws), { 'AAPL/1s': '100/250' });
  assert.deepEqual(h.ws.messages().map((m) => m.stream ?? 'ticks'), ['ticks', 'trades', 'bars']);

  // A refusal outside any request (the edge dropped the symbol) ends every stream of it.
  h.ws.deliver({ type: 'error', code: 'not_entitled', message: 'no longer entitled', symbol: 'AAPL' });
  await reconnect(h);
  assert.equal(h.ws.sent.length, 0);
});

test('a bars request the client cannot replay is refused before it is sent', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const bad = [
    { symbols: ['AAPL'], stream: 'bars' },
    { symbols: ['AAPL'], stream: 'bars', tf: '2m' },
    { chains: ['AAPL:2026-12-18'], stream: 'bars', tf: '1m' },
    { symbols: ['AAPL'], stream: 'bars', tf: '1m', history: -1 },
    { symbols: ['AAPL'], stream: 'bars', tf: '1m', history: 2.5 },
    { symbols: ['AAPL'], stream: 'bars', tf: '1m', interval_ms: -250 },
  ];
  for (const req of bad) await assert.rejects(h.client.subscribe(req), TypeError, JSON.stringify(req));
  await assert.rejects(h.client.unsubscribe({ symbols: ['AAPL'], stream: 'bars' }), TypeError);
  await assert.rejects(h.client.unsubscribe({ symbols: ['AAPL'], stream: 'bars', tf: '1w' }), TypeError);
  assert.equal(h.ws.sent.length, 0);
  await reconnect(h);
  assert.equal(h.ws.sent.length, 0);
});

test('bars subscribed while disconnected are sent after welcome, once', async () => {
  const h = harness();
  const reply = h.client.subscribe({ symbols: ['TSLA'], stream: 'bars', tf: '1h', history: 10 });
  h.client.connect();
  h.ws.accept();
  assert.deepEqual(barsOn(h.ws), { 'TSLA/1h': '10/250' });
  assert.equal(h.ws.messages().length, 1);
  const { id } = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'subscribed', id, symbols: ['TSLA'], chains: [], mode: 'quote', interval_ms: 250, stream: 'bars', tf: '1h' });
  assert.equal((await reply).tf, '1h');
});
