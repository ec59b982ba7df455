// @ts-check
/**
 * The dashboard's blotter: one account's positions marked to the streamed prices, its
 * cash, open orders and recent fills, from the account channel (docs/protocol.md,
 * "Account channels"). The account is the first one the page's token names in its `acct`
 * claim; without one there is no blotter.
 *
 * The client resumes the account with `from_seq` after every reconnect and passes each
 * event on once, in order, so the blotter only applies what it is given: a snapshot
 * replaces positions, balances and open orders (fills are events only: those shown stay),
 * and each event carries the whole new state of its order, position or balance. As the
 * rest of the page, events only change state and mark it dirty; `render` writes the DOM
 * once per animation frame. Unrealised P&L is qty × (last − avg price), `last` being the
 * streamed price of the symbol (the writer's mark until one came).
 *
 * @module blotter
 */

/** Fills on show, newest on top. */
const FILL_ROWS = 100;

/**
 * @typedef {import('./tickmesh.js').Position} Position
 * @typedef {import('./tickmesh.js').Balance} Balance
 * @typedef {import('./tickmesh.js').Order} Order
 * @typedef {import('./tickmesh.js').Fill} Fill
 * @typedef {import('./tickmesh.js').AccountEvent} AccountEvent
 * @typedef {import('./tickmesh.js').AccountSnapshot} AccountSnapshot
 * @typedef {{price: (v: unknown) => string, clockTime: (us: number) => string, put: (el: HTMLElement, text: string) => void}} Format
 */

/**
 * The first account a JWT names in its `acct` claim, or '' (no token, another shape, no
 * claim). The page only reads the payload it was given: the edge verifies the token.
 * @param {string | null} token
 */
export function accountOf(token) {
  try {
    const part = (token ?? '').split('.')[1] ?? '';
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const claims = JSON.parse(atob(b64));
    const first = Array.isArray(claims?.acct) ? claims.acct[0] : undefined;
    return typeof first === 'string' ? first : '';
  } catch {
    return '';
  }
}

/** @param {number} v */
const money = (v) => v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

/** @param {number} v */
const signedMoney = (v) => (v > 0 ? '+' : v < 0 ? '−' : '') + money(Math.abs(v));

/** @param {number} v @returns {'up' | 'down' | 'flat'} */
const direction = (v) => (v > 0 ? 'up' : v < 0 ? 'down' : 'flat');

/** A table row of cells of these classes. @param {string[]} classes */
function row(classes) {
  const tr = document.createElement('tr');
  for (const c of classes) {
    const td = document.createElement('td');
    td.className = c;
    tr.append(td);
  }
  return /** @type {HTMLTableRowElement} */ (tr);
}

/** @param {Map<string, any>} map */
const sorted = (map) => [...map.keys()].sort();

export class Blotter {
  /**
   * @param {string} account
   * @param {{quotes: Map<string, Record<string, any>>, fmt: Format, onSymbols: () => void}} page
   *   the page's latest prices, its formatting, and a call for when the symbols to mark change
   */
  constructor(account, page) {
    this.account = account;
    this.page = page;
    const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
    this.el = {
      pane: $('blotter-pane'),
      seq: $('blotter-seq'),
      cash: $('blotter-cash'),
      upnl: $('blotter-upnl'),
      rpnl: $('blotter-rpnl'),
      positions: $('positions-body'),
      orders: $('orders-body'),
      fills: $('fills-body'),
    };
    /** @type {Map<string, Position>} */
    this.positions = new Map();
    /** @type {Map<string, Balance>} */
    this.balances = new Map();
    /** @type {Map<string, Order>} the open ones */
    this.orders = new Map();
    /** Fills not drawn yet, oldest first. @type {Array<{seq: number, ts: number, fill: Fill}>} */
    this.pendingFills = [];
    /** @type {Map<string, {tr: HTMLTableRowElement, cells: HTMLElement[]}>} */
    this.positionRows = new Map();
    this.seq = 0;
    /** What to redraw: the positions' rows (prices move them), the orders, the summary. */
    this.dirty = { positions: false, orders: false, summary: false };
    page.fmt.put($('blotter-account'), account);
    this.el.pane.hidden = false;
    document.body.classList.add('with-blotter');
  }

  /** The symbols of the positions held: their prices mark them. */
  symbols() {
    return [...this.positions.keys()];
  }

  /** A price of `symbol` came. @param {string} symbol */
  priced(symbol) {
    if (this.positions.has(symbol)) this.dirty.positions = this.dirty.summary = true;
  }

  /** @param {AccountSnapshot} snap */
  onSnapshot(snap) {
    if (snap.account !== this.account) return;
    const before = this.symbols().join();
    this.positions = new Map(snap.positions.map((p) => [p.symbol, p]));
    this.balances = new Map(snap.balances.map((b) => [b.currency, b]));
    this.orders = new Map(snap.open_orders.map((o) => [o.order_id, o]));
    this.seq = snap.seq;
    this.dirty = { positions: true, orders: true, summary: true };
    if (this.symbols().join() !== before) this.page.onSymbols();
  }

  /** @param {AccountEvent} e */
  onEvent(e) {
    if (e.account !== this.account) return;
    this.seq = e.seq;
    this.dirty.summary = true;
    switch (e.kind) {
      case 'order':
        if (e.data.status === 'new' || e.data.status === 'partially_filled') this.orders.set(e.data.order_id, e.data);
        else this.orders.delete(e.data.order_id);
        this.dirty.orders = true;
        break;
      case 'fill':
        this.pendingFills.push({ seq: e.seq, ts: e.ts, fill: e.data });
        if (this.pendingFills.length > FILL_ROWS) this.pendingFills.splice(0, this.pendingFills.length - FILL_ROWS);
        break;
      case 'position': {
        const known = this.positions.has(e.data.symbol);
        this.positions.set(e.data.symbol, e.data);
        this.dirty.positions = true;
        if (!known) this.page.onSymbols();
        break;
      }
      case 'balance':
        this.balances.set(e.data.currency, e.data);
        break;
    }
  }

  /** The price a position is marked to, and whether it is streamed (else the writer's). @param {Position} p */
  markOf(p) {
    const last = this.page.quotes.get(p.symbol)?.last;
    if (typeof last === 'number') return { mark: last, live: true };
    return { mark: p.mark_price, live: false };
  }

  render() {
    const { put } = this.page.fmt;
    if (this.dirty.positions) this.renderPositions();
    if (this.dirty.orders) this.renderOrders();
    if (this.pendingFills.length) this.renderFills();
    if (!this.dirty.summary) return;
    this.dirty.summary = false;
    let unrealised = 0;
    let realised = 0;
    for (const p of this.positions.values()) {
      const { mark } = this.markOf(p);
      if (typeof mark === 'number') unrealised += p.qty * (mark - p.avg_price);
      realised += p.realized_pnl;
    }
    const cash = sorted(this.balances).map((c) => `${money(/** @type {Balance} */ (this.balances.get(c)).cash)} ${c}`);
    put(this.el.cash, cash.join('  ') || '—');
    put(this.el.upnl, signedMoney(unrealised));
    put(this.el.rpnl, signedMoney(realised));
    this.el.upnl.dataset.dir = direction(unrealised);
    this.el.rpnl.dataset.dir = direction(realised);
    put(this.el.seq, String(this.seq));
  }

  renderPositions() {
    const { put, price } = this.page.fmt;
    this.dirty.positions = false;
    for (const [symbol, r] of this.positionRows) {
      if (this.positions.has(symbol)) continue;
      r.tr.remove();
      this.positionRows.delete(symbol);
    }
    sorted(this.positions).forEach((symbol, i) => {
      const p = /** @type {Position} */ (this.positions.get(symbol));
      let r = this.positionRows.get(symbol);
      if (!r) {
        const tr = row(['sym', 'qty', 'avg', 'mark', 'upnl', 'rpnl']);
        tr.dataset.symbol = symbol;
        r = { tr, cells: [...tr.cells] };
        this.positionRows.set(symbol, r);
      }
      if (this.el.positions.children[i] !== r.tr) this.el.positions.insertBefore(r.tr, this.el.positions.children[i] ?? null);
      const { mark, live } = this.markOf(p);
      const upnl = typeof mark === 'number' ? p.qty * (mark - p.avg_price) : undefined;
      const [sym, qty, avg, last, u, rl] = r.cells;
      put(sym, symbol);
      put(qty, String(p.qty));
      put(avg, price(p.avg_price));
      put(last, price(mark));
      put(u, upnl === undefined ? '' : signedMoney(upnl));
      put(rl, signedMoney(p.realized_pnl));
      last.title = live ? '' : "the order system's mark: no price streamed yet";
      last.dataset.live = String(live);
      u.dataset.dir = upnl === undefined ? 'flat' : direction(upnl);
      rl.dataset.dir = direction(p.realized_pnl);
      r.tr.dataset.flat = String(p.qty === 0);
    });
  }

  renderOrders() {
    const { put, price } = this.page.fmt;
    this.dirty.orders = false;
    const rows = sorted(this.orders).map((id) => {
      const o = /** @type {Order} */ (this.orders.get(id));
      const tr = row(['sym', 'sym', 'side', 'qty', 'filled', 'limit', 'status']);
      tr.dataset.order = id;
      const [oid, sym, side, qty, filled, limit, status] = [...tr.cells];
      put(oid, id);
      put(sym, o.symbol);
      put(side, o.side.toUpperCase());
      side.dataset.side = o.side;
      put(qty, String(o.qty));
      put(filled, String(o.filled_qty));
      put(limit, o.type === 'limit' ? price(o.limit_price) : 'MKT');
      put(status, o.status.replace('_', ' '));
      return tr;
    });
    this.el.orders.replaceChildren(...rows);
  }

  renderFills() {
    const { put, price, clockTime } = this.page.fmt;
    const body = this.el.fills;
    const rows = document.createDocumentFragment();
    for (let i = this.pendingFills.length - 1; i >= 0; i--) {
      const { seq, ts, fill } = this.pendingFills[i];
      const tr = row(['time', 'sym', 'side', 'qty', 'price', 'sym']);
      tr.dataset.seq = String(seq);
      tr.dataset.fill = fill.fill_id;
      const [time, sym, side, qty, px, order] = [...tr.cells];
      put(time, clockTime(ts));
      put(sym, fill.symbol);
      put(side, fill.side.toUpperCase());
      side.dataset.side = fill.side;
      put(qty, String(fill.qty));
      put(px, price(fill.price));
      put(order, fill.order_id);
      rows.append(tr);
    }
    this.pendingFills = [];
    body.prepend(rows);
    while (body.childElementCount > FILL_ROWS) body.lastElementChild?.remove();
  }
}
