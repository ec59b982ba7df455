//! The services' Prometheus recorder: one per process, installed as the `metrics` crate's
//! global recorder. Each service names its own histogram buckets and keeps the handle it
//! renders `/metrics` with.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs a Prometheus recorder as the process's recorder and returns its handle. The
/// histograms whose names `buckets` matches get those bucket bounds. If a recorder is
/// installed already (several services in one test process), that one stays, and this
/// handle renders only what is recorded through this one.
///
/// # Panics
/// If a bucket list is empty: the lists are the services' constants.
pub fn install(buckets: &[(Matcher, &[f64])]) -> PrometheusHandle {
    let recorder = buckets
        .iter()
        .fold(PrometheusBuilder::new(), |builder, (matcher, bounds)| {
            builder
                .set_buckets_for_metric(matcher.clone(), bounds)
                .expect("bucket list is not empty")
        })
        .build_recorder();
    let handle = recorder.handle();
    if ::metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed; /metrics shows only this one's");
    }
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_get_the_buckets_their_names_match() {
        let handle = install(&[
            (Matcher::Suffix("_seconds".into()), &[0.5, 1.0]),
            (Matcher::Full("queue_bytes".into()), &[100.0]),
        ]);
        ::metrics::histogram!("wait_seconds").record(0.7);
        ::metrics::histogram!("queue_bytes").record(7.0);
        let text = handle.render();
        for line in [
            r#"wait_seconds_bucket{le="0.5"} 0"#,
            r#"wait_seconds_bucket{le="1"} 1"#,
            r#"queue_bytes_bucket{le="100"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
    }
}
