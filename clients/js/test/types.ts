// Compiled, never run (`npm run typecheck`): the declarations in tickmesh.d.ts serve the
// quick start of the README as written, and refuse what the client would refuse.

import { createClient, SharedClient, TickMeshClient, TickMeshError, TIMEFRAMES } from 'tickmesh';
import type { AccountEvent, AccountSnapshot, Bar, BarsEvent, Position, Subscribed, Tick, TickMesh, Timeframe, TradesEvent } from 'tickmesh';
import type * as Declared from 'tickmesh';
import * as implementation from '../src/index.js';

// The declarations describe the code: its exports, as their JSDoc types them, fit them.
export const declared: typeof Declared = implementation;

const client: TickMesh = createClient({ url: 'ws://127.0.0.1:8080/v1/stream', encoding: 'msgpack' });
client.on('tick', (t: Tick) => console.log(t.symbol, t.seq, t.last ?? t.bid));
client.on('snapshot', (t) => t.depth?.bids[0]?.[0]);
client.on('error', (e) => console.warn(e.code, e.symbol ?? '', e.message, e.retry_ms));
client.on('gap', (g) => g.to_seq - g.from_seq + 1);
client.on('trades', ({ symbol, snapshot, trades }: TradesEvent) => trades.map((p) => [symbol, snapshot, p.price, p.conditions]));
const bars = new Map<number, Bar>();
client.on('bars', (e: BarsEvent) => e.bars.forEach((b) => bars.set(b.t, b)));
const positions = new Map<string, Position>();
client.on('accountsnapshot', (s: AccountSnapshot) => s.positions.forEach((p) => positions.set(p.symbol, p)));
client.on('account', (e: AccountEvent) => {
  // The kind narrows the data.
  if (e.kind === 'position') positions.set(e.data.symbol, e.data);
  else if (e.kind === 'fill') console.log(e.seq, e.data.side, e.data.qty, e.data.price);
  else if (e.kind === 'order') console.log(e.data.order_id, e.data.status, e.data.limit_price);
  else console.log(e.data.currency, e.data.cash);
});
client.on('accountcontinuity', (c) => console.warn(c.account, c.had + 1, c.seq - 1));
const off: () => void = client.on('status', (s) => s.status === 'open');
off();
// Where no WebSocket gets through: which transport carries the session, and when it changes.
client.on('transport', ({ transport, previous }) => console.warn(`now over ${transport}, was ${previous ?? 'none'}`));
const via: 'websocket' | 'sse' | 'poll' | null = client.transport;
console.log(via);
const polled = new TickMeshClient({ url: 'ws://127.0.0.1:8080/v1/stream', transports: ['sse', 'poll'], fallbackAfter: 3, pollIntervalMs: 2000, retryWebSocketMs: 120000 });
// @ts-expect-error: not a transport
new TickMeshClient({ transports: ['carrier-pigeon'] });
console.log(polled.transport);
client.connect();

async function start(): Promise<void> {
  const reply: Subscribed = await client.subscribe({ symbols: ['AAPL', 'SPY'], mode: 'quote', interval_ms: 250 });
  reply.symbols.forEach((s) => client.lastSeq(s));
  await client.subscribe({ symbols: ['AAPL'], stream: 'trades', history: 100 });
  const tf: Timeframe = TIMEFRAMES[1];
  await client.subscribe({ symbols: ['AAPL'], stream: 'bars', tf, history: 100, interval_ms: 250 });
  await client.unsubscribe({ symbols: ['AAPL'], stream: 'bars', tf });
  const chains = await client.chains('AAPL');
  await client.subscribe({ chains: [`AAPL:${chains.expiries[0].expiry}`], mode: 'quote' });
  console.log(client.subscriptions().bars['1m']?.AAPL?.interval_ms, client.lastBar('AAPL', '1m')?.final);
  const held = await client.subscribeAccount('DEMO1');
  await client.subscribeAccount(held.account, { fromSeq: (client.lastAccountSeq('DEMO1') ?? 0) + 1 });
  console.log(client.subscriptions().accounts, (await client.list()).accounts);
  await client.unsubscribeAccount('DEMO1');
  // @ts-expect-error: an account is named by a string
  await client.subscribeAccount(7);
  // @ts-expect-error: bars need a timeframe
  await client.subscribe({ symbols: ['AAPL'], stream: 'bars' });
  // @ts-expect-error: a tape takes symbols, not chains
  await client.subscribe({ chains: ['AAPL:2026-12-18'], stream: 'trades' });
  // @ts-expect-error: no such mode
  await client.subscribe({ symbols: ['AAPL'], mode: 'tick' });
}

start().catch((err: unknown) => {
  if (err instanceof TickMeshError) console.warn(err.code, err.detail);
});

const own = new TickMeshClient({ url: 'ws://127.0.0.1:8080/v1/stream', backoffMaxMs: 10000 });
const shared = client instanceof SharedClient ? client.shared : false;
console.log(own.status, shared, own.stats.reconnects);
