//! A roaming client: reconnects with jittered backoff to the next edge and resubscribes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

/// A client that roams: when its connection breaks it reconnects with jittered
/// exponential backoff, trying the next edge first, re-sends its subscription, and (as
/// every client must across reconnects) drops any tick whose seq is not above the last
/// one it accepted for that symbol.
#[derive(Debug)]
pub struct Roamer {
    edges: Vec<SocketAddr>,
    at: usize,
    client: Option<crate::Client>,
    subscribe: Value,
    /// Last accepted seq per symbol.
    pub last_seq: std::collections::HashMap<String, u64>,
    /// Accepted ticks and snapshots: (arrival, symbol, seq, is_snapshot, ts).
    pub accepted: Vec<(Instant, String, u64, bool, u64)>,
    /// Ticks dropped because their seq was not above the last accepted one.
    pub dropped_old: u64,
    /// `welcome.edge` of each connection, in order.
    pub edges_seen: Vec<String>,
    /// Subscribe replies (`subscribed`) received, across connections.
    pub subscribed: Vec<Value>,
}

/// Most reconnect attempts in one outage.
const ROAM_ATTEMPTS: u32 = 12;

impl Roamer {
    /// Connects to `edges[0]` and sends `subscribe` (a `subscribe` request).
    pub async fn connect(edges: Vec<SocketAddr>, subscribe: Value) -> anyhow::Result<Roamer> {
        let mut r = Roamer {
            edges,
            at: 0,
            client: None,
            subscribe,
            last_seq: Default::default(),
            accepted: Vec::new(),
            dropped_old: 0,
            edges_seen: Vec::new(),
            subscribed: Vec::new(),
        };
        r.open(0).await?;
        Ok(r)
    }

    async fn open(&mut self, at: usize) -> anyhow::Result<()> {
        let mut c = crate::Client::connect(self.edges[at], tickmesh_core::Format::Json).await?;
        c.send(self.subscribe.clone()).await?;
        self.edges_seen
            .push(c.welcome["edge"].as_str().unwrap_or_default().to_string());
        self.at = at;
        self.client = Some(c);
        Ok(())
    }

    /// Jittered exponential backoff over the edges, next edge first.
    async fn reconnect(&mut self) -> anyhow::Result<()> {
        use rand::Rng;
        let mut last_err = None;
        for attempt in 0..ROAM_ATTEMPTS {
            let base = 100u64.saturating_mul(1 << attempt.min(4)).min(2000);
            let wait = rand::rng().random_range(base / 2..=base);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let at = (self.at + 1 + attempt as usize) % self.edges.len();
            match self.open(at).await {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no edge to try")))
            .context("reconnecting: every attempt failed")
    }

    /// Reads for `dur`, reconnecting whenever the connection breaks.
    pub async fn run_for(&mut self, dur: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let Some(client) = self.client.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match client.next_event(left).await {
                Ok(crate::Event::Msg(v)) => self.on_message(v),
                Ok(crate::Event::Closed(_)) => self.client = None,
                Err(_) if Instant::now() >= deadline => return Ok(()),
                Err(_) => self.client = None,
            }
        }
    }

    fn on_message(&mut self, v: Value) {
        let mut offer = |t: &Value, snapshot: bool| {
            let symbol = t["symbol"].as_str().unwrap_or_default().to_string();
            let seq = t["seq"].as_u64().unwrap_or_default();
            let ts = t["ts"].as_u64().unwrap_or_default();
            if self.last_seq.get(&symbol).is_some_and(|&last| seq <= last) {
                self.dropped_old += 1;
                return;
            }
            self.last_seq.insert(symbol.clone(), seq);
            self.accepted
                .push((Instant::now(), symbol, seq, snapshot, ts));
        };
        match v["type"].as_str() {
            Some("snapshot") => offer(&v, true),
            Some("ticks") => {
                for t in v["ticks"].as_array().into_iter().flatten() {
                    offer(t, false);
                }
            }
            Some("subscribed") => self.subscribed.push(v),
            _ => {}
        }
    }

    /// Whether the roamer is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }
}
