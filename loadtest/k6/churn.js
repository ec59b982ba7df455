// Churn: clients that keep changing their minds. Each session subscribes to a watchlist,
// then CYCLES times: waits DWELL_MS, unsubscribes part of it, subscribes to other symbols
// (the ones it dropped in the previous cycle, and one it drops in this very cycle, as a UI
// that re-subscribes to change the interval would), each batch at a new interval and mode,
// and asks `list` to confirm what it holds; then it closes and the VU reconnects. Checked on top of every guarantee:
// `unsubscribed` lists what was dropped, no update of a dropped symbol arrives after
// `unsubscribed`, a re-subscribed symbol gets a fresh snapshot whose seq is above anything
// the session saw before, and `list` matches the confirmed subscriptions.
//
//   VUS=50 DURATION=2m CYCLES=5 DWELL_MS=1000 SYMBOLS_PER_SESSION=10 SNAPSHOT_P95_MS=1500
//
// A symbol that comes back within its interval of its last update gets its snapshot once
// that interval has passed (the tier's minimum holds across re-subscriptions), so with
// intervals up to 1000 ms a snapshot may take that long: the default bound is 1500 ms.

import { check } from 'k6';

import {
  Session, baseThresholds, config, envDuration, envInt, pickSymbols, requireReadyEdge,
} from './lib/protocol.js';

const CYCLES = envInt('CYCLES', 5, 3);
const DWELL_MS = envInt('DWELL_MS', 1000, 300);
const PER_SESSION = envInt('SYMBOLS_PER_SESSION', 10, 3);
const INTERVALS = [0, 100, 250, 1000];
const MODES = ['ltp', 'quote', 'full'];

export const options = {
  scenarios: {
    churn: {
      executor: 'constant-vus',
      vus: envInt('VUS', 50, 3),
      duration: envDuration('DURATION', '2m', '4s'),
      gracefulStop: `${Math.ceil((CYCLES + 2) * DWELL_MS / 1000) + 10}s`,
    },
  },
  thresholds: Object.assign(baseThresholds(), {
    tickmesh_time_to_snapshot: [`p(95)<${envInt('SNAPSHOT_P95_MS', 1500)}`],
    tickmesh_connect_errors: ['count==0'],
    tickmesh_unexpected_closes: ['count==0'],
  }),
};

export function setup() {
  return requireReadyEdge();
}

function any(list) {
  return list[Math.floor(Math.random() * list.length)];
}

export default function () {
  let cycle = 0;
  // Symbols dropped in the last cycle: candidates to come back (a re-subscription).
  let dropped = [];
  const step = (s) => {
    if (cycle >= CYCLES) {
      s.close();
      return;
    }
    cycle += 1;
    const held = s.activeSymbols();
    const drop = held.filter(() => Math.random() < 0.5);
    if (drop.length === 0 && held.length > 0) drop.push(held[0]);
    const candidates = dropped.concat(pickSymbols(config.symbols.length))
      .filter((x, i, all) => !held.includes(x) && all.indexOf(x) === i);
    const add = candidates.slice(0, Math.max(1, drop.length));
    // One dropped symbol comes back at once, at another interval: its first update must not
    // repeat an old seq, and its old interval's schedule must not leak into the new one.
    let intervals = INTERVALS;
    if (drop.length > 0) {
      const flip = drop[drop.length - 1];
      add.push(flip);
      intervals = INTERVALS.filter((i) => i !== s.subs[flip].interval);
    }
    dropped = drop;
    if (drop.length > 0) s.unsubscribe(drop);
    if (add.length > 0) s.subscribe(add, { mode: any(MODES), interval_ms: any(intervals) });
    else s.after(DWELL_MS, () => step(s));
  };
  new Session({
    onWelcome: (s) => {
      s.subscribe(pickSymbols(PER_SESSION), { mode: any(MODES), interval_ms: any(INTERVALS) });
    },
    // Each batch of new symbols, once all its snapshots are in (or they timed out): confirm
    // with `list`, dwell, then change the watchlist again.
    onSnapshots: (s) => {
      s.list();
      s.after(DWELL_MS, () => step(s));
    },
    onUnsubscribed: (s, reply, req) => {
      check(reply, { 'unsubscribed echoes the request id': (r) => r.id === req.id });
    },
  });
}
