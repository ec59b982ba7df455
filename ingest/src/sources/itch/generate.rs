//! A synthetic ITCH 5.0 day from the simulator's universe, deterministic from a seed.
//!
//! The day, in feed time (ns since midnight): start of messages (`S O`) at 03:00 with
//! the MWCB levels (`V`), one directory entry (`R`), market-maker position (`L`), Reg SHO
//! state (`Y`) and trading action (`H T`) per stock; start of system hours (`S S`) at
//! 04:00 and the pre-open books; an IPO quoting period (`K`), a DLCR discovery (`O`) and
//! retail interest (`N`) before 09:25; NOII (`I`) for the opening cross from 09:25; start
//! of market hours (`S Q`) at 09:30 with the opening cross (non-printable `C` on both
//! sides, then `Q O`); `events` order events spread over 09:30–16:00 (adds with and
//! without MPID, executions with and without price, partial cancels, deletes, replaces,
//! non-displayed trades); one stock halted at 11:00 (`H H`, `H Q`, LULD collar `J`,
//! halt cross `I`/`Q H`, `H T`); an operational halt and resume (`h`) at 12:00; an MWCB
//! breach (`W`) at 13:00; a broken trade (`B`) at 14:30; NOII for the close from 15:50;
//! end of market hours (`S M`) and the closing cross at 16:00; `S E` at 20:00 and `S C`
//! at 20:05.
//!
//! Books never cross: a new order rests at least one tick on its own side of the last
//! trade price, and executions take the best order of a side (earliest first).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::encode::encode;
use super::msg::{Body, Directory, Header, Message};
use crate::sources::universe::InstrumentSpec;
use tickmesh_core::Kind;

const SEC: u64 = 1_000_000_000;
const fn at(h: u64, m: u64) -> u64 {
    (h * 3600 + m * 60) * SEC
}
/// Live orders per stock the generator keeps at most; past it, an add becomes a delete.
const MAX_ORDERS: usize = 200;
/// Highest starting price, Price(4) ($300,000).
const MAX_PRICE: u32 = 3_000_000_000;
/// Resting orders per stock before the open.
const OPENING_ORDERS: usize = 20;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenParams<'a> {
    pub seed: u64,
    /// Equities and ETFs become stocks (locates 1, 2, …, in order); indices are skipped.
    /// Prices are held to $1–$300,000 and round lots to 1,000,000 shares.
    pub universe: &'a [InstrumentSpec],
    /// Order events in the continuous session. The day is built in memory: about 33
    /// bytes per event.
    pub events: usize,
}

#[derive(Debug, Clone, Copy)]
struct Live {
    reference: u64,
    buy: bool,
    shares: u32,
    price: u32,
}

#[derive(Debug)]
struct Stock {
    locate: u16,
    name: [u8; 8],
    etf: bool,
    /// The last trade price (Price(4)); new orders rest around it.
    mid: u32,
    tick: u32,
    lot: u32,
    orders: Vec<Live>,
}

struct Gen {
    rng: SmallRng,
    out: Vec<u8>,
    ts: u64,
    next_ref: u64,
    next_match: u64,
    tracking: u16,
    stocks: Vec<Stock>,
}

/// The day's bytes, as NASDAQ files carry them (length-prefixed, uncompressed).
pub fn generate(p: &GenParams<'_>) -> Vec<u8> {
    let stocks = p
        .universe
        .iter()
        .filter(|s| s.kind != Kind::Index)
        .take(usize::from(u16::MAX) - 1)
        .zip(1u16..)
        .map(|(s, locate)| {
            let mut name = [b' '; 8];
            for (d, c) in name.iter_mut().zip(s.symbol.bytes()) {
                *d = c;
            }
            Stock {
                locate,
                name,
                etf: s.kind == Kind::Etf,
                // Price(4) in a u32, with room above for the collars and order prices.
                mid: ((s.price * 10_000.0).round() as u32).clamp(10_000, MAX_PRICE),
                tick: ((s.tick_size * 10_000.0).round() as u32).clamp(1, MAX_PRICE / 100),
                lot: u32::try_from(s.lot).unwrap_or(100).clamp(1, 1_000_000),
                orders: Vec::new(),
            }
        })
        .collect();
    let mut g = Gen {
        rng: SmallRng::seed_from_u64(p.seed),
        out: Vec::with_capacity(64 * (p.events + 4096)),
        ts: 0,
        next_ref: 1,
        next_match: 1,
        tracking: 0,
        stocks,
    };
    g.start_of_day();
    g.pre_open();
    g.cross(at(9, 30), b'O', Some(b'Q'));
    g.continuous(p.events);
    g.noii(at(15, 50), b'C');
    g.cross(at(16, 0), b'C', Some(b'M'));
    g.set_time(at(20, 0));
    g.system(b'E');
    g.set_time(at(20, 5));
    g.system(b'C');
    g.out
}

impl Gen {
    fn set_time(&mut self, ts: u64) {
        self.ts = self.ts.max(ts);
    }

    /// Moves the clock forward by up to `max_ns`.
    fn tick_clock(&mut self, max_ns: u64) {
        self.ts += self.rng.random_range(1..=max_ns.max(1));
    }

    fn emit(&mut self, locate: u16, body: Body<'_>) {
        self.tracking = self.tracking.wrapping_add(1);
        let header = Header {
            locate,
            tracking: self.tracking,
            ts_ns: self.ts,
        };
        encode(&Message { header, body }, &mut self.out);
    }

    fn system(&mut self, event: u8) {
        self.emit(0, Body::SystemEvent { event });
    }

    fn start_of_day(&mut self) {
        self.set_time(at(3, 0));
        self.system(b'O');
        let level = |dollars: u64| dollars * 100_000_000;
        self.emit(
            0,
            Body::MwcbDecline {
                level1: level(5_520),
                level2: level(5_130),
                level3: level(4_540),
            },
        );
        for i in 0..self.stocks.len() {
            let (locate, name, etf) = (
                self.stocks[i].locate,
                self.stocks[i].name,
                self.stocks[i].etf,
            );
            let lot = self.stocks[i].lot;
            self.tick_clock(1_000);
            self.emit(locate, Body::StockDirectory(directory(&name, etf, lot)));
            self.emit(
                locate,
                Body::ParticipantPosition {
                    mpid: *b"GSCO",
                    stock: &name,
                    primary: b'Y',
                    mode: b'N',
                    state: b'A',
                },
            );
            self.emit(
                locate,
                Body::RegSho {
                    stock: &name,
                    action: b'0',
                },
            );
            let reason = *b"    ";
            let action = Body::TradingAction {
                stock: &name,
                state: b'T',
                reserved: b' ',
                reason,
            };
            self.emit(locate, action);
        }
    }

    fn pre_open(&mut self) {
        self.set_time(at(4, 0));
        self.system(b'S');
        for i in 0..self.stocks.len() {
            for _ in 0..OPENING_ORDERS {
                self.tick_clock(SEC / 10);
                let buy = self.rng.random_bool(0.5);
                self.add(i, buy);
            }
        }
        self.auction_notices();
        self.noii(at(9, 25), b'O');
    }

    /// IPO quoting period, DLCR price discovery and retail interest, before 09:25.
    fn auction_notices(&mut self) {
        let n = self.stocks.len();
        if n == 0 {
            return;
        }
        let (ipo, dlcr) = (n.saturating_sub(1), n / 2);
        self.set_time(at(9, 0));
        let (locate, name, mid) = (
            self.stocks[ipo].locate,
            self.stocks[ipo].name,
            self.stocks[ipo].mid,
        );
        let release = u32::try_from(at(9, 45) / SEC).unwrap_or(0);
        let quoting = Body::IpoQuoting {
            stock: &name,
            release_time: release,
            qualifier: b'A',
            price: mid,
        };
        self.emit(locate, quoting);
        self.set_time(at(9, 10));
        let (locate, name, mid) = (
            self.stocks[dlcr].locate,
            self.stocks[dlcr].name,
            self.stocks[dlcr].mid,
        );
        let dlcr = Body::Dlcr {
            stock: &name,
            eligible: b'Y',
            min_price: mid - mid / 10,
            max_price: mid + mid / 10,
            near_price: mid,
            near_time: at(9, 10),
            lower_collar: mid - mid / 20,
            upper_collar: mid + mid / 20,
        };
        self.emit(locate, dlcr);
        self.set_time(at(9, 15));
        for i in (0..n).step_by(4) {
            let (locate, name) = (self.stocks[i].locate, self.stocks[i].name);
            let interest = [b'B', b'S', b'A', b'N'][i / 4 % 4];
            self.emit(
                locate,
                Body::Rpii {
                    stock: &name,
                    interest,
                },
            );
        }
    }

    /// One NOII per stock from `start`, a second apart at most.
    fn noii(&mut self, start: u64, cross_type: u8) {
        self.set_time(start);
        for i in 0..self.stocks.len() {
            self.tick_clock(SEC / 20);
            self.noii_one(i, cross_type);
        }
    }

    fn noii_one(&mut self, i: usize, cross_type: u8) {
        let s = &self.stocks[i];
        let (locate, name, mid, lot) = (s.locate, s.name, s.mid, u64::from(s.lot));
        let paired = lot * self.rng.random_range(10..100);
        let imbalance = lot * self.rng.random_range(0..20);
        let direction = match imbalance {
            0 => b'N',
            _ => [b'B', b'S'][usize::from(self.rng.random_bool(0.5))],
        };
        let noii = Body::Noii {
            paired,
            imbalance,
            direction,
            stock: &name,
            far: mid,
            near: mid,
            reference: mid,
            cross_type,
            variation: b'L',
        };
        self.emit(locate, noii);
    }

    /// A cross at `ts` for every stock: the best bid and best ask each fill in part at
    /// the last trade price (non-printable `C`), then the cross print (`Q`).
    fn cross(&mut self, ts: u64, cross_type: u8, event: Option<u8>) {
        self.set_time(ts);
        if let Some(e) = event {
            self.system(e);
        }
        for i in 0..self.stocks.len() {
            self.cross_one(i, cross_type);
        }
    }

    fn cross_one(&mut self, i: usize, cross_type: u8) {
        self.tick_clock(SEC / 1000);
        let mid = self.stocks[i].mid;
        let mut crossed = 0u64;
        for buy in [true, false] {
            if let Some(k) = self.best(i, buy) {
                let o = self.stocks[i].orders[k];
                let shares = (o.shares / 2).max(1);
                self.fill(i, k, shares, Some((b'N', mid)));
                crossed = crossed.max(u64::from(shares));
            }
        }
        let (locate, name) = (self.stocks[i].locate, self.stocks[i].name);
        let match_number = self.next_match();
        let cross = Body::CrossTrade {
            shares: crossed,
            stock: &name,
            price: mid,
            match_number,
            cross_type,
        };
        self.emit(locate, cross);
    }

    fn next_match(&mut self) -> u64 {
        self.next_match += 1;
        self.next_match - 1
    }

    /// Index of the best order of a side of stock `i` (earliest at the best price).
    fn best(&self, i: usize, buy: bool) -> Option<usize> {
        let orders = &self.stocks.get(i)?.orders;
        let better = |a: &Live, b: &Live| match buy {
            true => a.price > b.price,
            false => a.price < b.price,
        };
        let mut best: Option<usize> = None;
        for (k, o) in orders.iter().enumerate() {
            if o.buy == buy && best.is_none_or(|b| better(o, &orders[b])) {
                best = Some(k);
            }
        }
        best
    }

    /// A price 1 to 5 ticks on a side of stock `i`'s last trade, and 1 to 10 round lots.
    fn quote(&mut self, i: usize, buy: bool) -> (u32, u32) {
        let s = &self.stocks[i];
        let away = self.rng.random_range(1..=5u32).saturating_mul(s.tick);
        let price = match buy {
            true => s.mid.saturating_sub(away).max(s.tick),
            false => s.mid.saturating_add(away),
        };
        (price, s.lot * self.rng.random_range(1..=10u32))
    }

    /// A new resting order on stock `i`, 1 to 5 ticks on its side of the last trade.
    fn add(&mut self, i: usize, buy: bool) {
        let (price, shares) = self.quote(i, buy);
        let s = &self.stocks[i];
        let (locate, name) = (s.locate, s.name);
        let reference = self.next_ref;
        self.next_ref += 1;
        let attribution = self.rng.random_bool(0.2).then_some(*b"NITE");
        let add = Body::AddOrder {
            reference,
            side: if buy { b'B' } else { b'S' },
            shares,
            stock: &name,
            price,
            attribution,
        };
        self.emit(locate, add);
        self.stocks[i].orders.push(Live {
            reference,
            buy,
            shares,
            price,
        });
    }

    /// Executes `shares` of order `k` of stock `i`: `E` at its price, or `C` with
    /// (printable, price).
    fn fill(&mut self, i: usize, k: usize, shares: u32, with_price: Option<(u8, u32)>) {
        let o = self.stocks[i].orders[k];
        let locate = self.stocks[i].locate;
        let match_number = self.next_match();
        let body = match with_price {
            None => Body::Executed {
                reference: o.reference,
                shares,
                match_number,
            },
            Some((printable, price)) => Body::ExecutedWithPrice {
                reference: o.reference,
                shares,
                match_number,
                printable,
                price,
            },
        };
        self.emit(locate, body);
        let s = &mut self.stocks[i];
        if printable_price(with_price, o.price).is_some() {
            s.mid = o.price;
        }
        if shares >= o.shares {
            s.orders.swap_remove(k);
        } else {
            s.orders[k].shares -= shares;
        }
    }

    fn continuous(&mut self, events: usize) {
        let (open, close) = (at(9, 30) + SEC, at(16, 0) - SEC);
        let step = (close - open) / (events as u64 + 1);
        let n = self.stocks.len();
        let halted = (n > 2).then_some(2);
        let mut specials = self.specials(n);
        for e in 0..events {
            let ts = open + step * (e as u64 + 1);
            while let Some(&(when, what)) = specials.last()
                && when <= ts
            {
                specials.pop();
                self.set_time(when);
                self.special(what);
            }
            self.set_time(ts);
            if n == 0 {
                continue;
            }
            let i = self.rng.random_range(0..n);
            let in_halt = (at(11, 0)..at(11, 10) + SEC).contains(&ts);
            if in_halt && Some(i) == halted {
                continue;
            }
            self.event(i);
        }
        for (when, what) in specials.into_iter().rev() {
            self.set_time(when);
            self.special(what);
        }
    }

    /// The scheduled events of the session, latest first.
    fn specials(&self, n: usize) -> Vec<(u64, Special)> {
        let mut s = vec![(at(10, 0), Special::RegSho), (at(13, 0), Special::Mwcb)];
        s.push((at(14, 30), Special::Broken));
        if n > 2 {
            s.extend([
                (at(11, 0), Special::Halt(b'H')),
                (at(11, 5), Special::Halt(b'Q')),
                (at(11, 9), Special::Collar),
                (at(11, 10), Special::HaltCross),
                (at(11, 10) + SEC, Special::Halt(b'T')),
            ]);
        }
        if n > 3 {
            s.push((at(12, 0), Special::Operational(b'H')));
            s.push((at(12, 1), Special::Operational(b'T')));
        }
        s.sort_by_key(|x| std::cmp::Reverse(x.0));
        s
    }

    fn special(&mut self, what: Special) {
        let pick = |i: usize, g: &Gen| g.stocks.get(i).map(|s| (s.locate, s.name, s.mid));
        match what {
            Special::RegSho => {
                if let Some((locate, name, _)) = pick(4 % self.stocks.len().max(1), self) {
                    self.emit(
                        locate,
                        Body::RegSho {
                            stock: &name,
                            action: b'1',
                        },
                    );
                }
            }
            Special::Mwcb => self.emit(0, Body::MwcbStatus { level: b'1' }),
            Special::Broken => self.emit(0, Body::BrokenTrade { match_number: 1 }),
            Special::Halt(state) => {
                if let Some((locate, name, _)) = pick(2, self) {
                    let reason = if state == b'T' { *b"    " } else { *b"T1  " };
                    let body = Body::TradingAction {
                        stock: &name,
                        state,
                        reserved: b' ',
                        reason,
                    };
                    self.emit(locate, body);
                }
            }
            Special::Collar => {
                if let Some((locate, name, mid)) = pick(2, self) {
                    let collar = Body::LuldCollar {
                        stock: &name,
                        reference: mid,
                        upper: mid + mid / 20,
                        lower: mid - mid / 20,
                        extension: 1,
                    };
                    self.emit(locate, collar);
                }
            }
            Special::HaltCross => {
                self.noii_one(2, b'H');
                self.cross_one(2, b'H');
            }
            Special::Operational(action) => {
                if let Some((locate, name, _)) = pick(3, self) {
                    let body = Body::OperationalHalt {
                        stock: &name,
                        market: b'Q',
                        action,
                    };
                    self.emit(locate, body);
                }
            }
        }
    }

    /// One random order event on stock `i`.
    fn event(&mut self, i: usize) {
        let live = self.stocks[i].orders.len();
        let roll = self.rng.random_range(0..100u32);
        if live == 0 || (roll < 35 && live < MAX_ORDERS) {
            let buy = self.rng.random_bool(0.5);
            return self.add(i, buy);
        }
        let k = self.rng.random_range(0..live);
        match roll {
            0..35 | 65..80 => self.delete(i, k),
            35..50 => {
                let buy = self.rng.random_bool(0.5);
                let Some(k) = self.best(i, buy) else {
                    return self.add(i, buy);
                };
                let o = self.stocks[i].orders[k];
                let shares = o
                    .shares
                    .min(self.stocks[i].lot * self.rng.random_range(1..=5));
                let with_price = self.rng.random_bool(0.25).then_some((b'Y', o.price));
                self.fill(i, k, shares, with_price);
            }
            50..65 => self.cancel(i, k),
            80..95 => self.replace(i, k),
            _ => self.hidden_trade(i),
        }
    }

    fn delete(&mut self, i: usize, k: usize) {
        let o = self.stocks[i].orders.swap_remove(k);
        let locate = self.stocks[i].locate;
        self.emit(
            locate,
            Body::Delete {
                reference: o.reference,
            },
        );
    }

    fn cancel(&mut self, i: usize, k: usize) {
        let o = self.stocks[i].orders[k];
        if o.shares < 2 {
            return self.delete(i, k);
        }
        let shares = self.rng.random_range(1..o.shares);
        let locate = self.stocks[i].locate;
        self.emit(
            locate,
            Body::Cancel {
                reference: o.reference,
                shares,
            },
        );
        self.stocks[i].orders[k].shares -= shares;
    }

    fn replace(&mut self, i: usize, k: usize) {
        let o = self.stocks[i].orders[k];
        let (price, shares) = self.quote(i, o.buy);
        let locate = self.stocks[i].locate;
        let new = self.next_ref;
        self.next_ref += 1;
        let body = Body::Replace {
            original: o.reference,
            new,
            shares,
            price,
        };
        self.emit(locate, body);
        self.stocks[i].orders[k] = Live {
            reference: new,
            shares,
            price,
            ..o
        };
    }

    /// An execution against a non-displayed order, at the last trade price.
    fn hidden_trade(&mut self, i: usize) {
        let (locate, name, mid, lot) = {
            let s = &self.stocks[i];
            (s.locate, s.name, s.mid, s.lot)
        };
        let reference = self.next_ref;
        self.next_ref += 1;
        let match_number = self.next_match();
        let side = [b'B', b'S'][usize::from(self.rng.random_bool(0.5))];
        let trade = Body::Trade {
            reference,
            side,
            shares: lot * self.rng.random_range(1..=3u32),
            stock: &name,
            price: mid,
            match_number,
        };
        self.emit(locate, trade);
    }
}

/// The price an execution prints at, if it prints.
fn printable_price(with_price: Option<(u8, u32)>, order_price: u32) -> Option<u32> {
    match with_price {
        None => Some(order_price),
        Some((b'Y', p)) => Some(p),
        Some(_) => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Special {
    RegSho,
    Mwcb,
    Broken,
    Halt(u8),
    Collar,
    HaltCross,
    Operational(u8),
}

fn directory(name: &[u8; 8], etf: bool, lot: u32) -> Directory<'_> {
    Directory {
        stock: name,
        market_category: b'Q',
        financial_status: b'N',
        round_lot: lot,
        round_lots_only: b'N',
        classification: if etf { b'Q' } else { b'C' },
        subtype: if etf { *b"E " } else { *b"Z " },
        authenticity: b'P',
        short_sale_threshold: b'N',
        ipo_flag: b'N',
        luld_tier: if etf { b'1' } else { b'2' },
        etp_flag: if etf { b'Y' } else { b'N' },
        etp_leverage: u32::from(etf),
        inverse: b'N',
    }
}

/// Writes a generated day to `path`, gzip-compressed when the name ends in `.gz`.
/// Returns the messages written.
pub fn write_file(path: &std::path::Path, p: &GenParams<'_>) -> std::io::Result<u64> {
    use std::io::Write;
    let day = generate(p);
    let mut messages = 0u64;
    let mut pos = 0usize;
    while let Some(&[hi, lo]) = day.get(pos..).and_then(|r| r.first_chunk::<2>()) {
        pos += 2 + usize::from(u16::from_be_bytes([hi, lo]));
        messages += 1;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        gz.write_all(&day)?;
        gz.finish()?.flush()?;
    } else {
        let mut file = file;
        file.write_all(&day)?;
        file.flush()?;
    }
    Ok(messages)
}
