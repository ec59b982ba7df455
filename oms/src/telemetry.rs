//! Metrics: one Prometheus recorder per process, served at `GET /metrics` on
//! `metrics_listen` (`GET /healthz` answers `ok`) by the services' shared responder.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `tickmesh_oms_events_total{kind}` | counter | events appended to `acct` |
//! | `tickmesh_oms_append_seconds` | histogram | one append, its retries included, until the stream acknowledged it |
//! | `tickmesh_oms_append_retries_total{reason}` | counter | appends tried again: `unavailable` (no leader, no answer), `refused` (the expected sequence did not hold) |
//! | `tickmesh_oms_snapshot_errors_total` | counter | snapshot puts to `acct_snap` that failed (the next one replaces it) |
//! | `tickmesh_oms_prints_total` | counter | prints read from `tr.>` |
//! | `tickmesh_oms_bad_prints_total` | counter | messages on `tr.>` that were not prints |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. An append
/// takes a millisecond or so; a fail-over of the stream's leader, seconds.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        tickmesh_service::metrics::install(&[(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0,
            ],
        )])
    })
}
