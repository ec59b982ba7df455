//! What a session needs of its connection: a sink of messages, a source of client
//! messages, and a close with a code and a reason. A WebSocket is one such transport;
//! Server-Sent Events ([`crate::sse`]) is another, so both run the same session logic
//! (conflation, sequence and gap guarantees, heartbeats, budget, slow-consumer cut,
//! revocation, drain).

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// The connection broke or the client went away: nothing more can be written.
#[derive(Debug)]
pub struct Gone;

/// A session's connection.
pub trait Transport {
    /// Writes every message in order, then flushes once. A session bounds the whole write
    /// with `session.write_timeout_ms`: a transport that cannot take more waits here.
    fn write_all(&mut self, msgs: Vec<Message>) -> impl Future<Output = Result<(), Gone>> + Send;

    /// The next client message; `None` once the client is gone. Cancel-safe: the session
    /// waits for it beside its other events.
    fn read(&mut self) -> impl Future<Output = Option<Result<Message, tungstenite::Error>>> + Send;

    /// Writes what the transport still owes after the client's close (its answer).
    fn answer_close(&mut self) -> impl Future<Output = ()> + Send;

    /// Writes `last`, then the close with `code` and `reason`, and ends the connection,
    /// all within `wait`.
    fn close_with(
        &mut self,
        code: u16,
        reason: &'static str,
        last: Vec<Message>,
        wait: Duration,
    ) -> impl Future<Output = ()> + Send;

    /// Whether the client answers keep-alive pings, so that its silence past
    /// `session.idle_timeout_ms` means it is gone. A one-way transport (SSE) never hears
    /// from its client: only a failed write tells that it left.
    fn answers_pings(&self) -> bool;
}

impl<S> Transport for WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn write_all(&mut self, msgs: Vec<Message>) -> Result<(), Gone> {
        for m in msgs {
            self.feed(m).await.map_err(|_| Gone)?;
        }
        SinkExt::flush(self).await.map_err(|_| Gone)
    }

    async fn read(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        StreamExt::next(self).await
    }

    async fn answer_close(&mut self) {
        // The close reply, so that the client sees a clean 1000, not 1006.
        let _ = tokio::time::timeout(Duration::from_secs(1), SinkExt::flush(self)).await;
    }

    /// Input left unread when the socket closes makes the kernel answer with a reset, and
    /// the client would lose what was still on its way to it: the close frame and its code
    /// among it. Hence the read to the client's close reply, and a shutdown of the write
    /// side (a FIN behind the data) rather than a bare drop. A client that stopped reading
    /// may never take the frame: the wait is bounded.
    async fn close_with(
        &mut self,
        code: u16,
        reason: &'static str,
        last: Vec<Message>,
        wait: Duration,
    ) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let handshake = async {
            for msg in last {
                self.feed(msg).await?;
            }
            WebSocketStream::close(self, Some(frame)).await?;
            while let Some(msg) = StreamExt::next(self).await {
                msg?;
            }
            Ok::<_, tungstenite::Error>(())
        };
        let deadline = tokio::time::Instant::now() + wait;
        let _ = tokio::time::timeout_at(deadline, handshake).await;
        let _ = tokio::time::timeout_at(deadline, self.get_mut().shutdown()).await;
    }

    fn answers_pings(&self) -> bool {
        true
    }
}
