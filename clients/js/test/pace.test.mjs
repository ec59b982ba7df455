// Each tab's own interval on a shared connection (pace.js), driven by a fake clock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from './fakes.mjs';
import { Pacer, foldTick } from '../src/pace.js';

function pacer() {
  const clock = new FakeClock();
  const out = [];
  const p = new Pacer(clock, (tab, kind, detail) => out.push(`${tab} ${kind} ${detail.seq ?? detail.bars?.map((b) => `${b.t}${b.final ? 'f' : ''}`).join(',')}${detail.from_seq ? ` from ${detail.from_seq}` : ''}`));
  return { clock, out, p };
}

const tick = (seq, extra = {}) => ({ symbol: 'AAPL', seq, epoch: 1, last: seq, ...extra });

test('a folded tick stands for every tick since the one delivered, within its epoch only', () => {
  assert.deepEqual(foldTick(tick(5, { from_seq: 3 }), tick(8, { from_seq: 7 })), tick(8, { from_seq: 3 }));
  assert.deepEqual(foldTick(tick(5), tick(6)), tick(6, { from_seq: 5 }));
  assert.deepEqual(foldTick(tick(5), tick(900, { epoch: 2 })), tick(900, { epoch: 2 }), 'a new epoch owes nothing before it');
});

test('gaps and status changes queue behind a waiting update, in order, and are never folded', async () => {
  const { clock, out, p } = pacer();
  p.offer(1, 't:AAPL', 1000, 'tick', tick(1));
  await clock.advance(100);
  p.offer(1, 't:AAPL', 1000, 'tick', tick(2));
  p.offer(1, 't:AAPL', 1000, 'gap', { seq: 'gap' });
  p.offer(1, 't:AAPL', 1000, 'tick', tick(5, { from_seq: 5 }));
  p.offer(1, 't:AAPL', 1000, 'tick', tick(6));
  assert.deepEqual(out, ['1 tick 1']);
  await clock.advance(900);
  assert.deepEqual(out, ['1 tick 1', '1 tick 2', '1 gap gap', '1 tick 6 from 5']);
});

test('bars updates fold by t, a bar\'s final replacing its updates; a history is never held', async () => {
  const { clock, out, p } = pacer();
  const bars = (...list) => ({ symbol: 'AAPL', tf: '1s', snapshot: false, bars: list.map(([t, final]) => ({ symbol: 'AAPL', t, final })) });
  p.offer(1, 'b:AAPL/1s', 500, 'bars', bars([1, false]));
  p.offer(1, 'b:AAPL/1s', 500, 'bars', bars([1, false]));
  p.offer(1, 'b:AAPL/1s', 500, 'bars', bars([1, true], [2, false]));
  p.offer(1, 'b:AAPL/1s', 500, 'bars', bars([2, false]));
  await clock.advance(500);
  assert.deepEqual(out, ['1 bars 1', '1 bars 1f,2']);
  p.offer(1, 'b:AAPL/1s', 500, 'bars', { ...bars([0, true]), snapshot: true });
  assert.equal(out.at(-1), '1 bars 0f', 'a history goes at once');
});

test('a key given up drops what waits for it', async () => {
  const { clock, out, p } = pacer();
  p.offer(7, 't:AAPL', 1000, 'tick', tick(1));
  p.offer(7, 't:AAPL', 1000, 'tick', tick(2));
  p.dropTab(7);
  await clock.advance(2000);
  assert.deepEqual(out, ['7 tick 1']);
  assert.equal(p.tabs.size, 0);
});
