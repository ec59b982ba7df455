//! The fan-out core shared by threads, as the runtime shares it: one `Mutex<Fanout>`,
//! taken once per published tick and once per session drain, with each frame built
//! outside it (as a session does). 64 symbols, 1,024 sessions of 8 symbols each, every
//! tick: one round publishes each symbol once and drains every session, delivering 8,192
//! updates. With T threads, thread t publishes the symbols and drains the sessions whose
//! index is t modulo T; the figure is updates delivered per second, all threads together.
//! What limits it is the one lock: every publish and every drain of every thread waits
//! for it (and on this 2-core box, more than 2 threads only take turns).
//!
//! `cargo bench -p tickmesh-edge --bench fanout_threads`

#![allow(clippy::unwrap_used)] // a bench: a poisoned lock or bad symbol is a failed run

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickmesh_core::codec::ticks_frame;
use tickmesh_core::{Format, Kind, Mode, Symbol, Tick};
use tickmesh_edge::fanout::{Fanout, FanoutConfig, SharedTick, Wake};

const SYMBOLS: usize = 64;
const SESSIONS: u64 = 1024;
const PER_SESSION: usize = 8;
/// Updates one round delivers: each symbol once, to each of its subscribers.
const PER_ROUND: u64 = SESSIONS * PER_SESSION as u64;

struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

fn name(s: usize) -> String {
    format!("S{s:03}")
}

fn tick(symbol: usize, seq: u64) -> Arc<SharedTick> {
    let t = Tick {
        symbol: name(symbol),
        seq,
        epoch: 1,
        ts: 1_795_389_900_123_456 + seq,
        kind: Kind::Equity,
        last: Some(228.51),
        bid: Some(228.5),
        ask: Some(228.52),
        bid_size: Some(1200),
        ask_size: Some(800),
        volume: Some(12_345_600),
        ..Tick::default()
    };
    Arc::new(SharedTick::new(t, 150))
}

fn core() -> Mutex<Fanout<NoWake>> {
    let mut f = Fanout::new(FanoutConfig {
        live_budget_bytes: 64 * 1024 * 1024,
        slow_interval_ms: 250,
        max_ticks_per_frame: 500,
    });
    for id in 0..SESSIONS {
        f.add_session(id, NoWake, PER_SESSION);
        for k in 0..PER_SESSION {
            let s = (id as usize * PER_SESSION + k) % SYMBOLS;
            f.subscribe(id, &Symbol::parse(&name(s)).unwrap(), Mode::Quote, 0);
        }
    }
    for s in 0..SYMBOLS {
        f.offer_snapshot(&name(s), Some(tick(s, 0)));
    }
    for id in 0..SESSIONS {
        f.drain(id, Instant::now());
    }
    Mutex::new(f)
}

/// `rounds` rounds by thread `t` of `threads`: publish its symbols, drain its sessions
/// and build their frames; returns the bytes built.
fn run(f: &Mutex<Fanout<NoWake>>, seq: &AtomicU64, t: usize, threads: usize, rounds: u64) -> usize {
    let mut bytes = 0;
    for _ in 0..rounds {
        for s in (t..SYMBOLS).step_by(threads) {
            let tick = tick(s, seq.fetch_add(1, Ordering::Relaxed));
            f.lock().unwrap().publish(tick);
        }
        for id in (t as u64..SESSIONS).step_by(threads) {
            let drained = f.lock().unwrap().drain(id, Instant::now());
            for frame in drained.frames {
                let out = ticks_frame(
                    Format::Json,
                    frame.iter().map(|(t, m)| &t.encoded(Format::Json, *m)[..]),
                );
                bytes += out.len();
            }
        }
    }
    bytes
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_lock_publish_and_drain");
    g.throughput(Throughput::Elements(PER_ROUND));
    g.measurement_time(Duration::from_secs(4));
    let f = Arc::new(core());
    let seq = Arc::new(AtomicU64::new(1));
    for n in [1usize, 2, 4, 8] {
        g.bench_function(BenchmarkId::new("threads", n), |b| {
            b.iter_custom(|rounds| {
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for t in 0..n {
                        let (f, seq) = (&f, &seq);
                        scope.spawn(move || black_box(run(f, seq, t, n, rounds)));
                    }
                });
                started.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, threads);
criterion_main!(benches);
