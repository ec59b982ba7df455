//! `tickmesh-ingest record`: captures the live tick stream (`md.>` by default) into a
//! file that `replay` reads back: NDJSON or CSV by the file name, gzipped when it ends in
//! `.gz`. Ticks are written as they arrived, whole (`seq`, `epoch`, `ts` included).
//!
//! Decoding happens on the subscription task; a writer thread does the file I/O behind a
//! bounded channel ([`CHANNEL_BATCHES`] batches). If the disk cannot keep up, the channel
//! fills, the subscription's buffer fills, and NATS drops messages for this slow consumer
//! (reported as `dropped`); the stream is never slowed down for anyone else.

use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tickmesh_core::Tick;
use tickmesh_core::codec::decode_wire;
use tokio::sync::mpsc;

use crate::config::NatsConfig;
use crate::nats;
use crate::tickfile::{self, FileFormat};

/// Batches in flight to the writer thread.
pub const CHANNEL_BATCHES: usize = 64;
const BATCH: usize = 256;

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub out: PathBuf,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many ticks.
    pub max_ticks: Option<u64>,
    /// Subject filter. Default `md.>`.
    pub subject: String,
    pub format: FileFormat,
}

/// What a recording did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub ticks: u64,
    /// Messages that were not valid ticks.
    pub invalid: u64,
    /// Messages NATS dropped because this recorder fell behind.
    pub dropped: u64,
}

/// Records until `shutdown`, `duration` or `max_ticks`, whichever comes first.
pub async fn record(
    nats_config: &NatsConfig,
    opts: &RecordOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RecordSummary> {
    let format = opts
        .format
        .resolve(&opts.out)
        .map_err(|e| anyhow::anyhow!(e))?;
    let gzip = opts.out.to_string_lossy().ends_with(".gz");
    let file =
        File::create(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let (tx, rx) = mpsc::channel::<Vec<Tick>>(CHANNEL_BATCHES);
    let writer = std::thread::Builder::new()
        .name("tickmesh-record".into())
        .spawn(move || write_file(file, format, gzip, rx))
        .context("spawning the writer thread")?;

    // The service's TLS and credentials, with this recorder's own name and buffers.
    let tap =
        nats::Tap::connect(nats_config, format!("{}-record", nats_config.name), 1 << 16).await?;
    let mut sub = tap
        .subscribe(opts.subject.clone())
        .await
        .with_context(|| format!("subscribing to {}", opts.subject))?;
    tracing::info!(subject = %opts.subject, out = %opts.out.display(), "recording");

    let mut summary = RecordSummary::default();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, until);
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    let mut batch = Vec::with_capacity(BATCH);
    let limit = opts.max_ticks.unwrap_or(u64::MAX);
    while summary.ticks < limit {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut until => break,
            _ = flush.tick() => {
                if !batch.is_empty() {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    tx.send(full).await.context("the writer thread stopped")?;
                }
            }
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                match decode_wire(msg.payload()) {
                    Ok(tick) => {
                        summary.ticks += 1;
                        batch.push(tick);
                        if batch.len() >= BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            tx.send(full).await.context("the writer thread stopped")?;
                        }
                    }
                    Err(e) => {
                        summary.invalid += 1;
                        tracing::warn!(subject = %msg.subject(), error = %e, "not a tick; skipped");
                    }
                }
            }
        }
    }
    drop(sub);
    if !batch.is_empty() {
        tx.send(batch).await.context("the writer thread stopped")?;
    }
    drop(tx);
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .context("joining the writer thread")?
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
        .with_context(|| format!("writing {}", opts.out.display()))?;
    summary.dropped = tap.slow_consumer_events();
    tracing::info!(
        ticks = summary.ticks,
        invalid = summary.invalid,
        "recording done"
    );
    Ok(summary)
}

fn write_file(
    file: File,
    format: FileFormat,
    gzip: bool,
    rx: mpsc::Receiver<Vec<Tick>>,
) -> std::io::Result<()> {
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        write_batches(&mut gz, format, rx)?;
        gz.finish()?.sync_all()
    } else {
        let mut file = file;
        write_batches(&mut file, format, rx)?;
        file.sync_all()
    }
}

fn write_batches(
    out: &mut impl Write,
    format: FileFormat,
    mut rx: mpsc::Receiver<Vec<Tick>>,
) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(256 * 1024, out);
    if format == FileFormat::Csv {
        tickfile::write_csv_header(&mut w)?;
    }
    while let Some(batch) = rx.blocking_recv() {
        for tick in &batch {
            match format {
                FileFormat::Csv => tickfile::write_csv(&mut w, tick)?,
                _ => tickfile::write_ndjson(&mut w, tick)?,
            }
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// Just enough of a NATS server for a client to connect and subscribe: `INFO`, then
    /// `PONG` to every `PING`. Returns its URL and whether a client sent `CONNECT`.
    async fn fake_server() -> (String, tokio::sync::oneshot::Receiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (connected, seen) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let info = format!(
                "INFO {{\"server_id\":\"fake\",\"server_name\":\"fake\",\"version\":\"2.10.0\",\
                 \"go\":\"go1\",\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\
                 \"max_payload\":1048576,\"proto\":1}}\r\n"
            );
            write.write_all(info.as_bytes()).await.unwrap();
            let mut connected = Some(connected);
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("CONNECT")
                    && let Some(tx) = connected.take()
                {
                    let _ = tx.send(());
                }
                if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                    break;
                }
            }
        });
        (format!("nats://127.0.0.1:{port}"), seen)
    }

    #[tokio::test]
    async fn connects_to_a_list_of_urls() {
        // Nothing listens on the first URL: the client moves on to the second.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("nats://{}", closed.local_addr().unwrap());
        drop(closed);
        let (live, connected) = fake_server().await;
        let nats = NatsConfig {
            urls: vec![dead, live],
            ..NatsConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let opts = RecordOptions {
            out: dir.path().join("ticks.ndjson"),
            duration: Some(Duration::from_millis(200)),
            max_ticks: None,
            subject: "md.>".into(),
            format: FileFormat::Auto,
        };
        let summary = tokio::time::timeout(
            Duration::from_secs(10),
            record(&nats, &opts, std::future::pending()),
        )
        .await
        .expect("record returns after its duration")
        .expect("record connects through the second URL");
        assert_eq!(summary, RecordSummary::default());
        connected.await.expect("the client sent CONNECT");
    }
}
