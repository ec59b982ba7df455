//! Tick codecs.
//!
//! - Wire (NATS): the full tick as a MessagePack map with string keys
//!   ([`encode_wire`] / [`decode_wire`]). Decoding validates, because the bytes come
//!   from the network.
//! - Client: one tick object per (format, mode), optionally tagged `"type":"snapshot"`
//!   ([`encode_client`]). The edge builds these once per tick and shares them; a `ticks`
//!   frame is then assembled by concatenating shared bytes ([`ticks_frame`]).

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::protocol::Format;
use crate::symbol;
use crate::tick::{Depth, MAX_SAFE_INTEGER, Mode, Right, Tick};

/// Largest tick accepted from the wire, in bytes. A full-depth option tick is under 1 KiB.
pub const MAX_WIRE_TICK: usize = 16 * 1024;

/// Why wire bytes are not a tick.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("tick is {0} bytes; the limit is {MAX_WIRE_TICK}")]
    TooLarge(usize),
    #[error("malformed tick: {0}")]
    Malformed(#[from] crate::nesting::NestingError),
    #[error("invalid tick symbol {symbol:?}: {source}")]
    Symbol {
        symbol: String,
        source: symbol::SymbolError,
    },
    #[error("tick {field} {value} is not below 2^53")]
    Unsafe { field: &'static str, value: u64 },
    #[error("tick field {0} is not a finite number")]
    NotFinite(&'static str),
    #[error("invalid tick underlying {underlying:?}: {source}")]
    Underlying {
        underlying: String,
        source: symbol::SymbolError,
    },
    #[error("tick expiry: {0}")]
    Expiry(#[from] crate::date::DateError),
}

/// Encodes a tick for NATS and KV.
pub fn encode_wire(tick: &Tick) -> Vec<u8> {
    rmp_serde::to_vec_named(tick).expect("a tick always serializes: plain fields, string keys")
}

/// Decodes and validates a tick from NATS or KV bytes.
pub fn decode_wire(bytes: &[u8]) -> Result<Tick, CodecError> {
    if bytes.len() > MAX_WIRE_TICK {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let tick: Tick = crate::nesting::from_msgpack(bytes)?;
    check(&tick)?;
    Ok(tick)
}

/// The invariants every tick on the wire holds.
pub fn check(tick: &Tick) -> Result<(), CodecError> {
    symbol::validate(&tick.symbol).map_err(|source| CodecError::Symbol {
        symbol: tick.symbol.chars().take(80).collect(),
        source,
    })?;
    // An option's underlying and expiry are what a tick file requires of them, so that
    // whatever the wire carries can be recorded and replayed.
    if let Some(u) = &tick.underlying {
        symbol::validate(u).map_err(|source| CodecError::Underlying {
            underlying: u.chars().take(80).collect(),
            source,
        })?;
    }
    if let Some(e) = &tick.expiry {
        crate::date::Date::parse(e)?;
    }
    let src_ts = ("src_ts", tick.src_ts.unwrap_or(0));
    for (field, value) in [
        ("seq", tick.seq),
        ("epoch", tick.epoch),
        ("ts", tick.ts),
        src_ts,
    ] {
        if value > MAX_SAFE_INTEGER {
            return Err(CodecError::Unsafe { field, value });
        }
    }
    match non_finite(tick) {
        Some(name) => Err(CodecError::NotFinite(name)),
        None => Ok(()),
    }
}

/// The first price or other float field of `tick` that is NaN or infinite, depth levels
/// included. JSON has no such numbers: serde_json would write them as `null`.
pub fn non_finite(tick: &Tick) -> Option<&'static str> {
    let mut bad = None;
    visit(tick, Mode::Full, |name, v| {
        let finite = match v {
            Val::F64(x) => x.is_finite(),
            Val::Depth(d) => d.bids.iter().chain(&d.asks).all(|(p, _)| p.is_finite()),
            Val::U64(_) | Val::Str(_) => true,
        };
        if !finite {
            bad.get_or_insert(name);
        }
        Ok::<(), ()>(())
    })
    .ok();
    bad
}

/// Encodes one tick object for clients, with only the fields of `mode`. With `tag`, the
/// object also carries `"type": tag` first (a `snapshot` message is a tagged tick).
pub fn encode_client(tick: &Tick, format: Format, mode: Mode, tag: Option<&str>) -> Vec<u8> {
    encode_client_delayed(tick, format, mode, tag, None)
}

/// [`encode_client`] of a tick delivered `delayed_ms` late (a delayed entitlement):
/// the object then carries `delayed_ms`.
pub fn encode_client_delayed(
    tick: &Tick,
    format: Format,
    mode: Mode,
    tag: Option<&str>,
    delayed_ms: Option<u64>,
) -> Vec<u8> {
    let view = TickView {
        tick,
        mode,
        tag,
        delayed_ms,
    };
    match format {
        Format::Json => serde_json::to_vec(&view).expect("a tick view always serializes to JSON"),
        Format::MsgPack => {
            rmp_serde::to_vec_named(&view).expect("a tick view always serializes to MessagePack")
        }
    }
}

/// Builds a `ticks` frame, `{"type":"ticks","ticks":[...]}`, from tick objects already
/// encoded by [`encode_client`] in `format`. Only copies bytes.
pub fn ticks_frame<'a, I>(format: Format, ticks: I) -> Vec<u8>
where
    I: ExactSizeIterator<Item = &'a [u8]>,
{
    let n = ticks.len();
    match format {
        Format::Json => {
            let mut out = Vec::with_capacity(32 + n * 160);
            out.extend_from_slice(br#"{"type":"ticks","ticks":"#);
            json_array(&mut out, ticks);
            out.push(b'}');
            out
        }
        Format::MsgPack => {
            let mut out = Vec::with_capacity(32 + n * 128);
            // fixmap(2) "type" "ticks" "ticks" [..]
            out.extend_from_slice(b"\x82\xa4type\xa5ticks\xa5ticks");
            array_header(&mut out, n);
            for t in ticks {
                out.extend_from_slice(t);
            }
            out
        }
    }
}

/// Appends `[a,b,...]` of JSON values already encoded.
pub fn json_array<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a [u8]>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
}

/// Appends the MessagePack header of an array of `n` items.
pub(crate) fn array_header(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Appends to `out` the tick object `encoded` (by [`encode_client`] in `format`) with one
/// more field, `from_seq`, so that a per-session field costs a copy of the shared bytes,
/// never a second serialization. Returns false (and appends nothing) if `encoded` is not
/// an object this function can extend.
pub fn with_from_seq(format: Format, encoded: &[u8], from_seq: u64, out: &mut Vec<u8>) -> bool {
    match format {
        Format::Json => {
            let Some((b'{', rest)) = encoded.split_first() else {
                return false;
            };
            out.extend_from_slice(br#"{"from_seq":"#);
            out.extend_from_slice(from_seq.to_string().as_bytes());
            if rest.first() != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
        Format::MsgPack => {
            let (count, body) = match encoded.split_first() {
                Some((&b, body)) if b & 0xf0 == 0x80 => (usize::from(b & 0x0f), body),
                Some((0xde, [hi, lo, body @ ..])) => {
                    (usize::from(u16::from_be_bytes([*hi, *lo])), body)
                }
                _ => return false,
            };
            let count = count + 1;
            if count < 16 {
                out.push(0x80 | count as u8);
            } else if let Ok(count) = u16::try_from(count) {
                out.push(0xde);
                out.extend_from_slice(&count.to_be_bytes());
            } else {
                return false;
            }
            out.extend_from_slice(b"\xa8from_seq");
            rmp::encode::write_uint(out, from_seq).expect("writing to a Vec cannot fail");
            out.extend_from_slice(body);
        }
    }
    true
}

/// A field value, borrowed from the tick.
enum Val<'a> {
    U64(u64),
    F64(f64),
    Str(&'a str),
    Depth(&'a Depth),
}

impl Serialize for Val<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::U64(v) => s.serialize_u64(*v),
            Val::F64(v) => s.serialize_f64(*v),
            Val::Str(v) => s.serialize_str(v),
            Val::Depth(d) => d.serialize(s),
        }
    }
}

/// Calls `f` for each field of `tick` that `mode` selects, in wire order.
fn visit<'a, E>(
    t: &'a Tick,
    mode: Mode,
    mut f: impl FnMut(&'static str, Val<'a>) -> Result<(), E>,
) -> Result<(), E> {
    f("symbol", Val::Str(&t.symbol))?;
    f("seq", Val::U64(t.seq))?;
    f("epoch", Val::U64(t.epoch))?;
    f("ts", Val::U64(t.ts))?;
    if let Some(v) = t.last {
        f("last", Val::F64(v))?;
    }
    if mode == Mode::Ltp {
        return Ok(());
    }
    if let Some(v) = t.src_ts {
        f("src_ts", Val::U64(v))?;
    }
    f(
        "kind",
        Val::Str(match t.kind {
            crate::Kind::Equity => "equity",
            crate::Kind::Etf => "etf",
            crate::Kind::Index => "index",
            crate::Kind::Option => "option",
        }),
    )?;
    if let Some(state) = t.state {
        f("state", Val::Str(state.as_str()))?;
    }
    let level1 = [
        ("last_size", t.last_size.map(Val::U64)),
        ("bid", t.bid.map(Val::F64)),
        ("ask", t.ask.map(Val::F64)),
        ("bid_size", t.bid_size.map(Val::U64)),
        ("ask_size", t.ask_size.map(Val::U64)),
        ("volume", t.volume.map(Val::U64)),
        ("open", t.open.map(Val::F64)),
        ("high", t.high.map(Val::F64)),
        ("low", t.low.map(Val::F64)),
        ("prev_close", t.prev_close.map(Val::F64)),
    ];
    for (name, v) in level1 {
        if let Some(v) = v {
            f(name, v)?;
        }
    }
    if let Some(v) = &t.underlying {
        f("underlying", Val::Str(v))?;
    }
    if let Some(v) = &t.expiry {
        f("expiry", Val::Str(v))?;
    }
    if let Some(v) = t.right {
        f("right", Val::Str(if v == Right::Call { "C" } else { "P" }))?;
    }
    let greeks = [
        ("strike", t.strike),
        ("iv", t.iv),
        ("delta", t.delta),
        ("gamma", t.gamma),
        ("theta", t.theta),
        ("vega", t.vega),
    ];
    for (name, v) in greeks {
        if let Some(v) = v {
            f(name, Val::F64(v))?;
        }
    }
    if mode == Mode::Full
        && let Some(d) = &t.depth
    {
        f("depth", Val::Depth(d))?;
    }
    Ok(())
}

struct TickView<'a> {
    tick: &'a Tick,
    mode: Mode,
    tag: Option<&'a str>,
    delayed_ms: Option<u64>,
}

impl Serialize for TickView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut n = usize::from(self.tag.is_some()) + usize::from(self.delayed_ms.is_some());
        visit(self.tick, self.mode, |_, _| {
            n += 1;
            Ok::<(), S::Error>(())
        })?;
        let mut map = s.serialize_map(Some(n))?;
        if let Some(tag) = self.tag {
            map.serialize_entry("type", tag)?;
        }
        visit(self.tick, self.mode, |k, v| map.serialize_entry(k, &v))?;
        if let Some(delayed_ms) = self.delayed_ms {
            map.serialize_entry("delayed_ms", &delayed_ms)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use proptest::prelude::*;

    fn aapl() -> Tick {
        Tick {
            symbol: "AAPL".into(),
            seq: 1_700_000_000_000_001,
            epoch: 1_700_000_000_000_000,
            ts: 1_700_000_000_123_456,
            kind: Kind::Equity,
            last: Some(189.12),
            last_size: Some(100),
            bid: Some(189.11),
            ask: Some(189.13),
            bid_size: Some(300),
            ask_size: Some(200),
            volume: Some(1_234_500),
            depth: Some(Depth {
                bids: vec![(189.11, 300)],
                asks: vec![(189.13, 200)],
            }),
            ..Tick::default()
        }
    }

    #[test]
    fn wire_round_trip() {
        let t = aapl();
        assert_eq!(decode_wire(&encode_wire(&t)).unwrap(), t);
    }

    #[test]
    fn ltp_json_golden() {
        let t = aapl();
        let json = encode_client(&t, Format::Json, Mode::Ltp, None);
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"symbol":"AAPL","seq":1700000000000001,"epoch":1700000000000000,"ts":1700000000123456,"last":189.12}"#
        );
    }

    #[test]
    fn a_delayed_tick_carries_delayed_ms_in_every_mode() {
        let t = aapl();
        let json = encode_client_delayed(&t, Format::Json, Mode::Ltp, None, Some(900_000));
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"symbol":"AAPL","seq":1700000000000001,"epoch":1700000000000000,"ts":1700000000123456,"last":189.12,"delayed_ms":900000}"#
        );
        for mode in [Mode::Quote, Mode::Full] {
            let bytes =
                encode_client_delayed(&t, Format::MsgPack, mode, Some("snapshot"), Some(60_000));
            let v: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(
                (v["delayed_ms"].as_u64(), v["type"].as_str()),
                (Some(60_000), Some("snapshot"))
            );
        }
    }

    #[test]
    fn ltp_msgpack_golden() {
        let t = Tick {
            symbol: "A".into(),
            seq: 2,
            epoch: 1,
            ts: 3,
            last: Some(1.5),
            ..Tick::default()
        };
        let bytes = encode_client(&t, Format::MsgPack, Mode::Ltp, None);
        let mut want =
            b"\x85\xa6symbol\xa1A\xa3seq\x02\xa5epoch\x01\xa2ts\x03\xa4last\xcb".to_vec();
        want.extend_from_slice(&1.5f64.to_be_bytes());
        assert_eq!(bytes, want);
    }

    #[test]
    fn modes_select_fields() {
        let t = aapl();
        let parse = |m| -> serde_json::Value {
            serde_json::from_slice(&encode_client(&t, Format::Json, m, None)).unwrap()
        };
        let ltp = parse(Mode::Ltp);
        assert!(ltp.get("bid").is_none() && ltp.get("kind").is_none());
        let quote = parse(Mode::Quote);
        assert_eq!(quote["bid"], 189.11);
        assert_eq!(quote["kind"], "equity");
        assert!(quote.get("depth").is_none());
        let full = parse(Mode::Full);
        assert_eq!(full["depth"]["bids"][0][0], 189.11);
        assert!(full.as_object().unwrap().values().all(|v| !v.is_null()));
    }

    #[test]
    fn snapshot_tag_is_inline() {
        let t = aapl();
        for format in [Format::Json, Format::MsgPack] {
            let bytes = encode_client(&t, format, Mode::Quote, Some("snapshot"));
            let v: serde_json::Value = match format {
                Format::Json => serde_json::from_slice(&bytes).unwrap(),
                Format::MsgPack => rmp_serde::from_slice(&bytes).unwrap(),
            };
            assert_eq!(v["type"], "snapshot");
            assert_eq!(v["symbol"], "AAPL");
            assert_eq!(v["last"], 189.12);
        }
    }

    #[test]
    fn ticks_frame_is_valid_in_both_formats() {
        let t = aapl();
        for format in [Format::Json, Format::MsgPack] {
            for n in [0usize, 1, 15, 16, 70_000] {
                let one = encode_client(&t, format, Mode::Ltp, None);
                let parts = vec![one.as_slice(); n];
                let frame = ticks_frame(format, parts.iter().copied());
                let v: serde_json::Value = match format {
                    Format::Json => serde_json::from_slice(&frame).unwrap(),
                    Format::MsgPack => rmp_serde::from_slice(&frame).unwrap(),
                };
                assert_eq!(v["type"], "ticks");
                assert_eq!(v["ticks"].as_array().unwrap().len(), n);
            }
        }
    }

    #[test]
    fn decode_refuses_bad_ticks() {
        let mut t = aapl();
        t.symbol = "md.>".into();
        assert!(matches!(
            decode_wire(&encode_wire(&t)),
            Err(CodecError::Symbol { .. })
        ));
        let mut t = aapl();
        t.seq = 1 << 53;
        assert!(matches!(
            decode_wire(&encode_wire(&t)),
            Err(CodecError::Unsafe { field: "seq", .. })
        ));
        let mut t = aapl();
        t.epoch = 1 << 53;
        assert!(matches!(
            decode_wire(&encode_wire(&t)),
            Err(CodecError::Unsafe { field: "epoch", .. })
        ));
        let mut t = aapl();
        t.ts = u64::MAX;
        assert!(matches!(
            decode_wire(&encode_wire(&t)),
            Err(CodecError::Unsafe { field: "ts", .. })
        ));
        // Just below 2^53 each is taken.
        let mut t = aapl();
        (t.seq, t.epoch, t.ts) = (MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, MAX_SAFE_INTEGER);
        assert_eq!(decode_wire(&encode_wire(&t)).unwrap(), t);
        let mut t = aapl();
        t.bid = Some(f64::NAN);
        assert!(matches!(
            decode_wire(&encode_wire(&t)),
            Err(CodecError::NotFinite("bid"))
        ));
        let mut t = aapl();
        t.depth = Some(Depth {
            bids: vec![(189.11, 300)],
            asks: vec![(f64::INFINITY, 200)],
        });
        assert!(matches!(
            decode_wire(&encode_wire(&t)),
            Err(CodecError::NotFinite("depth"))
        ));
        let mut t = aapl();
        t.src_ts = Some(u64::MAX);
        assert!(matches!(
            decode_wire(&encode_wire(&t)),
            Err(CodecError::Unsafe {
                field: "src_ts",
                ..
            })
        ));
        let mut deep = b"\x81\xa1z".to_vec();
        deep.extend(std::iter::repeat_n(0x91, 3000));
        deep.push(0xc0);
        assert!(matches!(
            decode_wire(&deep),
            Err(CodecError::Malformed(crate::nesting::NestingError::TooDeep))
        ));
        // Found by the wire_tick fuzz target: a NaN depth price passed the check.
        for price in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut t = aapl();
            t.depth = Some(Depth {
                bids: vec![(189.11, 300)],
                asks: vec![(189.13, 200), (price, 100)],
            });
            assert!(
                matches!(
                    decode_wire(&encode_wire(&t)),
                    Err(CodecError::NotFinite("depth"))
                ),
                "depth price {price}"
            );
        }
        assert!(matches!(
            decode_wire(b"\xc1"),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode_wire(&vec![0u8; MAX_WIRE_TICK + 1]),
            Err(CodecError::TooLarge(_))
        ));
    }

    #[test]
    fn a_nan_depth_price_is_refused() {
        // Found by the wire_tick fuzz target (reduced): {"symbol": "A", "seq": 1,
        // "epoch": 1, "ts": 1, "depth": {"bids": [[NaN, 1]], "asks": []}}. Before, it was
        // accepted and reached JSON clients as a `null` price.
        let bytes = b"\x85\xa6symbol\xa1A\xa3seq\x01\xa5epoch\x01\xa2ts\x01\
            \xa5depth\x82\xa4bids\x91\x92\xcb\x7f\xf8\0\0\0\0\0\0\x01\xa4asks\x90";
        assert!(matches!(
            decode_wire(bytes),
            Err(CodecError::NotFinite("depth"))
        ));
    }

    #[test]
    fn an_option_s_underlying_and_expiry_are_checked() {
        // Found by the record fuzz target (reduced): {"symbol": "A", "seq": 1, "epoch": 1,
        // "ts": 1, "expiry": "2026-12-38"}. Before, the wire took it and the recorder wrote
        // it to a file that replay then refused as corrupt.
        let bytes = b"\x85\xa6symbol\xa1A\xa3seq\x01\xa5epoch\x01\xa2ts\x01\
            \xa6expiry\xaa2026-12-38";
        assert!(matches!(decode_wire(bytes), Err(CodecError::Expiry(_))));
        let option = |underlying: &str, expiry: &str| Tick {
            symbol: "AAPL261218C00150000".into(),
            kind: crate::Kind::Option,
            underlying: Some(underlying.into()),
            expiry: Some(expiry.into()),
            ..Tick::default()
        };
        decode_wire(&encode_wire(&option("AAPL", "2026-12-18"))).unwrap();
        for (underlying, expiry) in [
            ("AAPL", "18/12/2026"),
            ("md.>", "2026-12-18"),
            ("", "2026-12-18"),
        ] {
            assert!(
                decode_wire(&encode_wire(&option(underlying, expiry))).is_err(),
                "{underlying} {expiry}"
            );
        }
    }

    #[test]
    fn from_seq_is_added_to_an_encoded_tick_in_both_formats_and_every_mode() {
        let mut t = aapl();
        t.depth = Some(crate::tick::Depth {
            bids: vec![(189.11, 300)],
            asks: vec![(189.13, 200)],
        });
        for mode in [Mode::Ltp, Mode::Quote, Mode::Full] {
            for from in [0, 7, 200, 70_000, t.seq - 5] {
                let mut want = serde_json::to_value(TickView {
                    tick: &t,
                    mode,
                    tag: None,
                    delayed_ms: None,
                })
                .unwrap();
                want["from_seq"] = from.into();
                let mut json = Vec::new();
                let plain = encode_client(&t, Format::Json, mode, None);
                assert!(with_from_seq(Format::Json, &plain, from, &mut json));
                let got: serde_json::Value = serde_json::from_slice(&json).unwrap();
                assert_eq!(got, want, "{mode:?} {from}");
                let mut mp = Vec::new();
                let plain = encode_client(&t, Format::MsgPack, mode, None);
                assert!(with_from_seq(Format::MsgPack, &plain, from, &mut mp));
                let got: serde_json::Value = rmp_serde::from_slice(&mp).unwrap();
                assert_eq!(got, want, "{mode:?} {from}");
            }
        }
        let mut out = Vec::new();
        assert!(!with_from_seq(Format::Json, b"[1]", 3, &mut out));
        assert!(!with_from_seq(Format::MsgPack, b"\x91\x01", 3, &mut out));
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn decode_wire_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_wire(&bytes);
        }

        #[test]
        fn wire_round_trips(seq in 0u64..MAX_SAFE_INTEGER, last in 0.01f64..1e6, vol in any::<u64>()) {
            let t = Tick { symbol: "X".into(), seq, last: Some(last), volume: Some(vol), ..Tick::default() };
            prop_assert_eq!(decode_wire(&encode_wire(&t)).unwrap(), t);
        }
    }
}
