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
 * An account is kept as its state (the snapshot with every later event folded in, as the
 * account's writer keeps it: positions by symbol, balances by currency, open orders by
 * order id) and its last `ACCOUNT_EVENTS_KEPT` events: a tab that joins gets the state as
 * a snapshot, or, resuming from a seq those events still hold, the events from there.
 *
 * @module tickmesh/replay
 */

/** The most prints and bars kept per tape or per symbol and timeframe (the edge's largest history). */
export const MAX_KEPT = 1000;
/** The most events kept per account, for a tab that resumes from a seq. */
export const ACCOUNT_EVENTS_KEPT = 1000;

/**
 * @typedef {import('./tickmesh.js').Tick} Tick
 * @typedef {import('./tickmesh.js').Trade} Trade
 * @typedef {import('./tickmesh.js').Bar} Bar
 * @typedef {import('./tickmesh.js').SymbolStatus} SymbolStatus
 * @typedef {import('./tickmesh.js').AccountEvent} AccountEvent
 * @typedef {import('./tickmesh.js').AccountSnapshot} AccountSnapshot
 * @typedef {import('./tickmesh.js').Position} Position
 * @typedef {import('./tickmesh.js').Balance} Balance
 * @typedef {import('./tickmesh.js').Order} Order
 * @typedef {object} Account an account as the connection passed it on
 * @property {number} seq the last seq folded in
 * @property {boolean} based whether it started from a snapshot (else it holds events only)
 * @property {Map<string, Position>} positions
 * @property {Map<string, Balance>} balances
 * @property {Map<string, Order>} orders the open ones
 * @property {AccountEvent[]} events the last ones, oldest first
 */

/** Still working: on the book of open orders. @param {Order} o */
const isOpen = (o) => o.status === 'new' || o.status === 'partially_filled';

/** A map's values in order of their keys, as the edge lists a snapshot's. @template T @param {Map<string, T>} map */
const byKey = (map) => [...map.keys()].sort().map((k) => /** @type {T} */ (map.get(k)));

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
    /** @type {Map<string, Account>} account -> its state and last events */
    this.accounts = new Map();
  }

  /** An account's snapshot: the state it is kept from now on. @param {AccountSnapshot} snap */
  accountSnapshot(snap) {
    this.accounts.set(snap.account, {
      seq: snap.seq,
      based: true,
      positions: new Map((snap.positions ?? []).map((p) => [p.symbol, p])),
      balances: new Map((snap.balances ?? []).map((b) => [b.currency, b])),
      orders: new Map((snap.open_orders ?? []).filter(isOpen).map((o) => [o.order_id, o])),
      events: [],
    });
  }

  /**
   * Folds an event in (each carries the whole new state of its order, position or balance)
   * and keeps it.
   * @param {AccountEvent} e
   */
  accountEvent(e) {
    let a = this.accounts.get(e.account);
    if (!a) this.accounts.set(e.account, (a = { seq: 0, based: false, positions: new Map(), balances: new Map(), orders: new Map(), events: [] }));
    if (e.kind === 'order' && isOpen(e.data)) a.orders.set(e.data.order_id, e.data);
    else if (e.kind === 'order') a.orders.delete(e.data.order_id);
    else if (e.kind === 'position') a.positions.set(e.data.symbol, e.data);
    else if (e.kind === 'balance') a.balances.set(e.data.currency, e.data);
    a.seq = e.seq;
    a.events.push(e);
    if (a.events.length > ACCOUNT_EVENTS_KEPT) a.events.splice(0, a.events.length - ACCOUNT_EVENTS_KEPT);
  }

  /** @param {string} account */
  forgetAccount(account) {
    this.accounts.delete(account);
  }

  /**
   * A joining tab's start of an account: from `fromSeq`, the events kept from there when
   * they reach back to it (nothing yet when the connection is not there yet: it follows);
   * else the state as a snapshot, after an `unavailable` when the tab asked for a seq the
   * events kept no longer hold, as the edge does; without a state (the connection follows
   * the account from another tab's seq), the events kept.
   * @param {string} account @param {number | undefined} fromSeq
   * @returns {Array<[string, any]>}
   */
  accountOf(account, fromSeq) {
    const a = this.accounts.get(account);
    if (!a) return [];
    /** @type {Array<[string, any]>} */
    const events = a.events.filter((e) => fromSeq === undefined || e.seq >= fromSeq).map((e) => ['account', e]);
    const reaches = fromSeq !== undefined && (fromSeq > a.seq || (a.events.length > 0 && a.events[0].seq <= fromSeq));
    if (reaches || !a.based) return events;
    const snapshot = { account, seq: a.seq, positions: byKey(a.positions), balances: byKey(a.balances), open_orders: byKey(a.orders) };
    if (fromSeq === undefined) return [['accountsnapshot', snapshot]];
    const message = `events from ${fromSeq} of ${account} are no longer kept: a fresh snapshot follows`;
    return [['error', { type: 'error', code: 'unavailable', message, account }], ['accountsnapshot', snapshot]];
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
