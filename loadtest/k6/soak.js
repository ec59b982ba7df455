// Soak: VUs ramp up, hold for minutes, ramp down. Each VU keeps a session open for
// SESSION_S seconds with a realistic watchlist (most symbols conflated at INTERVAL_MS, a few
// every tick), pings now and then, then reconnects. Everything the protocol guarantees is
// checked on every message; the thresholds also bound the end-to-end latency.
//
//   VUS=100 RAMP=2m HOLD=15m RAMP_DOWN=1m SESSION_S=120 SYMBOLS_PER_SESSION=20
//   EVERY_TICK=1 INTERVAL_MS=1000 PING_MS=10000 LATENCY_P99_MS=250
//
// The latency is measured where k6 reads each frame, so it includes k6's own delays: keep
// the load generator well below saturation (about 5,000 updates/s per two k6 cores), or
// the run measures k6 instead of the edge.

import {
  Session, baseThresholds, envDuration, envInt, pickSymbols, requireReadyEdge,
} from './lib/protocol.js';

const VUS = envInt('VUS', 100, 3);
const SESSION_S = envInt('SESSION_S', 120, 2);
const PER_SESSION = envInt('SYMBOLS_PER_SESSION', 20, 4);
const EVERY_TICK = envInt('EVERY_TICK', 1);
const INTERVAL_MS = envInt('INTERVAL_MS', 1000, 250);
const PING_MS = envInt('PING_MS', 10000, 500);
const LATENCY_P99_MS = envInt('LATENCY_P99_MS', 250);

export const options = {
  scenarios: {
    soak: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: envDuration('RAMP', '2m', '1s'), target: VUS },
        { duration: envDuration('HOLD', '15m', '3s'), target: VUS },
        { duration: envDuration('RAMP_DOWN', '1m', '1s'), target: 0 },
      ],
      // A session in progress when its VU is ramped down finishes its hold and closes.
      gracefulRampDown: `${SESSION_S + 10}s`,
      gracefulStop: `${SESSION_S + 10}s`,
    },
  },
  thresholds: Object.assign(baseThresholds(), {
    'tickmesh_e2e_latency{path:every_tick}': [`p(99)<${LATENCY_P99_MS}`],
    tickmesh_unexpected_closes: ['count==0'],
    tickmesh_connect_errors: ['count==0'],
  }),
};

export function setup() {
  return requireReadyEdge();
}

export default function () {
  const symbols = pickSymbols(PER_SESSION);
  const everyTick = symbols.slice(0, EVERY_TICK);
  const conflated = symbols.slice(EVERY_TICK);
  new Session({
    onWelcome: (s) => {
      if (conflated.length > 0) s.subscribe(conflated, { mode: 'quote', interval_ms: INTERVAL_MS });
      if (everyTick.length > 0) s.subscribe(everyTick, { mode: 'ltp', interval_ms: 0 });
      const pingLoop = () => {
        s.ping();
        s.after(PING_MS, pingLoop);
      };
      s.after(PING_MS, pingLoop);
      s.closeAfter(SESSION_S * 1000);
    },
  });
}
