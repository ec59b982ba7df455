// Correctness under load: long sessions with a mix of every-tick and conflated
// subscriptions in every mode, each checking on every message what docs/protocol.md
// guarantees. Any violation fails the run:
//
//   - a snapshot before any live tick of each newly subscribed symbol;
//   - seq strictly increasing per symbol (snapshot included), epochs never going back;
//   - conflation: no two live updates of a symbol closer than interval_ms - CONFLATION_SLACK_MS
//     (a snapshot may be followed sooner by the first live tick);
//   - no unexplained gaps: at interval_ms 0, within one epoch, each live seq is the previous + 1
//     unless the edge said `slow_consumer`;
//   - no update of a symbol the session did not subscribe to, every tick carrying its mode's
//     fields, no unsolicited errors, no close the client did not ask for.
//
// FAULT=reorder|tight_interval|drop|no_snapshot makes the script mishandle what it receives
// (swap two ticks, believe a 4x longer interval, drop every 10th every-tick update, ignore
// snapshots), to show that each check fails the run when its guarantee breaks.
//
//   VUS=20 DURATION=2m SESSION_S=60 SYMBOLS_PER_SESSION=30 EVERY_TICK=2
//   INTERVALS=100,250,1000 CONFLATION_SLACK_MS=20
//
// Latency is recorded (tickmesh_e2e_latency) but not judged here: the soak bounds it.

import {
  Session, baseThresholds, envDuration, envInt, pickSymbols, requireReadyEdge,
} from './lib/protocol.js';

const SESSION_S = envInt('SESSION_S', 60, 3);
const PER_SESSION = envInt('SYMBOLS_PER_SESSION', 30);
const EVERY_TICK = envInt('EVERY_TICK', 2, 1);
const INTERVALS = (__ENV.INTERVALS || '100,250,1000').split(',').map((x) => {
  const n = Number(x);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`INTERVALS=${__ENV.INTERVALS}: expected positive integers`);
  return n;
});
const MODES = ['ltp', 'quote', 'full'];

export const options = {
  scenarios: {
    correctness: {
      executor: 'constant-vus',
      vus: envInt('VUS', 20, 2),
      duration: envDuration('DURATION', '2m', `${SESSION_S}s`),
      gracefulStop: `${SESSION_S + 10}s`,
    },
  },
  thresholds: Object.assign(baseThresholds(), {
    checks: ['rate==1'],
    tickmesh_sessions_ok: ['rate==1'],
    tickmesh_snapshot_complete: ['rate==1'],
    tickmesh_unexpected_closes: ['count==0'],
    tickmesh_connect_errors: ['count==0'],
    // Both paths must have carried data, or the checks above proved nothing.
    'tickmesh_updates{path:every_tick}': ['count>0'],
    'tickmesh_updates{path:conflated}': ['count>0'],
    // ... and the conflation bound must have been judged, not only skipped.
    'tickmesh_conflation_pairs{checked:yes}': ['count>0'],
  }),
};

export function setup() {
  return requireReadyEdge();
}

export default function () {
  const symbols = pickSymbols(PER_SESSION);
  const everyTick = symbols.slice(0, EVERY_TICK);
  const rest = symbols.slice(EVERY_TICK);
  new Session({
    onWelcome: (s) => {
      if (everyTick.length > 0) s.subscribe(everyTick, { mode: 'full', interval_ms: 0 });
      // The other symbols, dealt round-robin over the intervals, each group in its own mode.
      INTERVALS.forEach((interval, i) => {
        const group = rest.filter((_, j) => j % INTERVALS.length === i);
        if (group.length > 0) s.subscribe(group, { mode: MODES[i % MODES.length], interval_ms: interval });
      });
      s.closeAfter(SESSION_S * 1000);
    },
  });
}
