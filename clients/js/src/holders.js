// @ts-check
/**
 * Which tabs hold what, on a shared connection: the reference counts. A subscription is a
 * key (`t:SYMBOL` ticks, `c:CHAIN` a chain, `p:SYMBOL` a tape, `b:SYMBOL/TF` bars,
 * `a:ACCOUNT` an account) with the
 * tabs that hold it and what each asked for. The connection asks the edge for a key once,
 * at what its tabs ask for together (the richest mode, the shortest interval), and gives
 * it up with its last tab. No I/O: `Hub` sends what these tell it to.
 *
 * @module tickmesh/holders
 */

import { barKey, chainSymbolPattern } from './ledger.js';

/** @type {Record<string, number>} */
const MODE_RANK = { ltp: 0, quote: 1, full: 2 };
const MODES = ['ltp', 'quote', 'full'];
const NOTHING = /$^/;

/**
 * @typedef {{mode?: string, interval_ms?: number, history?: number}} Params what one tab asked for
 * @typedef {{mode: string, interval_ms: number, history: number}} Joint what its tabs ask for together
 */

/** The keys a subscribe or unsubscribe names, with the tab's params. @param {Record<string, any>} f @returns {Array<[string, Params]>} */
export function keysOf(f) {
  /** @type {string[]} */
  const symbols = f.symbols ?? [];
  /** @type {string[]} */
  const chains = f.chains ?? [];
  if (typeof f.account === 'string') return [[`a:${f.account}`, {}]];
  if (f.stream === 'trades') return symbols.map((s) => [`p:${s}`, { history: f.history }]);
  if (f.stream === 'bars') return symbols.map((s) => [`b:${barKey(s, f.tf)}`, { history: f.history, interval_ms: f.interval_ms }]);
  const p = { mode: f.mode, interval_ms: f.interval_ms };
  return [...symbols.map((s) => `t:${s}`), ...chains.map((c) => `c:${c}`)].map((k) => [k, p]);
}

/** @param {string} key @returns {{kind: string, name: string, tf: string}} `name` is the symbol (or chain) */
export function parseKey(key) {
  const [name, tf = ''] = key.slice(2).split('/');
  return { kind: key[0], name, tf };
}

/** Every key that may name `symbol` (as a symbol, a chain, a tape, bars). @param {string} symbol @param {readonly string[]} timeframes */
export function keysNaming(symbol, timeframes) {
  return [`t:${symbol}`, `c:${symbol}`, `p:${symbol}`, ...timeframes.map((tf) => `b:${barKey(symbol, tf)}`)];
}

export class Holders {
  constructor() {
    /** @type {Map<string, Map<number, Params>>} key -> tab -> what it asked for */
    this.byKey = new Map();
    /** @type {Map<string, RegExp>} chains held -> their legs' pattern */
    this.chains = new Map();
  }

  /** @param {string} key */
  tabsOf(key) {
    return this.byKey.get(key);
  }

  /** @param {string} key @param {number} tab */
  holds(key, tab) {
    return this.byKey.get(key)?.has(tab) ?? false;
  }

  /** The keys `tab` holds. @param {number} tab */
  heldBy(tab) {
    return [...this.byKey].filter(([, h]) => h.has(tab)).map(([key]) => key);
  }

  /**
   * Adds `tab` to each key with what it asked for; returns the keys another tab held
   * already (which the edge will not start again: no snapshot, no history).
   * @param {number} tab @param {Array<[string, Params]>} keys
   */
  add(tab, keys) {
    /** @type {string[]} */
    const joined = [];
    for (const [key, params] of keys) {
      let h = this.byKey.get(key);
      if (!h) this.byKey.set(key, (h = new Map()));
      if (!h.has(tab) && h.size) joined.push(key);
      h.set(tab, params);
      const { kind, name } = parseKey(key);
      if (kind === 'c') this.chains.set(name, chainSymbolPattern(name) ?? NOTHING);
    }
    return joined;
  }

  /**
   * Takes `keys` from `tab`: returns those it was the last to hold (`released`: to give
   * up) and those whose joint mode or interval changed (`changed`: to ask for again; a
   * tape's history only matters to its first subscribe).
   * @param {number} tab @param {string[]} keys
   */
  remove(tab, keys) {
    /** @type {string[]} */
    const released = [];
    /** @type {string[]} */
    const changed = [];
    const asked = (/** @type {string} */ key) => {
      const p = this.joint(key);
      return p && `${p.mode}/${p.interval_ms}`;
    };
    for (const key of keys) {
      const h = this.byKey.get(key);
      const before = asked(key);
      if (!h?.delete(tab)) continue;
      if (!h.size) {
        this.drop(key);
        released.push(key);
      } else if (key[0] !== 'p' && key[0] !== 'a' && asked(key) !== before) {
        changed.push(key);
      }
    }
    return { released, changed };
  }

  /** Forgets a key and its tabs. @param {string} key */
  drop(key) {
    this.byKey.delete(key);
    if (key[0] === 'c') this.chains.delete(parseKey(key).name);
  }

  /** What a key's tabs ask for together: the richest mode, shortest interval, largest history. @param {string} key @returns {Joint | null} */
  joint(key) {
    const h = this.byKey.get(key);
    if (!h?.size) return null;
    let rank = 0;
    let interval = Infinity;
    let history = 0;
    for (const p of h.values()) {
      rank = Math.max(rank, MODE_RANK[p.mode ?? 'ltp'] ?? 0);
      interval = Math.min(interval, p.interval_ms ?? 0);
      history = Math.max(history, p.history ?? 0);
    }
    return { mode: MODES[rank], interval_ms: interval === Infinity ? 0 : interval, history };
  }

  /**
   * The `subscribe` fields that set `keys` to what their tabs ask for together: one per
   * (mode, interval), tape history, or (timeframe, history, interval).
   * @param {string[]} keys @param {{history?: number}} [asked] the request that changed them (its `history`)
   */
  subscribes(keys, asked = {}) {
    /** @type {Map<string, Record<string, any>>} */
    const groups = new Map();
    for (const key of keys) {
      const { kind, name, tf } = parseKey(key);
      const p = this.joint(key);
      if (!p || kind === 'a') continue;
      const history = asked.history ?? p.history;
      /** @type {[string, Record<string, any>, string]} */
      const [g, base, field] =
        kind === 'p'
          ? [`p/${history}`, { stream: 'trades', history }, 'symbols']
          : kind === 'b'
            ? [`b/${tf}/${history}/${p.interval_ms}`, { stream: 'bars', tf, history, interval_ms: p.interval_ms }, 'symbols']
            : [`t/${p.mode}/${p.interval_ms}`, { mode: p.mode, interval_ms: p.interval_ms }, kind === 'c' ? 'chains' : 'symbols'];
      let group = groups.get(g);
      if (!group) groups.set(g, (group = base));
      (group[field] ??= []).push(name);
    }
    return [...groups.values()];
  }

  /** The `unsubscribe` fields that give up `keys`: one per stream (and timeframe), one per account. @param {string[]} keys */
  unsubscribes(keys) {
    /** @type {Map<string, Record<string, any>>} */
    const groups = new Map();
    for (const key of keys) {
      const { kind, name, tf } = parseKey(key);
      if (kind === 'a') {
        groups.set(key, { account: name });
        continue;
      }
      const g = kind === 'p' ? 'p' : kind === 'b' ? `b/${tf}` : 't';
      let group = groups.get(g);
      if (!group) groups.set(g, (group = kind === 'p' ? { stream: 'trades' } : kind === 'b' ? { stream: 'bars', tf } : {}));
      (group[kind === 'c' ? 'chains' : 'symbols'] ??= []).push(name);
    }
    return [...groups.values()];
  }

  /** The `t:` keys held of the legs of `chain`: the edge drops them with the chain. @param {string} chain */
  legsHeld(chain) {
    const pattern = chainSymbolPattern(chain);
    return pattern ? [...this.byKey.keys()].filter((k) => k[0] === 't' && pattern.test(k.slice(2))) : [];
  }

  /** The legs' pattern of a chain held. @param {string} chain */
  chainPattern(chain) {
    return this.chains.get(chain) ?? NOTHING;
  }

  /** Tabs that get a symbol's ticks (as itself or a leg of a chain), each with its shortest interval for it. @param {string} symbol */
  tickRoute(symbol) {
    /** @type {Map<number, number>} */
    const out = new Map();
    /** @param {Map<number, Params> | undefined} h */
    const add = (h) => {
      for (const [tab, p] of h ?? []) out.set(tab, Math.min(out.get(tab) ?? Infinity, p.interval_ms ?? 0));
    };
    add(this.byKey.get(`t:${symbol}`));
    for (const [chain, pattern] of this.chains) if (pattern.test(symbol)) add(this.byKey.get(`c:${chain}`));
    return out;
  }
}
