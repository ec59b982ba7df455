//! The TickMesh test kit: real `nats-server` processes from the repo's `nats/` configs on
//! free loopback ports, in-process ingest and edge services, and a protocol v1 client.
//!
//! Servers are killed and their stores removed on drop.
//!
//! - [`mesh`]: the hub cluster and regional leaf clusters on free ports, edge processes,
//!   and a roaming client.
//! - [`oms`]: the order system on the test universe, and the account stream read back.
//! - [`proxy`]: a TCP proxy that delays, black-holes or resets a link.

pub mod accounts;
pub mod mesh;
pub mod oms;
pub mod proxy;
pub mod sse;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickmesh_core::Format;
use tickmesh_core::protocol::{SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};
use tickmesh_devkit::NatsSpec;
use tickmesh_edge::EdgeConfig;
use tickmesh_edge::config::{AuthConfig, TierConfig};
use tickmesh_ingest::IngestConfig;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

// Where nats-server is, free ports and the workspace root are shared with `cargo xtask`.
pub use tickmesh_devkit::{free_port, nats_server_bin, root};

/// A `nats-server` started from `nats/local.conf`.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub http_port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> anyhow::Result<Self> {
        let store = tempfile::tempdir()?;
        let spec = NatsSpec::new("nats/local.conf", free_port(), free_port(), store.path());
        let mut child = spec.command(&nats_server_bin()).spawn().with_context(|| {
            format!(
                "starting {} (run `cargo xtask test` to install it)",
                nats_server_bin().display()
            )
        })?;
        if let Err(e) = spec.wait_healthy(&mut child, Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(NatsServer {
            child,
            port: spec.port,
            http_port: spec.http_port,
            store,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store(&self) -> &Path {
        self.store.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process service (ingest or edge) stopped through its shutdown future.
pub struct Service {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Runs `service`, handed the future that resolves when the service is to stop.
    pub fn spawn<F>(service: impl FnOnce(futures_util::future::BoxFuture<'static, ()>) -> F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(service(Box::pin(
            async move { token.cancelled_owned().await },
        )));
        Service { stop, task }
    }

    /// Signals shutdown and waits for the service to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("service task panicked")?
    }

    /// Stops the service wherever it is, as a crash would: its task is dropped mid-work,
    /// with no orderly stop.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Whether the service has returned (an error, or a panic) without being stopped.
    pub fn has_ended(&self) -> bool {
        self.task.is_finished()
    }
}

/// A small simulated universe: few symbols so each ticks often.
/// A subscription to every tick (`md.>`), with room for 65,536 unread messages, live
/// once this returns.
pub async fn subscribe_all(url: &str) -> async_nats::Subscriber {
    subscribe_to(url, "md.>").await
}

/// A subscription to `subject` on a connection of its own, with room for 65,536 unread
/// messages, live once this returns.
pub async fn subscribe_to(url: &str, subject: &str) -> async_nats::Subscriber {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 16)
        .connect(url)
        .await
        .expect("connecting to the test nats-server");
    let sub = client
        .subscribe(subject.to_string())
        .await
        .unwrap_or_else(|e| panic!("subscribing to {subject}: {e}"));
    client.flush().await.expect("flushing the subscription");
    sub
}

pub fn ingest_config(nats_url: &str, ticks_per_sec: u32) -> IngestConfig {
    let mut c = IngestConfig::default();
    c.nats.urls = vec![nats_url.to_string()];
    c.sim.ticks_per_sec = ticks_per_sec;
    c.sim.universe = ["AAPL", "MSFT", "SPY", "NVDA", "TSLA"]
        .into_iter()
        .map(|s| tickmesh_ingest::sources::sim::InstrumentSpec {
            symbol: s.into(),
            price: 100.0 + s.len() as f64,
            ..Default::default()
        })
        .collect();
    // One small option chain (20 options) and no burst at the open: light and steady on
    // the shared test machine.
    c.sim.options.underlyings = vec!["AAPL".into()];
    c.sim.options.weeklies = 1;
    c.sim.options.monthlies = 1;
    c.sim.options.strikes = 5;
    c.sim.session.open_burst = 1.0;
    c
}

pub fn start_ingest(config: IngestConfig) -> Service {
    Service::spawn(|stop| tickmesh_ingest::run(config, stop))
}

/// An edge on loopback that drains quickly and, as most tests need, is open to clients
/// without a token (see [`open_anonymous`]).
pub fn edge_config(nats_url: &str) -> EdgeConfig {
    let mut c = EdgeConfig::default();
    c.nats.urls = vec![nats_url.to_string()];
    c.listen = ([127, 0, 0, 1], 0).into();
    c.shutdown.reconnect_window_ms = 200;
    c.shutdown.grace_ms = 2000;
    open_anonymous(&mut c.auth);
    c
}

/// Turns on anonymous access to every symbol at every tick, opted into explicitly as the
/// edge demands (`allow_open_anonymous`): tier `anonymous` with no minimum interval, 500
/// symbols and 50 messages a second.
pub fn open_anonymous(auth: &mut AuthConfig) {
    auth.anonymous = true;
    auth.allow_open_anonymous = true;
    auth.anonymous_ent = vec!["*".into()];
    auth.anonymous_tier = "anonymous".into();
    auth.tiers.insert(
        "anonymous".into(),
        TierConfig {
            min_interval_ms: 0,
            max_symbols: 500,
            max_msgs_per_s: 50,
        },
    );
}

/// Creates an empty `md_ref` where no ingest runs, so that an edge loads reference data
/// (of no instrument) and turns ready.
pub async fn create_empty_refdata(nats_url: &str) -> anyhow::Result<()> {
    create_refdata(nats_url, &[]).await
}

/// Creates `md_ref` listing `symbols` (as equities), marked complete as ingest marks it,
/// and an empty `md_last`, where no ingest runs: an edge then knows the symbols and finds
/// no value of any.
pub async fn create_refdata(nats_url: &str, symbols: &[&str]) -> anyhow::Result<()> {
    use async_nats::jetstream::kv::Config;
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let refs = js
        .create_key_value(Config {
            bucket: tickmesh_core::refdata::BUCKET.into(),
            ..Default::default()
        })
        .await?;
    for s in symbols {
        let value = serde_json::json!({"symbol": s, "kind": "equity"});
        refs.put(
            tickmesh_core::refdata::instrument_key(s),
            value.to_string().into(),
        )
        .await?;
    }
    refs.put(tickmesh_core::refdata::COMPLETE_KEY, "{}".into())
        .await?;
    js.create_key_value(Config {
        bucket: "md_last".into(),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// Starts an edge on a free port; returns it and its address at once, ready or not.
pub fn spawn_edge(config: EdgeConfig) -> anyhow::Result<(Service, SocketAddr)> {
    let listener = tickmesh_edge::bind(config.listen)?;
    let addr = listener.local_addr()?;
    let service = Service::spawn(|stop| tickmesh_edge::run(config, listener, stop));
    Ok((service, addr))
}

/// Starts an edge on a free port; returns it and its address once it is ready (it has
/// loaded the reference data that ingest writes: start ingest first).
pub async fn start_edge(config: EdgeConfig) -> anyhow::Result<(Service, SocketAddr)> {
    let tls = config.tls.is_some();
    let (service, addr) = spawn_edge(config)?;
    if tls {
        // Readiness is plain HTTP; over TLS the caller's own handshake waits for the edge.
        return Ok((service, addr));
    }
    // Ingest may take a while to create its buckets on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let said = http_get(addr, "/readyz").await;
        if said.as_ref().is_ok_and(|(status, _)| *status == 200) {
            return Ok((service, addr));
        }
        if Instant::now() > deadline {
            bail!("edge at {addr} not ready within 30 s: /readyz said {said:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTP/1.1 GET on loopback: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An HS256 token of `claims`, signed with `secret`.
pub fn hs256_token(secret: &str, claims: &Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token encodes")
}

/// An HTTP answer: its status, its headers (names in lower case) and its body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("not JSON ({}): {}", self.status, self.body))
    }
}

/// A minimal HTTP/1.1 GET on loopback with extra `headers` (e.g. `("authorization",
/// "Bearer ...")`), answered within 5 s.
pub async fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpAnswer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no end of the head")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// A protocol v1 client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub format: Format,
    /// The `welcome` message.
    pub welcome: Value,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Something the server said: a message, or a close.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Msg(Value),
    Closed(Option<u16>),
}

impl Client {
    pub async fn connect(addr: SocketAddr, format: Format) -> anyhow::Result<Self> {
        Self::connect_with(addr, format, None).await
    }

    /// Connects with a token in the `Authorization` header.
    pub async fn connect_with(
        addr: SocketAddr,
        format: Format,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let req = stream_request(&format!("ws://{addr}/v1/stream"), format, token)?;
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Self::start(ws, format).await
    }

    /// Takes over a WebSocket that is already open (e.g. over TLS) and reads `welcome`.
    pub async fn start(
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        format: Format,
    ) -> anyhow::Result<Self> {
        let mut client = Client {
            ws,
            format,
            welcome: Value::Null,
        };
        let welcome = client.next_msg(Duration::from_secs(5)).await?;
        anyhow::ensure!(welcome["type"] == "welcome", "first message was {welcome}");
        client.welcome = welcome;
        Ok(client)
    }

    /// Sends a JSON value in the session's encoding.
    pub async fn send(&mut self, v: Value) -> anyhow::Result<()> {
        let msg = match self.format {
            Format::Json => Message::Text(v.to_string().into()),
            Format::MsgPack => Message::Binary(rmp_serde::to_vec_named(&v)?.into()),
        };
        self.ws.send(msg).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, msg: Message) -> anyhow::Result<()> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// The next message or close, within `within`.
    pub async fn next_event(&mut self, within: Duration) -> anyhow::Result<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("no message in time")?;
            let v = match msg {
                None => return Ok(Event::Closed(None)),
                Some(Err(e)) => bail!("websocket error: {e}"),
                Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str())?,
                Some(Ok(Message::Binary(b))) => rmp_serde::from_slice(&b)?,
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Event::Closed(frame.map(|f: CloseFrame| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
            };
            return Ok(Event::Msg(v));
        }
    }

    /// The next message (a close is an error), within `within`.
    pub async fn next_msg(&mut self, within: Duration) -> anyhow::Result<Value> {
        match self.next_event(within).await? {
            Event::Msg(v) => Ok(v),
            Event::Closed(code) => bail!("closed with {code:?}"),
        }
    }

    /// The next message that is not a heartbeat.
    pub async fn next_non_hb(&mut self, within: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next_msg(left).await?;
            if v["type"] != "hb" {
                return Ok(v);
            }
        }
    }

    /// The next message of type `kind`, skipping every other.
    pub async fn next_of(&mut self, kind: &str, within: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next_msg(left).await?;
            if v["type"] == kind {
                return Ok(v);
            }
        }
    }

    /// The close code of a close that comes within `within`; every message before it is
    /// handed to `on_msg`. No close in time is an error, however busy the session is.
    pub async fn closed_within(
        &mut self,
        within: Duration,
        mut on_msg: impl FnMut(&Value),
    ) -> anyhow::Result<Option<u16>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await.context("no close in time")? {
                Event::Msg(v) => on_msg(&v),
                Event::Closed(code) => return Ok(code),
            }
        }
    }

    /// Every message received during `dur`, with its arrival time.
    pub async fn collect(&mut self, dur: Duration) -> anyhow::Result<Vec<(Instant, Value)>> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            match self.next_event(left).await {
                Ok(Event::Msg(v)) => out.push((Instant::now(), v)),
                Ok(Event::Closed(code)) => bail!("closed with {code:?} while collecting"),
                Err(_) => return Ok(out),
            }
        }
    }

    /// Sends a ping and waits for its pong, skipping anything else: proves the session
    /// still answers.
    pub async fn ping(&mut self, id: i64) -> anyhow::Result<()> {
        self.send(serde_json::json!({"op": "ping", "id": id}))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next_msg(left).await?;
            if v["type"] == "pong" {
                anyhow::ensure!(v["id"] == id, "pong with id {} for ping {id}", v["id"]);
                return Ok(());
            }
        }
    }
}

/// An upgrade request for `url` with the subprotocol of `format` and an optional bearer token.
pub fn stream_request(
    url: &str,
    format: Format,
    token: Option<&str>,
) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    let mut req = url.into_client_request()?;
    let proto = match format {
        Format::Json => SUBPROTOCOL_JSON,
        Format::MsgPack => SUBPROTOCOL_MSGPACK,
    };
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(proto));
    if let Some(token) = token {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
    }
    Ok(req)
}

/// Tries an upgrade and returns the HTTP status and body of a refusal, or 101.
pub async fn upgrade_status(url: &str, token: Option<&str>) -> (u16, String) {
    let req = match stream_request(url, Format::Json, token) {
        Ok(r) => r,
        Err(e) => return (0, e.to_string()),
    };
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (res.status().as_u16(), body)
        }
        Err(e) => (0, e.to_string()),
    }
}

/// The live ticks and snapshots of a message list, in order: (symbol, seq, is_snapshot, tick).
pub fn tick_events(msgs: &[(Instant, Value)]) -> Vec<(Instant, String, u64, bool, Value)> {
    let mut out = Vec::new();
    for (at, v) in msgs {
        match v["type"].as_str() {
            Some("snapshot") => out.push((
                *at,
                v["symbol"].as_str().unwrap_or_default().to_string(),
                v["seq"].as_u64().unwrap_or_default(),
                true,
                v.clone(),
            )),
            Some("ticks") => {
                for t in v["ticks"].as_array().into_iter().flatten() {
                    out.push((
                        *at,
                        t["symbol"].as_str().unwrap_or_default().to_string(),
                        t["seq"].as_u64().unwrap_or_default(),
                        false,
                        t.clone(),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// A WebSocket to `addr`'s `/v1/stream` over a socket with a 4 KiB receive buffer, so that
/// a client that stops reading pushes back on the edge within a second instead of
/// filling megabytes of kernel buffer first.
pub async fn small_buffer_client(
    addr: SocketAddr,
    format: Format,
    token: Option<&str>,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr).await?;
    let req = stream_request(&format!("ws://{addr}/v1/stream"), format, token)?;
    let (ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    Ok(ws)
}

/// Reads a JSON session to its end, within `within`: its last text message and its close
/// code (1005 for a close frame without one; None when it ended without a close frame).
pub async fn last_words(
    ws: &mut WebSocketStream<TcpStream>,
    within: Duration,
) -> anyhow::Result<(Option<Value>, Option<u16>)> {
    let (mut last, mut code) = (None, None);
    let reading = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => last = Some(t),
                Ok(Message::Close(frame)) => {
                    code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(within, reading)
        .await
        .context("the connection did not end")?;
    let last = last.map(|t| serde_json::from_str(t.as_str())).transpose()?;
    Ok((last, code))
}

/// The sum of a metric's series (every label set, or the one written out in `name`) in an
/// edge's `/metrics`; 0 when it has none, or when `/metrics` cannot be read.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let Ok((_, body)) = http_get(addr, "/metrics").await else {
        return 0.0;
    };
    metric_in(&body, name)
}

/// The sum of the series named `name` in one scrape of `/metrics`: figures that must agree
/// with each other (a histogram's count and its buckets) are read from the same scrape.
pub fn metric_in(body: &str, name: &str) -> f64 {
    body.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A WebSocket opened by hand on `addr`'s `/v1/stream` (anonymous, JSON), past its `101`
/// response head: the raw socket, for a test that writes frames of its own or none at all.
pub async fn raw_upgrade(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(Duration::from_secs(5), s.read_u8())
            .await
            .context("no upgrade response within 5 s")?
            .context("the edge closed during the upgrade")?;
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head);
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
    Ok(s)
}
