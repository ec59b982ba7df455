//! A Server-Sent Events client of `GET /v1/sse`, read by hand off the socket: the HTTP
//! response head, the chunked body, and the events (`event:` and `data:` lines, comments).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An open event stream.
#[derive(Debug)]
pub struct SseClient {
    body: BufReader<TcpStream>,
    /// Body bytes read and not yet parsed into events.
    pending: String,
    ended: bool,
    /// The response's headers, names lower case.
    pub headers: Vec<(String, String)>,
}

/// One event: its `event:` name and its `data:` as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

/// A refused request: its status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl SseClient {
    /// Opens `path` (with its query) on `addr`, with a bearer token if given. `Err(Refused)`
    /// in the `Ok` when the edge answers anything but 200.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Result<SseClient, Refused>> {
        let stream = TcpStream::connect(addr).await?;
        Self::open_on(stream, addr, path, token).await
    }

    /// As [`SseClient::open`], over a socket with a 4 KiB receive buffer, so that a client
    /// that stops reading pushes back on the edge within a second.
    pub async fn open_small_buffer(
        addr: SocketAddr,
        path: &str,
    ) -> anyhow::Result<Result<SseClient, Refused>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(addr).await?;
        Self::open_on(stream, addr, path, None).await
    }

    async fn open_on(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Result<SseClient, Refused>> {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{auth}\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut body = BufReader::new(stream);
        let mut status_line = String::new();
        let within = Duration::from_secs(5);
        tokio::time::timeout(within, body.read_line(&mut status_line))
            .await
            .context("no response head within 5 s")??;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            tokio::time::timeout(within, body.read_line(&mut line))
                .await
                .context("no response head within 5 s")??;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut client = SseClient {
            body,
            pending: String::new(),
            ended: false,
            headers,
        };
        if status != 200 {
            let mut text = String::new();
            let reading = async {
                while let Some(chunk) = client.chunk().await? {
                    text.push_str(&chunk);
                }
                Ok::<_, anyhow::Error>(())
            };
            let _ = tokio::time::timeout(within, reading).await;
            return Ok(Err(Refused { status, body: text }));
        }
        Ok(Ok(client))
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of the body; `None` at its end. A body with `content-length` (an
    /// error) is read to its length.
    async fn chunk(&mut self) -> anyhow::Result<Option<String>> {
        if let Some(len) = self.header("content-length") {
            if self.ended {
                return Ok(None);
            }
            let mut buf = vec![0; len.parse()?];
            self.body.read_exact(&mut buf).await?;
            self.ended = true;
            return Ok(Some(String::from_utf8(buf)?));
        }
        let mut size = String::new();
        if self.body.read_line(&mut size).await? == 0 {
            return Ok(None);
        }
        let size = usize::from_str_radix(size.trim(), 16)
            .with_context(|| format!("bad chunk size {size:?}"))?;
        let mut buf = vec![0; size + 2];
        self.body.read_exact(&mut buf).await?;
        if size == 0 {
            return Ok(None);
        }
        buf.truncate(size);
        Ok(Some(String::from_utf8(buf)?))
    }

    /// The next event within `within` (comments skipped); `None` once the stream ended.
    pub async fn next_event(&mut self, within: Duration) -> anyhow::Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a comment
                }
                let data = serde_json::from_str(&data.join("\n"))
                    .with_context(|| format!("event data is not JSON: {block:?}"))?;
                return Ok(Some(SseEvent { name, data }));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.chunk())
                .await
                .context("no event in time")??
            {
                Some(chunk) => self.pending.push_str(&chunk),
                None => self.ended = true,
            }
        }
    }

    /// The next event's data (the stream ending is an error); its name must be its `type`.
    pub async fn next_msg(&mut self, within: Duration) -> anyhow::Result<Value> {
        match self.next_event(within).await? {
            Some(e) if e.name == "close" || e.data["type"] == e.name.as_str() => Ok(e.data),
            Some(e) => bail!("event {:?} holds a {} message", e.name, e.data["type"]),
            None => bail!("the stream ended"),
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

    /// Every message received during `dur`, with its arrival time (a `close` event is an
    /// error).
    pub async fn collect(&mut self, dur: Duration) -> anyhow::Result<Vec<(Instant, Value)>> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            match self.next_event(left).await {
                Ok(Some(e)) if e.name == "close" => {
                    bail!("closed with {} while collecting", e.data)
                }
                Ok(Some(e)) => {
                    anyhow::ensure!(
                        e.data["type"] == e.name.as_str(),
                        "event {} named {:?}",
                        e.data,
                        e.name
                    );
                    out.push((Instant::now(), e.data));
                }
                Ok(None) => bail!("the stream ended while collecting"),
                Err(_) => return Ok(out),
            }
        }
    }

    /// The `close` event's code, with every message before it handed to `on_msg`, and
    /// whether the stream then ended; within `within`.
    pub async fn closed_within(
        &mut self,
        within: Duration,
        mut on_msg: impl FnMut(&Value),
    ) -> anyhow::Result<(u64, bool)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await.context("no close in time")? {
                Some(e) if e.name == "close" => {
                    let code = e.data["code"].as_u64().context("close without a code")?;
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ended = matches!(self.next_event(left).await, Ok(None));
                    return Ok((code, ended));
                }
                Some(e) => on_msg(&e.data),
                None => bail!("the stream ended without a close event"),
            }
        }
    }
}
