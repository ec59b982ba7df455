//! One WebSocket connection to an edge: the only module that touches the socket.
//!
//! The encoding is chosen at the upgrade (`Sec-WebSocket-Protocol`); requests go out in
//! it. Frames are decoded by their type (text = JSON, binary = MessagePack) into JSON
//! values, so the rest of the client reads one shape whatever was negotiated.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickmesh_core::Format;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The edge answered the upgrade with an HTTP error (401 bad token, 429/503 full, ...).
    #[error("the edge refused the connection: HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Refused { status: u16, body: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

impl ConnectError {
    /// Refusals that retrying with the same URL and token cannot fix.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConnectError::Refused { status, .. } if matches!(status, 400 | 401 | 403 | 404))
    }
}

/// What the socket produced.
#[derive(Debug)]
pub enum Incoming {
    Msg(Value),
    /// A frame that did not decode (the connection goes on).
    Undecodable(String),
    /// The edge closed the connection (`code` 1006 when it went without a close frame).
    Closed {
        code: u16,
        reason: String,
    },
}

pub struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    format: Format,
}

/// Opens `url` offering the subprotocol of `format`, with `token` in the `Authorization`
/// header: a URL ends up in proxy and server logs, a header does not.
pub async fn connect(
    url: &str,
    token: Option<&str>,
    format: Format,
    within: Duration,
) -> Result<Conn, ConnectError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| ConnectError::Failed(e.to_string()))?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(format.subprotocol()),
    );
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ConnectError::Failed("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        req.headers_mut().insert("authorization", value);
    }
    let dial = tokio_tungstenite::connect_async(req);
    let (ws, _) = match tokio::time::timeout(within, dial).await {
        Err(_) => return Err(ConnectError::Timeout(within)),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .trim()
                        .chars()
                        .take(200)
                        .collect()
                })
                .unwrap_or_default();
            return Err(ConnectError::Refused {
                status: resp.status().as_u16(),
                body,
            });
        }
        Ok(Err(e)) => return Err(ConnectError::Failed(e.to_string())),
        Ok(Ok(pair)) => pair,
    };
    Ok(Conn { ws, format })
}

impl Conn {
    /// Sends a request in the session's encoding.
    pub async fn send(&mut self, request: &Value) -> Result<(), tungstenite::Error> {
        self.ws.send(encode(self.format, request)).await
    }

    /// The next message or close. Cancel-safe (a `select!` may drop it).
    pub async fn recv(&mut self) -> Incoming {
        loop {
            let msg = match self.ws.next().await {
                None => return closed(1006, "connection lost"),
                Some(Err(e)) => return closed(1006, &e.to_string()),
                Some(Ok(m)) => m,
            };
            return match msg {
                Message::Close(frame) => match frame {
                    Some(CloseFrame { code, reason }) => closed(code.into(), &reason),
                    None => closed(1005, ""),
                },
                Message::Text(_) | Message::Binary(_) => match decode(&msg) {
                    Ok(v) => Incoming::Msg(v),
                    Err(e) => Incoming::Undecodable(e),
                },
                // Pings are answered by tungstenite itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
        }
    }

    /// Closes with 1000 and waits (briefly) for the edge's answer, so it sees a clean close.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if self.ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}

fn closed(code: u16, reason: &str) -> Incoming {
    Incoming::Closed {
        code,
        reason: reason.to_string(),
    }
}

/// A request as a frame of `format`.
pub fn encode(format: Format, request: &Value) -> Message {
    match format {
        Format::Json => Message::text(request.to_string()),
        Format::MsgPack => Message::binary(
            rmp_serde::to_vec_named(request).expect("a JSON value always encodes as MessagePack"),
        ),
    }
}

/// A server frame as a JSON value: text frames are JSON, binary frames MessagePack.
pub fn decode(msg: &Message) -> Result<Value, String> {
    match msg {
        Message::Text(t) => serde_json::from_str(t.as_str()).map_err(|e| format!("bad JSON: {e}")),
        Message::Binary(b) => rmp_serde::from_slice(b).map_err(|e| format!("bad MessagePack: {e}")),
        _ => Err("not a data frame".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_round_trip_in_both_encodings() {
        let req = json!({"op": "subscribe", "id": 1, "symbols": ["AAPL"], "mode": "quote", "interval_ms": 250});
        for format in Format::ALL {
            let frame = encode(format, &req);
            assert_eq!(
                matches!(frame, Message::Binary(_)),
                format == Format::MsgPack
            );
            assert_eq!(decode(&frame).unwrap(), req);
        }
        // {"type":"pong"} as the edge would send it in a MessagePack session.
        let pong = Message::binary(&b"\x81\xa4type\xa4pong"[..]);
        assert_eq!(decode(&pong).unwrap(), json!({"type": "pong"}));
        assert!(decode(&Message::text("{nope")).is_err());
    }

    #[test]
    fn only_unfixable_refusals_are_fatal() {
        let refused = |status| ConnectError::Refused {
            status,
            body: String::new(),
        };
        assert!(refused(401).is_fatal());
        assert!(refused(400).is_fatal());
        assert!(!refused(503).is_fatal());
        assert!(!refused(429).is_fatal());
        assert!(!ConnectError::Failed("connection refused".into()).is_fatal());
    }
}
