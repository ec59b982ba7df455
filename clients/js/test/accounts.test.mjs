// Account channels: a snapshot then each event once, in order, resumed with `from_seq`
// after every reconnect; on a connection of its own and on the one the tabs share.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectedTabs, drain, harness, inFlight, reconnect } from './fakes.mjs';

const ACCOUNT = 'DEMO1';

const order = (seq, id, status = 'new') => ({
  type: 'account', account: ACCOUNT, seq, ts: seq, kind: 'order',
  data: { order_id: id, symbol: 'AAPL', side: 'buy', type: 'limit', qty: 100, limit_price: 190, status, filled_qty: status === 'filled' ? 100 : 0 },
});
const fill = (seq) => ({
  type: 'account', account: ACCOUNT, seq, ts: seq, kind: 'fill',
  data: { fill_id: `F${seq}`, order_id: 'O1', symbol: 'AAPL', side: 'buy', qty: 10, price: 190 + seq / 100, trade_id: seq },
});
const position = (seq, symbol, qty) => ({
  type: 'account', account: ACCOUNT, seq, ts: seq, kind: 'position', data: { symbol, qty, avg_price: 100, realized_pnl: 0 },
});
const balance = (seq, cash) => ({ type: 'account', account: ACCOUNT, seq, ts: seq, kind: 'balance', data: { currency: 'USD', cash, realized_pnl: 0 } });
const snapshot = (seq, extra = {}) => ({ type: 'account_snapshot', account: ACCOUNT, seq, positions: [], balances: [], open_orders: [], ...extra });

/** The account events a client passed on, as seqs (`*N` for a snapshot as of N). */
const seqsOf = (events) =>
  events.filter((e) => e.type === 'account' || e.type === 'accountsnapshot').map((e) => (e.type === 'account' ? e.detail.seq : `*${e.detail.seq}`));

/** The account subscribes sent on a socket, without ids. */
const accountAsks = (ws) => ws.messages().filter((m) => m.account).map(({ id: _, ...m }) => m);

/** A connected client that subscribed to the account (with `opts`), its `subscribed` answered. */
async function following(opts) {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const reply = h.client.subscribeAccount(ACCOUNT, opts);
  const sent = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'subscribed', id: sent.id, account: ACCOUNT, ...(sent.from_seq ? { from_seq: sent.from_seq } : {}) });
  assert.equal((await reply).account, ACCOUNT);
  return h;
}

test('an account starts from a snapshot, and every reconnect resumes it from the seq after the last one passed on, each event once', async () => {
  const h = await following();
  assert.deepEqual(accountAsks(h.ws), [{ op: 'subscribe', account: ACCOUNT }], 'the first time: a snapshot');
  h.ws.deliver(snapshot(10, { positions: [{ symbol: 'AAPL', qty: 10, avg_price: 100, realized_pnl: 0 }] }));
  h.ws.deliver(fill(11));
  h.ws.deliver(order(12, 'O1'));
  assert.equal(h.of('accountsnapshot')[0].positions[0].symbol, 'AAPL');
  assert.equal(h.of('accountsnapshot')[0].type, undefined, 'passed on without the message type');

  await reconnect(h);
  assert.deepEqual(accountAsks(h.ws), [{ op: 'subscribe', account: ACCOUNT, from_seq: 13 }], 'resumed after the last seq, no snapshot');
  // The edge replays from there; an overlap (a seq passed on already) is dropped.
  h.ws.deliver(order(12, 'O1'));
  h.ws.deliver(fill(13));
  await reconnect(h);
  assert.deepEqual(accountAsks(h.ws), [{ op: 'subscribe', account: ACCOUNT, from_seq: 14 }]);
  h.ws.deliver(fill(13));
  h.ws.deliver(balance(14, 5000));
  assert.deepEqual(seqsOf(h.events), ['*10', 11, 12, 13, 14], 'each seq once, in order, across two reconnects');
  assert.equal(h.client.lastAccountSeq(ACCOUNT), 14);
  assert.deepEqual([h.client.stats.accountEvents, h.client.stats.accountRepeats], [4, 2]);
  assert.deepEqual(h.of('accountcontinuity'), []);
  assert.deepEqual(h.client.subscriptions().accounts, [ACCOUNT]);
});

test('a skipped seq is told by accountcontinuity right before the event, which is still passed on', async () => {
  const h = await following();
  h.ws.deliver(snapshot(3));
  h.ws.deliver(fill(4));
  h.ws.deliver(fill(7));
  h.ws.deliver(fill(8));
  assert.deepEqual(seqsOf(h.events), ['*3', 4, 7, 8]);
  assert.deepEqual(h.of('accountcontinuity'), [{ account: ACCOUNT, seq: 7, had: 4 }]);
  const order = h.events.filter((e) => e.type.startsWith('account')).map((e) => e.type);
  assert.deepEqual(order.slice(2, 4), ['accountcontinuity', 'account'], 'told before the event that skips');
});

test('from a seq: no snapshot, nothing before it; after `unavailable` the fresh snapshot starts the account over, and a reconnect before it asks for one', async () => {
  const h = await following({ fromSeq: 5 });
  assert.deepEqual(accountAsks(h.ws), [{ op: 'subscribe', account: ACCOUNT, from_seq: 5 }]);
  h.ws.deliver(fill(4)); // before what was asked: never passed on
  h.ws.deliver(fill(5));
  assert.deepEqual(seqsOf(h.events), [5]);

  // The stream no longer holds what comes next (say): the edge says so, a snapshot follows.
  h.ws.deliver({ type: 'error', code: 'unavailable', account: ACCOUNT, message: 'from_seq 6 is no longer in the stream' });
  await reconnect(h);
  assert.deepEqual(accountAsks(h.ws), [{ op: 'subscribe', account: ACCOUNT }], 'the snapshot had not come: asked for again');
  h.ws.deliver(snapshot(40));
  h.ws.deliver(fill(41));
  await reconnect(h);
  assert.deepEqual(accountAsks(h.ws), [{ op: 'subscribe', account: ACCOUNT, from_seq: 42 }], 'then from after it again');
  assert.deepEqual(seqsOf(h.events), [5, '*40', 41]);
  assert.equal(h.of('error')[0].account, ACCOUNT);
});

test('a snapshot older than what was passed on is dropped, unless it starts the account over after `unavailable`', async () => {
  const h = await following();
  h.ws.deliver(snapshot(10));
  h.ws.deliver(fill(11));
  h.ws.deliver(fill(12));
  // Asked again: the edge starts over from its snapshot, which may lag the stream a little.
  inFlight(h.client.subscribeAccount(ACCOUNT));
  h.ws.deliver(snapshot(11));
  h.ws.deliver(fill(12));
  h.ws.deliver(fill(13));
  assert.deepEqual(seqsOf(h.events), ['*10', 11, 12, 13]);
  h.ws.deliver({ type: 'error', code: 'unavailable', account: ACCOUNT, message: 'events 14 to 15 of DEMO1 are not in the stream' });
  h.ws.deliver(snapshot(12));
  h.ws.deliver(fill(13));
  assert.deepEqual(seqsOf(h.events), ['*10', 11, 12, 13, '*12', 13], 'the edge started the account over at 12');
});

test('a refused account rejects its subscribe and is not asked for again; one unsubscribed drops what is still in flight', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  const refused = h.client.subscribeAccount('OTHER');
  const sent = h.ws.lastOp('subscribe');
  h.ws.deliver({ type: 'error', id: sent.id, code: 'not_entitled', account: 'OTHER', message: 'the token does not name account OTHER in `acct`' });
  await assert.rejects(refused, (e) => e.code === 'not_entitled');
  assert.deepEqual(h.client.subscriptions().accounts, []);

  inFlight(h.client.subscribeAccount(ACCOUNT));
  h.ws.deliver(snapshot(1));
  // An `auth` that no longer names it: the edge unsubscribes it and says so.
  h.ws.deliver({ type: 'error', code: 'not_entitled', account: ACCOUNT, message: 'no longer entitled: account unsubscribed' });
  await reconnect(h);
  assert.deepEqual(accountAsks(h.ws), [], 'neither is replayed');

  inFlight(h.client.subscribeAccount(ACCOUNT));
  h.ws.deliver(snapshot(2));
  const gone = h.client.unsubscribeAccount(ACCOUNT);
  assert.deepEqual(accountAsks(h.ws).at(-1), { op: 'unsubscribe', account: ACCOUNT });
  h.ws.deliver(fill(3)); // in flight
  h.ws.deliver({ type: 'unsubscribed', id: h.ws.lastOp('unsubscribe').id, account: ACCOUNT });
  assert.equal((await gone).account, ACCOUNT);
  assert.deepEqual(seqsOf(h.events), ['*1', '*2']);
  assert.equal(h.client.lastAccountSeq(ACCOUNT), undefined, 'forgotten: a later subscribe starts from a snapshot');
});

test('a bad account name or fromSeq is refused before anything is sent', async () => {
  const h = harness();
  h.client.connect();
  h.ws.accept();
  for (const [name, opts] of [['', undefined], ['A.B', undefined], ['X'.repeat(33), undefined], [ACCOUNT, { fromSeq: 0 }], [ACCOUNT, { fromSeq: 1.5 }]]) {
    await assert.rejects(h.client.subscribeAccount(name, opts), TypeError, `${name} ${JSON.stringify(opts)}`);
  }
  assert.deepEqual(h.ws.messages(), []);
  assert.deepEqual(h.client.subscriptions().accounts, []);
});

// ---- the shared connection ---------------------------------------------------------------

/** Subscribes a tab to the account, answering as the edge would. */
async function subscribeTab(h, tab, opts) {
  const reply = tab.client.subscribeAccount(ACCOUNT, opts);
  await drain();
  h.answer();
  await drain();
  return reply;
}

/** Delivers server messages and lets them reach the tabs. */
async function deliver(h, ...msgs) {
  for (const m of msgs) h.ws.deliver(m);
  await drain();
}

test('tabs hold one account subscription; a tab that joins gets the state folded from the snapshot and the events, then the events after it', async (t) => {
  const { h, tabs: list } = await connectedTabs(t, 2);
  const [a, b] = list;
  await subscribeTab(h, a);
  await deliver(
    h,
    snapshot(2, {
      positions: [{ symbol: 'AAPL', qty: 10, avg_price: 100, realized_pnl: 0 }],
      balances: [{ currency: 'USD', cash: 1000, realized_pnl: 0 }],
      open_orders: [order(1, 'O1').data],
    }),
    order(3, 'O2'),
    position(4, 'MSFT', 5),
    order(5, 'O1', 'filled'),
    fill(6),
    balance(7, 900),
    position(8, 'AAPL', 20),
  );
  const reply = await subscribeTab(h, b);
  assert.equal(reply.account, ACCOUNT);
  assert.deepEqual(accountAsks(h.ws), [{ op: 'subscribe', account: ACCOUNT }], 'asked of the edge once');
  const [joined] = b.of('accountsnapshot');
  assert.equal(joined.seq, 8);
  assert.deepEqual(joined.positions.map((p) => [p.symbol, p.qty]), [['AAPL', 20], ['MSFT', 5]], 'positions by symbol, as of the last event');
  assert.deepEqual(joined.open_orders.map((o) => o.order_id), ['O2'], 'a filled order left the open ones');
  assert.deepEqual(joined.balances.map((x) => x.cash), [900]);

  await deliver(h, fill(9));
  assert.deepEqual(seqsOf(a.events), ['*2', 3, 4, 5, 6, 7, 8, 9], 'the first tab gets nothing twice');
  assert.deepEqual(seqsOf(b.events), ['*8', 9]);
});

test('the shared connection resumes the account with from_seq after a reconnect, and every tab sees each event once', async (t) => {
  const { h, tabs: list } = await connectedTabs(t, 2);
  for (const tab of list) await subscribeTab(h, tab);
  await deliver(h, snapshot(5), fill(6), fill(7));
  h.ws.serverClose(1006);
  await h.clock.advance(30000);
  h.ws.accept();
  await drain();
  assert.deepEqual(accountAsks(h.ws), [{ op: 'subscribe', account: ACCOUNT, from_seq: 8 }], 'once, from after the last seq');
  h.answer();
  await deliver(h, fill(7), fill(8), fill(9));
  for (const tab of list) assert.deepEqual(seqsOf(tab.events), ['*5', 6, 7, 8, 9]);
});

test('a tab that resumes from a seq gets the events kept from there; from one no longer kept, `unavailable` and the state', async (t) => {
  const { h, tabs: list } = await connectedTabs(t, 3);
  const [a, b, c] = list;
  await subscribeTab(h, a);
  await deliver(h, snapshot(10), fill(11), fill(12), fill(13));
  await subscribeTab(h, b, { fromSeq: 12 });
  assert.deepEqual(seqsOf(b.events), [12, 13]);
  await subscribeTab(h, c, { fromSeq: 4 });
  assert.deepEqual(seqsOf(c.events), ['*13']);
  assert.deepEqual(c.of('error').map((e) => [e.code, e.account]), [['unavailable', ACCOUNT]]);
  assert.deepEqual(accountAsks(h.ws).length, 1, 'neither was asked of the edge');
});

test('an account is given up at the edge with its last tab, and a refusal ends it for every tab holding it', async (t) => {
  const { h, tabs: list } = await connectedTabs(t, 2);
  const [a, b] = list;
  for (const tab of list) await subscribeTab(h, tab);
  await deliver(h, snapshot(1));
  const dropped = a.client.unsubscribeAccount(ACCOUNT);
  await drain();
  h.answer();
  assert.equal((await dropped).type, 'unsubscribed');
  assert.deepEqual(accountAsks(h.ws).length, 1, 'still held by the other tab');
  await deliver(h, fill(2));
  assert.deepEqual([seqsOf(a.events), seqsOf(b.events)], [['*1'], ['*1', 2]], 'the tab that gave it up gets nothing more');
  b.client.close();
  await drain();
  assert.deepEqual(accountAsks(h.ws).at(-1), { op: 'unsubscribe', account: ACCOUNT });

  // Held again by both; the token no longer names it.
  const c = h.tab();
  c.client.connect();
  await drain();
  for (const tab of [a, c]) await subscribeTab(h, tab);
  await deliver(h, { type: 'error', code: 'not_entitled', account: ACCOUNT, message: 'no longer entitled: account unsubscribed' });
  for (const tab of [a, c]) {
    assert.deepEqual(tab.of('error').map((e) => e.code), ['not_entitled']);
    assert.deepEqual(tab.client.subscriptions().accounts, [], 'dropped from the tab too');
  }
});

test('each tab gates the seqs it passes on: one that asked from a seq before the account came passes on nothing before it', async (t) => {
  const { h, tabs: list } = await connectedTabs(t, 2);
  const [a, b] = list;
  const first = a.client.subscribeAccount(ACCOUNT);
  const second = b.client.subscribeAccount(ACCOUNT, { fromSeq: 8 });
  await drain();
  h.answer();
  await drain();
  await Promise.all([first, second]);
  // The connection follows the account from the first tab's snapshot.
  await deliver(h, snapshot(5), fill(6), fill(7), fill(8), fill(9));
  assert.deepEqual(seqsOf(a.events), ['*5', 6, 7, 8, 9]);
  assert.deepEqual(seqsOf(b.events), [8, 9], 'the older snapshot and the events before 8 are dropped');
  assert.equal(b.client.lastAccountSeq(ACCOUNT), 9);
});
