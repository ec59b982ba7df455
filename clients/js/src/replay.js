// @ts-check
/**
 * What a shared connection has passed on, kept for a tab that joins a subscription
 * another tab already holds. The edge sends a snapshot (and a tape's or bars' history)
 * once per subscription, when it starts; a second tab asking for the same symbol gets
 * none from the edge, so it gets these instead: the latest tick of the symbol (every tick
 * carries the whole state of its fields) and its latest trading status, the last prints
 * of a tape, the last bars of a symbol and timeframe. Bounded by what the tabs hold: a
 * symbol's entries go when the last tab gives it up, a tape keeps as many prints as the
 * largest `history` its tabs asked for, and bars as many closed bars likewise plus the
 * bar in progress.
 *
 * @module tickmesh/replay
 */

/** The most prints and bars kept per tape or per symbol and timeframe (the edge's largest history). */
export const MAX_KEPT = 1000;

/**
 * @typedef {import('./tickmesh.js').Tick} Tick
 * @typedef {import('./tickmesh.js').Trade} Trade
 * @typedef {import('./tickmesh.js').Bar} Bar
 * @typedef {import('./tickmesh.js').SymbolStatus} SymbolStatus
 */

export class Replay {
  constructor() {
    /** @type {Map<string, Tick>} symbol -> its latest tick, without `from_seq` */
    this.ticks = new Map();
    /** @type {Map<string, SymbolStatus>} symbol -> its latest `status` */
    this.status = new Map();
    /** @type {Map<string, Trade[]>} symbol -> its last prints, oldest first */
    this.prints = new Map();
    /** @type {Map<string, Bar[]>} barKey -> its last bars, oldest first, one per `t` */
    this.bars = new Map();
  }

  /** @param {Tick} tick a snapshot or a live tick */
  tick(tick) {
    const { from_seq: _, ...state } = tick;
    this.ticks.set(tick.symbol, state);
  }

  /** @param {SymbolStatus} status */
  symbolStatus(status) {
    this.status.set(status.symbol, status);
  }

  /** @param {string} symbol @param {Trade[]} trades @param {number} keep */
  addPrints(symbol, trades, keep) {
    let list = this.prints.get(symbol);
    if (!list) this.prints.set(symbol, (list = []));
    list.push(...trades);
    const over = list.length - Math.min(keep, MAX_KEPT);
    if (over > 0) list.splice(0, over);
  }

  /**
   * Keeps bars by `t` (an update or a final replaces the bar of its `t`), at most `keep`
   * closed ones and the bar in progress.
   * @param {string} key @param {Bar[]} bars @param {number} keep
   */
  addBars(key, bars, keep) {
    let list = this.bars.get(key);
    if (!list) this.bars.set(key, (list = []));
    for (const b of bars) {
      let i = list.length;
      while (i > 0 && list[i - 1].t > b.t) i--;
      if (i > 0 && list[i - 1].t === b.t) list[i - 1] = b;
      else list.splice(i, 0, b);
    }
    const over = list.length - Math.min(keep, MAX_KEPT) - 1;
    if (over > 0) list.splice(0, over);
  }

  /** @param {string} symbol */
  forgetTicks(symbol) {
    this.ticks.delete(symbol);
    this.status.delete(symbol);
  }

  /** @param {string} symbol */
  forgetPrints(symbol) {
    this.prints.delete(symbol);
  }

  /** @param {string} key */
  forgetBars(key) {
    this.bars.delete(key);
  }

  /**
   * A joining tab's start of a symbol: a `snapshot` of its latest tick and its latest
   * `symbolstatus`, those of them the connection has.
   * @param {string} symbol
   * @returns {Array<[string, any]>}
   */
  ticksOf(symbol) {
    /** @type {Array<[string, any]>} */
    const out = [];
    const tick = this.ticks.get(symbol);
    if (tick) out.push(['snapshot', tick]);
    const status = this.status.get(symbol);
    if (status) out.push(['symbolstatus', status]);
    return out;
  }

  /** The symbols with a latest tick that `pattern` matches (the legs of a chain). @param {RegExp} pattern */
  symbolsMatching(pattern) {
    return [...this.ticks.keys()].filter((s) => pattern.test(s));
  }

  /**
   * A joining tab's history of a tape: its last `history` prints, if any.
   * @param {string} symbol @param {number} history
   */
  printsOf(symbol, history) {
    const list = this.prints.get(symbol) ?? [];
    const trades = list.slice(Math.max(0, list.length - history));
    return trades.length ? { symbol, snapshot: true, trades } : null;
  }

  /**
   * A joining tab's history of bars: the last `history` closed bars and the bar in
   * progress, if any.
   * @param {string} symbol @param {string} tf @param {string} key @param {number} history
   */
  barsOf(symbol, tf, key, history) {
    const list = this.bars.get(key) ?? [];
    const inProgress = list.length && !list[list.length - 1].final ? 1 : 0;
    const bars = list.slice(Math.max(0, list.length - history - inProgress));
    return bars.length ? { symbol, tf, snapshot: true, bars } : null;
  }
}
