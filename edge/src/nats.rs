//! The edge's only NATS code: the connection, one subscription per carried symbol (its
//! pump), and KV reads for snapshots ([`kv`]: the regional mirror, else the hub).
//!
//! Core NATS is at-most-once: ticks published while the edge (or its region) was cut off
//! are gone. So after the connection comes back, and after the regional mirror turns
//! fresh again (the region's link to the hub is back), the resync generation is bumped:
//! every pump re-reads its symbol's latest value and feeds it to the fan-out core, which
//! passes it on only if it is newer than what the sessions have. async-nats itself
//! re-sends every subscription on reconnect.

mod account;
pub mod delayed;
pub mod delayed_tape;
pub mod kv;
mod tape;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tickmesh_core::Symbol;
use tickmesh_core::codec::decode_wire;
use tickmesh_core::subject::tick_subject;
use tokio::sync::{Semaphore, watch};
use tokio::task::AbortHandle;

use crate::config::NatsConfig;
use crate::fanout::{SharedTick, TickSink, Upstream};

pub use kv::ensure_mirror;

/// KV reads in flight at once for resyncs, so that a reconnect with many carried symbols
/// does not flood JetStream; the others wait their turn.
const RESYNC_READS: usize = 32;

/// A pump whose subscription failed or ended asks the hub for a new one this long after,
/// as long as the symbol is still carried: one try per symbol per interval, never a
/// symbol left silently frozen.
const PUMP_RESTART_DELAY: Duration = Duration::from_secs(1);

/// How long a batched direct get may take, all of its replies together.
const DIRECT_GET_TIMEOUT: Duration = Duration::from_secs(5);

/// The thread that runs the NATS connection, the pumps and the KV reads on a runtime of its
/// own. However many sessions are runnable on the main runtime (a reconnect storm, a
/// market open), a tick or a KV reply is read and handed to the core without waiting
/// behind them. The thread ends when the last [`NatsLink`] clone is dropped.
#[derive(Debug)]
struct IoThread {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl IoThread {
    fn start() -> anyhow::Result<IoThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the NATS runtime")?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tickmesh-nats".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .context("starting the NATS thread")?;
        Ok(IoThread {
            handle,
            _stop: stop,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NatsLink {
    io: Arc<IoThread>,
    client: async_nats::Client,
    shards: u32,
    kv: Arc<kv::KvReader>,
    resync: Arc<watch::Sender<u64>>,
    reconnects: Arc<watch::Sender<u64>>,
    resync_reads: Arc<Semaphore>,
    connected: Arc<watch::Sender<bool>>,
    /// JetStream in `nats.js_domain`, for tapes' history.
    hub_js: async_nats::jetstream::Context,
    /// The JetStream API's subject prefix in `nats.js_domain` (`$JS.<domain>.API`), for
    /// the requests async-nats has no call for (a batched direct get of the last event of
    /// each of an account's subjects).
    hub_api: String,
    trades_stream: String,
    bars_stream: String,
    accounts_stream: String,
    account_snapshots: String,
    /// The bucket `account_snapshots`, opened once (opening asks for the stream's info, a
    /// JetStream API call that 10,000 subscribes at once would queue behind).
    account_snapshots_store: Arc<tokio::sync::OnceCell<async_nats::jetstream::kv::Store>>,
}

/// A symbol's pump: its NATS subscription ends when this is dropped.
#[derive(Debug)]
pub struct Pump(AbortHandle);

impl From<AbortHandle> for Pump {
    fn from(task: AbortHandle) -> Self {
        Pump(task)
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Upstream for NatsLink {
    type Pump = Pump;

    fn start_pump(&self, sink: Weak<dyn TickSink>, symbol: Symbol) -> Pump {
        self.pump(sink, symbol)
    }
}

impl NatsLink {
    /// Connects (in the background: the link starts disconnected and `/readyz` says so
    /// until the first server answers). Servers are tried in the order given, so the
    /// same-AZ leaf node comes first.
    pub async fn connect(
        config: &NatsConfig,
        shards: u32,
        kv_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let urls = config.urls.join(",");
        let resync = Arc::new(watch::channel(0u64).0);
        let reconnects = Arc::new(watch::channel(0u64).0);
        let connected = Arc::new(watch::channel(false).0);
        let events = Arc::new(Events {
            resync: resync.clone(),
            reconnects: reconnects.clone(),
            connected: connected.clone(),
            down: AtomicBool::new(false),
        });
        metrics::gauge!("tickmesh_edge_nats_connected").set(0.0);
        let io = IoThread::start()?;
        let options = tickmesh_service::nats::options(&config.tls, &config.auth)
            .await?
            .name(&config.name)
            .retry_on_initial_connect()
            .retain_servers_order()
            // Per symbol subscription: a pump that falls this far behind loses the newest
            // ticks of its symbol (async-nats drops them and reports a slow consumer); the
            // next tick carries the whole state again.
            .subscription_capacity(config.subscription_capacity)
            .event_callback(move |event| {
                let events = events.clone();
                async move { events.on(event) }
            });
        // Connected from the NATS thread, so that the connection's task runs there.
        let servers = config.urls.clone();
        let client = io
            .handle
            .spawn(async move { options.connect(servers.as_slice()).await })
            .await
            .context("the NATS thread stopped")?
            .with_context(|| format!("connecting to NATS at {urls}"))?;
        let kv = kv::KvReader::new(&client, config, kv_timeout, resync.clone())?;
        let hub_js = match &config.js_domain {
            Some(domain) => async_nats::jetstream::with_domain(client.clone(), domain),
            None => async_nats::jetstream::new(client.clone()),
        };
        let hub_api = match &config.js_domain {
            Some(domain) => format!("$JS.{domain}.API"),
            None => "$JS.API".to_string(),
        };
        Ok(NatsLink {
            hub_js,
            hub_api,
            trades_stream: config.trades_stream.clone(),
            bars_stream: config.bars_stream.clone(),
            accounts_stream: config.accounts_stream.clone(),
            account_snapshots: config.account_snapshots.clone(),
            account_snapshots_store: Arc::default(),
            io: Arc::new(io),
            client,
            shards,
            kv: Arc::new(kv),
            resync,
            reconnects,
            resync_reads: Arc::new(Semaphore::new(RESYNC_READS)),
            connected,
        })
    }

    /// A batched direct get (nats-server 2.11 and later) from `stream` in
    /// `nats.js_domain`, answered by any of the stream's replicas: its messages, up to
    /// the end of the batch (at most `max`), within [`DIRECT_GET_TIMEOUT`].
    pub(crate) async fn direct_get_batch(
        &self,
        stream: &str,
        request: serde_json::Value,
        max: usize,
    ) -> anyhow::Result<Vec<async_nats::Message>> {
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .context("subscribing to a direct get's replies")?;
        let subject = format!("{}.DIRECT.GET.{stream}", self.hub_api);
        self.client
            .publish_with_reply(subject, inbox, request.to_string().into())
            .await
            .context("sending a direct get")?;
        let read = async {
            let mut msgs = Vec::new();
            loop {
                let msg = replies
                    .next()
                    .await
                    .context("the direct get's replies ended")?;
                match msg.status.map(|s| s.as_u16()) {
                    None | Some(200) => {
                        msgs.push(msg);
                        if msgs.len() > max {
                            anyhow::bail!("a direct get answered more than the {max} asked for");
                        }
                    }
                    // The end of the batch, or nothing to send.
                    Some(204) | Some(404) => return Ok(msgs),
                    Some(code) => anyhow::bail!(
                        "a direct get from {stream} answered {code} {}",
                        msg.description.unwrap_or_default()
                    ),
                }
            }
        };
        tokio::time::timeout(DIRECT_GET_TIMEOUT, read)
            .await
            .with_context(|| {
                format!("a direct get from {stream} took over {DIRECT_GET_TIMEOUT:?}")
            })?
    }

    /// The resync generation: it grows by one each time the edge's NATS connection comes
    /// back after a disconnect, and each time the regional KV mirror turns fresh again.
    /// Sessions that want an explicit `snapshot` after a gap wait on `changed()`.
    pub fn resyncs(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
    }

    /// The reconnect generation: it grows by one each time the connection comes back after
    /// a disconnect, and only then.
    pub fn reconnects(&self) -> watch::Receiver<u64> {
        self.reconnects.subscribe()
    }

    /// Whether the NATS connection is up, as its events tell.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Whether snapshots come from the regional mirror (None: no mirror configured).
    pub fn mirror_fresh(&self) -> Option<bool> {
        self.kv.mirror_fresh()
    }

    /// Runs `task` on the NATS thread.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.io.handle.spawn(task)
    }

    /// Feeds every message on `subject` to `on`, on the NATS thread, until `on` returns
    /// false. The subscription outlives reconnects (the client subscribes again).
    pub fn follow(
        &self,
        subject: &'static str,
        mut on: impl FnMut(&[u8]) -> bool + Send + 'static,
    ) {
        let client = self.client.clone();
        self.spawn(async move {
            let mut sub = match client.subscribe(subject).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::error!(%subject, error = %e, "subscribe failed");
                    return;
                }
            };
            while let Some(msg) = sub.next().await {
                if !on(&msg.payload) {
                    return;
                }
            }
        });
    }

    /// The NATS client, for control-plane subscriptions (`ctl.>`).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Subscribes to the symbol's subject and feeds every valid tick to the hub, until
    /// aborted (which drops the subscription) or the hub is gone. On each resync it also
    /// feeds the symbol's latest KV value.
    fn pump(&self, hub: Weak<dyn TickSink>, symbol: Symbol) -> Pump {
        let link = self.clone();
        let subject = tick_subject(&symbol, self.shards);
        let mut resyncs = Some(self.resync.subscribe());
        self.spawn(async move {
            let mut sub = match link.client.subscribe(subject.clone()).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::error!(%subject, error = %e, "subscribe failed");
                    return restart(hub, symbol).await;
                }
            };
            let ticks_in = metrics::counter!("tickmesh_edge_ticks_in_total");
            // The reconnect generation as of the last tick: the first tick after it grows
            // is marked, so that seqs missing before it are told as lost to the reconnect.
            let reconnects = link.reconnects.subscribe();
            let mut generation = *reconnects.borrow();
            let transit = metrics::histogram!("tickmesh_edge_tick_transit_seconds");
            loop {
                let msg = tokio::select! {
                    msg = sub.next() => msg,
                    changed = changed(&mut resyncs) => {
                        if changed {
                            tokio::spawn(link.clone().resync(hub.clone(), symbol.clone()));
                        } else {
                            resyncs = None;
                        }
                        continue;
                    }
                };
                let Some(msg) = msg else {
                    tracing::warn!(%subject, "NATS subscription ended");
                    return restart(hub, symbol).await;
                };
                #[cfg(feature = "fault-injection")]
                if crate::fault::take_pump_end(symbol.as_str()) {
                    let _ = sub.unsubscribe().await;
                }
                #[cfg(feature = "fault-injection")]
                if crate::fault::take_tick_drop(symbol.as_str()) {
                    continue;
                }
                let Some(hub) = hub.upgrade() else { return };
                match decode_wire(&msg.payload) {
                    Ok(tick) if tick.symbol == symbol.as_str() => {
                        ticks_in.increment(1);
                        // Ingest's stamp to here, on the two hosts' wall clocks.
                        let age_us = tickmesh_core::tick::now_us().saturating_sub(tick.ts);
                        transit.record(age_us as f64 / 1e6);
                        let mut shared = SharedTick::new(tick, msg.payload.len());
                        let now = *reconnects.borrow();
                        shared.after_reconnect = now != generation;
                        generation = now;
                        if !hub.publish(Arc::new(shared)) {
                            metrics::counter!("tickmesh_edge_ticks_dropped_total", "reason" => "stale").increment(1);
                        }
                    }
                    Ok(_) => {
                        metrics::counter!("tickmesh_edge_ticks_dropped_total", "reason" => "wrong_subject").increment(1);
                    }
                    Err(e) => {
                        metrics::counter!("tickmesh_edge_ticks_dropped_total", "reason" => "invalid").increment(1);
                        tracing::warn!(%subject, error = %e, "dropped an invalid tick");
                    }
                }
            }
        })
        .abort_handle()
        .into()
    }

    /// Feeds the symbol's latest KV value to the hub; the core passes it on only if it is
    /// newer than the live ticks it has.
    async fn resync(self, hub: Weak<dyn TickSink>, symbol: Symbol) {
        let Ok(_permit) = self.resync_reads.acquire().await else {
            return;
        };
        let read = self.kv.latest_authoritative(symbol.as_str()).await;
        let Some(hub) = hub.upgrade() else { return };
        match read.and_then(|v| decode(&symbol, v)) {
            Ok(Some(mut tick)) => {
                // A resync follows a reconnect (or the regional mirror catching up): seqs
                // this value skips were lost to it.
                if let Some(fresh) = Arc::get_mut(&mut tick) {
                    fresh.after_reconnect = true;
                }
                let newer = hub.publish(tick);
                metrics::counter!("tickmesh_edge_resync_reads_total", "result" => if newer { "newer" } else { "current" })
                    .increment(1);
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("tickmesh_edge_resync_reads_total", "result" => "error")
                    .increment(1);
                tracing::warn!(%symbol, error = %e, "resync read failed; the next live tick will catch up");
            }
        }
    }

    /// The latest value of `symbol` for a snapshot (the regional mirror when fresh, else
    /// the hub), if any. Errors (no bucket yet, a timeout) are returned so that they are
    /// not cached.
    /// Opens the KV buckets in the background (see [`kv::KvReader::open`]).
    pub fn open_kv(&self) {
        let link = self.clone();
        self.spawn(async move { link.kv.open().await });
    }

    pub async fn kv_latest(&self, symbol: &Symbol) -> anyhow::Result<Option<Arc<SharedTick>>> {
        let bytes = self.kv.latest(symbol.as_str()).await?;
        decode(symbol, bytes)
    }

    pub async fn drain(&self) {
        if let Err(e) = self.client.drain().await {
            tracing::debug!(error = %e, "NATS drain");
        }
    }
}

fn event_name(event: &async_nats::Event) -> &'static str {
    match event {
        async_nats::Event::Connected => "connected",
        async_nats::Event::Disconnected => "disconnected",
        async_nats::Event::LameDuckMode => "lame_duck",
        async_nats::Event::SlowConsumer(_) => "slow_consumer",
        async_nats::Event::ServerError(_) => "server_error",
        async_nats::Event::ClientError(_) => "client_error",
        _ => "other",
    }
}

/// Connection events: metrics, logs, and the resync generation.
#[derive(Debug)]
struct Events {
    resync: Arc<watch::Sender<u64>>,
    reconnects: Arc<watch::Sender<u64>>,
    /// Whether the connection is up, for [`crate::upstream`].
    connected: Arc<watch::Sender<bool>>,
    /// Set by a disconnect, cleared by the next connect (which is then a reconnect).
    down: AtomicBool,
}

impl Events {
    fn on(&self, event: async_nats::Event) {
        metrics::counter!("tickmesh_edge_nats_events_total", "event" => event_name(&event))
            .increment(1);
        match event {
            async_nats::Event::Connected => {
                metrics::gauge!("tickmesh_edge_nats_connected").set(1.0);
                self.connected.send_replace(true);
                if self.down.swap(false, Ordering::Relaxed) {
                    metrics::counter!("tickmesh_edge_nats_reconnects_total").increment(1);
                    self.reconnects.send_modify(|g| *g += 1);
                    metrics::counter!("tickmesh_edge_resyncs_total", "cause" => "reconnect")
                        .increment(1);
                    self.resync.send_modify(|g| *g += 1);
                    tracing::info!("NATS reconnected; re-reading the latest values");
                } else {
                    tracing::info!("NATS connected");
                }
            }
            async_nats::Event::Disconnected => {
                metrics::gauge!("tickmesh_edge_nats_connected").set(0.0);
                self.connected.send_replace(false);
                self.down.store(true, Ordering::Relaxed);
                tracing::warn!("NATS disconnected; reconnecting");
            }
            event => tracing::info!(%event, "NATS"),
        }
    }
}

/// After [`PUMP_RESTART_DELAY`], has the hub start a new pump for `symbol` if it still
/// carries it (this pump is aborted, as any, when the symbol is released).
async fn restart(hub: Weak<dyn TickSink>, symbol: Symbol) {
    tokio::time::sleep(PUMP_RESTART_DELAY).await;
    if let Some(hub) = hub.upgrade() {
        metrics::counter!("tickmesh_edge_pump_restarts_total").increment(1);
        hub.restart_pump(&symbol);
    }
}

/// Waits for the next resync; false when no more can come.
async fn changed(resyncs: &mut Option<watch::Receiver<u64>>) -> bool {
    match resyncs {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn decode(symbol: &Symbol, bytes: Option<bytes::Bytes>) -> anyhow::Result<Option<Arc<SharedTick>>> {
    let Some(bytes) = bytes else { return Ok(None) };
    let tick = decode_wire(&bytes).with_context(|| format!("decoding KV value of {symbol}"))?;
    anyhow::ensure!(
        tick.symbol == symbol.as_str(),
        "KV value of {symbol} is a tick of {}",
        tick.symbol
    );
    Ok(Some(Arc::new(SharedTick::new(tick, bytes.len()))))
}
