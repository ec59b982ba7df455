//! The tick codecs: the edge decodes each wire tick once and encodes it once per
//! (format, mode); a `ticks` frame only concatenates those bytes.
//!
//! `cargo bench -p tickmesh-core --bench codec`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickmesh_core::codec::{decode_wire, encode_client, encode_wire, ticks_frame};
use tickmesh_core::tick::Depth;
use tickmesh_core::{Format, Kind, Mode, Tick};

fn quote() -> Tick {
    Tick {
        symbol: "AAPL".into(),
        seq: 1_795_389_847_003_189,
        epoch: 1_795_389_847_000_000,
        ts: 1_795_389_900_123_456,
        kind: Kind::Equity,
        last: Some(228.51),
        last_size: Some(300),
        bid: Some(228.5),
        ask: Some(228.52),
        bid_size: Some(1200),
        ask_size: Some(800),
        volume: Some(12_345_600),
        open: Some(227.1),
        high: Some(229.04),
        low: Some(226.87),
        prev_close: Some(228.5),
        depth: Some(Depth {
            bids: (0..5).map(|i| (228.5 - f64::from(i) * 0.01, 100)).collect(),
            asks: (0..5)
                .map(|i| (228.52 + f64::from(i) * 0.01, 100))
                .collect(),
        }),
        ..Tick::default()
    }
}

fn wire(c: &mut Criterion) {
    let tick = quote();
    let bytes = encode_wire(&tick);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_wire", |b| b.iter(|| encode_wire(black_box(&tick))));
    g.bench_function("decode_wire", |b| {
        b.iter(|| decode_wire(black_box(&bytes)).expect("valid tick"))
    });
    g.finish();
}

fn client(c: &mut Criterion) {
    let tick = quote();
    let mut g = c.benchmark_group("encode_client");
    g.throughput(Throughput::Elements(1));
    for format in [Format::Json, Format::MsgPack] {
        for mode in Mode::ALL {
            let id = BenchmarkId::new(format!("{format:?}"), mode.as_str());
            g.bench_with_input(id, &mode, |b, &mode| {
                b.iter(|| encode_client(black_box(&tick), format, mode, None))
            });
        }
    }
    g.finish();
}

fn frame(c: &mut Criterion) {
    let tick = quote();
    let mut g = c.benchmark_group("ticks_frame");
    for format in [Format::Json, Format::MsgPack] {
        let one = encode_client(&tick, format, Mode::Quote, None);
        for n in [1usize, 10, 100] {
            let parts = vec![one.as_slice(); n];
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(format!("{format:?}"), n), &n, |b, _| {
                b.iter(|| ticks_frame(format, black_box(&parts).iter().copied()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, wire, client, frame);
criterion_main!(benches);
