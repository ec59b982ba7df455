//! The fan-out core without sockets: the cost of one tick published to N subscribers of
//! one symbol (1, 1k, 100k), then every subscriber drained and its `ticks` frame built
//! from the shared encoded bytes. Every-tick subscribers drain after each tick;
//! conflated subscribers (250 ms) drain once their interval is due, which the bench
//! makes true for every tick by advancing the clock it passes in.
//!
//! `cargo bench -p tickmesh-edge --bench fanout`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickmesh_core::codec::ticks_frame;
use tickmesh_core::{Format, Kind, Mode, Symbol, Tick};
use tickmesh_edge::fanout::{Fanout, FanoutConfig, SharedTick, Wake};

struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

fn tick(seq: u64) -> Arc<SharedTick> {
    let t = Tick {
        symbol: "AAPL".into(),
        seq,
        epoch: 1,
        ts: 1_795_389_900_123_456 + seq,
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
        ..Tick::default()
    };
    // A quote tick is about 190 bytes on the wire.
    Arc::new(SharedTick::new(t, 190))
}

fn core(subscribers: u64, interval_ms: u32) -> Fanout<NoWake> {
    let mut f = Fanout::new(FanoutConfig {
        live_budget_bytes: 1024 * 1024,
        slow_interval_ms: 250,
        max_ticks_per_frame: 500,
        beats: Default::default(),
    });
    let aapl = Symbol::parse("AAPL").expect("valid symbol");
    for id in 0..subscribers {
        f.add_session(id, NoWake, 1);
        f.subscribe(id, &aapl, Mode::Quote, interval_ms);
    }
    // Every subscriber has had its snapshot: what follows is the steady state.
    f.offer_snapshot("AAPL", Some(tick(0)));
    for id in 0..subscribers {
        f.drain(id, Instant::now());
    }
    f
}

/// Publishes one tick and drains every session, building each frame.
fn step(f: &mut Fanout<NoWake>, subscribers: u64, seq: u64, now: Instant) -> usize {
    f.publish(tick(seq));
    let mut bytes = 0;
    for id in 0..subscribers {
        for frame in f.drain(id, now).frames {
            let out = ticks_frame(
                Format::Json,
                frame
                    .iter()
                    .map(|u| &u.tick.encoded(Format::Json, u.mode)[..]),
            );
            bytes += out.len();
        }
    }
    bytes
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_and_drain");
    for subscribers in [1u64, 1_000, 100_000] {
        if subscribers >= 100_000 {
            g.sample_size(10);
        }
        g.throughput(Throughput::Elements(subscribers));
        for (name, interval_ms) in [("every_tick", 0u32), ("conflated_250ms", 250)] {
            let mut f = core(subscribers, interval_ms);
            let mut seq = 0;
            let mut now = Instant::now();
            g.bench_function(BenchmarkId::new(name, subscribers), |b| {
                b.iter(|| {
                    seq += 1;
                    now += Duration::from_millis(250);
                    black_box(step(&mut f, subscribers, seq, now))
                })
            });
        }
    }
    g.finish();
}

/// Publishing alone to conflated subscribers that have not flushed since the last tick:
/// the hot-symbol case, where most ticks only replace the latest value.
fn publish_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_conflated_between_flushes");
    for subscribers in [1u64, 1_000, 100_000] {
        let mut f = core(subscribers, 250);
        let mut seq = 0;
        // First tick marks everyone dirty; the following ones find nobody armed.
        f.publish(tick(0));
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter(|| {
                seq += 1;
                black_box(f.publish(tick(seq)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout, publish_only);
criterion_main!(benches);
