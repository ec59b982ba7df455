//! `GET /v1/sse`: a session over Server-Sent Events, for clients behind a proxy that
//! strips WebSocket upgrades.
//!
//! The query is read once as the `subscribe` it stands for ([`subscribe_of`]), if any; the
//! session is the WebSocket's ([`crate::session`]), run over an [`SseTransport`]: each
//! message goes out as one event (`event:` its `type`, `data:` its JSON), a keep-alive
//! ping as a comment, and a close as a last `close` event before the response ends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::{Map, Value};
use tickmesh_core::Format;
use tickmesh_core::protocol;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::task::TaskTracker;
use warp::Reply as _;
use warp::reply::Response;

use crate::server::admit_session;
use crate::session;
use crate::session::transport::{Gone, Transport};
use crate::state::Edge;

/// Writes a session may have queued for the response body before its next write waits:
/// a client that stops reading fills its socket, then this queue, and then the session's
/// write times out (`session.write_timeout_ms`) and it is cut with 4008, as a WebSocket
/// session is. Each write is one flush's events, so the queue holds at most this many
/// flushes.
pub const QUEUED_WRITES: usize = 4;

/// The `subscribe` request that a `GET /v1/sse` query stands for, as JSON: `symbols` and
/// `chains` (comma-separated; several parameters add up), `mode`, `interval_ms`, `stream`,
/// `tf` and `history` as the op's fields of the same names, `id` 1; `None` without
/// `symbols` or `chains` (the stream then carries `welcome` and heartbeats: a client
/// opens another one when it has something to ask). `token` and unknown parameters are
/// ignored; a parameter other than `symbols` and `chains` given twice, or a number that is
/// not one, is refused with the reason.
pub fn subscribe_of(query: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    let mut symbols: Vec<Value> = Vec::new();
    let mut chains: Vec<Value> = Vec::new();
    let mut fields = Map::new();
    fields.insert("op".into(), "subscribe".into());
    fields.insert("id".into(), 1.into());
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let list = match &*key {
            "symbols" => &mut symbols,
            "chains" => &mut chains,
            "mode" | "stream" | "tf" | "interval_ms" | "history" => {
                let v = match &*key {
                    "interval_ms" | "history" => match value.parse::<u64>() {
                        Ok(n) => Value::from(n),
                        Err(_) => return Err(format!("{key} must be a whole number")),
                    },
                    _ => Value::from(value.as_ref()),
                };
                if fields.insert(key.to_string(), v).is_some() {
                    return Err(format!("{key} may be given once"));
                }
                continue;
            }
            _ => continue,
        };
        list.extend(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Value::from),
        );
    }
    if symbols.is_empty() && chains.is_empty() {
        return Ok(None);
    }
    if !symbols.is_empty() {
        fields.insert("symbols".into(), symbols.into());
    }
    if !chains.is_empty() {
        fields.insert("chains".into(), chains.into());
    }
    let json = serde_json::to_vec(&Value::Object(fields)).expect("a JSON value always serializes");
    Ok(Some(json))
}

/// A session's side of an SSE response: the events go into a bounded queue that the
/// response body reads.
pub struct SseTransport {
    /// `None` once closed: the response ends when the body has read what is queued.
    events: Option<mpsc::Sender<Bytes>>,
    /// The requests of the query, not yet handed to the session.
    requests: Vec<Message>,
}

impl SseTransport {
    /// A transport that hands the session `request` (a JSON `subscribe`), if any, and the
    /// body that streams what the session writes.
    pub fn new(request: Option<Vec<u8>>) -> (SseTransport, EventBody) {
        let (tx, rx) = mpsc::channel(QUEUED_WRITES);
        let requests = request
            .into_iter()
            .map(|r| {
                let text = String::from_utf8(r).expect("subscribe_of writes UTF-8 JSON");
                Message::Text(text.into())
            })
            .collect();
        let transport = SseTransport {
            events: Some(tx),
            requests,
        };
        (transport, EventBody(rx))
    }

    async fn push(&mut self, chunk: Vec<u8>) -> Result<(), Gone> {
        let Some(events) = &self.events else {
            return Err(Gone);
        };
        if chunk.is_empty() {
            return Ok(());
        }
        events.send(Bytes::from(chunk)).await.map_err(|_| Gone)
    }
}

impl Transport for SseTransport {
    fn write_all(&mut self, msgs: Vec<Message>) -> impl Future<Output = Result<(), Gone>> + Send {
        let mut chunk = Vec::new();
        for m in &msgs {
            event(m, &mut chunk);
        }
        self.push(chunk)
    }

    async fn read(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        if !self.requests.is_empty() {
            return Some(Ok(self.requests.remove(0)));
        }
        // The client never writes again; the body being dropped (the connection ended)
        // is its leaving.
        match &self.events {
            Some(events) => events.closed().await,
            None => std::future::pending().await,
        }
        None
    }

    async fn answer_close(&mut self) {}

    async fn close_with(
        &mut self,
        code: u16,
        reason: &'static str,
        last: Vec<Message>,
        wait: Duration,
    ) {
        let mut chunk = Vec::new();
        for m in &last {
            event(m, &mut chunk);
        }
        let close = serde_json::json!({"code": code, "reason": reason});
        write_event(&mut chunk, "close", close.to_string().as_bytes());
        let _ = tokio::time::timeout(wait, self.push(chunk)).await;
        self.events = None;
    }

    fn answers_pings(&self) -> bool {
        false
    }
}

/// Appends `msg` as an event: a JSON message as `event: <type>` and its `data:`, a ping as
/// a comment (a keep-alive for proxies on the way). Binary messages are not sent: an SSE
/// session is JSON.
fn event(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Text(t) => write_event(out, type_of(t.as_bytes()), t.as_bytes()),
        Message::Ping(_) => out.extend_from_slice(b":\n\n"),
        _ => {}
    }
}

/// Appends one event. JSON from the encoders holds no line break, but one in `data` would
/// end the field: each line gets a `data:` of its own, which the client joins back.
fn write_event(out: &mut Vec<u8>, kind: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
    for line in data.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The `type` of a server message. The encoders write it first; anything else is read
/// whole.
fn type_of(json: &[u8]) -> &str {
    const LEAD: &[u8] = br#"{"type":""#;
    if let Some(rest) = json.strip_prefix(LEAD)
        && let Some(end) = rest.iter().position(|b| *b == b'"')
        && let Ok(kind) = std::str::from_utf8(&rest[..end])
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return kind;
    }
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    match serde_json::from_slice::<Typed>(json) {
        Ok(t)
            if t.kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            t.kind
        }
        _ => "message",
    }
}

/// The response body: what the session wrote, in order; it ends when the session closed.
pub struct EventBody(mpsc::Receiver<Bytes>);

impl futures_util::Stream for EventBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(Ok))
    }
}

/// Answers `GET /v1/sse`: admitted as an upgrade is ([`crate::server::admit_session`]:
/// the same tokens, and a place in the same connection counts), then a session on
/// `tracker` streams to the response.
pub fn serve(
    req: Request<Incoming>,
    edge: Arc<Edge>,
    peer: SocketAddr,
    tracker: &TaskTracker,
) -> Response {
    if req.method() != Method::GET {
        let mut res =
            warp::reply::with_status("only GET", StatusCode::METHOD_NOT_ALLOWED).into_response();
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return res;
    }
    let request = match subscribe_of(req.uri().query()) {
        Ok(request) => request,
        Err(reason) => {
            return warp::reply::with_status(reason, StatusCode::BAD_REQUEST).into_response();
        }
    };
    if let Some(Err(e)) = request
        .as_deref()
        .map(|r| protocol::decode_client(FORMAT, r))
    {
        return warp::reply::with_status(e.message, StatusCode::BAD_REQUEST).into_response();
    }
    let who = match admit_session(&req, &edge, peer) {
        Ok(who) => who,
        Err(refused) => return *refused,
    };
    let (transport, body) = SseTransport::new(request);
    metrics::counter!("tickmesh_edge_sse_sessions_total").increment(1);
    tracker.spawn(session::run(transport, edge, FORMAT, who));
    response(body)
}

/// Opens an SSE response: what its headers say, so that neither a cache nor a buffering
/// proxy holds the events back.
fn response(body: EventBody) -> Response {
    let mut res = warp::reply::stream(body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// The session's format: SSE carries JSON only.
pub const FORMAT: Format = Format::Json;

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn subscribe(query: &str) -> Value {
        serde_json::from_slice(&subscribe_of(Some(query)).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn a_query_is_read_as_the_subscribe_it_stands_for() {
        assert_eq!(
            subscribe("symbols=AAPL,%20MSFT&symbols=SPY&mode=ltp&interval_ms=500&token=x"),
            serde_json::json!({"op": "subscribe", "id": 1, "symbols": ["AAPL", "MSFT", "SPY"],
                "mode": "ltp", "interval_ms": 500})
        );
        assert_eq!(
            subscribe("chains=AAPL:2026-12-18&stream=bars&tf=1m&history=5"),
            serde_json::json!({"op": "subscribe", "id": 1, "chains": ["AAPL:2026-12-18"],
                "stream": "bars", "tf": "1m", "history": 5})
        );
        // What the session's decoder reads: a request it refuses is refused whole here.
        let bytes = subscribe_of(Some("symbols=AAPL&mode=full"))
            .unwrap()
            .unwrap();
        assert!(tickmesh_core::protocol::decode_client(Format::Json, &bytes).is_ok());
    }

    #[test]
    fn a_query_with_a_bad_number_or_a_repeated_field_is_refused() {
        assert_eq!(subscribe_of(None), Ok(None));
        assert_eq!(subscribe_of(Some("symbols=,&token=x")), Ok(None));
        let refused = |q: Option<&str>| subscribe_of(q).unwrap_err();
        assert_eq!(
            refused(Some("symbols=A&interval_ms=fast")),
            "interval_ms must be a whole number"
        );
        assert_eq!(
            refused(Some("symbols=A&mode=ltp&mode=full")),
            "mode may be given once"
        );
    }

    #[test]
    fn each_message_is_one_event_named_by_its_type_in_order() {
        let mut out = Vec::new();
        event(
            &Message::Text(r#"{"type":"ticks","ticks":[{"symbol":"A","seq":2}]}"#.into()),
            &mut out,
        );
        event(&Message::Ping(Default::default()), &mut out);
        event(
            &Message::Text(r#"{"seq":3,"type":"snapshot"}"#.into()),
            &mut out,
        );
        event(
            &Message::Text("{\"type\":\"hb\",\n\"ts\":1}".into()),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: ticks\ndata: {\"type\":\"ticks\",\"ticks\":[{\"symbol\":\"A\",\"seq\":2}]}\n\n\
             :\n\n\
             event: snapshot\ndata: {\"seq\":3,\"type\":\"snapshot\"}\n\n\
             event: hb\ndata: {\"type\":\"hb\",\ndata: \"ts\":1}\n\n"
        );
    }

    #[tokio::test]
    async fn the_session_gets_the_query_then_waits_and_a_close_ends_the_body() {
        let (mut transport, mut body) = SseTransport::new(Some(b"{\"op\":\"ping\"}".to_vec()));
        let first = transport.read().await.unwrap().unwrap();
        assert_eq!(first, Message::Text("{\"op\":\"ping\"}".into()));
        let waiting = tokio::time::timeout(Duration::from_millis(50), transport.read()).await;
        assert!(waiting.is_err(), "no second request");
        transport
            .write_all(vec![Message::Text(r#"{"type":"pong"}"#.into())])
            .await
            .unwrap();
        transport
            .close_with(4008, "slow consumer", Vec::new(), Duration::from_secs(1))
            .await;
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "event: pong\ndata: {\"type\":\"pong\"}\n\n\
             event: close\ndata: {\"code\":4008,\"reason\":\"slow consumer\"}\n\n"
        );
        assert!(
            transport
                .write_all(vec![Message::Ping(Default::default())])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_dropped_body_is_the_client_leaving() {
        let (mut transport, body) = SseTransport::new(None);
        drop(body);
        let gone = tokio::time::timeout(Duration::from_secs(1), transport.read()).await;
        assert!(matches!(gone, Ok(None)));
    }
}
