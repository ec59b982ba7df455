//! The tick path's encoder: writes exactly the bytes of
//! [`tickmesh_core::codec::encode_wire`] (a MessagePack map with string keys, fields in
//! declaration order, absent fields omitted, unsigned integers in their smallest form,
//! floats as float 64), but without serde and without a per-tick allocation: a tick is
//! written straight into a zeroed 16 KiB block that the published `Bytes` share. The tests
//! hold it to `encode_wire` byte for byte.

use bytes::{Bytes, BytesMut};
use tickmesh_core::codec::MAX_WIRE_TICK;
use tickmesh_core::tick::{Depth, Kind, Right, Tick};

/// Ticks are written into blocks of this size; a published tick shares its block.
const BLOCK: usize = 16 * 1024;
/// Ticks whose size bound fits here are written in place (a full option tick with five
/// levels of depth is about 600 bytes); a new block starts when less than this is left.
const FIXED: usize = 2048;

/// Encodes ticks into blocks of a shared buffer.
#[derive(Debug)]
pub struct Encoder {
    /// The unused, zeroed rest of the current block.
    block: BytesMut,
    /// For the rare tick too large to write in place (long depth from a file).
    spill: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            block: BytesMut::new(),
            spill: Vec::new(),
        }
    }

    /// The wire bytes of `tick`.
    pub fn encode(&mut self, tick: &Tick) -> Bytes {
        if size_bound(tick) > FIXED {
            self.spill.clear();
            write_tick(&mut self.spill, tick);
            return Bytes::copy_from_slice(&self.spill);
        }
        if self.block.len() < FIXED {
            self.block = BytesMut::zeroed(BLOCK);
        }
        let mut out = Fixed {
            buf: &mut self.block[..FIXED],
            pos: 0,
        };
        write_tick(&mut out, tick);
        let n = out.pos;
        self.block.split_to(n).freeze()
    }
}

/// Whether `t`, once stamped, encodes within [`MAX_WIRE_TICK`], the largest tick an edge
/// accepts: a larger one would be published only to be refused by every edge. Exact to
/// within the stamp (`seq`, `epoch` and `ts` at their widest, 9 bytes each); only counts
/// bytes, and only for a tick whose quick bound is over the limit.
pub fn fits(t: &Tick) -> bool {
    if size_bound(t) <= MAX_WIRE_TICK {
        return true;
    }
    let mut count = Count(0);
    write_tick(&mut count, t);
    let unstamped = [t.seq, t.epoch, t.ts].map(|v| {
        let mut c = Count(0);
        uint(&mut c, v);
        c.0
    });
    count.0 + 27 - unstamped.iter().sum::<usize>() <= MAX_WIRE_TICK
}

/// A sink that only counts.
struct Count(usize);

impl Sink for Count {
    fn byte(&mut self, _: u8) {
        self.0 += 1;
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
}

/// An upper bound of the encoded size of `t`.
fn size_bound(t: &Tick) -> usize {
    let strings = [&t.underlying, &t.expiry]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum::<usize>();
    let levels = t.depth.as_ref().map_or(0, |d| d.bids.len() + d.asks.len());
    // 27 keys of at most 11 bytes, 27 values of at most 9, headers.
    27 * 20 + 32 + t.symbol.len() + strings + 20 * levels
}

/// Where encoded bytes go.
trait Sink {
    fn byte(&mut self, b: u8);
    fn bytes(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.push(b);
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// A buffer known (by [`size_bound`]) to be large enough.
struct Fixed<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Sink for Fixed<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
}

#[inline(always)]
fn map_len(b: &mut impl Sink, n: usize) {
    if n < 16 {
        b.byte(0x80 | n as u8);
    } else {
        b.byte(0xde);
        b.bytes(&(n as u16).to_be_bytes());
    }
}

#[inline(always)]
fn array_len(b: &mut impl Sink, n: usize) {
    if n < 16 {
        b.byte(0x90 | n as u8);
    } else if n <= usize::from(u16::MAX) {
        b.byte(0xdc);
        b.bytes(&(n as u16).to_be_bytes());
    } else {
        b.byte(0xdd);
        b.bytes(&(n as u32).to_be_bytes());
    }
}

/// A string value of any length.
#[inline(always)]
fn str(b: &mut impl Sink, s: &str) {
    let n = s.len();
    if n < 32 {
        b.byte(0xa0 | n as u8);
    } else if n < 256 {
        b.bytes(&[0xd9, n as u8]);
    } else if n < 65_536 {
        b.byte(0xda);
        b.bytes(&(n as u16).to_be_bytes());
    } else {
        b.byte(0xdb);
        b.bytes(&(n as u32).to_be_bytes());
    }
    b.bytes(s.as_bytes());
}

/// A key: a literal shorter than 32 bytes, so its length is known where it is inlined.
#[inline(always)]
fn key(b: &mut impl Sink, k: &'static str) {
    b.byte(0xa0 | k.len() as u8);
    b.bytes(k.as_bytes());
}

#[inline(always)]
fn uint(b: &mut impl Sink, v: u64) {
    if v < 128 {
        b.byte(v as u8);
    } else if v < 256 {
        b.bytes(&[0xcc, v as u8]);
    } else if v < 65_536 {
        let [x, y] = (v as u16).to_be_bytes();
        b.bytes(&[0xcd, x, y]);
    } else if v <= u64::from(u32::MAX) {
        let [x, y, z, w] = (v as u32).to_be_bytes();
        b.bytes(&[0xce, x, y, z, w]);
    } else {
        b.byte(0xcf);
        b.bytes(&v.to_be_bytes());
    }
}

#[inline(always)]
fn float(b: &mut impl Sink, v: f64) {
    let [x0, x1, x2, x3, x4, x5, x6, x7] = v.to_bits().to_be_bytes();
    b.bytes(&[0xcb, x0, x1, x2, x3, x4, x5, x6, x7]);
}

#[inline(always)]
fn opt_uint(b: &mut impl Sink, k: &'static str, v: Option<u64>) {
    if let Some(v) = v {
        key(b, k);
        uint(b, v);
    }
}

#[inline(always)]
fn opt_float(b: &mut impl Sink, k: &'static str, v: Option<f64>) {
    if let Some(v) = v {
        key(b, k);
        float(b, v);
    }
}

fn depth(b: &mut impl Sink, d: &Depth) {
    map_len(b, 2);
    for (k, side) in [("bids", &d.bids), ("asks", &d.asks)] {
        key(b, k);
        array_len(b, side.len());
        for &(price, size) in side {
            b.byte(0x92);
            float(b, price);
            uint(b, size);
        }
    }
}

fn write_tick(b: &mut impl Sink, t: &Tick) {
    let present = |v: bool| usize::from(v);
    let n = 5
        + [
            t.last,
            t.bid,
            t.ask,
            t.open,
            t.high,
            t.low,
            t.prev_close,
            t.strike,
            t.iv,
            t.delta,
            t.gamma,
            t.theta,
            t.vega,
        ]
        .iter()
        .filter(|v| v.is_some())
        .count()
        + [t.src_ts, t.last_size, t.bid_size, t.ask_size, t.volume]
            .iter()
            .filter(|v| v.is_some())
            .count()
        + present(t.depth.is_some())
        + present(t.underlying.is_some())
        + present(t.expiry.is_some())
        + present(t.right.is_some())
        + present(t.state.is_some());
    map_len(b, n);
    key(b, "symbol");
    str(b, &t.symbol);
    key(b, "seq");
    uint(b, t.seq);
    key(b, "epoch");
    uint(b, t.epoch);
    key(b, "ts");
    uint(b, t.ts);
    opt_uint(b, "src_ts", t.src_ts);
    key(b, "kind");
    match t.kind {
        Kind::Equity => key(b, "equity"),
        Kind::Etf => key(b, "etf"),
        Kind::Index => key(b, "index"),
        Kind::Option => key(b, "option"),
    }
    opt_float(b, "last", t.last);
    opt_uint(b, "last_size", t.last_size);
    opt_float(b, "bid", t.bid);
    opt_float(b, "ask", t.ask);
    opt_uint(b, "bid_size", t.bid_size);
    opt_uint(b, "ask_size", t.ask_size);
    opt_uint(b, "volume", t.volume);
    opt_float(b, "open", t.open);
    opt_float(b, "high", t.high);
    opt_float(b, "low", t.low);
    opt_float(b, "prev_close", t.prev_close);
    if let Some(d) = &t.depth {
        key(b, "depth");
        depth(b, d);
    }
    if let Some(v) = &t.underlying {
        key(b, "underlying");
        str(b, v);
    }
    if let Some(v) = &t.expiry {
        key(b, "expiry");
        str(b, v);
    }
    opt_float(b, "strike", t.strike);
    if let Some(r) = t.right {
        key(b, "right");
        key(b, if r == Right::Call { "C" } else { "P" });
    }
    opt_float(b, "iv", t.iv);
    opt_float(b, "delta", t.delta);
    opt_float(b, "gamma", t.gamma);
    opt_float(b, "theta", t.theta);
    opt_float(b, "vega", t.vega);
    if let Some(state) = t.state {
        key(b, "state");
        key(b, state.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::options::OptionsConfig;
    use crate::sources::session::SessionConfig;
    use crate::sources::sim::{SimParams, Simulator};
    use tickmesh_core::codec::{decode_wire, encode_wire};

    #[test]
    fn fits_is_exact_at_the_edge_s_limit() {
        let mut seen = [false; 2];
        for levels in (1_000..1_300).step_by(7) {
            let t = Tick {
                symbol: "AAPL".into(),
                last: Some(1.5),
                depth: Some(Depth {
                    bids: vec![(189.11, 300); levels / 2],
                    asks: vec![(189.13, 70_000); levels - levels / 2],
                }),
                ..Tick::default()
            };
            let mut stamped = t.clone();
            (stamped.seq, stamped.epoch, stamped.ts) = (1 << 52, 1 << 52, 1 << 52);
            let size = encode_wire(&stamped).len();
            let want = size <= MAX_WIRE_TICK;
            assert_eq!(fits(&t), want, "{levels} levels, {size} bytes");
            seen[usize::from(want)] = true;
        }
        assert_eq!(seen, [true, true], "both sides of the limit were tried");
        assert!(fits(&Tick::default()));
    }

    #[test]
    fn same_bytes_as_the_codec_for_every_kind_of_tick() {
        let session = SessionConfig::default();
        let options = OptionsConfig::default();
        let mut sim = Simulator::new(&SimParams {
            seed: 4,
            ticks_per_sec: 2000.0,
            universe: &[],
            session: &session,
            options: &options,
            depth: 5,
            today: tickmesh_core::date::Date::parse("2026-03-02").unwrap(),
        });
        let mut e = Encoder::new();
        let mut kinds = std::collections::HashSet::new();
        for n in 0..20_000u64 {
            let (_, mut t) = sim.next_tick();
            (t.seq, t.epoch, t.ts) = (1_795_000_000_000_000 + n, 1_795_000_000_000_000, n * 977);
            t.src_ts = (n % 3 == 0).then_some(n * 13);
            kinds.insert(t.kind);
            let bytes = e.encode(&t);
            assert_eq!(&bytes[..], &encode_wire(&t)[..], "{t:?}");
        }
        assert_eq!(kinds.len(), 4);
    }

    #[test]
    fn same_bytes_at_the_format_boundaries() {
        let mut e = Encoder::new();
        for v in [
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX.into(),
            1 << 32,
            u64::MAX,
        ] {
            for symbol in ["A", &"B".repeat(31), &"C".repeat(32), &"D".repeat(64)] {
                // 16 levels fit the fixed buffer; 300 take the spill path.
                for levels in [16, 300] {
                    let t = Tick {
                        symbol: symbol.to_string(),
                        seq: v,
                        volume: Some(v),
                        depth: Some(Depth {
                            bids: vec![(1.5, v); levels],
                            asks: vec![],
                        }),
                        underlying: Some("X".repeat(300)),
                        ..Tick::default()
                    };
                    assert_eq!(&e.encode(&t)[..], &encode_wire(&t)[..]);
                }
            }
        }
        let t = Tick::default();
        assert_eq!(
            decode_wire(&e.encode(&Tick {
                symbol: "A".into(),
                ..t
            }))
            .unwrap()
            .symbol,
            "A"
        );
    }
}
