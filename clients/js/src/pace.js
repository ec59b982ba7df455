// @ts-check
/**
 * Each tab's own interval on a shared connection. The connection asks the edge for a
 * symbol at the shortest interval any tab holds it with; a tab that asked for a longer
 * one still gets at most one live update per its interval, the latest (guarantee 2 of the
 * protocol, kept on the client side). Updates that come sooner wait, folded into one:
 * a tick replaces the waiting tick (its `from_seq` reaching back to the first one it
 * stands for), a bars update replaces the waiting bars of the same `t`. Snapshots, gaps
 * and status changes are never folded or held back out of order: they queue behind a
 * waiting update. State is per (tab, key) it holds, dropped with the key.
 *
 * @module tickmesh/pace
 */

/** Events waiting for one (tab, key) before the queue is sent at once. */
const MAX_WAITING = 64;

/**
 * @typedef {[string, any]} Event kind and detail
 * @typedef {{last: number, waiting: Event[] | null, timer: any}} State
 * @typedef {{setTimeout: (fn: () => void, ms: number) => any, clearTimeout: (h: any) => void, now: () => number}} Clock
 */

/**
 * A tick standing for `older` and `newer`: `newer` with a `from_seq` back to the first tick
 * `older` stood for (within one epoch: a new epoch owes nothing before it).
 * @param {Record<string, any>} older @param {Record<string, any>} newer
 */
export function foldTick(older, newer) {
  if (older.epoch !== newer.epoch || typeof older.seq !== 'number' || typeof newer.seq !== 'number') return newer;
  const { from_seq: _, ...tick } = newer;
  const from = Math.min(older.from_seq ?? older.seq, newer.from_seq ?? newer.seq);
  return from < newer.seq ? { ...tick, from_seq: from } : tick;
}

/** @param {Record<string, any>} older @param {Record<string, any>} newer bars events of one symbol and timeframe */
function foldBars(older, newer) {
  const byT = new Map();
  for (const b of [...older.bars, ...newer.bars]) byT.set(b.t, b);
  return { ...newer, bars: [...byT.values()].sort((a, b) => a.t - b.t) };
}

/** @param {string} kind @param {any} detail */
const foldable = (kind, detail) => kind === 'tick' || (kind === 'bars' && !detail.snapshot);

export class Pacer {
  /**
   * @param {Clock} clock
   * @param {(tab: number, kind: string, detail: any) => void} deliver
   */
  constructor(clock, deliver) {
    this.clock = clock;
    this.deliver = deliver;
    /** @type {Map<number, Map<string, State>>} tab -> key -> state */
    this.tabs = new Map();
  }

  /**
   * Passes an event of `key` on to `tab` now, or once `everyMs` has passed since its last
   * update. `everyMs` 0: the connection's interval is the tab's own, nothing is held.
   * @param {number} tab @param {string} key @param {number} everyMs @param {string} kind @param {any} detail
   */
  offer(tab, key, everyMs, kind, detail) {
    let keys = this.tabs.get(tab);
    const st = keys?.get(key);
    if (st?.waiting) return this._queue(tab, st, kind, detail);
    const now = this.clock.now();
    if (!foldable(kind, detail) || everyMs <= 0 || !st || now - st.last >= everyMs) {
      this.deliver(tab, kind, detail);
      if (!foldable(kind, detail) || everyMs <= 0) return;
      if (!keys) this.tabs.set(tab, (keys = new Map()));
      keys.set(key, { last: now, waiting: null, timer: null });
      return;
    }
    st.waiting = [[kind, detail]];
    st.timer = this.clock.setTimeout(() => this._flush(tab, st), st.last + everyMs - now);
  }

  /** @param {number} tab @param {State} st @param {string} kind @param {any} detail */
  _queue(tab, st, kind, detail) {
    const waiting = /** @type {Event[]} */ (st.waiting);
    const [lastKind, lastDetail] = waiting[waiting.length - 1];
    if (lastKind === kind && foldable(kind, detail) && foldable(lastKind, lastDetail)) {
      waiting[waiting.length - 1] = [kind, kind === 'tick' ? foldTick(lastDetail, detail) : foldBars(lastDetail, detail)];
      return;
    }
    waiting.push([kind, detail]);
    if (waiting.length >= MAX_WAITING) {
      this.clock.clearTimeout(st.timer);
      this._flush(tab, st);
    }
  }

  /** @param {number} tab @param {State} st */
  _flush(tab, st) {
    const waiting = st.waiting ?? [];
    st.waiting = null;
    st.timer = null;
    st.last = this.clock.now();
    for (const [kind, detail] of waiting) this.deliver(tab, kind, detail);
  }

  /** Forgets `key` of `tab` (it gave it up): what waits is dropped. @param {number} tab @param {string} key */
  drop(tab, key) {
    const keys = this.tabs.get(tab);
    const st = keys?.get(key);
    if (!keys || !st) return;
    if (st.timer !== null) this.clock.clearTimeout(st.timer);
    keys.delete(key);
    if (!keys.size) this.tabs.delete(tab);
  }

  /** Forgets everything of `tab`. @param {number} tab */
  dropTab(tab) {
    for (const key of [...(this.tabs.get(tab)?.keys() ?? [])]) this.drop(tab, key);
  }
}
