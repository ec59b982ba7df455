//! The ITCH 5.0 adapter against independent readings of the same bytes: `itchy`'s parser
//! message by message, and a deliberately plain reference (a cursor parser and
//! `BTreeMap` books) for the books.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tickmesh_ingest::sources::itch::book::{Books, DEPTH};
use tickmesh_ingest::sources::itch::day::Day;
use tickmesh_ingest::sources::itch::frames::{self, Frame, FrameError};
use tickmesh_ingest::sources::itch::generate::{GenParams, generate};
use tickmesh_ingest::sources::itch::msg::{Body, TYPES, decode};
use tickmesh_ingest::sources::itch::{ItchConfig, price, spawn, tick_of};
use tickmesh_ingest::sources::replay::ReplayStats;
use tickmesh_ingest::sources::universe::default_universe;

fn day_bytes(seed: u64, events: usize) -> Vec<u8> {
    let universe = default_universe();
    generate(&GenParams {
        seed,
        universe: &universe,
        events,
    })
}

/// Feeds `bytes` to a [`Day`] the way the feed does; returns the day and the offsets
/// of the frames it could not use.
fn run(bytes: &[u8]) -> (Day, Vec<(u64, String)>) {
    let mut day = Day::new();
    let mut bad = Vec::new();
    let mut on = |offset: u64, f: Frame<'_>| {
        if let Err(e) = day.on_frame(f) {
            bad.push((offset, e.to_string()));
        }
        ControlFlow::Continue(())
    };
    let _ = frames::scan(bytes, 0, true, &mut on);
    (day, bad)
}

/// The frames of a well-formed file: (offset, message bytes without the prefix).
fn split(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 2 <= bytes.len() {
        let len = usize::from(u16::from_be_bytes([bytes[pos], bytes[pos + 1]]));
        out.push((pos, &bytes[pos + 2..pos + 2 + len]));
        pos += 2 + len;
    }
    out
}

#[test]
fn a_generated_day_has_every_message_type_in_time_order() {
    let bytes = day_bytes(7, 20_000);
    let (day, bad) = run(&bytes);
    assert!(bad.is_empty(), "{bad:?}");
    for t in TYPES {
        assert!(day.counts.of(t) > 0, "no {:?} message", char::from(t));
    }
    let mut last = 0;
    for (_, m) in split(&bytes) {
        let ts = decode(m).unwrap().header.ts_ns;
        assert!(ts >= last, "time goes back at {ts}");
        last = ts;
    }
    assert_eq!(
        day_bytes(7, 20_000),
        bytes,
        "the same seed writes the same day"
    );
    assert_ne!(day_bytes(8, 20_000), bytes);
    // The system events, in order.
    let events: Vec<u8> = split(&bytes)
        .iter()
        .filter_map(|(_, m)| match decode(m).unwrap().body {
            Body::SystemEvent { event } => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(events, b"OSQMEC");
}

/// The fields `itchy` decodes, against ours, for every message type it knows (it has
/// neither `h` nor `O`).
#[test]
fn the_decoder_agrees_with_itchy_on_every_message() {
    let bytes = day_bytes(3, 5_000);
    let mut checked = 0;
    for (pos, m) in split(&bytes) {
        let ours = decode(m).unwrap();
        if matches!(m[0], b'h' | b'O') {
            continue;
        }
        let framed = &bytes[pos..pos + 2 + m.len()];
        let theirs = itchy::MessageStream::from_reader(framed)
            .next()
            .unwrap_or_else(|| panic!("itchy read nothing at {pos}"))
            .unwrap_or_else(|e| panic!("itchy refused {:?} at {pos}: {e}", char::from(m[0])));
        assert_eq!(theirs.tag, ours.body.kind());
        assert_eq!(theirs.stock_locate, ours.header.locate);
        assert_eq!(theirs.tracking_number, ours.header.tracking);
        assert_eq!(theirs.timestamp, ours.header.ts_ns);
        same_body(&theirs.body, &ours.body);
        checked += 1;
    }
    assert!(checked > 5_000, "{checked}");
}

fn s8(s: &[u8; 8]) -> &str {
    std::str::from_utf8(s).unwrap().trim_end()
}

fn same_body(theirs: &itchy::Body, ours: &Body<'_>) {
    use itchy::Body as T;
    match (theirs, *ours) {
        (
            T::AddOrder(a),
            Body::AddOrder {
                reference,
                side,
                shares,
                stock,
                price,
                attribution,
            },
        ) => {
            assert_eq!(
                (a.reference, a.shares, a.price.raw()),
                (reference, shares, price)
            );
            assert_eq!(a.side == itchy::Side::Buy, side == b'B');
            assert_eq!(a.stock.trim_end(), s8(stock));
            assert_eq!(
                a.mpid.map(|m| m.to_string()),
                attribution.map(|m| String::from_utf8(m.to_vec()).unwrap())
            );
        }
        (
            T::OrderExecuted {
                reference,
                executed,
                match_number,
            },
            Body::Executed {
                reference: r,
                shares,
                match_number: n,
            },
        ) => assert_eq!((*reference, *executed, *match_number), (r, shares, n)),
        (
            T::OrderExecutedWithPrice {
                reference,
                executed,
                match_number,
                printable,
                price,
            },
            Body::ExecutedWithPrice {
                reference: r,
                shares,
                match_number: n,
                printable: p,
                price: px,
            },
        ) => {
            assert_eq!((*reference, *executed, *match_number), (r, shares, n));
            assert_eq!((*printable, price.raw()), (p == b'Y', px));
        }
        (
            T::OrderCancelled {
                reference,
                cancelled,
            },
            Body::Cancel {
                reference: r,
                shares,
            },
        ) => assert_eq!((*reference, *cancelled), (r, shares)),
        (T::DeleteOrder { reference }, Body::Delete { reference: r }) => assert_eq!(*reference, r),
        (
            T::ReplaceOrder(u),
            Body::Replace {
                original,
                new,
                shares,
                price,
            },
        ) => assert_eq!(
            (u.old_reference, u.new_reference, u.shares, u.price.raw()),
            (original, new, shares, price)
        ),
        (
            T::NonCrossTrade(t),
            Body::Trade {
                reference,
                shares,
                stock,
                price,
                match_number,
                ..
            },
        ) => {
            assert_eq!(
                (t.reference, t.shares, t.price.raw(), t.match_number),
                (reference, shares, price, match_number)
            );
            assert_eq!(t.stock.trim_end(), s8(stock));
        }
        (
            T::CrossTrade(q),
            Body::CrossTrade {
                shares,
                stock,
                price,
                match_number,
                ..
            },
        ) => {
            assert_eq!(
                (q.shares, q.cross_price.raw(), q.match_number),
                (shares, price, match_number)
            );
            assert_eq!(q.stock.trim_end(), s8(stock));
        }
        (T::BrokenTrade { match_number }, Body::BrokenTrade { match_number: n }) => {
            assert_eq!(*match_number, n)
        }
        (T::StockDirectory(d), Body::StockDirectory(o)) => {
            assert_eq!(d.stock.trim_end(), s8(o.stock));
            assert_eq!(d.round_lot_size, o.round_lot);
            assert_eq!(d.etp_flag, Some(o.etp_flag == b'Y'));
            assert_eq!(d.etp_leverage_factor, o.etp_leverage);
        }
        (
            T::TradingAction { stock, reason, .. },
            Body::TradingAction {
                stock: s,
                reason: r,
                ..
            },
        ) => {
            assert_eq!(stock.trim_end(), s8(s));
            assert_eq!(reason.as_str(), std::str::from_utf8(&r).unwrap());
        }
        (T::RegShoRestriction { stock, .. }, Body::RegSho { stock: s, .. })
        | (T::LULDAuctionCollar { stock, .. }, Body::LuldCollar { stock: s, .. }) => {
            assert_eq!(stock.trim_end(), s8(s))
        }
        (T::ParticipantPosition(p), Body::ParticipantPosition { mpid, stock, .. }) => {
            assert_eq!(p.mpid.as_str(), std::str::from_utf8(&mpid).unwrap());
            assert_eq!(p.stock.trim_end(), s8(stock));
        }
        (
            T::MwcbDeclineLevel {
                level1,
                level2,
                level3,
            },
            Body::MwcbDecline {
                level1: a,
                level2: b,
                level3: c,
            },
        ) => assert_eq!((level1.raw(), level2.raw(), level3.raw()), (a, b, c)),
        (T::Breach(_), Body::MwcbStatus { .. })
        | (T::SystemEvent { .. }, Body::SystemEvent { .. }) => {}
        (
            T::IpoQuotingPeriod(k),
            Body::IpoQuoting {
                stock,
                release_time,
                price,
                ..
            },
        ) => {
            assert_eq!((k.release_time, k.price.raw()), (release_time, price));
            assert_eq!(k.stock.trim_end(), s8(stock));
        }
        (
            T::Imbalance(i),
            Body::Noii {
                paired,
                imbalance,
                stock,
                far,
                near,
                reference,
                ..
            },
        ) => {
            assert_eq!((i.paired_shares, i.imbalance_shares), (paired, imbalance));
            assert_eq!(
                (
                    i.far_price.raw(),
                    i.near_price.raw(),
                    i.current_ref_price.raw()
                ),
                (far, near, reference)
            );
            assert_eq!(i.stock.trim_end(), s8(stock));
        }
        (T::RetailPriceImprovementIndicator(r), Body::Rpii { stock, .. }) => {
            assert_eq!(r.stock.trim_end(), s8(stock))
        }
        (t, o) => panic!("itchy read {t:?} where we read {o:?}"),
    }
}

/// A stock's book as the reference keeps it.
#[derive(Debug, Default, Clone, PartialEq)]
struct RefBook {
    bids: BTreeMap<u32, u64>,
    asks: BTreeMap<u32, u64>,
    last: Option<(u32, u32)>,
    volume: u64,
    trading: Option<u8>,
    /// Every print, in order: price, shares, sale conditions (docs/itch.md).
    prints: Vec<(u32, u64, Vec<&'static str>)>,
}

impl RefBook {
    fn print(&mut self, price: u32, shares: u64, conditions: Vec<&'static str>) {
        self.last = Some((price, shares as u32));
        self.volume += shares;
        self.prints.push((price, shares, conditions));
    }
}

/// The reference: a cursor over the bytes, fields read in specification order, and
/// `BTreeMap` levels. Only the order-level messages and `H` matter to books.
fn reference_books(bytes: &[u8]) -> HashMap<u16, RefBook> {
    struct Cur<'a>(&'a [u8]);
    impl Cur<'_> {
        fn n(&mut self, k: usize) -> u64 {
            let (head, rest) = self.0.split_at(k);
            self.0 = rest;
            head.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
        }
        fn skip(&mut self, k: usize) {
            self.0 = &self.0[k..];
        }
    }
    let mut books: HashMap<u16, RefBook> = HashMap::new();
    let mut orders: HashMap<u64, (u16, bool, u64, u32)> = HashMap::new();
    let mut c = Cur(bytes);
    while !c.0.is_empty() {
        let len = c.n(2) as usize;
        let mut m = Cur(&c.0[..len]);
        c.skip(len);
        let kind = m.n(1) as u8;
        let locate = m.n(2) as u16;
        m.skip(2 + 6);
        let take = |books: &mut HashMap<u16, RefBook>,
                    orders: &mut HashMap<u64, (u16, bool, u64, u32)>,
                    r: u64,
                    q: Option<u64>|
         -> (u32, u64) {
            let o = orders.get_mut(&r).unwrap();
            let q = q.unwrap_or(o.2);
            o.2 -= q;
            let (buy, price) = (o.1, o.3);
            if o.2 == 0 {
                orders.remove(&r);
            }
            let book = books.get_mut(&locate).unwrap();
            let side = if buy { &mut book.bids } else { &mut book.asks };
            let level = side.get_mut(&price).unwrap();
            *level -= q;
            if *level == 0 {
                side.remove(&price);
            }
            (price, q)
        };
        match kind {
            b'A' | b'F' => {
                let r = m.n(8);
                let buy = m.n(1) as u8 == b'B';
                let q = m.n(4);
                m.skip(8);
                let p = m.n(4) as u32;
                orders.insert(r, (locate, buy, q, p));
                let b = books.entry(locate).or_default();
                *if buy { &mut b.bids } else { &mut b.asks }
                    .entry(p)
                    .or_default() += q;
            }
            b'E' => {
                let r = m.n(8);
                let q = m.n(4);
                let (p, q) = take(&mut books, &mut orders, r, Some(q));
                books.get_mut(&locate).unwrap().print(p, q, vec![]);
            }
            b'C' => {
                let r = m.n(8);
                let q = m.n(4);
                m.skip(8);
                let printable = m.n(1) as u8 == b'Y';
                let p = m.n(4) as u32;
                take(&mut books, &mut orders, r, Some(q));
                if printable {
                    books.get_mut(&locate).unwrap().print(p, q, vec![]);
                }
            }
            b'X' => {
                let r = m.n(8);
                let q = m.n(4);
                take(&mut books, &mut orders, r, Some(q));
            }
            b'D' => {
                let r = m.n(8);
                take(&mut books, &mut orders, r, None);
            }
            b'U' => {
                let (old, new) = (m.n(8), m.n(8));
                let (q, p) = (m.n(4), m.n(4) as u32);
                let buy = orders[&old].1;
                take(&mut books, &mut orders, old, None);
                orders.insert(new, (locate, buy, q, p));
                let b = books.get_mut(&locate).unwrap();
                *if buy { &mut b.bids } else { &mut b.asks }
                    .entry(p)
                    .or_default() += q;
            }
            b'P' => {
                m.skip(8 + 1);
                let q = m.n(4);
                m.skip(8);
                let p = m.n(4) as u32;
                books
                    .entry(locate)
                    .or_default()
                    .print(p, q, vec!["non_displayed"]);
            }
            b'Q' => {
                let q = m.n(8);
                m.skip(8);
                let p = m.n(4) as u32;
                m.skip(8);
                let conditions = match m.n(1) as u8 {
                    b'O' => vec!["cross", "opening"],
                    b'C' => vec!["cross", "closing"],
                    b'H' => vec!["cross", "reopening"],
                    _ => vec!["cross"],
                };
                if q > 0 {
                    books.entry(locate).or_default().print(p, q, conditions);
                }
            }
            b'H' => {
                m.skip(8);
                books.entry(locate).or_default().trading = Some(m.n(1) as u8);
            }
            _ => {}
        }
    }
    books
}

fn assert_books_equal(ours: &Books, reference: &HashMap<u16, RefBook>) {
    let mut compared = 0;
    for (locate, r) in reference {
        let b = ours.book(*locate).unwrap();
        let bids: Vec<(u32, u64)> = r.bids.iter().rev().map(|(&p, &q)| (p, q)).collect();
        let asks: Vec<(u32, u64)> = r.asks.iter().map(|(&p, &q)| (p, q)).collect();
        assert_eq!(
            b.bids.best_first().collect::<Vec<_>>(),
            bids,
            "{} bids",
            b.symbol
        );
        assert_eq!(
            b.asks.best_first().collect::<Vec<_>>(),
            asks,
            "{} asks",
            b.symbol
        );
        assert_eq!((b.last, b.volume), (r.last, r.volume), "{} last", b.symbol);
        assert_eq!(Some(b.trading), r.trading, "{} trading state", b.symbol);
        // And the tick: top of book and depth from the same levels.
        let t = tick_of(b, 1);
        let top = |v: &[(u32, u64)]| -> Vec<(f64, u64)> {
            v.iter().take(DEPTH).map(|&(p, q)| (price(p), q)).collect()
        };
        let depth = t.depth.as_ref().unwrap();
        assert_eq!(depth.bids, top(&bids));
        assert_eq!(depth.asks, top(&asks));
        assert_eq!(t.bid, bids.first().map(|l| price(l.0)));
        assert_eq!(t.ask_size, asks.first().map(|l| l.1));
        assert_eq!(t.volume, Some(r.volume));
        if let (Some(bid), Some(ask)) = (t.bid, t.ask) {
            assert!(bid < ask, "{} crossed: {bid} / {ask}", b.symbol);
        }
        compared += 1;
    }
    assert_eq!(compared, ours.iter().count());
}

#[test]
fn books_equal_an_independent_reading_at_every_stage_of_the_day() {
    let bytes = day_bytes(11, 60_000);
    let frames = split(&bytes);
    // Cut the day at several points (the pre-open, mid-session, the end) and compare.
    for cut in [frames.len() / 10, frames.len() / 2, frames.len()] {
        let end = frames.get(cut).map_or(bytes.len(), |f| f.0);
        let (day, bad) = run(&bytes[..end]);
        assert!(bad.is_empty(), "{bad:?}");
        let reference = reference_books(&bytes[..end]);
        assert_books_equal(&day.books, &reference);
    }
    let (day, _) = run(&bytes);
    let halted = day.books.iter().find(|(l, _)| *l == 3).unwrap().1;
    assert_eq!(halted.trading, b'T', "resumed after the halt");
    assert_eq!(day.books.system, b'C');
    assert!(
        day.books
            .iter()
            .all(|(_, b)| b.volume > 0 && b.last.is_some())
    );
}

#[test]
fn ticks_come_only_when_the_top_of_a_book_or_its_last_print_changes() {
    let bytes = day_bytes(5, 20_000);
    let mut day = Day::new();
    let mut changed = Vec::new();
    type Shown = (
        Option<tickmesh_core::tick::Depth>,
        Option<f64>,
        Option<u64>,
        Option<u64>,
        Option<tickmesh_core::tick::State>,
    );
    let shown =
        |t: tickmesh_core::Tick| -> Shown { (t.depth, t.last, t.last_size, t.volume, t.state) };
    let empty: Shown = (
        Some(Default::default()),
        None,
        None,
        Some(0),
        Some(tickmesh_core::tick::State::PreOpen),
    );
    let mut prev: HashMap<u16, Shown> = HashMap::new();
    let (mut ticks, mut messages) = (0u64, 0u64);
    for (_, m) in split(&bytes) {
        day.on_frame(Ok(decode(m).unwrap())).unwrap();
        messages += 1;
        day.books.take_changed(&mut changed);
        // Every stock whose tick would show something new is reported, and no other.
        for (locate, b) in day.books.iter() {
            let t = shown(tick_of(b, 0));
            let differs = prev.get(&locate).unwrap_or(&empty) != &t;
            assert_eq!(
                changed.contains(&locate),
                differs,
                "{} after a {:?}",
                b.symbol,
                char::from(m[0])
            );
            if differs {
                prev.insert(locate, t);
                ticks += 1;
            }
        }
    }
    assert!(ticks < messages, "{ticks} ticks for {messages} messages");
}

/// Truncation, a flipped type byte, a bad length, an unknown order reference and a
/// length past the end: each counted once, at its offset, and no book but the one the
/// bad message names is different from the clean reading.
#[test]
fn a_corrupted_file_is_survived_with_the_right_counts() {
    let clean = day_bytes(13, 5_000);
    let frames = split(&clean);
    let find = |kind: u8, nth: usize| frames.iter().filter(|f| f.1[0] == kind).nth(nth).unwrap().0;
    let (reference, _) = run(&clean);

    // A flipped type byte (an execution becomes type 'z').
    let mut bytes = clean.clone();
    let at = find(b'E', 10);
    bytes[at + 2] = b'z';
    let (day, bad) = run(&bytes);
    assert_eq!(
        bad,
        vec![(at as u64, "unknown message type 0x7a".to_string())]
    );
    assert_eq!(day.counts.unknown_type, 1);
    assert_eq!(day.counts.messages(), reference.counts.messages() - 1);
    let hit = decode(frames.iter().find(|f| f.0 == at).unwrap().1)
        .unwrap()
        .header
        .locate;
    same_books_but(&day.books, &reference.books, hit);

    // A bad length on a delete (19 → 30): the frame is skipped by its type's length.
    let mut bytes = clean.clone();
    let at = find(b'D', 5);
    bytes[at + 1] = 30;
    let (day, bad) = run(&bytes);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, at as u64);
    assert_eq!(day.counts.bad_length, 1);
    assert_eq!(day.counts.messages(), reference.counts.messages() - 1);

    // An order reference that does not exist.
    let mut bytes = clean.clone();
    let at = find(b'X', 3);
    bytes[at + 13..at + 21].copy_from_slice(&u64::MAX.to_be_bytes());
    let (day, bad) = run(&bytes);
    assert_eq!(
        bad,
        vec![(
            at as u64,
            format!("order reference {} does not exist for this stock", u64::MAX)
        )]
    );
    assert_eq!(day.books.malformed.unknown_ref, 1);

    // The same reference under another stock locate: refused, neither book touched.
    let mut bytes = clean.clone();
    let at = find(b'D', 40);
    let hit = u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]);
    let other: u16 = if hit == 1 { 2 } else { 1 };
    bytes[at + 3..at + 5].copy_from_slice(&other.to_be_bytes());
    let (day, bad) = run(&bytes);
    assert_eq!(bad.len(), 1);
    assert_eq!(day.books.malformed.unknown_ref, 1);
    assert_eq!(day.books.book(other), reference.books.book(other));

    // Truncated mid-message.
    let at = find(b'A', 100);
    let (day, bad) = run(&clean[..at + 20]);
    assert_eq!(
        bad,
        vec![(at as u64, "input ends inside a message".to_string())]
    );
    assert_eq!(day.counts.truncated, 1);

    // The last message's length runs past the end of the file.
    let mut bytes = clean.clone();
    let last = frames.last().unwrap().0;
    bytes[last..last + 2].copy_from_slice(&5000u16.to_be_bytes());
    let (day, bad) = run(&bytes);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, last as u64);
    assert_eq!(day.counts.overrun, 1);
    assert_eq!(day.counts.messages(), reference.counts.messages() - 1);

    // Random damage never panics, and damage to one byte costs a bounded number of
    // messages.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bytes = clean.clone();
        let i = (x as usize) % bytes.len();
        bytes[i] ^= (x >> 32) as u8 | 1;
        let (day, _) = run(&bytes);
        assert!(day.counts.messages() + 3 >= reference.counts.messages());
        let _ = run(&clean[..i]);
    }
}

fn same_books_but(ours: &Books, reference: &Books, except: u16) {
    for (locate, b) in reference.iter() {
        if locate != except {
            assert_eq!(ours.book(locate), Some(b), "{}", b.symbol);
        }
    }
}

#[test]
fn frame_errors_at_the_edges_of_the_input() {
    let run_errs = |b: &[u8]| run(b).1.into_iter().map(|e| e.1).collect::<Vec<_>>();
    assert!(run_errs(&[]).is_empty());
    assert_eq!(run_errs(&[0]), ["input ends inside a message"]);
    assert_eq!(run_errs(&[0, 12]), ["input ends inside a message"]);
    assert_eq!(
        run_errs(&[0, 0]),
        ["message type '\\0' is 0 bytes long; its length says 0"]
    );
    // An unknown type whose length runs past the end.
    assert_eq!(
        run_errs(&[0, 9, b'?', 1]),
        ["length 9 runs past the end of the input"]
    );
    let _ = FrameError::Truncated;
}

/// The reader thread hands every print the books apply to the feed, once and in order,
/// each with the tick that shows it (its `last`, `last_size` and `volume`): price, size
/// and conditions as the independent reading has them, stock by stock.
#[test]
fn every_print_goes_out_in_order_with_the_tick_that_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.itch");
    let universe = default_universe();
    let params = GenParams {
        seed: 17,
        universe: &universe,
        events: 20_000,
    };
    tickmesh_ingest::sources::itch::generate::write_file(&path, &params).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let config = ItchConfig {
        files: vec![path],
        speed: 0.0,
        ..ItchConfig::default()
    };
    let stats = Arc::new(ReplayStats::default());
    let mut rx = spawn(&config, stats.clone());
    let mut sent: HashMap<String, Vec<(f64, u64, Vec<String>)>> = HashMap::new();
    let mut volume: HashMap<String, u64> = HashMap::new();
    let mut ticks = 0;
    while let Some(batch) = rx.blocking_recv() {
        for r in batch {
            ticks += 1;
            let Some(p) = r.print else { continue };
            let t = &r.tick;
            assert_eq!(
                (t.last, t.last_size),
                (Some(p.price), Some(p.size)),
                "{t:?}"
            );
            let v = volume.entry(t.symbol.clone()).or_default();
            *v += p.size;
            assert_eq!(t.volume, Some(*v), "{t:?}");
            sent.entry(t.symbol.clone())
                .or_default()
                .push((p.price, p.size, p.conditions));
        }
    }
    assert_eq!(stats.corrupt.load(Ordering::Relaxed), 0);
    let (day, _) = run(&bytes);
    let reference = reference_books(&bytes);
    let mut all = 0;
    for (locate, r) in &reference {
        let book = day.books.book(*locate).unwrap();
        if !book.publishable {
            continue;
        }
        let want: Vec<(f64, u64, Vec<String>)> = r
            .prints
            .iter()
            .map(|(p, q, c)| (price(*p), *q, c.iter().map(|c| c.to_string()).collect()))
            .collect();
        assert!(want.len() > 10, "{}: {} prints", book.symbol, want.len());
        assert_eq!(
            sent.get(&book.symbol).map_or(&[][..], |v| &v[..]),
            &want[..],
            "{}",
            book.symbol
        );
        all += want.len();
    }
    assert_eq!(sent.values().map(Vec::len).sum::<usize>(), all);
    assert!(all < ticks, "{all} prints in {ticks} ticks");
    // Every kind of print is there: executions, non-displayed trades, each cross.
    let kinds: std::collections::HashSet<Vec<String>> =
        sent.values().flatten().map(|p| p.2.clone()).collect();
    for c in [
        &[][..],
        &["non_displayed"],
        &["cross", "opening"],
        &["cross", "closing"],
        &["cross", "reopening"],
    ] {
        let c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
        assert!(kinds.contains(&c), "no print with conditions {c:?}");
    }
}

#[test]
fn gzip_and_plain_files_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let universe = default_universe();
    let params = GenParams {
        seed: 2,
        universe: &universe,
        events: 3_000,
    };
    let mut counts = Vec::new();
    for name in ["day.itch", "day.itch.gz"] {
        let path = dir.path().join(name);
        let n = tickmesh_ingest::sources::itch::generate::write_file(&path, &params).unwrap();
        let mut day = Day::new();
        let mut on = |_: u64, f: Frame<'_>| {
            day.on_frame(f).unwrap();
            ControlFlow::Continue(())
        };
        frames::read(std::fs::File::open(&path).unwrap(), &mut on).unwrap();
        assert_eq!(day.counts.messages(), n);
        counts.push((n, day.books.iter().map(|(_, b)| b.volume).sum::<u64>()));
    }
    assert_eq!(counts[0], counts[1]);
}
