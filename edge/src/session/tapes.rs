//! A session's `trades` and `bars` subscriptions: which tapes and (symbol, timeframe)
//! bars it holds, real-time or delayed (followed by the edge's real-time tapes and bars,
//! or its delayed ones), and its inbox of prints and bars (made with its first one). Given back
//! to the edge when dropped, so that a session that ends in any way, a panic included,
//! leaves no subscriber behind.

use std::collections::HashMap;
use std::sync::Arc;

use crate::fanout::SessionId;
use crate::state::Edge;
use crate::tape::{Inbox, InboxRx, TapeItem};
use tickmesh_core::Symbol;
use tickmesh_core::bar::Timeframe;

/// Most tape items written in one go.
pub(super) const MAX_ITEMS_PER_WRITE: usize = 256;
/// Room a tape held makes in the session's inbox, beyond `session.tape_queue`: its
/// history, or the prints missed while the edge's link was down, which it reads again.
const TAPE_ROOM: usize = crate::tape::KEEP;
/// Likewise for bars held: the closed bars and the bar in progress.
const BARS_ROOM: usize = crate::bars::KEEP + 1;

pub(super) struct HeldTapes {
    edge: Arc<Edge>,
    id: SessionId,
    /// Tapes held, and whether delayed.
    held: HashMap<Symbol, bool>,
    /// Bars held, with their interval, and whether delayed.
    bars: HashMap<(Symbol, Timeframe), (u32, bool)>,
    inbox: Option<(Inbox, InboxRx)>,
}

impl HeldTapes {
    pub(super) fn new(edge: Arc<Edge>, id: SessionId) -> Self {
        HeldTapes {
            edge,
            id,
            held: HashMap::new(),
            bars: HashMap::new(),
            inbox: None,
        }
    }

    /// Tapes and bars held: each takes a place under `max_symbols`.
    pub(super) fn len(&self) -> usize {
        self.held.len() + self.bars.len()
    }

    /// The symbols of every tape and bars held, and whether delayed (a symbol may come
    /// more than once).
    pub(super) fn all_symbols(&self) -> impl Iterator<Item = (&Symbol, bool)> {
        let tapes = self.held.iter().map(|(s, delayed)| (s, *delayed));
        tapes.chain(self.bars.iter().map(|((s, _), (_, delayed))| (s, *delayed)))
    }

    /// Whether the tape (`tf` none) or bars of `symbol` held are delayed; none if not held.
    pub(super) fn is_delayed(&self, symbol: &Symbol, tf: Option<Timeframe>) -> Option<bool> {
        match tf {
            None => self.held.get(symbol).copied(),
            Some(tf) => self.bars.get(&(symbol.clone(), tf)).map(|(_, d)| *d),
        }
    }

    pub(super) fn holds_bars(&self, symbol: &Symbol, tf: Timeframe) -> bool {
        self.bars.contains_key(&(symbol.clone(), tf))
    }

    /// The (symbol, timeframe) bars held and their intervals, in no order.
    pub(super) fn bars(&self) -> Vec<(Symbol, Timeframe, u32)> {
        let held = self.bars.iter();
        held.map(|((s, tf), (ms, _))| (s.clone(), *tf, *ms))
            .collect()
    }

    /// Subscribes to `symbol`'s `tf` bars, real-time or `delayed` (or changes the
    /// interval of those held on that side; held on the other, they move); true if the
    /// edge starts following them.
    pub(super) fn subscribe_bars(
        &mut self,
        symbol: &Symbol,
        tf: Timeframe,
        history: usize,
        (interval_ms, delayed): (u32, bool),
    ) -> bool {
        if self.is_delayed(symbol, Some(tf)) == Some(!delayed) {
            self.unsubscribe_bars(symbol, tf);
        }
        let inbox = self.inbox();
        let key = (symbol.clone(), tf);
        if self.bars.insert(key, (interval_ms, delayed)).is_none() {
            inbox.allow(BARS_ROOM, true);
        }
        let (id, edge) = (self.id, &self.edge);
        match delayed {
            false => edge
                .bar_feeds
                .subscribe(id, symbol, tf, history, interval_ms, &inbox),
            true => edge
                .delayed_bar_feeds
                .subscribe(id, symbol, tf, history, interval_ms, &inbox),
        }
    }

    /// Gives `symbol`'s `tf` bars back; whether they were held.
    pub(super) fn unsubscribe_bars(&mut self, symbol: &Symbol, tf: Timeframe) -> bool {
        let Some((_, delayed)) = self.bars.remove(&(symbol.clone(), tf)) else {
            return false;
        };
        match delayed {
            false => self.edge.bar_feeds.unsubscribe(self.id, symbol, tf),
            true => self.edge.delayed_bar_feeds.unsubscribe(self.id, symbol, tf),
        };
        self.inbox().allow(BARS_ROOM, false);
        true
    }

    pub(super) fn holds(&self, symbol: &str) -> bool {
        self.held.contains_key(symbol)
    }

    /// The symbols held, in no order.
    pub(super) fn symbols(&self) -> Vec<Symbol> {
        self.held.keys().cloned().collect()
    }

    /// Subscribes to `symbol`'s tape, real-time or `delayed`, with `history` prints first
    /// (held on the other side, it moves); true if the edge starts following it.
    pub(super) fn subscribe(&mut self, symbol: &Symbol, history: usize, delayed: bool) -> bool {
        if self.is_delayed(symbol, None) == Some(!delayed) {
            self.unsubscribe(symbol.as_str());
        }
        let inbox = self.inbox();
        if self.held.insert(symbol.clone(), delayed).is_none() {
            inbox.allow(TAPE_ROOM, true);
        }
        match delayed {
            false => self.edge.tapes.subscribe(self.id, symbol, history, &inbox),
            true => self
                .edge
                .delayed_tapes
                .subscribe(self.id, symbol, history, &inbox),
        }
    }

    /// Gives `symbol`'s tape back; whether it was held.
    pub(super) fn unsubscribe(&mut self, symbol: &str) -> bool {
        let Some(delayed) = self.held.remove(symbol) else {
            return false;
        };
        match delayed {
            false => self.edge.tapes.unsubscribe(self.id, symbol),
            true => self.edge.delayed_tapes.unsubscribe(self.id, symbol),
        };
        self.inbox().allow(TAPE_ROOM, false);
        true
    }

    /// Whether `item` is of a tape or bars the session holds, on the side (real time or
    /// delayed) it holds them now: what was queued before an unsubscribe, or before an
    /// `auth` moved the symbol to the other side, is not written.
    pub(super) fn wants(&self, item: &TapeItem) -> bool {
        let is = |symbol: &str, tf: Option<Timeframe>, delayed: bool| {
            let held = match tf {
                None => self.held.get(symbol),
                Some(tf) => Symbol::parse(symbol)
                    .ok()
                    .and_then(|s| self.bars.get(&(s, tf)).map(|(_, d)| d)),
            };
            held == Some(&delayed)
        };
        match item {
            TapeItem::Trade(t) => is(&t.item.symbol, None, t.is_delayed()),
            TapeItem::History(h) => h
                .first()
                .is_none_or(|t| is(&t.item.symbol, None, t.is_delayed())),
            TapeItem::Bar(b) => is(&b.item.symbol, Some(b.item.tf), b.is_delayed()),
            TapeItem::BarHistory(tf, h) => h
                .first()
                .is_none_or(|b| is(&b.item.symbol, Some(*tf), b.is_delayed())),
        }
    }

    /// The session's inbox, made with its first tape or bars.
    fn inbox(&mut self) -> Inbox {
        let live = self.edge.config.session.tape_queue;
        let (inbox, _) = self.inbox.get_or_insert_with(|| Inbox::new(live));
        inbox.clone()
    }

    /// The session fell a whole queue behind one of its tapes.
    pub(super) fn overflowed(&self) -> bool {
        self.inbox
            .as_ref()
            .is_some_and(|(inbox, _)| inbox.overflowed())
    }

    /// The next items to write, at most [`MAX_ITEMS_PER_WRITE`], waiting for the first;
    /// pending for ever while the session holds no tape.
    pub(super) async fn next(&mut self, out: &mut Vec<TapeItem>) {
        let Some((_, rx)) = &mut self.inbox else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Some(first) => out.push(first),
            // Never: the inbox holds a sender.
            None => return std::future::pending().await,
        }
        while out.len() < MAX_ITEMS_PER_WRITE {
            match rx.try_recv() {
                Some(item) => out.push(item),
                None => break,
            }
        }
    }
}

impl Drop for HeldTapes {
    fn drop(&mut self) {
        let edge = &self.edge;
        for (symbol, delayed) in self.held.drain() {
            match delayed {
                false => edge.tapes.unsubscribe(self.id, symbol.as_str()),
                true => edge.delayed_tapes.unsubscribe(self.id, symbol.as_str()),
            };
        }
        for ((symbol, tf), (_, delayed)) in self.bars.drain() {
            match delayed {
                false => edge.bar_feeds.unsubscribe(self.id, &symbol, tf),
                true => edge.delayed_bar_feeds.unsubscribe(self.id, &symbol, tf),
            };
        }
    }
}
