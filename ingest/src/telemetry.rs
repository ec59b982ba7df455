//! Metrics: one Prometheus recorder per process, served at `GET /metrics` on
//! `metrics_listen` by a minimal HTTP/1.1 responder (`GET /healthz` answers `ok`).
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `tickmesh_ingest_ticks_in_total{source}` | counter | ticks the source produced |
//! | `tickmesh_ingest_ticks_out_total{source}` | counter | ticks published |
//! | `tickmesh_ingest_stale_ticks_total{source}` | counter | ticks dropped: `src_ts` older than one already sequenced |
//! | `tickmesh_ingest_corrupt_records_total{source}` | counter | file records skipped |
//! | `tickmesh_ingest_kv_lag_seconds` | histogram | first unwritten change → `md_last` put acknowledged |
//! | `tickmesh_ingest_kv_writes_total`, `_kv_errors_total` | counter | `md_last` puts |
//! | `tickmesh_ingest_kv_round_seconds` | histogram | one round of the `md_last` writer |
//! | `tickmesh_ingest_kv_pending` | gauge | symbols waiting for a `md_last` write |
//! | `tickmesh_ingest_delayed_samples_total`, `_delayed_errors_total` | counter | samples published on `mdd.*` (delayed data) |
//! | `tickmesh_ingest_refdata_writes_total`, `_refdata_errors_total` | counter | `md_ref` writes |
//! | `tickmesh_ingest_lease_held` | gauge | 1 while this node holds the feed's lease |
//! | `tickmesh_ingest_lease_events_total{event}` | counter | `acquired`, `lost`, `released` |
//! | `tickmesh_ingest_epoch` | gauge | the current epoch (µs) |

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusHandle};
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        tickmesh_service::metrics::install(&[(
            Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )])
    })
}

/// Binds `addr` and serves `/metrics` and `/healthz` until `cancel`. Returns the bound
/// address.
pub async fn serve(addr: SocketAddr, cancel: CancellationToken) -> anyhow::Result<SocketAddr> {
    tickmesh_service::metrics::serve(addr, prometheus(), cancel).await
}
