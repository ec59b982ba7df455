//! Order books from order-level messages: every live order by reference number, and per
//! stock its price levels, last trade, volume and trading state, and the print the last
//! message made ([`Books::take_print`]; a message prints at most once).
//!
//! A message that cannot apply (an order reference that does not exist or belongs to
//! another stock, a reference added twice, 0 shares or more shares executed or cancelled
//! than the order holds, a side other than B or S, a time past 24 h) is counted in [`Malformed`] and changes
//! nothing, so one bad message never touches a book it does not name.

use rustc_hash::FxHashMap;
use tickmesh_core::tick::State;

use super::msg::{Body, Directory, Message, Stock};

/// Levels per side that a tick carries and that changes are watched on.
pub const DEPTH: usize = 5;

/// One live order. 12 bytes: a real day holds a few million at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Order {
    locate: u16,
    buy: bool,
    shares: u32,
    price: u32,
}

/// One side's price levels (price, shares), sorted so that the best is last: inserts,
/// fills and cancels happen mostly near the top, where a `Vec` moves few elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Side {
    buy: bool,
    levels: Vec<(u32, u64)>,
}

impl Side {
    fn new(buy: bool) -> Self {
        Side {
            buy,
            levels: Vec::new(),
        }
    }

    /// Sort key: ascending towards the best price.
    #[inline(always)]
    fn key(&self, price: u32) -> u32 {
        if self.buy { price } else { !price }
    }

    #[inline]
    fn find(&self, price: u32) -> Result<usize, usize> {
        let key = self.key(price);
        self.levels
            .binary_search_by_key(&key, |&(p, _)| self.key(p))
    }

    /// Adds shares at `price`; returns the level's rank (0 = best).
    #[inline]
    fn add(&mut self, price: u32, shares: u32) -> usize {
        let i = match self.find(price) {
            Ok(i) => {
                self.levels[i].1 += u64::from(shares);
                i
            }
            Err(i) => {
                self.levels.insert(i, (price, u64::from(shares)));
                i
            }
        };
        self.levels.len() - 1 - i
    }

    /// Takes shares off `price`; returns the level's rank before the change. The order
    /// map only holds orders that are on a level, so the level exists.
    #[inline]
    fn remove(&mut self, price: u32, shares: u32) -> usize {
        let Ok(i) = self.find(price) else {
            return usize::MAX;
        };
        let rank = self.levels.len() - 1 - i;
        let level = &mut self.levels[i].1;
        *level = level.saturating_sub(u64::from(shares));
        if *level == 0 {
            self.levels.remove(i);
        }
        rank
    }

    /// Levels best first.
    pub fn best_first(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.levels.iter().rev().copied()
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

/// Which message printed: what the print's sale conditions say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sale {
    /// `E`, or a printable `C`: an execution of a displayed order.
    Execution,
    /// `P`: an execution of a non-displayed order.
    NonDisplayed,
    /// `Q`: a cross, with its cross type (O opening, C closing, H halt or IPO, I
    /// intraday).
    Cross(u8),
}

/// One print of a book, as the message made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Printed {
    pub price: u32,
    pub shares: u32,
    pub sale: Sale,
}

/// A stock's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    /// The stock's name, padding trimmed.
    pub symbol: String,
    /// The name is a TickMesh symbol (protocol.md, Symbols), so the book can be published.
    pub publishable: bool,
    /// From the directory's ETP flag.
    pub etp: bool,
    pub round_lot: u32,
    pub bids: Side,
    pub asks: Side,
    /// Last print: (price, shares).
    pub last: Option<(u32, u32)>,
    /// Shares printed: executions (C only when printable), non-displayed trades, crosses.
    pub volume: u64,
    /// Trading state from `H`: H, P, Q or T (`b' '` before the first).
    pub trading: u8,
    /// Operational halt from `h`: `b'H'` or `b'T'` (`b' '` before the first).
    pub operational: u8,
    /// The stock's trading state, from `trading`, `operational` and the system event.
    pub state: State,
    /// Nanoseconds since midnight of the last message that changed the book.
    pub ts_ns: u64,
    /// The print of the last message that printed, until [`Books::take_print`] takes it.
    print: Option<Printed>,
    /// A message touched the top levels, last print or volume since
    /// [`Books::take_changed`].
    dirty: bool,
}

impl Book {
    fn new(stock: &[u8; 8]) -> Self {
        let mut book = Book {
            symbol: String::new(),
            publishable: false,
            etp: false,
            round_lot: 0,
            bids: Side::new(true),
            asks: Side::new(false),
            last: None,
            volume: 0,
            trading: b' ',
            operational: b' ',
            state: State::Open,
            ts_ns: 0,
            print: None,
            dirty: false,
        };
        book.name(stock);
        book
    }

    /// Recomputes [`Book::state`] under the system event `system`; true if it changed.
    fn restate(&mut self, system: u8) -> bool {
        let state = state_of(system, self.trading, self.operational);
        std::mem::replace(&mut self.state, state) != state
    }

    fn name(&mut self, stock: &[u8; 8]) {
        self.symbol = super::msg::trimmed(stock).unwrap_or_default().to_owned();
        self.publishable = tickmesh_core::symbol::validate(&self.symbol).is_ok();
    }

    fn side(&mut self, buy: bool) -> &mut Side {
        if buy { &mut self.bids } else { &mut self.asks }
    }

    /// Records a print; returns true (a print always shows on the tick: the volume grows).
    fn print(&mut self, price: u32, shares: u32, sale: Sale) -> bool {
        self.last = Some((price, shares));
        self.volume += u64::from(shares);
        self.print = Some(Printed {
            price,
            shares,
            sale,
        });
        true
    }
}

/// Messages that could not apply, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Malformed {
    /// An order reference that no live order has (or one of another stock).
    pub unknown_ref: u64,
    /// An add or replace whose new reference is already live.
    pub duplicate_ref: u64,
    /// An add, execution, cancel or replace of 0 shares, or more shares executed or
    /// cancelled than the order holds.
    pub bad_shares: u64,
    /// A side other than `B` or `S`.
    pub bad_side: u64,
    /// A timestamp at or past 24 h.
    pub bad_time: u64,
}

impl Malformed {
    pub fn total(&self) -> u64 {
        self.unknown_ref + self.duplicate_ref + self.bad_shares + self.bad_side + self.bad_time
    }
}

/// Why [`Books::apply`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("order reference {0} does not exist for this stock")]
    UnknownRef(u64),
    #[error("order reference {0} is already live")]
    DuplicateRef(u64),
    #[error("order {0}: 0 shares, or more than the order holds")]
    BadShares(u64),
    #[error("side {0:#04x} is neither B nor S")]
    BadSide(u8),
    #[error("timestamp {0} ns is past the end of the day")]
    BadTime(u64),
}

/// Every stock's book, indexed by stock locate, and the orders of the day.
#[derive(Debug, Default)]
pub struct Books {
    orders: FxHashMap<u64, Order>,
    books: Vec<Option<Box<Book>>>,
    /// Stock locates whose book changed since the last [`Books::take_changed`].
    changed: Vec<u16>,
    /// The last system event (`S`): O, S, Q, M, E or C (`b' '` before the first).
    pub system: u8,
    /// Latest MWCB breach (`W`), `b' '` before the first.
    pub mwcb_breached: u8,
    pub malformed: Malformed,
}

/// A stock's trading state from the last system event (`S`), trading action (`H`) and
/// operational halt (`h`): closed after the end of market hours; halted while halted or
/// paused by either; pre-open in a quotation-only period and before market hours; open
/// otherwise (also when no system event came yet: a file that starts mid-day).
pub fn state_of(system: u8, trading: u8, operational: u8) -> State {
    match (system, trading, operational) {
        (b'M' | b'E' | b'C', _, _) => State::Closed,
        (_, b'H' | b'P', _) | (_, _, b'H') => State::Halted,
        (_, b'Q', _) | (b'O' | b'S', _, _) => State::PreOpen,
        _ => State::Open,
    }
}

const DAY_NS: u64 = 86_400 * 1_000_000_000;

impl Books {
    pub fn new() -> Self {
        Books {
            orders: FxHashMap::default(),
            system: b' ',
            mwcb_breached: b' ',
            ..Books::default()
        }
    }

    /// The book of stock locate `locate`, if any message named it.
    pub fn book(&self, locate: u16) -> Option<&Book> {
        self.books.get(usize::from(locate))?.as_deref()
    }

    /// Every book with its locate.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Book)> {
        // Indexed by u16 locates, so at most 65,536 entries, each index a u16.
        let locates = self.books.iter().enumerate();
        locates.filter_map(|(i, b)| Some((u16::try_from(i).ok()?, b.as_deref()?)))
    }

    /// Takes the print of stock `locate`'s last printing message, if not taken yet. Every
    /// print marks its book changed, and a message prints at most once, so a reader that
    /// takes the changes and the prints after every message has each print once, with
    /// the book that shows it (its `last` and `volume`).
    pub fn take_print(&mut self, locate: u16) -> Option<Printed> {
        self.books
            .get_mut(usize::from(locate))?
            .as_deref_mut()?
            .print
            .take()
    }

    /// Live orders.
    pub fn orders(&self) -> usize {
        self.orders.len()
    }

    /// The stocks whose top levels, last print or volume changed since the last call,
    /// each once; `into` is cleared first. Every applied message that touches a level
    /// among the top [`DEPTH`] changes what they show (no message adds or takes 0 shares;
    /// a replace that keeps price and shares is the one exception and marks nothing), and
    /// every print changes the volume, so no snapshot needs comparing.
    pub fn take_changed(&mut self, into: &mut Vec<u16>) {
        into.clear();
        for locate in self.changed.drain(..) {
            if let Some(Some(book)) = self.books.get_mut(usize::from(locate))
                && std::mem::take(&mut book.dirty)
            {
                into.push(locate);
            }
        }
    }

    #[inline(always)]
    fn book_mut(&mut self, locate: u16, stock: Option<Stock<'_>>) -> &mut Book {
        let i = usize::from(locate);
        if self.books.len() <= i {
            self.books.resize_with(i + 1, || None);
        }
        let system = self.system;
        self.books[i].get_or_insert_with(|| {
            let mut book = Book::new(stock.unwrap_or(&[b' '; 8]));
            book.restate(system);
            Box::new(book)
        })
    }

    /// Applies `f` to the book of `locate` (made on first use); when `f` says the change
    /// shows on a tick, marks the book changed at `ts_ns`.
    #[inline(always)]
    fn change(
        &mut self,
        locate: u16,
        stock: Option<Stock<'_>>,
        ts_ns: u64,
        f: impl FnOnce(&mut Book) -> bool,
    ) {
        let book = self.book_mut(locate, stock);
        if f(book) {
            book.ts_ns = ts_ns;
            if !book.dirty {
                book.dirty = true;
                self.changed.push(locate);
            }
        }
    }

    /// Applies one message. A refused message is counted and changes nothing.
    #[inline]
    pub fn apply(&mut self, m: &Message<'_>) -> Result<(), Refused> {
        let result = self.try_apply(m);
        if let Err(e) = result {
            let c = &mut self.malformed;
            *match e {
                Refused::UnknownRef(_) => &mut c.unknown_ref,
                Refused::DuplicateRef(_) => &mut c.duplicate_ref,
                Refused::BadShares(_) => &mut c.bad_shares,
                Refused::BadSide(_) => &mut c.bad_side,
                Refused::BadTime(_) => &mut c.bad_time,
            } += 1;
        }
        result
    }

    #[inline]
    fn try_apply(&mut self, m: &Message<'_>) -> Result<(), Refused> {
        let (locate, ts) = (m.header.locate, m.header.ts_ns);
        if ts >= DAY_NS {
            return Err(Refused::BadTime(ts));
        }
        match m.body {
            Body::AddOrder {
                reference,
                side,
                shares,
                stock,
                price,
                ..
            } => self.add(locate, ts, reference, side, shares, stock, price),
            Body::Executed {
                reference, shares, ..
            } => self.execute(locate, ts, reference, shares, None),
            Body::ExecutedWithPrice {
                reference,
                shares,
                printable,
                price,
                ..
            } => {
                let print = (printable == b'Y').then_some(price);
                self.execute(locate, ts, reference, shares, Some(print))
            }
            Body::Cancel { reference, shares } => self.reduce(locate, ts, reference, Some(shares)),
            Body::Delete { reference } => self.reduce(locate, ts, reference, None),
            Body::Replace {
                original,
                new,
                shares,
                price,
            } => self.replace(locate, ts, original, new, shares, price),
            Body::Trade {
                shares,
                stock,
                price,
                ..
            } => {
                if shares > 0 {
                    self.change(locate, Some(stock), ts, |b| {
                        b.print(price, shares, Sale::NonDisplayed)
                    });
                }
                Ok(())
            }
            Body::CrossTrade {
                shares,
                stock,
                price,
                cross_type,
                ..
            } => {
                if shares > 0 {
                    let shares = u32::try_from(shares).unwrap_or(u32::MAX);
                    self.change(locate, Some(stock), ts, |b| {
                        b.print(price, shares, Sale::Cross(cross_type))
                    });
                }
                Ok(())
            }
            _ => {
                self.reference(locate, ts, &m.body);
                Ok(())
            }
        }
    }

    /// Messages that change no price level: directory, states.
    #[cold]
    fn reference(&mut self, locate: u16, ts: u64, body: &Body<'_>) {
        let system = self.system;
        match *body {
            Body::SystemEvent { event } => {
                // Every stock's state may follow (a handful of these a day).
                self.system = event;
                for (i, book) in self.books.iter_mut().enumerate() {
                    if let Some(book) = book
                        && book.restate(event)
                    {
                        book.ts_ns = ts;
                        if !std::mem::replace(&mut book.dirty, true) {
                            self.changed.push(i as u16);
                        }
                    }
                }
            }
            Body::MwcbStatus { level } => self.mwcb_breached = level,
            Body::StockDirectory(Directory {
                stock,
                round_lot,
                etp_flag,
                ..
            }) => {
                let book = self.book_mut(locate, Some(stock));
                if book.symbol.is_empty() {
                    book.name(stock);
                }
                (book.round_lot, book.etp) = (round_lot, etp_flag == b'Y');
            }
            Body::TradingAction { stock, state, .. } => {
                self.change(locate, Some(stock), ts, |b| {
                    b.trading = state;
                    b.restate(system)
                });
            }
            Body::OperationalHalt { stock, action, .. } => {
                self.change(locate, Some(stock), ts, |b| {
                    b.operational = action;
                    b.restate(system)
                });
            }
            // Reg SHO, participant positions, MWCB levels, IPO, LULD, broken trades,
            // NOII, RPII and DLCR change no book; the feed counts them.
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn add(
        &mut self,
        locate: u16,
        ts: u64,
        reference: u64,
        side: u8,
        shares: u32,
        stock: Stock<'_>,
        price: u32,
    ) -> Result<(), Refused> {
        let buy = match side {
            b'B' => true,
            b'S' => false,
            other => return Err(Refused::BadSide(other)),
        };
        if shares == 0 {
            return Err(Refused::BadShares(reference));
        }
        let order = Order {
            locate,
            buy,
            shares,
            price,
        };
        match self.orders.entry(reference) {
            std::collections::hash_map::Entry::Occupied(_) => {
                return Err(Refused::DuplicateRef(reference));
            }
            std::collections::hash_map::Entry::Vacant(v) => v.insert(order),
        };
        self.change(locate, Some(stock), ts, |b| {
            b.side(buy).add(price, shares) < DEPTH
        });
        Ok(())
    }

    /// Takes `shares` (all of them when `None`) off the live order `reference` of stock
    /// `locate`; returns the order as it was and the shares taken. Its level is the
    /// caller's to change.
    #[inline]
    fn unbook(
        &mut self,
        locate: u16,
        reference: u64,
        shares: Option<u32>,
    ) -> Result<(Order, u32), Refused> {
        let live = match self.orders.get_mut(&reference) {
            Some(o) if o.locate == locate => o,
            _ => return Err(Refused::UnknownRef(reference)),
        };
        let o = *live;
        let shares = shares.unwrap_or(o.shares);
        if shares == 0 || shares > o.shares {
            return Err(Refused::BadShares(reference));
        }
        live.shares -= shares;
        if live.shares == 0 {
            self.orders.remove(&reference);
        }
        Ok((o, shares))
    }

    /// A partial cancel (`Some(shares)`) or a delete (`None`).
    #[inline]
    fn reduce(
        &mut self,
        locate: u16,
        ts: u64,
        reference: u64,
        shares: Option<u32>,
    ) -> Result<(), Refused> {
        let (o, shares) = self.unbook(locate, reference, shares)?;
        self.change(locate, None, ts, |b| {
            b.side(o.buy).remove(o.price, shares) < DEPTH
        });
        Ok(())
    }

    /// An execution: `print` is `None` for `E` (at the order's price), `Some(None)` for a
    /// non-printable `C`, `Some(Some(price))` for a printable one.
    #[inline]
    fn execute(
        &mut self,
        locate: u16,
        ts: u64,
        reference: u64,
        shares: u32,
        print: Option<Option<u32>>,
    ) -> Result<(), Refused> {
        let (o, shares) = self.unbook(locate, reference, Some(shares))?;
        self.change(locate, None, ts, |b| {
            let rank = b.side(o.buy).remove(o.price, shares);
            match print.unwrap_or(Some(o.price)) {
                Some(price) => b.print(price, shares, Sale::Execution),
                None => rank < DEPTH,
            }
        });
        Ok(())
    }

    #[inline]
    fn replace(
        &mut self,
        locate: u16,
        ts: u64,
        original: u64,
        new: u64,
        shares: u32,
        price: u32,
    ) -> Result<(), Refused> {
        if new != original && self.orders.contains_key(&new) {
            return Err(Refused::DuplicateRef(new));
        }
        if shares == 0 {
            return Err(Refused::BadShares(new));
        }
        let (o, _) = self.unbook(locate, original, None)?;
        let order = Order { shares, price, ..o };
        self.orders.insert(new, order);
        self.change(locate, None, ts, |b| {
            let side = b.side(o.buy);
            let old = side.remove(o.price, o.shares);
            let rank = side.add(price, shares);
            (o.price, o.shares) != (price, shares) && old.min(rank) < DEPTH
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::itch::msg::Header;

    fn add(locate: u16, reference: u64, price: u32) -> Message<'static> {
        Message {
            header: Header {
                locate,
                tracking: 0,
                ts_ns: 1,
            },
            body: Body::AddOrder {
                reference,
                side: b'B',
                shares: 100,
                stock: b"ZZZZ    ",
                price,
                attribution: None,
            },
        }
    }

    #[test]
    fn the_highest_stock_locate_has_a_book() {
        let mut books = Books::new();
        books.apply(&add(u16::MAX, 1, 10_000)).unwrap();
        books.apply(&add(0, 2, 20_000)).unwrap();
        let locates: Vec<u16> = books.iter().map(|(l, _)| l).collect();
        assert_eq!(locates, [0, u16::MAX]);
        assert_eq!(books.book(u16::MAX).unwrap().bids.len(), 1);
    }
}
