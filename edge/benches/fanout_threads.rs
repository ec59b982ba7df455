//! The fan-out core shared by threads, two ways: one `Mutex<Fanout>` (the runtime before
//! it was sharded), and the runtime's sharded core ([`Runtime`], 2 and 8 shards, each its
//! own `Fanout` behind its own lock). Each lock is taken once per published tick and once per
//! session drain (per shard, for the sharded core), with each frame built outside it (as
//! a session does). 64 symbols, 1,024 sessions of 8 symbols each, every tick: one round
//! publishes each symbol once and drains every session, delivering 8,192 updates. With T
//! threads, thread t publishes the symbols and drains the sessions whose index is t
//! modulo T; the figure is updates delivered per second, all threads together.
//!
//! What limits the one lock is the lock: every publish and every drain of every thread
//! waits for it. The shards wait for one another only when two threads want the same
//! shard at once; past the machine's cores, threads only take turns.
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
use tickmesh_edge::fanout::{
    Drained, Fanout, FanoutConfig, SessionId, SharedTick, TickSink, Upstream, Wake,
};
use tickmesh_edge::runtime::{Member, Runtime};

const SYMBOLS: usize = 64;
const SESSIONS: u64 = 1024;
const PER_SESSION: usize = 8;
/// Updates one round delivers: each symbol once, to each of its subscribers.
const PER_ROUND: u64 = SESSIONS * PER_SESSION as u64;

#[derive(Clone)]
struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

/// No pumps: the bench publishes.
struct NoUpstream;
impl Upstream for NoUpstream {
    type Pump = ();
    fn start_pump(&self, _: std::sync::Weak<dyn TickSink>, _: Symbol) {}
}

/// What the threads share: a core they publish to and drain sessions from.
trait Shared: Sync {
    fn publish(&self, tick: Arc<SharedTick>);
    fn drain(&self, id: SessionId) -> Drained;
}

impl Shared for Mutex<Fanout<NoWake>> {
    fn publish(&self, tick: Arc<SharedTick>) {
        self.lock().unwrap().publish(tick);
    }
    fn drain(&self, id: SessionId) -> Drained {
        self.lock().unwrap().drain(id, Instant::now())
    }
}

/// The runtime and its sessions' places, by id.
struct Sharded(Arc<Runtime<NoUpstream, NoWake>>, Vec<Member<NoWake>>);

impl Shared for Sharded {
    fn publish(&self, tick: Arc<SharedTick>) {
        self.0.publish(tick);
    }
    fn drain(&self, id: SessionId) -> Drained {
        self.0.drain(&self.1[id as usize - 1], Instant::now())
    }
}

fn config() -> FanoutConfig {
    FanoutConfig {
        live_budget_bytes: 64 * 1024 * 1024,
        slow_interval_ms: 250,
        max_ticks_per_frame: 500,
        beats: Default::default(),
    }
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

fn symbol(s: usize) -> Symbol {
    Symbol::parse(&name(s)).unwrap()
}

fn one_lock() -> Mutex<Fanout<NoWake>> {
    let mut f = Fanout::new(config());
    for id in 0..SESSIONS {
        f.add_session(id, NoWake, PER_SESSION);
        for k in 0..PER_SESSION {
            let s = (id as usize * PER_SESSION + k) % SYMBOLS;
            f.subscribe(id, &symbol(s), Mode::Quote, 0);
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

/// The same sessions in the runtime's sharded core; its session ids are its own, from 1.
fn sharded(shards: usize) -> Sharded {
    let r = Runtime::new(config(), shards, NoUpstream);
    let mut members = Vec::new();
    for id in 0..SESSIONS {
        let member = r.join(NoWake, PER_SESSION as u32);
        assert_eq!(member.id(), id + 1);
        let symbols: Vec<Symbol> = (0..PER_SESSION)
            .map(|k| symbol((id as usize * PER_SESSION + k) % SYMBOLS))
            .collect();
        r.subscribe(&member, &symbols, (Mode::Quote, 0), Instant::now());
        members.push(member);
    }
    for s in 0..SYMBOLS {
        r.offer_snapshot(&name(s), Some(tick(s, 0)));
    }
    for member in &members {
        r.drain(member, Instant::now());
    }
    Sharded(r, members)
}

/// `rounds` rounds by thread `t` of `threads`: publish its symbols, drain its sessions
/// and build their frames; returns the bytes built.
fn run(
    f: &impl Shared,
    first_id: SessionId,
    seq: &AtomicU64,
    (t, threads): (usize, usize),
    rounds: u64,
) -> usize {
    let mut bytes = 0;
    for _ in 0..rounds {
        for s in (t..SYMBOLS).step_by(threads) {
            let tick = tick(s, seq.fetch_add(1, Ordering::Relaxed));
            f.publish(tick);
        }
        for id in (t as u64..SESSIONS).step_by(threads) {
            let drained = f.drain(first_id + id);
            for frame in drained.frames {
                let out = ticks_frame(
                    Format::Json,
                    frame
                        .iter()
                        .map(|u| &u.tick.encoded(Format::Json, u.mode)[..]),
                );
                bytes += out.len();
            }
        }
    }
    bytes
}

fn group(c: &mut Criterion, name: &str, f: &impl Shared, first_id: SessionId) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(PER_ROUND));
    g.measurement_time(Duration::from_secs(4));
    let seq = AtomicU64::new(1);
    for n in [1usize, 2, 4, 8] {
        g.bench_function(BenchmarkId::new("threads", n), |b| {
            b.iter_custom(|rounds| {
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for t in 0..n {
                        let seq = &seq;
                        scope.spawn(move || black_box(run(f, first_id, seq, (t, n), rounds)));
                    }
                });
                started.elapsed()
            })
        });
    }
    g.finish();
}

fn threads(c: &mut Criterion) {
    group(c, "one_lock_publish_and_drain", &one_lock(), 0);
    // As the edge runs on this 2-core box (a shard per core), and as on an 8-core one.
    group(c, "sharded_2_publish_and_drain", &sharded(2), 1);
    group(c, "sharded_8_publish_and_drain", &sharded(8), 1);
}

criterion_group!(benches, threads);
criterion_main!(benches);
