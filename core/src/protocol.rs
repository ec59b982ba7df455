//! Client protocol v1 (docs/protocol.md): messages from clients, decoded from JSON or
//! MessagePack by the same serde types, and messages to clients.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::nesting;
use crate::tick::Mode;

/// `Sec-WebSocket-Protocol` for JSON in text frames (the default).
pub const SUBPROTOCOL_JSON: &str = "tickmesh.v1.json";
/// `Sec-WebSocket-Protocol` for MessagePack in binary frames.
pub const SUBPROTOCOL_MSGPACK: &str = "tickmesh.v1.msgpack";
/// The protocol version in `welcome`.
pub const VERSION: u8 = 1;
/// Default `interval_ms` when a subscribe names none.
pub const DEFAULT_INTERVAL_MS: u32 = 250;

/// Wire encoding of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    MsgPack,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Json, Format::MsgPack];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The encoding's name, as error messages give it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::MsgPack => "MessagePack",
        }
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Format::Json => SUBPROTOCOL_JSON,
            Format::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// Picks the encoding from an offered `Sec-WebSocket-Protocol` list: the first one we
    /// speak; JSON when none is offered. `None` if protocols were offered but none is ours.
    pub fn negotiate(offered: Option<&str>) -> Option<Format> {
        let Some(offered) = offered else {
            return Some(Format::Json);
        };
        offered.split(',').map(str::trim).find_map(|p| match p {
            SUBPROTOCOL_JSON => Some(Format::Json),
            SUBPROTOCOL_MSGPACK => Some(Format::MsgPack),
            _ => None,
        })
    }
}

/// `error.code` values.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidSymbol,
    UnknownSymbol,
    NotEntitled,
    TooManySymbols,
    RateLimited,
    Unauthorized,
    TokenExpired,
    SlowConsumer,
    /// The gateway cannot serve the request yet (reference data not loaded, a bound of
    /// the whole edge reached); `retry_ms` says when to try again.
    Unavailable,
}

/// WebSocket close codes of the protocol.
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// RFC 6455: the client broke the WebSocket protocol (an unmasked frame, reserved bits
    /// without an extension, an unknown opcode, bad fragmentation).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// RFC 6455: a text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_LARGE: u16 = 1009;
    pub const DRAINING: u16 = 4001;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const RATE_LIMITED: u16 = 4029;
    pub const PROTOCOL_VIOLATION: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
}

/// A client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Chains { underlying: String },
    Auth { token: String },
    Ping,
    List,
}

/// What a subscription carries: a subscription is identified by its symbol and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// The symbol's ticks (snapshot, then live updates).
    #[default]
    Ticks,
    /// Time and sales: every print, never conflated.
    Trades,
    /// OHLCV bars.
    Bars,
}

impl StreamKind {
    pub fn is_ticks(&self) -> bool {
        *self == StreamKind::Ticks
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Ticks => "ticks",
            StreamKind::Trades => "trades",
            StreamKind::Bars => "bars",
        }
    }
}

/// Prints of history a `trades` subscription gets first, unless it asks: `history`.
pub const DEFAULT_TRADES_HISTORY: u32 = 50;
/// The most prints of history a `trades` subscription may ask for.
pub const MAX_TRADES_HISTORY: u32 = 500;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(expecting = "an object with `symbols` or `chains`")]
pub struct Subscribe {
    #[serde(default)]
    pub symbols: Vec<String>,
    #[serde(default)]
    pub chains: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub interval_ms: Option<u32>,
    #[serde(default)]
    pub stream: StreamKind,
    /// `trades`: prints of history first (default 50, at most 500); `bars`: closed bars
    /// (default 100, at most 1000).
    #[serde(default)]
    pub history: Option<u32>,
    /// `bars`: the timeframe.
    #[serde(default)]
    pub tf: Option<crate::bar::Timeframe>,
    /// An account's events (orders, fills, positions, balances) instead of symbols.
    #[serde(default)]
    pub account: Option<String>,
    /// `account`: replay every event from this seq, then go on live (no snapshot).
    #[serde(default)]
    pub from_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(expecting = "an object with `symbols` or `chains`")]
pub struct Unsubscribe {
    #[serde(default)]
    pub symbols: Vec<String>,
    #[serde(default)]
    pub chains: Vec<String>,
    #[serde(default)]
    pub stream: StreamKind,
    /// `bars`: the timeframe.
    #[serde(default)]
    pub tf: Option<crate::bar::Timeframe>,
    /// An account held, instead of symbols.
    #[serde(default)]
    pub account: Option<String>,
}

/// A decoded client message: the request and the `id` to echo.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMsg {
    pub id: Option<i64>,
    pub request: Request,
}

/// A client message that could not be decoded: answered with `bad_request`, echoing the
/// `id` when it could be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub id: Option<i64>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with an `op`")]
struct Head {
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with an `underlying`")]
struct ChainsReq {
    underlying: String,
}

#[derive(Deserialize)]
#[serde(expecting = "an object with a `token`")]
struct AuthReq {
    token: String,
}

/// Decodes `bytes`, which are nested at most [`nesting::MAX_DEPTH`] levels (for JSON,
/// [`decode_client`] has checked that once for all its passes).
fn from_bytes<T: DeserializeOwned>(format: Format, bytes: &[u8]) -> Result<T, String> {
    match format {
        Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Format::MsgPack => nesting::from_msgpack(bytes).map_err(|e| e.to_string()),
    }
}

/// Decodes one client message. Unknown fields are ignored; a missing or wrongly typed
/// required field, an unknown op, malformed bytes or nesting deeper than
/// [`nesting::MAX_DEPTH`] are a [`DecodeError`].
pub fn decode_client(format: Format, bytes: &[u8]) -> Result<ClientMsg, DecodeError> {
    if format == Format::Json {
        nesting::check_json(bytes).map_err(|e| DecodeError {
            id: None,
            message: format!("malformed JSON message: {e}"),
        })?;
    }
    let head: Head = from_bytes(format, bytes).map_err(|e| DecodeError {
        id: None,
        message: format!("malformed {} message: {e}", format.name()),
    })?;
    let id = head.id;
    let fail = |message: String| DecodeError { id, message };
    let op = head.op.ok_or_else(|| fail("missing field `op`".into()))?;
    let request = match op.as_str() {
        "subscribe" => {
            let s: Subscribe =
                from_bytes(format, bytes).map_err(|e| fail(format!("subscribe: {e}")))?;
            match &s.account {
                Some(_) if !(s.symbols.is_empty() && s.chains.is_empty()) => {
                    return Err(fail(
                        "subscribe: an `account` subscription names no `symbols` or `chains`"
                            .into(),
                    ));
                }
                None if s.from_seq.is_some() => {
                    return Err(fail("subscribe: `from_seq` goes with `account`".into()));
                }
                None if s.symbols.is_empty() && s.chains.is_empty() => {
                    return Err(fail(
                        "subscribe needs `symbols`, `chains` or `account`".into(),
                    ));
                }
                _ => {}
            }
            Request::Subscribe(s)
        }
        "unsubscribe" => {
            let u: Unsubscribe =
                from_bytes(format, bytes).map_err(|e| fail(format!("unsubscribe: {e}")))?;
            Request::Unsubscribe(u)
        }
        "chains" => {
            let c: ChainsReq =
                from_bytes(format, bytes).map_err(|e| fail(format!("chains: {e}")))?;
            Request::Chains {
                underlying: c.underlying,
            }
        }
        "auth" => {
            let a: AuthReq = from_bytes(format, bytes).map_err(|e| fail(format!("auth: {e}")))?;
            Request::Auth { token: a.token }
        }
        "ping" => Request::Ping,
        "list" => Request::List,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(fail(format!("unknown op {shown:?}")));
        }
    };
    Ok(ClientMsg { id, request })
}

/// `welcome.limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_symbols: u32,
    pub max_msgs_per_s: u32,
    pub min_interval_ms: u32,
    /// How late symbols covered only by the token's `dly` are served, ms.
    #[serde(default)]
    pub delay_ms: u64,
}

/// One entry of `subscriptions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    pub symbol: String,
    pub mode: Mode,
    pub interval_ms: u32,
    /// Absent for `ticks`.
    #[serde(skip_serializing_if = "StreamKind::is_ticks")]
    pub stream: StreamKind,
    /// `bars` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tf: Option<crate::bar::Timeframe>,
}

/// Messages to clients, other than `ticks` and `snapshot`, which are assembled from
/// shared tick bytes (see [`crate::codec`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        protocol: u8,
        session: String,
        edge: String,
        heartbeat_ms: u32,
        limits: Limits,
    },
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        symbols: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        chains: Vec<String>,
        interval_ms: u32,
        mode: Mode,
        /// Absent for `ticks`.
        #[serde(skip_serializing_if = "StreamKind::is_ticks")]
        stream: StreamKind,
        /// `bars` only.
        #[serde(skip_serializing_if = "Option::is_none")]
        tf: Option<crate::bar::Timeframe>,
        /// Those of `symbols` served delayed (covered by the token's `dly` only).
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        delayed: Vec<String>,
    },
    /// The answer to an `account` subscribe.
    #[serde(rename = "subscribed")]
    AccountSubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        account: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from_seq: Option<u64>,
    },
    /// The answer to an `account` unsubscribe.
    #[serde(rename = "unsubscribed")]
    AccountUnsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        account: String,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        symbols: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        chains: Vec<String>,
        #[serde(skip_serializing_if = "StreamKind::is_ticks")]
        stream: StreamKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        tf: Option<crate::bar::Timeframe>,
    },
    Hb {
        ts: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        lag_ms: Option<u64>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        symbol: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        interval_ms: Option<u32>,
        /// With `unavailable` (and `rate_limited` where known): when to try again, ms.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_ms: Option<u64>,
        /// In a summary of refusals: how many symbols it stands for.
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        /// The account the error is about.
        #[serde(skip_serializing_if = "Option::is_none")]
        account: Option<String>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
    },
    Subscriptions {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        subscriptions: Vec<SubscriptionInfo>,
        /// The accounts held.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        accounts: Vec<String>,
    },
    Chains {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        underlying: String,
        expiries: Vec<crate::refdata::ChainExpiry>,
    },
    Authed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        /// Expiry of the new token, seconds since the Unix epoch.
        exp: u64,
    },
    Reconnect {
        after_ms: u64,
        reason: String,
    },
    /// A subscribed symbol's trading state changed (sent right before the first update
    /// in the new state), or it turned stale (the gateway cannot vouch for its value) or
    /// fresh again.
    Status {
        symbol: String,
        /// The trading state, where known.
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<crate::tick::State>,
        stale: bool,
        reason: String,
        /// A change of state: the `ts` of the tick that changed it. Stale or fresh: when
        /// the gateway saw the change. Microseconds since the Unix epoch.
        ts: u64,
    },
    /// Ticks of a subscribed symbol that never reached the gateway: seqs `from_seq`
    /// through `to_seq` (inclusive) of `epoch`. Sent before the symbol's next update.
    Gap {
        symbol: String,
        epoch: u64,
        from_seq: u64,
        to_seq: u64,
        /// `upstream`: the gateway's stream of the symbol skipped them; `reconnect`: they
        /// were published while its NATS connection was down; `snapshot`: they came
        /// between the snapshot the client was given and the first tick the gateway
        /// received.
        reason: String,
    },
}

impl ServerMsg {
    /// An error reply or event.
    pub fn error(id: Option<i64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            id,
            code,
            message: message.into(),
            symbol: None,
            interval_ms: None,
            retry_ms: None,
            count: None,
            account: None,
        }
    }

    /// An error about `account`.
    pub fn account_error(
        id: Option<i64>,
        code: ErrorCode,
        message: impl Into<String>,
        account: &str,
    ) -> Self {
        let mut msg = ServerMsg::error(id, code, message);
        if let ServerMsg::Error { account: a, .. } = &mut msg {
            *a = Some(account.to_string());
        }
        msg
    }

    /// `unavailable`: try again after `retry_ms`.
    pub fn unavailable(id: Option<i64>, retry_ms: u64, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            id,
            code: ErrorCode::Unavailable,
            message: message.into(),
            symbol: None,
            interval_ms: None,
            retry_ms: Some(retry_ms),
            count: None,
            account: None,
        }
    }

    /// An error about one symbol.
    pub fn symbol_error(
        id: Option<i64>,
        code: ErrorCode,
        symbol: &str,
        message: impl Into<String>,
    ) -> Self {
        let shown: String = symbol.chars().take(80).collect();
        ServerMsg::Error {
            id,
            code,
            message: message.into(),
            symbol: Some(shown),
            interval_ms: None,
            retry_ms: None,
            count: None,
            account: None,
        }
    }

    pub fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => serde_json::to_vec(self).expect("server messages always serialize"),
            Format::MsgPack => {
                rmp_serde::to_vec_named(self).expect("server messages always serialize")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(s: &str) -> Result<ClientMsg, DecodeError> {
        decode_client(Format::Json, s.as_bytes())
    }

    #[test]
    fn subscribe_defaults_and_unknown_fields() {
        let m = json(r#"{"op":"subscribe","id":7,"symbols":["AAPL"],"extra":{"x":1}}"#).unwrap();
        assert_eq!(m.id, Some(7));
        let Request::Subscribe(s) = m.request else {
            panic!("not a subscribe")
        };
        assert_eq!(s.symbols, ["AAPL"]);
        assert_eq!(s.mode, Mode::Quote);
        assert_eq!(s.interval_ms, None);
    }

    #[test]
    fn same_schema_in_msgpack() {
        #[derive(Serialize)]
        struct Sub<'a> {
            op: &'a str,
            id: i64,
            symbols: Vec<&'a str>,
            mode: &'a str,
            interval_ms: u32,
        }
        let bytes = rmp_serde::to_vec_named(&Sub {
            op: "subscribe",
            id: 3,
            symbols: vec!["MSFT"],
            mode: "full",
            interval_ms: 0,
        })
        .unwrap();
        let m = decode_client(Format::MsgPack, &bytes).unwrap();
        assert_eq!(
            m.request,
            Request::Subscribe(Subscribe {
                symbols: vec!["MSFT".into()],
                chains: vec![],
                mode: Mode::Full,
                interval_ms: Some(0),
                stream: StreamKind::Ticks,
                history: None,
                tf: None,
                account: None,
                from_seq: None,
            })
        );
        // {"op":"ping"}
        let m = decode_client(Format::MsgPack, b"\x81\xa2op\xa4ping").unwrap();
        assert_eq!(m.request, Request::Ping);
    }

    #[test]
    fn an_account_subscription_names_no_symbols_and_from_seq_needs_an_account() {
        let ok = decode_client(
            Format::Json,
            br#"{"op":"subscribe","id":1,"account":"DEMO1","from_seq":5}"#,
        )
        .unwrap();
        let Request::Subscribe(s) = ok.request else {
            panic!("{ok:?}")
        };
        assert_eq!((s.account.as_deref(), s.from_seq), (Some("DEMO1"), Some(5)));
        for bad in [
            &br#"{"op":"subscribe","id":2,"account":"DEMO1","symbols":["AAPL"]}"#[..],
            br#"{"op":"subscribe","id":2,"symbols":["AAPL"],"from_seq":5}"#,
            br#"{"op":"subscribe","id":2,"from_seq":5}"#,
        ] {
            let e = decode_client(Format::Json, bad).unwrap_err();
            assert_eq!(e.id, Some(2), "{e}");
        }
    }

    #[test]
    fn bad_requests_keep_the_id_when_readable() {
        assert_eq!(json("{nope").unwrap_err().id, None);
        assert_eq!(json(r#"{"op":"fly","id":4}"#).unwrap_err().id, Some(4));
        let e = json(r#"{"op":"subscribe","id":5,"symbols":"AAPL"}"#).unwrap_err();
        assert_eq!(e.id, Some(5));
        assert!(json(r#"{"op":"subscribe","id":5}"#).is_err());
        assert!(json(r#"{"op":"subscribe","symbols":["A"],"interval_ms":-1}"#).is_err());
        assert!(json(r#"{"op":"subscribe","symbols":["A"],"mode":"everything"}"#).is_err());
        assert!(json(r#"{"id":1}"#).is_err());
        assert!(json(r#"[1,2]"#).is_err());
    }

    #[test]
    fn bad_requests_say_what_was_expected_in_the_client_s_terms() {
        let e = decode_client(Format::MsgPack, b"\xff\x00garbage").unwrap_err();
        assert!(
            e.message.starts_with("malformed MessagePack message"),
            "{e}"
        );
        assert!(e.message.contains("an object with an `op`"), "{e}");
        let e = json("[1,2]").unwrap_err();
        assert!(e.message.starts_with("malformed JSON message"), "{e}");
        let e = json(r#"{"op":"auth","token":7}"#).unwrap_err();
        assert!(e.message.starts_with("auth: "), "{e}");
        let e = json(r#"{"op":"chains","underlying":[]}"#).unwrap_err();
        assert!(e.message.starts_with("chains: "), "{e}");
        for e in [
            decode_client(Format::MsgPack, b"\x01").unwrap_err(),
            decode_client(Format::MsgPack, b"\x82\xa2op\xa9subscribe\xa7symbols\x01").unwrap_err(),
            decode_client(Format::MsgPack, b"\x82\xa2op\xa4auth\xa5token\x01").unwrap_err(),
        ] {
            assert!(!e.message.contains("struct"), "names no Rust type: {e}");
        }
    }

    #[test]
    fn negotiation() {
        assert_eq!(Format::negotiate(None), Some(Format::Json));
        assert_eq!(
            Format::negotiate(Some("foo, tickmesh.v1.msgpack")),
            Some(Format::MsgPack)
        );
        assert_eq!(Format::negotiate(Some("foo")), None);
    }

    #[test]
    fn server_messages_golden() {
        let m = ServerMsg::Pong { id: Some(1) };
        assert_eq!(m.encode(Format::Json), br#"{"type":"pong","id":1}"#);
        let e = ServerMsg::symbol_error(Some(2), ErrorCode::InvalidSymbol, "A.B", "bad");
        assert_eq!(
            e.encode(Format::Json),
            br#"{"type":"error","id":2,"code":"invalid_symbol","message":"bad","symbol":"A.B"}"#
        );
        let v: serde_json::Value = rmp_serde::from_slice(&e.encode(Format::MsgPack)).unwrap();
        assert_eq!(v["code"], "invalid_symbol");
        let u = ServerMsg::unavailable(Some(3), 1000, "not yet");
        assert_eq!(
            u.encode(Format::Json),
            br#"{"type":"error","id":3,"code":"unavailable","message":"not yet","retry_ms":1000}"#
        );
    }

    /// `{"op":"ping","id":1,"x":` and `depth` nested one-element arrays, in `format`.
    fn nested_ping(format: Format, depth: usize) -> Vec<u8> {
        match format {
            Format::Json => {
                let arrays = "[".repeat(depth) + &"]".repeat(depth);
                format!(r#"{{"op":"ping","id":1,"x":{arrays}}}"#).into_bytes()
            }
            Format::MsgPack => {
                let mut v = b"\x83\xa2op\xa4ping\xa2id\x01\xa1x".to_vec();
                v.extend(std::iter::repeat_n(0x91, depth));
                v.push(0xc0);
                v
            }
        }
    }

    /// The 3 KB message that aborted a debug-built edge with a stack overflow: decoded
    /// on a thread with an eighth of a runtime worker's stack, it is a bad request.
    #[test]
    fn deep_nesting_is_a_bad_request_within_a_small_stack() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                for format in Format::ALL {
                    let e = decode_client(format, &nested_ping(format, 3000)).unwrap_err();
                    assert!(e.message.contains("nested deeper than 32 levels"), "{e}");
                    let e = decode_client(format, &nested_ping(format, 100_000)).unwrap_err();
                    assert!(e.message.contains("nested deeper than"), "{e}");
                    // Up to the bound, unknown fields nest freely.
                    let m = decode_client(format, &nested_ping(format, nesting::MAX_DEPTH - 1));
                    assert_eq!(m.unwrap().request, Request::Ping);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_client(Format::Json, &bytes);
            let _ = decode_client(Format::MsgPack, &bytes);
        }
    }
}
