//! One load-generating connection: connect, subscribe, read until the window ends, and
//! count what arrives. TickMesh (protocol v1, JSON or MessagePack) or nats-server's own
//! WebSocket listener (the NATS text protocol, MessagePack tick payloads).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tickmesh_core::subject::tick_subject;
use tickmesh_core::{Format, Mode, Symbol};
use tokio::time::Instant;

use crate::scan::{self, Msg, NatsOp, TickRef};
use crate::stats::Stats;
use crate::ws::{Dial, Event, WsClient};

/// Which server the connections speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    TickMesh(Format),
    Nats,
}

/// The workload every connection of this process shares.
#[derive(Debug)]
pub struct Workload {
    pub protocol: Protocol,
    pub server: SocketAddr,
    pub path: String,
    pub sources: Vec<IpAddr>,
    pub symbols: Vec<String>,
    pub index: HashMap<Vec<u8>, u32>,
    pub per_conn: usize,
    pub mode: Mode,
    pub interval_ms: u32,
    pub shards: u32,
    /// Every `slow_every`-th connection stops reading during the window.
    pub slow_every: Option<u64>,
    pub slow_rcvbuf: Option<u32>,
    pub slow_per_conn: usize,
    /// Leave the slow connections out (the baseline run).
    pub slow_skip: bool,
    pub full_picture_deadline: Duration,
    /// Reading connections send their subscription again this often (a client that
    /// re-sends its subscribe at its rate limit); None: once.
    pub resubscribe_every: Option<Duration>,
    /// Subscribe to the symbols' prints (`stream: "trades"`, `tr.*` on NATS) instead of
    /// their ticks.
    pub trades: bool,
    /// Follow one account each instead of symbols.
    pub accounts: Option<crate::account::Accounts>,
    /// Offer permessage-deflate.
    pub deflate: bool,
}

/// When things happen, the same for every process of a run.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub t0: Instant,
    /// Connections start this far apart (zero: all at once).
    pub spacing: Duration,
    pub window_start: Instant,
    pub window_end: Instant,
    /// Slow clients read again until then, to see what the server did with them.
    pub resume_end: Instant,
}

/// Shared with the progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub connected: AtomicU64,
    pub updates: AtomicU64,
    pub closed: AtomicU64,
    pub failed: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct SymState {
    epoch: u64,
    seq: u64,
    /// Ticks `gap` messages said never reached the gateway since the last update, and
    /// the highest seq they named.
    told: u64,
    told_to: u64,
    seen: bool,
    last_was_live: bool,
    last_live: Option<Instant>,
}

struct Conn {
    /// Indices into the universe of the symbols this connection subscribed to.
    mine: Vec<bool>,
    /// Times the subscription was sent.
    rounds: u32,
    state: Vec<SymState>,
    seen: usize,
    started: Instant,
    slow_consumer: bool,
    updates_in_window: u64,
    full_picture_done: bool,
}

/// What the read loop learned when it stopped.
enum Ended {
    /// The deadline passed.
    Deadline,
    Closed(Option<u16>),
}

pub fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The symbols connection `i` subscribes to: `per_conn` consecutive ones, starting at a
/// different place for each connection so that every symbol gets a fair share.
pub fn symbols_of(i: u64, per_conn: usize, universe: usize) -> impl Iterator<Item = usize> {
    let start = (i as usize).wrapping_mul(per_conn.max(1)) % universe.max(1);
    (0..per_conn.min(universe)).map(move |j| (start + j) % universe)
}

/// Runs connection `i` to the end of the timeline.
pub async fn run(
    i: u64,
    w: Rc<Workload>,
    tl: Timeline,
    stats: Rc<RefCell<Stats>>,
    progress: Arc<Progress>,
) {
    let slow = w.slow_every.is_some_and(|n| n > 0 && i % n == n - 1);
    if slow && w.slow_skip {
        return;
    }
    let start = tl.t0 + tl.spacing * u32::try_from(i).unwrap_or(u32::MAX);
    let rcvbuf = if slow { w.slow_rcvbuf } else { None };
    let Some(mut ws) = open(i, &w, start, rcvbuf, None, &stats, &progress).await else {
        return;
    };

    let universe = w.symbols.len();
    let per_conn = if slow { w.slow_per_conn } else { w.per_conn };
    let mine: Vec<usize> = symbols_of(i, per_conn, universe).collect();
    let mut conn = Conn {
        mine: {
            let mut v = vec![false; if mine.is_empty() { 0 } else { universe }];
            for &s in &mine {
                v[s] = true;
            }
            v
        },
        state: vec![SymState::default(); if mine.is_empty() { 0 } else { universe }],
        rounds: 1,
        seen: 0,
        started: start,
        slow_consumer: false,
        updates_in_window: 0,
        full_picture_done: mine.is_empty(),
    };
    if let Err(e) = subscribe(&mut ws, &w, &mine, 0).await {
        return failed(&stats, &progress, format!("subscribe: {e:#}"));
    }

    let mut nats_buf = Vec::new();
    let ended = if slow {
        // A slow client never reads after subscribing: everything the server sends it
        // piles up until the server conflates it or cuts it. After the window it reads
        // again to see which.
        stats.borrow_mut().counts.slow.clients += 1;
        tokio::time::sleep_until(tl.window_end).await;
        let ended = read(
            &mut ws,
            &w,
            &mut conn,
            &stats,
            &progress,
            &mut nats_buf,
            tl.resume_end,
            tl,
        )
        .await;
        let mut s = stats.borrow_mut();
        let o = &mut s.counts.slow;
        match ended {
            Ended::Closed(Some(4008)) => o.closed_4008 += 1,
            Ended::Closed(_) => o.dropped_without_close += 1,
            _ if conn.slow_consumer => {}
            _ => o.untouched += 1,
        }
        if conn.slow_consumer {
            o.told_slow_consumer += 1;
        }
        ended
    } else {
        let ended = read(
            &mut ws,
            &w,
            &mut conn,
            &stats,
            &progress,
            &mut nats_buf,
            tl.window_end,
            tl,
        )
        .await;
        stats
            .borrow_mut()
            .counts
            .conn_updates(conn.updates_in_window);
        ended
    };
    if let Ended::Closed(code) = ended {
        progress.closed.fetch_add(1, Ordering::Relaxed);
        let key = code.map_or_else(|| "none".to_string(), |c| c.to_string());
        *stats.borrow_mut().counts.closes.entry(key).or_default() += 1;
    }
    if !conn.full_picture_done {
        stats.borrow_mut().counts.full_picture_never += 1;
    }
}

/// Opens connection `i` at `start` (counted as connected, or as failed): None if it
/// could not be opened.
pub async fn open(
    i: u64,
    w: &Workload,
    start: Instant,
    rcvbuf: Option<u32>,
    token: Option<String>,
    stats: &RefCell<Stats>,
    progress: &Progress,
) -> Option<WsClient> {
    tokio::time::sleep_until(start).await;
    let dial = Dial {
        server: w.server,
        source: (!w.sources.is_empty()).then(|| w.sources[i as usize % w.sources.len()]),
        path: w.path.clone(),
        subprotocol: match w.protocol {
            Protocol::TickMesh(Format::Json) => Some(tickmesh_core::protocol::SUBPROTOCOL_JSON),
            Protocol::TickMesh(Format::MsgPack) => {
                Some(tickmesh_core::protocol::SUBPROTOCOL_MSGPACK)
            }
            Protocol::Nats => None,
        },
        rcvbuf,
        token,
        deflate: w.deflate,
    };
    let connect = tokio::time::timeout(Duration::from_secs(30), WsClient::connect(&dial, i as u32));
    let ws = match connect.await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            failed(stats, progress, format!("connect: {e:#}"));
            return None;
        }
        Err(_) => {
            failed(stats, progress, "connect: timed out after 30 s".into());
            return None;
        }
    };
    progress.connected.fetch_add(1, Ordering::Relaxed);
    let mut s = stats.borrow_mut();
    s.counts.connected += 1;
    s.counts.deflate_connections += u64::from(ws.deflate());
    let took = Instant::now().saturating_duration_since(start);
    s.connect
        .saturating_record((took.as_micros() as u64).max(1));
    Some(ws)
}

fn failed(stats: &RefCell<Stats>, progress: &Progress, why: String) {
    progress.failed.fetch_add(1, Ordering::Relaxed);
    let mut s = stats.borrow_mut();
    s.counts.connect_failures += 1;
    if s.counts.samples.len() < 10 {
        s.counts.samples.push(why);
    }
}

/// Sends the subscription to `mine`, for the `round`-th time (0: the first). NATS has no
/// subscribe-again: a later round unsubscribes the round before's sids and subscribes anew.
async fn subscribe(
    ws: &mut WsClient,
    w: &Workload,
    mine: &[usize],
    round: u32,
) -> anyhow::Result<()> {
    if mine.is_empty() {
        return Ok(());
    }
    match w.protocol {
        Protocol::TickMesh(_) => {
            let symbols: Vec<&str> = mine.iter().map(|&s| w.symbols[s].as_str()).collect();
            let req = match w.trades {
                true => serde_json::json!({
                    "op": "subscribe",
                    "id": round + 1,
                    "symbols": symbols,
                    "stream": "trades",
                    "history": 0,
                }),
                false => serde_json::json!({
                    "op": "subscribe",
                    "id": round + 1,
                    "symbols": symbols,
                    "mode": w.mode.as_str(),
                    "interval_ms": w.interval_ms,
                }),
            };
            ws.send_text(&req.to_string()).await
        }
        Protocol::Nats => {
            let mut out = String::new();
            if round == 0 {
                out.push_str(
                    "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"tickmesh-loadgen\"}\r\n",
                );
            }
            let n = mine.len();
            let base = round as usize * n;
            for (k, &s) in mine.iter().enumerate() {
                if round > 0 {
                    out.push_str(&format!("UNSUB {}\r\n", base - n + k + 1));
                }
                let symbol = Symbol::parse(&w.symbols[s])?;
                let subject = match w.trades {
                    true => tickmesh_core::trade::trade_subject(&symbol, w.shards),
                    false => tick_subject(&symbol, w.shards),
                };
                out.push_str(&format!("SUB {subject} {}\r\n", base + k + 1));
            }
            out.push_str("PING\r\n");
            ws.send(2, out.as_bytes()).await
        }
    }
}

#[allow(clippy::too_many_arguments)] // one call site per phase; a struct would only rename them
async fn read(
    ws: &mut WsClient,
    w: &Workload,
    conn: &mut Conn,
    stats: &RefCell<Stats>,
    progress: &Progress,
    nats_buf: &mut Vec<u8>,
    until: Instant,
    tl: Timeline,
) -> Ended {
    let deadline = tokio::time::sleep_until(until);
    tokio::pin!(deadline);
    let mine: Vec<usize> = (0..conn.mine.len()).filter(|&i| conn.mine[i]).collect();
    let every = w.resubscribe_every.unwrap_or(Duration::from_secs(86_400));
    let mut again = tokio::time::interval_at(Instant::now() + every, every);
    again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // What the last message cost on the wire (its borrow of `ws` has ended).
        stats.borrow_mut().counts.wire_bytes += ws.take_wire_bytes();
        let pong = tokio::select! {
            biased;
            _ = &mut deadline => return Ended::Deadline,
            _ = again.tick(), if w.resubscribe_every.is_some() && !mine.is_empty() => {
                if subscribe(ws, w, &mine, conn.rounds).await.is_err() {
                    return Ended::Closed(None);
                }
                conn.rounds += 1;
                stats.borrow_mut().counts.resubscribes += 1;
                false
            }
            ev = ws.next() => {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        // A reset or a broken frame: the connection is over either way.
                        let mut s = stats.borrow_mut();
                        if e.downcast_ref::<std::io::Error>().is_some() {
                            *s.counts.closes.entry("reset".into()).or_default() += 1;
                        } else {
                            s.counts.sample(format!("read: {e:#}"));
                        }
                        return Ended::Closed(None);
                    }
                };
                let payload = match ev {
                    Event::Closed(code) => return Ended::Closed(code),
                    Event::Text(p) | Event::Binary(p) => p,
                };

                let now = Instant::now();
                let mut s = stats.borrow_mut();
                s.counts.frames += 1;
                s.counts.bytes += payload.len() as u64;
                let before = s.counts.updates_total;
                let pong = match w.protocol {
                    Protocol::TickMesh(format) => {
                        on_tickmesh(format, payload, w, conn, &mut s, now, tl);
                        false
                    }
                    Protocol::Nats => {
                        nats_buf.extend_from_slice(payload);
                        on_nats(nats_buf, w, conn, &mut s, now, tl)
                    }
                };
                progress
                    .updates
                    .fetch_add(s.counts.updates_total - before, Ordering::Relaxed);
                pong
            }
        };
        if pong && ws.send(2, b"PONG\r\n").await.is_err() {
            return Ended::Closed(None);
        }
    }
}

fn on_tickmesh(
    format: Format,
    payload: &[u8],
    w: &Workload,
    conn: &mut Conn,
    s: &mut Stats,
    now: Instant,
    tl: Timeline,
) {
    let wall = now_unix_us();
    if w.trades {
        let on = |t: TickRef| on_print(t, w, conn, s, now, wall, tl);
        match scan::trades_message(format, payload, on) {
            Some(Ok(_)) | None => {}
            Some(Err(e)) => s.counts.sample(format!("unreadable message: {e}")),
        }
        return;
    }
    let mut on = |t: TickRef, snapshot: bool| on_tick(t, snapshot, w, conn, s, now, wall, tl);
    let parsed = match format {
        Format::Json => scan::json_message(payload, &mut on),
        Format::MsgPack => scan::mp_message(payload, &mut on),
    };
    match parsed {
        Ok(Msg::Ticks) => {}
        Ok(Msg::Snapshot) => s.counts.snapshots += 1,
        Ok(Msg::Gap(g)) => match w.index.get(g.symbol) {
            Some(&idx) if g.to_seq >= g.from_seq => {
                let st = &mut conn.state[idx as usize];
                let n = g.to_seq - g.from_seq + 1;
                st.told += n;
                st.told_to = st.told_to.max(g.to_seq);
                s.counts.lost_told += n;
            }
            _ => s
                .counts
                .sample("gap of an unknown symbol, or with an empty range"),
        },
        Ok(Msg::Error(code)) => {
            let code = String::from_utf8_lossy(code).into_owned();
            if code == "slow_consumer" {
                conn.slow_consumer = true;
            }
            *s.counts.errors_by_code.entry(code).or_default() += 1;
        }
        Ok(Msg::Other(_)) => {}
        Err(e) => s.counts.sample(format!("unreadable message: {e}")),
    }
}

/// Handles every complete NATS operation in `buf`; returns true if the server pinged.
fn on_nats(
    buf: &mut Vec<u8>,
    w: &Workload,
    conn: &mut Conn,
    s: &mut Stats,
    now: Instant,
    tl: Timeline,
) -> bool {
    let wall = now_unix_us();
    nats_ops(buf, s, |op, s| match op {
        NatsOp::Msg { payload, .. } => match scan::mp_tick(&mut scan::Mp::new(payload)) {
            Some((t, _)) if w.trades => on_print(t, w, conn, s, now, wall, tl),
            Some((t, _)) => on_tick(t, false, w, conn, s, now, wall, tl),
            None => s.counts.sample("unreadable NATS payload"),
        },
        NatsOp::Err(line) => {
            let text = String::from_utf8_lossy(line).into_owned();
            *s.counts.errors_by_code.entry(text.clone()).or_default() += 1;
            s.counts.sample(text);
        }
        NatsOp::Ping | NatsOp::Other => {}
    })
}

/// Hands every complete NATS operation in `buf` but PING to `on`, and takes them out of
/// `buf`; true if the server pinged (the caller answers PONG).
pub fn nats_ops(
    buf: &mut Vec<u8>,
    s: &mut Stats,
    mut on: impl FnMut(NatsOp<'_>, &mut Stats),
) -> bool {
    let mut pos = 0;
    let mut ping = false;
    loop {
        match scan::nats_op(&buf[pos..]) {
            Ok(Some((NatsOp::Ping, n))) => {
                ping = true;
                pos += n;
            }
            Ok(Some((op, n))) => {
                on(op, s);
                pos += n;
            }
            Ok(None) => break,
            Err(e) => {
                s.counts.sample(e);
                pos = buf.len();
                break;
            }
        }
    }
    buf.drain(..pos);
    ping
}

/// One print: counted, its latency taken from its `ts`, and its seq checked to rise
/// (a print twice, or out of order, is a regression; prints skip seqs, so no gap can be
/// told from them).
fn on_print(
    t: TickRef,
    w: &Workload,
    conn: &mut Conn,
    s: &mut Stats,
    now: Instant,
    wall_us: u64,
    tl: Timeline,
) {
    let Some(&idx) = w.index.get(t.symbol) else {
        s.counts.sample("print of an unknown symbol");
        return;
    };
    let st = &mut conn.state[idx as usize];
    if st.seen && t.seq <= st.seq {
        s.counts.seq_regressions += 1;
        s.counts
            .sample(format!("print seq {} after {}", t.seq, st.seq));
    }
    if !st.seen {
        st.seen = true;
        conn.seen += 1;
    }
    st.seq = st.seq.max(t.seq);
    s.counts.updates_total += 1;
    if now >= tl.window_start && now < tl.window_end {
        s.counts.updates += 1;
        conn.updates_in_window += 1;
        s.latency
            .saturating_record(wall_us.saturating_sub(t.ts).max(1));
    }
}

#[allow(clippy::too_many_arguments)] // the hot path: plain arguments, no struct to build
fn on_tick(
    t: TickRef,
    snapshot: bool,
    w: &Workload,
    conn: &mut Conn,
    s: &mut Stats,
    now: Instant,
    wall_us: u64,
    tl: Timeline,
) {
    let Some(&idx) = w.index.get(t.symbol) else {
        s.counts.sample(format!(
            "tick of unknown symbol {}",
            String::from_utf8_lossy(t.symbol)
        ));
        return;
    };
    let idx = idx as usize;
    if !conn.mine.get(idx).copied().unwrap_or(false) {
        s.counts.sample(format!(
            "tick of a symbol not subscribed: {}",
            String::from_utf8_lossy(t.symbol)
        ));
        return;
    }
    let in_window = now >= tl.window_start && now < tl.window_end;
    let st = &mut conn.state[idx];
    if st.seen {
        if t.epoch < st.epoch || (t.epoch == st.epoch && t.seq <= st.seq) {
            s.counts.seq_regressions += 1;
            s.counts.sample(format!(
                "{}: seq {} after {}",
                String::from_utf8_lossy(t.symbol),
                t.seq,
                st.seq
            ));
        } else if t.epoch == st.epoch && !snapshot {
            let skipped = t.seq - st.seq - 1;
            let told = st.told.min(skipped);
            if matches!(w.protocol, Protocol::TickMesh(_)) {
                // What the update stands for starts right after what the connection had,
                // or after the last gap it was told of.
                let from = t.from_seq.unwrap_or(t.seq);
                if from != st.seq.max(st.told_to) + 1 {
                    s.counts.continuity_errors += 1;
                    s.counts.sample(format!(
                        "{}: update seq {} from_seq {} after seq {} (gaps told up to {})",
                        String::from_utf8_lossy(t.symbol),
                        t.seq,
                        from,
                        st.seq,
                        st.told_to
                    ));
                }
                s.counts.conflated += skipped - told;
            }
            if skipped > told && st.last_was_live && w.interval_ms == 0 && !conn.slow_consumer {
                s.counts.seq_gaps += 1;
                s.counts.seq_missing += skipped - told;
            }
        }
    } else {
        st.seen = true;
        conn.seen += 1;
        if conn.seen == conn.mine.iter().filter(|&&m| m).count() && !conn.full_picture_done {
            conn.full_picture_done = true;
            let took = now.saturating_duration_since(conn.started);
            s.full_picture
                .saturating_record((took.as_micros() as u64).max(1));
            if took <= w.full_picture_deadline {
                s.counts.full_picture_in_time += 1;
            }
        }
    }
    st.epoch = t.epoch;
    st.seq = st.seq.max(t.seq);
    st.told = 0;
    st.told_to = 0;
    st.last_was_live = !snapshot;
    if snapshot {
        return;
    }
    s.counts.updates_total += 1;
    if in_window {
        s.counts.updates += 1;
        conn.updates_in_window += 1;
        s.latency
            .saturating_record(wall_us.saturating_sub(t.ts).max(1));
        if w.interval_ms > 0
            && !matches!(w.protocol, Protocol::Nats)
            && let Some(prev) = st.last_live
            && now.saturating_duration_since(prev)
                < Duration::from_millis(u64::from(w.interval_ms)) * 9 / 10
        {
            s.counts.interval_violations += 1;
        }
    }
    st.last_live = Some(now);
}
