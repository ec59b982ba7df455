// Market-open storm: new clients arrive at a constant rate, whatever the edge's state, each
// connecting and subscribing to its watchlist at once. The thresholds bound how long a
// client waits for its welcome and for the snapshots of its whole watchlist, and require
// nearly every session to get all of them.
//
//   RATE=50 (sessions started per second) DURATION=1m HOLD_S=5 SYMBOLS_PER_SESSION=20
//   INTERVAL_MS=1000 MAX_VUS=min(600, RATE x (HOLD_S + 5)) HANDSHAKE_P95_MS=1000
//   SNAPSHOT_P95_MS=1500

import {
  Session, baseThresholds, envDuration, envInt, pickSymbols, requireReadyEdge,
} from './lib/protocol.js';

const RATE = envInt('RATE', 50, 10);
const HOLD_S = envInt('HOLD_S', 5, 1);
const PER_SESSION = envInt('SYMBOLS_PER_SESSION', 20, 5);
const INTERVAL_MS = envInt('INTERVAL_MS', 1000, 250);
// Sessions alive at once are about RATE x (HOLD_S + setup); k6 saturates two cores near
// 500 busy sockets, so spread larger storms over several k6 processes or hosts. Every VU is
// initialised before the storm starts: starting VUs during it would delay arrivals.
const MAX_VUS = envInt('MAX_VUS', Math.min(600, RATE * (HOLD_S + 5)));

export const options = {
  scenarios: {
    storm: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: envDuration('DURATION', '1m', '3s'),
      preAllocatedVUs: MAX_VUS,
      maxVUs: MAX_VUS,
      gracefulStop: `${HOLD_S + 10}s`,
    },
  },
  thresholds: Object.assign(baseThresholds(), {
    tickmesh_handshake: [`p(95)<${envInt('HANDSHAKE_P95_MS', 1000)}`],
    tickmesh_time_to_snapshot: [`p(95)<${envInt('SNAPSHOT_P95_MS', 1500)}`],
    tickmesh_connect_errors: ['count==0'],
    tickmesh_unexpected_closes: ['count==0'],
    // Arrivals k6 could not start (no free VU): the storm was smaller than asked.
    dropped_iterations: ['count==0'],
  }),
};

export function setup() {
  return requireReadyEdge();
}

export default function () {
  const watchlist = pickSymbols(PER_SESSION);
  new Session({
    onWelcome: (s) => {
      s.subscribe(watchlist, { mode: 'quote', interval_ms: INTERVAL_MS });
      s.closeAfter(HOLD_S * 1000);
    },
  });
}
