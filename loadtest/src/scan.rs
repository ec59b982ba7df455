//! Lean readers for what the servers send: a scan of TickMesh JSON messages for `"type"`,
//! `"symbol"`, `"seq"`, `"epoch"` and `"ts"` (no JSON tree), a minimal MessagePack walker
//! (TickMesh's binary encoding and the NATS tick payload), and the NATS text protocol.

use crate::ws::find;

/// The fields of one tick that the load generator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickRef<'a> {
    pub symbol: &'a [u8],
    pub seq: u64,
    pub epoch: u64,
    pub ts: u64,
    /// The first seq an update stands for, when below its own.
    pub from_seq: Option<u64>,
}

/// A `gap` message: seqs `from_seq..=to_seq` of `symbol` never reached the gateway.
#[derive(Debug, PartialEq, Eq)]
pub struct GapRef<'a> {
    pub symbol: &'a [u8],
    pub epoch: u64,
    pub from_seq: u64,
    pub to_seq: u64,
}

/// One TickMesh server message, as far as the load generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    Ticks,
    Snapshot,
    Gap(GapRef<'a>),
    Error(&'a [u8]),
    Other(&'a [u8]),
}

/// Reads a TickMesh JSON message: its type, and each tick object via `on_tick`.
pub fn json_message<'a>(
    b: &'a [u8],
    mut on_tick: impl FnMut(TickRef<'a>, bool),
) -> Result<Msg<'a>, &'static str> {
    let kind = str_after(b, b"\"type\":\"").ok_or("message without a type")?;
    match kind {
        b"ticks" => {
            let mut pos = 0;
            while let Some(t) = json_tick(b, &mut pos)? {
                on_tick(t, false);
            }
            Ok(Msg::Ticks)
        }
        b"snapshot" => {
            let mut pos = 0;
            on_tick(
                json_tick(b, &mut pos)?.ok_or("snapshot without a tick")?,
                true,
            );
            Ok(Msg::Snapshot)
        }
        b"error" => Ok(Msg::Error(
            str_after(b, b"\"code\":\"").ok_or("error without a code")?,
        )),
        b"gap" => {
            let uint = |key: &[u8]| json_uint_after(b, &mut 0, key).ok_or("gap without its range");
            Ok(Msg::Gap(GapRef {
                symbol: str_after(b, b"\"symbol\":\"").ok_or("gap without a symbol")?,
                epoch: uint(b"\"epoch\":")?,
                from_seq: uint(b"\"from_seq\":")?,
                to_seq: uint(b"\"to_seq\":")?,
            }))
        }
        other => Ok(Msg::Other(other)),
    }
}

/// Reads a TickMesh `trades` message in `format`: each print via `on_print` (its
/// symbol, seq and ts; epoch 0). Returns whether it was a history (`snapshot: true`), or
/// None when the message is not a `trades` message.
pub fn trades_message<'a>(
    format: tickmesh_core::Format,
    b: &'a [u8],
    mut on_print: impl FnMut(TickRef<'a>),
) -> Option<Result<bool, &'static str>> {
    match format {
        tickmesh_core::Format::Json => {
            if str_after(b, b"\"type\":\"")? != b"trades" {
                return None;
            }
            let snapshot = find(b, b"\"snapshot\":true").is_some();
            let mut pos = 0;
            while let Some(at) = find(&b[pos..], b"\"symbol\":\"") {
                let mut p = pos + at + 10;
                let Some(end) = memchr::memchr(b'"', &b[p..]) else {
                    return Some(Err("unterminated symbol"));
                };
                let symbol = &b[p..p + end];
                p += end;
                let Some(seq) = json_uint_after(b, &mut p, b"\"seq\":") else {
                    return Some(Err("print without seq"));
                };
                let Some(ts) = json_uint_after(b, &mut p, b"\"ts\":") else {
                    return Some(Err("print without ts"));
                };
                pos = p;
                on_print(TickRef {
                    symbol,
                    seq,
                    epoch: 0,
                    ts,
                    from_seq: None,
                });
            }
            Some(Ok(snapshot))
        }
        tickmesh_core::Format::MsgPack => {
            const BAD: &str = "malformed MessagePack trades message";
            let mut mp = Mp::new(b);
            let n = mp.map_len()?;
            if mp.str()? != b"type" || mp.str()? != b"trades" {
                return None;
            }
            let mut snapshot = false;
            for _ in 1..n {
                match mp.str() {
                    Some(b"snapshot") => snapshot = mp.byte() == Some(0xc3),
                    Some(b"trades") => {
                        let Some(count) = mp.array_len() else {
                            return Some(Err(BAD));
                        };
                        for _ in 0..count {
                            match mp_tick(&mut mp) {
                                Some((t, _)) => on_print(t),
                                None => return Some(Err(BAD)),
                            }
                        }
                    }
                    _ => return Some(Err(BAD)),
                }
            }
            Some(Ok(snapshot))
        }
    }
}

/// The next tick object from `pos`: the fields come in the order symbol, seq, epoch, ts.
fn json_tick<'a>(b: &'a [u8], pos: &mut usize) -> Result<Option<TickRef<'a>>, &'static str> {
    let Some(at) = find(&b[*pos..], b"\"symbol\":\"") else {
        return Ok(None);
    };
    // `from_seq`, when the gateway adds it, comes first in the object, just before
    // `symbol`.
    const FROM: &[u8] = b"{\"from_seq\":";
    let from_seq = memchr::memmem::rfind(&b[*pos..*pos + at], FROM).and_then(|f| {
        let mut q = *pos + f + FROM.len() - 1;
        json_uint_after(b, &mut q, b":")
    });
    let mut p = *pos + at + 10;
    let end = memchr::memchr(b'"', &b[p..]).ok_or("unterminated symbol")?;
    let symbol = &b[p..p + end];
    p += end;
    let seq = json_uint_after(b, &mut p, b"\"seq\":").ok_or("tick without seq")?;
    let epoch = json_uint_after(b, &mut p, b"\"epoch\":").ok_or("tick without epoch")?;
    let ts = json_uint_after(b, &mut p, b"\"ts\":").ok_or("tick without ts")?;
    *pos = p;
    Ok(Some(TickRef {
        symbol,
        seq,
        epoch,
        ts,
        from_seq,
    }))
}

fn json_uint_after(b: &[u8], pos: &mut usize, key: &[u8]) -> Option<u64> {
    let at = find(&b[*pos..], key)?;
    let mut p = *pos + at + key.len();
    let mut v: u64 = 0;
    let start = p;
    while p < b.len() && b[p].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(u64::from(b[p] - b'0'))?;
        p += 1;
    }
    *pos = p;
    (p > start).then_some(v)
}

fn str_after<'a>(b: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = find(b, key)? + key.len();
    let end = memchr::memchr(b'"', &b[at..])?;
    Some(&b[at..at + end])
}

/// A cursor over MessagePack bytes.
pub struct Mp<'a> {
    b: &'a [u8],
    pub pos: usize,
}

impl<'a> Mp<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Mp { b, pos: 0 }
    }

    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        )
    }

    pub fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    pub fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some(usize::from(m & 0x0f)),
            0xdc => Some(self.be(2)? as usize),
            0xdd => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    pub fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }

    pub fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => u64::try_from(self.be(1)? as u8 as i8).ok(),
            0xd1 => u64::try_from(self.be(2)? as u16 as i16).ok(),
            0xd2 => u64::try_from(self.be(4)? as u32 as i32).ok(),
            0xd3 => u64::try_from(self.be(8)? as i64).ok(),
            _ => None,
        }
    }

    /// Skips one value of any type.
    pub fn skip(&mut self) -> Option<()> {
        self.skip_depth(0)
    }

    fn skip_depth(&mut self, depth: u32) -> Option<()> {
        if depth > 16 {
            return None;
        }
        let m = self.byte()?;
        let n = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => return self.skip_items(usize::from(m & 0x0f) * 2, depth),
            0x90..=0x9f => return self.skip_items(usize::from(m & 0x0f), depth),
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 | 0xca => 4,
            0xcf | 0xd3 | 0xcb => 8,
            0xd9 | 0xc4 => self.be(1)? as usize,
            0xda | 0xc5 => self.be(2)? as usize,
            0xdb | 0xc6 => self.be(4)? as usize,
            0xdc => {
                let n = self.be(2)? as usize;
                return self.skip_items(n, depth);
            }
            0xdd => {
                let n = self.be(4)? as usize;
                return self.skip_items(n, depth);
            }
            0xde => {
                let n = self.be(2)? as usize;
                return self.skip_items(n * 2, depth);
            }
            0xdf => {
                let n = self.be(4)? as usize;
                return self.skip_items(n * 2, depth);
            }
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xc7 => self.be(1)? as usize + 1,
            0xc8 => self.be(2)? as usize + 1,
            0xc9 => self.be(4)? as usize + 1,
            0xc1 => return None,
        };
        self.take(n).map(|_| ())
    }

    fn skip_items(&mut self, n: usize, depth: u32) -> Option<()> {
        for _ in 0..n {
            self.skip_depth(depth + 1)?;
        }
        Some(())
    }
}

/// Reads one tick map (a NATS payload, or a tick object inside a TickMesh frame).
/// Returns the tick and the `type` tag if the map carries one.
pub fn mp_tick<'a>(mp: &mut Mp<'a>) -> Option<(TickRef<'a>, Option<&'a [u8]>)> {
    let n = mp.map_len()?;
    let mut t = TickRef {
        symbol: &[],
        seq: 0,
        epoch: 0,
        ts: 0,
        from_seq: None,
    };
    let mut tag = None;
    for _ in 0..n {
        match mp.str()? {
            b"symbol" => t.symbol = mp.str()?,
            b"seq" => t.seq = mp.uint()?,
            b"epoch" => t.epoch = mp.uint()?,
            b"ts" => t.ts = mp.uint()?,
            b"from_seq" => t.from_seq = Some(mp.uint()?),
            b"type" => tag = Some(mp.str()?),
            _ => mp.skip()?,
        }
    }
    (!t.symbol.is_empty()).then_some((t, tag))
}

/// Reads a TickMesh MessagePack message: its type, and each tick via `on_tick`.
pub fn mp_message<'a>(
    b: &'a [u8],
    mut on_tick: impl FnMut(TickRef<'a>, bool),
) -> Result<Msg<'a>, &'static str> {
    const BAD: &str = "malformed MessagePack message";
    let mut mp = Mp::new(b);
    let n = mp.map_len().ok_or(BAD)?;
    let mut kind: &[u8] = &[];
    let mut code: &[u8] = &[];
    let mut tick = TickRef {
        symbol: &[],
        seq: 0,
        epoch: 0,
        ts: 0,
        from_seq: None,
    };
    let mut to_seq = None;
    for _ in 0..n {
        match mp.str().ok_or(BAD)? {
            b"type" => kind = mp.str().ok_or(BAD)?,
            b"ticks" => {
                let count = mp.array_len().ok_or(BAD)?;
                for _ in 0..count {
                    let (t, _) = mp_tick(&mut mp).ok_or(BAD)?;
                    on_tick(t, false);
                }
            }
            b"code" => code = mp.str().ok_or(BAD)?,
            b"symbol" => tick.symbol = mp.str().ok_or(BAD)?,
            b"seq" => tick.seq = mp.uint().ok_or(BAD)?,
            b"epoch" => tick.epoch = mp.uint().ok_or(BAD)?,
            b"ts" => tick.ts = mp.uint().ok_or(BAD)?,
            b"from_seq" => tick.from_seq = Some(mp.uint().ok_or(BAD)?),
            b"to_seq" => to_seq = Some(mp.uint().ok_or(BAD)?),
            _ => mp.skip().ok_or(BAD)?,
        }
    }
    Ok(match kind {
        b"ticks" => Msg::Ticks,
        b"gap" => Msg::Gap(GapRef {
            symbol: tick.symbol,
            epoch: tick.epoch,
            from_seq: tick.from_seq.ok_or(BAD)?,
            to_seq: to_seq.ok_or(BAD)?,
        }),
        b"snapshot" => {
            on_tick(tick, true);
            Msg::Snapshot
        }
        b"error" => Msg::Error(code),
        other => Msg::Other(other),
    })
}

/// One complete NATS protocol operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum NatsOp<'a> {
    Msg {
        /// The subscription id it came for.
        sid: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Err(&'a [u8]),
    /// INFO, PONG, +OK.
    Other,
}

/// Parses one operation at the front of `b`; returns it and its length, or None if `b`
/// does not yet hold a complete one.
pub fn nats_op(b: &[u8]) -> Result<Option<(NatsOp<'_>, usize)>, String> {
    let Some(eol) = find(b, b"\r\n") else {
        if b.len() > 64 * 1024 {
            return Err("NATS control line over 64 KiB".into());
        }
        return Ok(None);
    };
    let line = &b[..eol];
    let after = eol + 2;
    if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") {
        let headers = line[0] == b'H';
        let mut fields = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
        let parts: Vec<&[u8]> = fields.by_ref().collect();
        let num = |f: &[u8]| -> Result<usize, String> {
            std::str::from_utf8(f)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad size in {}", String::from_utf8_lossy(line)))
        };
        let total = num(parts.last().ok_or("empty MSG line")?)?;
        let header_len = if headers {
            num(parts
                .get(parts.len().saturating_sub(2))
                .ok_or("short HMSG")?)?
        } else {
            0
        };
        if b.len() < after + total + 2 {
            return Ok(None);
        }
        let payload = &b[after + header_len..after + total];
        // MSG/HMSG <subject> <sid> [reply-to] ...
        let sid = parts.get(2).copied().unwrap_or_default();
        return Ok(Some((NatsOp::Msg { sid, payload }, after + total + 2)));
    }
    let op = if line == b"PING" {
        NatsOp::Ping
    } else if line.starts_with(b"-ERR") {
        NatsOp::Err(line)
    } else {
        NatsOp::Other
    };
    Ok(Some((op, after)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_core::codec::{encode_client, encode_wire, ticks_frame};
    use tickmesh_core::{Format, Mode, Tick};

    fn tick(symbol: &str, seq: u64) -> Tick {
        Tick {
            symbol: symbol.into(),
            seq,
            epoch: 7,
            ts: 1_700_000_000_000_000 + seq,
            src_ts: Some(5),
            last: Some(1.25),
            bid: Some(1.0),
            ..Tick::default()
        }
    }

    fn collect(format: Format, b: &[u8]) -> (String, Vec<(String, u64, u64, u64)>) {
        let mut out = Vec::new();
        let f = |t: TickRef, _snapshot: bool| {
            out.push((
                String::from_utf8(t.symbol.to_vec()).unwrap(),
                t.seq,
                t.epoch,
                t.ts,
            ))
        };
        let m = match format {
            Format::Json => json_message(b, f),
            Format::MsgPack => mp_message(b, f),
        }
        .unwrap();
        (format!("{m:?}"), out)
    }

    #[test]
    fn reads_ticks_frames_and_snapshots_in_both_formats() {
        for format in [Format::Json, Format::MsgPack] {
            for mode in Mode::ALL {
                let a = encode_client(&tick("AAPL", 3), format, mode, None);
                let b = encode_client(&tick("BRK-B", 4), format, mode, None);
                let frame = ticks_frame(format, [a.as_slice(), b.as_slice()].into_iter());
                let (kind, ticks) = collect(format, &frame);
                assert_eq!(kind, "Ticks");
                assert_eq!(
                    ticks,
                    [
                        ("AAPL".into(), 3, 7, 1_700_000_000_000_003),
                        ("BRK-B".into(), 4, 7, 1_700_000_000_000_004)
                    ]
                );
                let snap = encode_client(&tick("SPY", 9), format, mode, Some("snapshot"));
                let (kind, ticks) = collect(format, &snap);
                assert_eq!(kind, "Snapshot");
                assert_eq!(ticks, [("SPY".into(), 9, 7, 1_700_000_000_000_009)]);
            }
        }
    }

    #[test]
    fn reads_from_seq_and_gaps_as_the_edge_writes_them() {
        for format in [Format::Json, Format::MsgPack] {
            for mode in Mode::ALL {
                let a = encode_client(&tick("AAPL", 3), format, mode, None);
                let mut b = Vec::new();
                let plain = encode_client(&tick("BRK-B", 9), format, mode, None);
                assert!(tickmesh_core::codec::with_from_seq(
                    format, &plain, 5, &mut b
                ));
                let frame = ticks_frame(format, [a.as_slice(), b.as_slice()].into_iter());
                let mut from = Vec::new();
                let f = |t: TickRef, _| from.push((t.seq, t.from_seq));
                match format {
                    Format::Json => json_message(&frame, f),
                    Format::MsgPack => mp_message(&frame, f),
                }
                .unwrap();
                assert_eq!(from, [(3, None), (9, Some(5))], "{format:?} {mode:?}");
            }
            let gap = tickmesh_core::protocol::ServerMsg::Gap {
                symbol: "AAPL".into(),
                epoch: 7,
                from_seq: 4,
                to_seq: 6,
                reason: "upstream".into(),
            }
            .encode(format);
            let got = match format {
                Format::Json => json_message(&gap, |_, _| {}),
                Format::MsgPack => mp_message(&gap, |_, _| {}),
            };
            assert_eq!(
                got.unwrap(),
                Msg::Gap(GapRef {
                    symbol: b"AAPL",
                    epoch: 7,
                    from_seq: 4,
                    to_seq: 6
                })
            );
        }
    }

    #[test]
    fn reads_prints_as_the_edge_writes_them_and_nothing_else() {
        use tickmesh_core::trade::{self, Trade, trades_frame};
        let print = |seq: u64| Trade {
            symbol: "AAPL".into(),
            seq,
            trade_id: seq,
            price: 189.5,
            size: 100,
            ts: 1_000 + seq,
            src_ts: Some(7),
            conditions: vec!["opening".into()],
        };
        for format in [Format::Json, Format::MsgPack] {
            for snapshot in [false, true] {
                let objects: Vec<Vec<u8>> = (1..=20)
                    .map(|s| trade::encode_client(&print(s), format))
                    .collect();
                let frame = trades_frame(format, snapshot, objects.iter().map(|o| &o[..]));
                let mut got = Vec::new();
                let read = trades_message(format, &frame, |t| {
                    got.push((t.symbol.to_vec(), t.seq, t.ts))
                });
                assert_eq!(read, Some(Ok(snapshot)), "{format:?}");
                let want: Vec<_> = (1..=20).map(|s| (b"AAPL".to_vec(), s, 1_000 + s)).collect();
                assert_eq!(got, want, "{format:?}");
            }
            let a = encode_client(&tick("AAPL", 3), format, Mode::Quote, None);
            let ticks = ticks_frame(format, [a.as_slice()].into_iter());
            assert_eq!(
                trades_message(format, &ticks, |_| panic!("not a print")),
                None
            );
        }
    }

    #[test]
    fn reads_error_codes() {
        let json = br#"{"type":"error","code":"slow_consumer","message":"x","interval_ms":250}"#;
        assert_eq!(
            json_message(json, |_, _| {}).unwrap(),
            Msg::Error(b"slow_consumer")
        );
        let v = serde_json::json!({"type":"error","code":"slow_consumer","interval_ms":250});
        let mp = rmp_serde::to_vec_named(&v).unwrap();
        assert_eq!(
            mp_message(&mp, |_, _| {}).unwrap(),
            Msg::Error(b"slow_consumer")
        );
    }

    #[test]
    fn reads_the_wire_tick_of_a_nats_message() {
        let payload = encode_wire(&tick("MSFT", 11));
        let mut b = format!("MSG md.51.MSFT 3 {}\r\n", payload.len()).into_bytes();
        b.extend_from_slice(&payload);
        b.extend_from_slice(b"\r\nPING\r\n");
        let (op, n) = nats_op(&b).unwrap().unwrap();
        let NatsOp::Msg { payload: p, .. } = op else {
            panic!("{op:?}")
        };
        let (t, _) = mp_tick(&mut Mp::new(p)).unwrap();
        assert_eq!(
            (t.symbol, t.seq, t.ts),
            (&b"MSFT"[..], 11, 1_700_000_000_000_011)
        );
        assert_eq!(nats_op(&b[n..]).unwrap().unwrap().0, NatsOp::Ping);
        assert!(
            nats_op(&b[..n - 3]).unwrap().is_none(),
            "incomplete payload"
        );
    }
}
