//! One account-channel connection: a token naming its account, one account subscribe
//! (from the snapshot, or from `from_seq`), then every event until the window ends. Each
//! event's latency is the receipt wall clock minus its `ts` (stamped by the writer just
//! before it appends: one clock, same host), and each seq must come once and in order:
//! a seq missing is a gap, one not above the last is a regression.
//!
//! On nats-server's WebSocket listener the same account is `SUB acct.<account>.>` (live
//! events only), or, for a replay, a JetStream push consumer filtered to it and created
//! through the JetStream API, as a browser with nats.ws would.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Deserialize;
use tickmesh_core::Format;
use tokio::time::Instant;

use crate::conn::{Progress, Protocol, Timeline, Workload, nats_ops, now_unix_us, open};
use crate::scan::NatsOp;
use crate::stats::Stats;
use crate::ws::{Event, WsClient};

/// The account half of the workload.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// Names are `<prefix><n>`, n from 0 to `count - 1`; connection i takes n = i % count.
    pub prefix: String,
    pub count: u64,
    /// Subscribe with `from_seq` (on nats-server: replay through a JetStream consumer).
    pub from_seq: Option<u64>,
    /// The connection is caught up when this seq arrives: the time from its subscribe is
    /// recorded (as its "full picture").
    pub caught_up_seq: Option<u64>,
    /// HS256 secret to sign each connection's token with (TickMesh).
    pub secret: Option<String>,
}

/// The name of account `n`: what the writer appends to and the subscribers follow.
pub fn name(prefix: &str, n: u64) -> String {
    format!("{prefix}{n}")
}

/// An HS256 token of user `sub` that names `account` in `acct`, valid for an hour.
pub fn token(secret: &str, sub: &str, account: &str) -> anyhow::Result<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let now = now_unix_us() / 1_000_000;
    let claims = serde_json::json!({
        "sub": sub, "iat": now - 1, "exp": now + 3600, "ent": ["*"], "acct": [account],
        "tier": "pro",
    });
    let key = EncodingKey::from_secret(secret.as_bytes());
    Ok(encode(&Header::new(Algorithm::HS256), &claims, &key)?)
}

/// What an account message (or a stored event, on NATS) says; the rest is skipped.
#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(rename = "type", default)]
    kind: &'a str,
    #[serde(default)]
    account: &'a str,
    seq: Option<u64>,
    ts: Option<u64>,
    code: Option<&'a str>,
}

/// One connection's account state.
struct Follow {
    account: String,
    /// The next seq due; None until the snapshot (or, on NATS live, the first event).
    next: Option<u64>,
    subscribed_at: Instant,
    caught_up: bool,
    updates_in_window: u64,
}

/// Runs account connection `i` to the end of the timeline.
pub async fn run(
    i: u64,
    w: &Workload,
    a: &Accounts,
    tl: Timeline,
    stats: &RefCell<Stats>,
    progress: Arc<Progress>,
) {
    let account = name(&a.prefix, i % a.count.max(1));
    let token = match (&a.secret, w.protocol) {
        (Some(secret), Protocol::TickMesh(_)) => {
            match token(secret, &format!("bench-{i}"), &account) {
                Ok(t) => Some(t),
                Err(e) => return stats.borrow_mut().counts.sample(format!("token: {e}")),
            }
        }
        _ => None,
    };
    let start = tl.t0 + tl.spacing * u32::try_from(i).unwrap_or(u32::MAX);
    let Some(mut ws) = open(i, w, start, None, token, stats, &progress).await else {
        return;
    };
    if let Err(e) = subscribe(&mut ws, w.protocol, &account, a.from_seq, i).await {
        return stats
            .borrow_mut()
            .counts
            .sample(format!("subscribe: {e:#}"));
    }
    let mut f = Follow {
        account,
        next: a.from_seq,
        subscribed_at: Instant::now(),
        caught_up: false,
        updates_in_window: 0,
    };
    let closed = read(&mut ws, w.protocol, a, &mut f, tl, stats, &progress).await;
    let mut s = stats.borrow_mut();
    s.counts.conn_updates(f.updates_in_window);
    if let Some(code) = closed {
        progress.closed.fetch_add(1, Ordering::Relaxed);
        *s.counts.closes.entry(code).or_default() += 1;
    }
    if a.caught_up_seq.is_some() && !f.caught_up {
        s.counts.full_picture_never += 1;
    }
}

async fn subscribe(
    ws: &mut WsClient,
    protocol: Protocol,
    account: &str,
    from_seq: Option<u64>,
    i: u64,
) -> anyhow::Result<()> {
    if let Protocol::TickMesh(_) = protocol {
        let mut req = serde_json::json!({"op": "subscribe", "id": 1, "account": account});
        if let Some(n) = from_seq {
            req["from_seq"] = n.into();
        }
        return ws.send_text(&req.to_string()).await;
    }
    let mut out = String::from(
        "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":true,\"no_responders\":true,\"name\":\"tickmesh-loadgen\"}\r\n",
    );
    let filter = format!("acct.{account}.>");
    match from_seq {
        None => out.push_str(&format!("SUB {filter} 1\r\n")),
        Some(_) => {
            // Every event of the account from the stream's start (the bench's `from_seq`
            // is 1): a push consumer without acks, delivering to this connection's inbox.
            let (deliver, reply) = (format!("_INBOX.lg{i}.d"), format!("_INBOX.lg{i}.r"));
            let req = serde_json::json!({
                "stream_name": tickmesh_core::account::STREAM,
                "config": {
                    "deliver_subject": deliver, "filter_subject": filter,
                    "deliver_policy": "all", "ack_policy": "none", "mem_storage": true,
                    "num_replicas": 1, "inactive_threshold": 60_000_000_000u64,
                },
            })
            .to_string();
            let api = format!("$JS.API.CONSUMER.CREATE.{}", tickmesh_core::account::STREAM);
            out.push_str(&format!("SUB {deliver} 1\r\nSUB {reply} 2\r\n"));
            out.push_str(&format!("PUB {api} {reply} {}\r\n{req}\r\n", req.len()));
        }
    }
    out.push_str("PING\r\n");
    ws.send(2, out.as_bytes()).await
}

/// Reads until the window ends; the close code (or "none"/"reset") if the server ended it.
async fn read(
    ws: &mut WsClient,
    protocol: Protocol,
    a: &Accounts,
    f: &mut Follow,
    tl: Timeline,
    stats: &RefCell<Stats>,
    progress: &Progress,
) -> Option<String> {
    let deadline = tokio::time::sleep_until(tl.window_end);
    tokio::pin!(deadline);
    let mut nats_buf = Vec::new();
    loop {
        let ev = tokio::select! {
            biased;
            _ = &mut deadline => return None,
            ev = ws.next() => ev,
        };
        let payload = match ev {
            Ok(Event::Closed(code)) => return Some(code.map_or("none".into(), |c| c.to_string())),
            Ok(Event::Text(p) | Event::Binary(p)) => p,
            Err(e) if e.downcast_ref::<std::io::Error>().is_some() => return Some("reset".into()),
            Err(e) => {
                stats.borrow_mut().counts.sample(format!("read: {e:#}"));
                return Some("none".into());
            }
        };
        let pong = {
            let mut s = stats.borrow_mut();
            let before = s.counts.updates_total;
            let pong = on_frame(payload, protocol, &mut nats_buf, a, f, &mut s, tl);
            progress
                .updates
                .fetch_add(s.counts.updates_total - before, Ordering::Relaxed);
            pong
        };
        if pong? && ws.send(2, b"PONG\r\n").await.is_err() {
            return Some("reset".into());
        }
    }
}

/// One frame: counted and handled; whether the server pinged, None if the connection
/// cannot be measured.
fn on_frame(
    payload: &[u8],
    protocol: Protocol,
    nats_buf: &mut Vec<u8>,
    a: &Accounts,
    f: &mut Follow,
    s: &mut Stats,
    tl: Timeline,
) -> Option<bool> {
    let now = Instant::now();
    s.counts.frames += 1;
    s.counts.bytes += payload.len() as u64;
    match protocol {
        Protocol::TickMesh(Format::Json) => {
            on_message(payload, a, f, s, now, tl);
            Some(false)
        }
        Protocol::TickMesh(Format::MsgPack) => {
            s.counts
                .sample("account channels are measured in JSON only");
            None
        }
        Protocol::Nats => {
            nats_buf.extend_from_slice(payload);
            Some(on_nats(nats_buf, a, f, s, now, tl))
        }
    }
}

/// Handles every complete NATS operation in `buf`; true if the server pinged.
fn on_nats(
    buf: &mut Vec<u8>,
    a: &Accounts,
    f: &mut Follow,
    s: &mut Stats,
    now: Instant,
    tl: Timeline,
) -> bool {
    nats_ops(buf, s, |op, s| match op {
        // The consumer's creation: an error is the only thing to note.
        NatsOp::Msg { sid: b"2", payload } => {
            if memchr::memmem::find(payload, b"\"error\"").is_some() {
                s.counts
                    .sample(String::from_utf8_lossy(payload).into_owned());
            }
        }
        // Flow control and heartbeats have no payload.
        NatsOp::Msg { payload: [], .. } => {}
        NatsOp::Msg { payload, .. } => on_message(payload, a, f, s, now, tl),
        NatsOp::Err(line) => s.counts.sample(String::from_utf8_lossy(line).into_owned()),
        NatsOp::Ping | NatsOp::Other => {}
    })
}

/// One message: a TickMesh `subscribed`, `account_snapshot`, `account` or `error`, or an
/// event as stored (NATS: no `type`).
fn on_message(
    payload: &[u8],
    a: &Accounts,
    f: &mut Follow,
    s: &mut Stats,
    now: Instant,
    tl: Timeline,
) {
    let msg: Msg = match serde_json::from_slice(payload) {
        Ok(m) => m,
        Err(e) => return s.counts.sample(format!("unreadable message: {e}")),
    };
    match msg.kind {
        "account_snapshot" => {
            s.counts.snapshots += 1;
            f.next = msg.seq.map(|n| n + 1);
        }
        "account" | "" => on_event(&msg, a, f, s, now, tl),
        "error" => {
            let code = msg.code.unwrap_or("?").to_string();
            *s.counts.errors_by_code.entry(code).or_default() += 1;
        }
        _ => {}
    }
}

fn on_event(msg: &Msg, a: &Accounts, f: &mut Follow, s: &mut Stats, now: Instant, tl: Timeline) {
    let (Some(seq), Some(ts)) = (msg.seq, msg.ts) else {
        return s.counts.sample("an account event without seq or ts");
    };
    if msg.account != f.account {
        return s.counts.sample(format!(
            "an event of {} on {}'s subscription",
            msg.account, f.account
        ));
    }
    // On nats-server's live subject the first event sets the start.
    let next = f.next.unwrap_or(seq);
    if seq < next {
        s.counts.seq_regressions += 1;
        note(s, format!("{}: seq {seq} after {}", f.account, next - 1));
        return;
    }
    if seq > next {
        s.counts.seq_gaps += 1;
        s.counts.seq_missing += seq - next;
        note(s, format!("{}: seq {seq} when {next} was due", f.account));
    }
    f.next = Some(seq + 1);
    s.counts.updates_total += 1;
    if now >= tl.window_start && now < tl.window_end {
        s.counts.updates += 1;
        f.updates_in_window += 1;
        s.latency
            .saturating_record(now_unix_us().saturating_sub(ts).max(1));
    }
    if a.caught_up_seq == Some(seq) && !f.caught_up {
        f.caught_up = true;
        s.counts.full_picture_in_time += 1;
        let took = now.saturating_duration_since(f.subscribed_at);
        s.full_picture
            .saturating_record((took.as_micros() as u64).max(1));
    }
}

/// Keeps `text` among the run's first samples without counting it as a protocol error
/// (gaps and regressions have counts of their own).
fn note(s: &mut Stats, text: String) {
    if s.counts.samples.len() < 10 {
        s.counts.samples.push(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> String {
        format!(
            r#"{{"type":"account","account":"B0","seq":{seq},"ts":1,"kind":"balance","data":{{"currency":"USD","cash":1.0,"realized_pnl":0.0}}}}"#
        )
    }

    #[test]
    fn each_seq_must_come_once_and_in_order_after_the_snapshot() {
        let now = Instant::now();
        let tl = Timeline {
            t0: now,
            spacing: std::time::Duration::ZERO,
            window_start: now,
            window_end: now + std::time::Duration::from_secs(3600),
            resume_end: now + std::time::Duration::from_secs(3600),
        };
        let a = Accounts {
            prefix: "B".into(),
            count: 1,
            from_seq: None,
            caught_up_seq: Some(6),
            secret: None,
        };
        let mut f = Follow {
            account: name("B", 0),
            next: None,
            subscribed_at: now,
            caught_up: false,
            updates_in_window: 0,
        };
        let mut s = Stats::default();
        let snapshot = br#"{"type":"account_snapshot","account":"B0","seq":1,"positions":[],"balances":[],"open_orders":[]}"#;
        on_message(snapshot, &a, &mut f, &mut s, now, tl);
        // 3 twice, 5 before 4 (4 missing), then 4 late; 6 is the last.
        for seq in [2, 3, 3, 5, 4, 6] {
            on_message(event(seq).as_bytes(), &a, &mut f, &mut s, now, tl);
        }
        let c = &s.counts;
        assert_eq!((c.snapshots, c.updates_total), (1, 4));
        assert_eq!((c.seq_gaps, c.seq_missing, c.seq_regressions), (1, 1, 2));
        assert_eq!(c.full_picture_in_time, 1, "seq 6 is the caught-up one");
        assert_eq!(c.protocol_errors, 0);
        // An event of another account is an error, not an update.
        on_message(
            event(7).replace("B0", "B1").as_bytes(),
            &a,
            &mut f,
            &mut s,
            now,
            tl,
        );
        assert_eq!((s.counts.updates_total, s.counts.protocol_errors), (4, 1));
    }
}
