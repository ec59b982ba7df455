//! Bars at ingest, on one core: prints folded into the bars of 1,000 symbols × 5
//! timeframes (`fold`: one print updates its symbol's five bars in progress), and the
//! clock's pass (`close_due`) that closes bars and picks the changed bars in progress to
//! send, as a node runs it after each batch. The cost per bar update is the `fold` time
//! per print divided by 5.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickmesh_core::bar::Bar;
use tickmesh_ingest::bars::Bars;

const SYMBOLS: usize = 1_000;
/// A print every 100 µs: 10,000 prints a second across the symbols.
const STEP_US: u64 = 100;
const T0: u64 = 1_699_920_000_000_000;

fn names() -> Vec<String> {
    (0..SYMBOLS).map(|i| format!("S{i:04}")).collect()
}

fn bench(c: &mut Criterion) {
    let names = names();
    let mut g = c.benchmark_group("bars");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fold", |b| {
        let mut bars = Bars::new(250);
        let mut out: Vec<Bar> = Vec::new();
        let mut n = 0u64;
        b.iter(|| {
            let i = (n as usize * 7919) % SYMBOLS;
            let ts = T0 + n * STEP_US;
            let price = 100.0 + (n % 200) as f64 / 100.0;
            bars.on_print(i, &names[i], ts, price, 100, &mut out);
            n += 1;
            // Closed bars go out as they come; keep the vector from growing.
            if out.len() > 1024 {
                out.clear();
            }
            black_box(&out);
        })
    });
    // The clock's pass over 5,000 bars in progress, one symbol in ten changed since the
    // last pass (a 5 ms batch at 20,000 prints a second touches about a hundred).
    g.throughput(Throughput::Elements((SYMBOLS * 5) as u64));
    g.bench_function("close_due", |b| {
        let mut bars = Bars::new(0);
        let mut out: Vec<Bar> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            bars.on_print(i, name, T0, 100.0, 100, &mut out);
        }
        let mut now = T0 + 1_000;
        b.iter(|| {
            for i in (0..SYMBOLS).step_by(10) {
                bars.on_print(i, &names[i], now, 100.5, 100, &mut out);
            }
            bars.close_due(now, &mut out);
            black_box(out.len());
            out.clear();
            now += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
