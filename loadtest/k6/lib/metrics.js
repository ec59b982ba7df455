// The custom metrics every scenario records, and the thresholds they share.

import { Counter, Rate, Trend } from 'k6/metrics';

export const metrics = {
  handshake: new Trend('tickmesh_handshake', true),
  subscribeRtt: new Trend('tickmesh_subscribe_rtt', true),
  timeToSnapshot: new Trend('tickmesh_time_to_snapshot', true),
  latency: new Trend('tickmesh_e2e_latency', true),
  hbLag: new Trend('tickmesh_hb_lag', true),
  sessionsOk: new Rate('tickmesh_sessions_ok'),
  snapshotComplete: new Rate('tickmesh_snapshot_complete'),
  updates: new Counter('tickmesh_updates'),
  snapshots: new Counter('tickmesh_snapshots'),
  connectErrors: new Counter('tickmesh_connect_errors'),
  slowConsumer: new Counter('tickmesh_slow_consumer'),
  reconnects: new Counter('tickmesh_reconnect_notices'),
  seqRegressions: new Counter('tickmesh_seq_regressions'),
  tickBeforeSnapshot: new Counter('tickmesh_tick_before_snapshot'),
  conflationViolations: new Counter('tickmesh_conflation_violations'),
  conflationPairs: new Counter('tickmesh_conflation_pairs'),
  sessionsCompleted: new Counter('tickmesh_sessions_completed'),
  seqGaps: new Counter('tickmesh_seq_gaps'),
  continuityErrors: new Counter('tickmesh_continuity_errors'),
  lostTold: new Counter('tickmesh_lost_told'),
  unrequested: new Counter('tickmesh_unrequested_updates'),
  malformed: new Counter('tickmesh_malformed'),
  serverErrors: new Counter('tickmesh_server_errors'),
  unexpectedCloses: new Counter('tickmesh_unexpected_closes'),
};

/** Thresholds on the protocol guarantees: any violation fails the run. */
export function guaranteeThresholds() {
  return {
    tickmesh_seq_regressions: ['count==0'],
    tickmesh_tick_before_snapshot: ['count==0'],
    tickmesh_conflation_violations: ['count==0'],
    tickmesh_seq_gaps: ['count==0'],
    tickmesh_continuity_errors: ['count==0'],
    tickmesh_unrequested_updates: ['count==0'],
    tickmesh_malformed: ['count==0'],
  };
}

/** Thresholds every scenario shares: sessions work and data flows. */
export function baseThresholds() {
  return Object.assign(guaranteeThresholds(), {
    checks: ['rate>0.99'],
    tickmesh_sessions_ok: ['rate>0.99'],
    // Rates with no samples pass vacuously: at least one session must have run its course.
    tickmesh_sessions_completed: ['count>0'],
    tickmesh_snapshot_complete: ['rate>0.99'],
    tickmesh_updates: ['count>0'],
    tickmesh_server_errors: ['count==0'],
  });
}
