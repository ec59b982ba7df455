//! A session's `trades` and `bars` subscriptions: which tapes and (symbol, timeframe)
//! bars it holds, and its inbox of prints and bars (made with its first one). Given back
//! to the edge when dropped, so that a session that ends in any way, a panic included,
//! leaves no subscriber behind.

use std::collections::{HashMap, HashSet};
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
    held: HashSet<Symbol>,
    /// Bars held, with their interval.
    bars: HashMap<(Symbol, Timeframe), u32>,
    inbox: Option<(Inbox, InboxRx)>,
}

impl HeldTapes {
    pub(super) fn new(edge: Arc<Edge>, id: SessionId) -> Self {
        HeldTapes {
            edge,
            id,
            held: HashSet::new(),
            bars: HashMap::new(),
            inbox: None,
        }
    }

    /// Tapes and bars held: each takes a place under `max_symbols`.
    pub(super) fn len(&self) -> usize {
        self.held.len() + self.bars.len()
    }

    /// The symbols of every tape and bars held (a symbol may come more than once).
    pub(super) fn all_symbols(&self) -> impl Iterator<Item = &Symbol> {
        self.held.iter().chain(self.bars.keys().map(|(s, _)| s))
    }

    pub(super) fn holds_bars(&self, symbol: &Symbol, tf: Timeframe) -> bool {
        self.bars.contains_key(&(symbol.clone(), tf))
    }

    /// The (symbol, timeframe) bars held and their intervals, in no order.
    pub(super) fn bars(&self) -> Vec<(Symbol, Timeframe, u32)> {
        let held = self.bars.iter();
        held.map(|((s, tf), ms)| (s.clone(), *tf, *ms)).collect()
    }

    /// Subscribes to `symbol`'s `tf` bars (or changes the interval of those held); true if
    /// the edge starts following them.
    pub(super) fn subscribe_bars(
        &mut self,
        symbol: &Symbol,
        tf: Timeframe,
        history: usize,
        interval_ms: u32,
    ) -> bool {
        let inbox = self.inbox();
        if self
            .bars
            .insert((symbol.clone(), tf), interval_ms)
            .is_none()
        {
            inbox.allow(BARS_ROOM, true);
        }
        self.edge
            .bar_feeds
            .subscribe(self.id, symbol, tf, history, interval_ms, &inbox)
    }

    /// Gives `symbol`'s `tf` bars back; whether they were held.
    pub(super) fn unsubscribe_bars(&mut self, symbol: &Symbol, tf: Timeframe) -> bool {
        if self.bars.remove(&(symbol.clone(), tf)).is_none() {
            return false;
        }
        self.edge.bar_feeds.unsubscribe(self.id, symbol, tf);
        self.inbox().allow(BARS_ROOM, false);
        true
    }

    pub(super) fn holds(&self, symbol: &str) -> bool {
        self.held.contains(symbol)
    }

    /// The symbols held, in no order.
    pub(super) fn symbols(&self) -> Vec<Symbol> {
        self.held.iter().cloned().collect()
    }

    /// Subscribes to `symbol`'s tape (not held yet) with `history` prints first; true if
    /// the edge starts following it.
    pub(super) fn subscribe(&mut self, symbol: &Symbol, history: usize) -> bool {
        let inbox = self.inbox();
        if self.held.insert(symbol.clone()) {
            inbox.allow(TAPE_ROOM, true);
        }
        self.edge.tapes.subscribe(self.id, symbol, history, &inbox)
    }

    /// Gives `symbol`'s tape back; whether it was held.
    pub(super) fn unsubscribe(&mut self, symbol: &str) -> bool {
        if !self.held.remove(symbol) {
            return false;
        }
        self.edge.tapes.unsubscribe(self.id, symbol);
        self.inbox().allow(TAPE_ROOM, false);
        true
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
        for symbol in self.held.drain() {
            self.edge.tapes.unsubscribe(self.id, symbol.as_str());
        }
        for ((symbol, tf), _) in self.bars.drain() {
            self.edge.bar_feeds.unsubscribe(self.id, &symbol, tf);
        }
    }
}
