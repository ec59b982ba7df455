//! ITCH 5.0 on one core: messages per second decoded (`parse`), decoded and booked with
//! change detection (`parse+book`, what the reader thread does per message), and with the
//! ticks of the changed stocks built as well (`parse+book+ticks`). The input is a
//! generated day in memory, so no disk or decompression is measured.

use std::hint::black_box;
use std::ops::ControlFlow;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickmesh_ingest::sources::itch::day::Day;
use tickmesh_ingest::sources::itch::frames::{Frame, scan};
use tickmesh_ingest::sources::itch::generate::{GenParams, generate};
use tickmesh_ingest::sources::itch::tick_of;
use tickmesh_ingest::sources::universe::default_universe;

/// Order events of the generated day (about as many messages).
const EVENTS: usize = 1_000_000;

fn day() -> (Vec<u8>, u64) {
    let universe = default_universe();
    let bytes = generate(&GenParams {
        seed: 1,
        universe: &universe,
        events: EVENTS,
    });
    let mut n = 0u64;
    let _ = scan(&bytes, 0, true, &mut |_, _| {
        n += 1;
        ControlFlow::Continue(())
    });
    (bytes, n)
}

/// Books the day as the reader thread does; `per_message` sees the stocks each message
/// changed. Returns the sum of what it returned.
fn book_day(bytes: &[u8], mut per_message: impl FnMut(&Day, &[u16]) -> usize) -> usize {
    let mut day = Day::new();
    let mut changed = Vec::new();
    let mut sum = 0usize;
    let _ = scan(bytes, 0, true, &mut |_, f: Frame<'_>| {
        if day.on_frame(f).is_ok() {
            day.books.take_changed(&mut changed);
            sum += per_message(&day, &changed);
        }
        ControlFlow::Continue(())
    });
    black_box((sum, day.books.orders())).0
}

fn bench(c: &mut Criterion) {
    let (bytes, messages) = day();
    let mut g = c.benchmark_group("itch");
    g.sample_size(10);
    g.throughput(Throughput::Elements(messages));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            let _ = scan(&bytes, 0, true, &mut |_, f: Frame<'_>| {
                sum = sum.wrapping_add(f.map_or(0, |m| m.header.ts_ns));
                ControlFlow::Continue(())
            });
            black_box(sum)
        })
    });
    g.bench_function("parse+book", |b| {
        b.iter(|| book_day(&bytes, |_, changed| changed.len()))
    });
    g.bench_function("parse+book+ticks", |b| {
        b.iter(|| {
            book_day(&bytes, |day, changed| {
                let books = changed.iter().filter_map(|&l| day.books.book(l));
                books
                    .map(|book| black_box(tick_of(book, 0)).symbol.len())
                    .sum()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
