//! The runtime around the fan-out core: one mutex over [`Fanout`] and the per-symbol
//! NATS pumps, so that starting and stopping a symbol's subscription is ordered with the
//! reference counts that decide it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tickmesh_core::{Mode, Symbol};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::fanout::{
    Drained, Fanout, FanoutConfig, SessionId, SharedTick, Subscribed, TickSink, Wake,
};
use crate::nats::NatsLink;

impl TickSink for Hub {
    fn publish(&self, tick: Arc<SharedTick>) -> bool {
        Hub::publish(self, tick)
    }

    fn restart_pump(self: Arc<Self>, symbol: &Symbol) {
        Hub::restart_pump(&self, symbol);
    }
}

impl Wake for Arc<Notify> {
    fn wake(&self) {
        self.notify_one();
    }
}

#[derive(Debug)]
struct Inner {
    fanout: Fanout<Arc<Notify>>,
    pumps: HashMap<Symbol, AbortHandle>,
}

#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    nats: NatsLink,
    next_id: AtomicU64,
}

impl Hub {
    pub fn new(config: FanoutConfig, nats: NatsLink) -> Arc<Self> {
        Arc::new(Hub {
            inner: Mutex::new(Inner {
                fanout: Fanout::new(config),
                pumps: HashMap::new(),
            }),
            nats,
            next_id: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under this lock is a bug in the core; the state is still consistent
        // enough to serve others, so recover the guard rather than fail every session.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn nats(&self) -> &NatsLink {
        &self.nats
    }

    /// Registers a session that may hold up to `max_symbols`; `notify` is signalled when
    /// it has something to flush.
    pub fn join(&self, notify: Arc<Notify>, max_symbols: u32) -> SessionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .fanout
            .add_session(id, notify, max_symbols as usize);
        id
    }

    pub fn leave(&self, id: SessionId) {
        let mut inner = self.lock();
        let subs = inner.fanout.subscription_count(id);
        metrics::gauge!("tickmesh_edge_subscriptions").decrement(subs as f64);
        for symbol in inner.fanout.remove_session(id) {
            stop_pump(&mut inner, &symbol);
        }
    }

    /// Subscribes `id` to each symbol; returns each symbol's local latest value.
    pub fn subscribe(
        self: &Arc<Self>,
        id: SessionId,
        symbols: &[Symbol],
        mode: Mode,
        interval_ms: u32,
    ) -> Vec<Subscribed> {
        let mut inner = self.lock();
        symbols
            .iter()
            .map(|symbol| self.subscribe_one(&mut inner, id, symbol, mode, interval_ms))
            .collect()
    }

    /// Like [`Hub::subscribe`], but a symbol this edge does not carry yet is first put to
    /// `admit` (with the number of symbols carried), under the same lock, so that an
    /// edge-wide bound holds exactly however many sessions subscribe at once. A refused
    /// symbol is left alone and its refusal returned in its place.
    pub fn subscribe_admitted<E>(
        self: &Arc<Self>,
        id: SessionId,
        symbols: &[Symbol],
        mode: Mode,
        interval_ms: u32,
        mut admit: impl FnMut(&Symbol, usize) -> Result<(), E>,
    ) -> Vec<Result<Subscribed, E>> {
        let mut inner = self.lock();
        symbols
            .iter()
            .map(|symbol| {
                if !inner.pumps.contains_key(symbol) {
                    admit(symbol, inner.pumps.len())?;
                }
                Ok(self.subscribe_one(&mut inner, id, symbol, mode, interval_ms))
            })
            .collect()
    }

    fn subscribe_one(
        self: &Arc<Self>,
        inner: &mut Inner,
        id: SessionId,
        symbol: &Symbol,
        mode: Mode,
        interval_ms: u32,
    ) -> Subscribed {
        let outcome = inner.fanout.subscribe(id, symbol, mode, interval_ms);
        if outcome.new_subscription {
            metrics::gauge!("tickmesh_edge_subscriptions").increment(1.0);
        }
        if outcome.new_interest {
            let pump = self.nats.start_pump(self.sink(), symbol.clone());
            inner.pumps.insert(symbol.clone(), pump);
            metrics::gauge!("tickmesh_edge_symbols").set(inner.pumps.len() as f64);
        }
        outcome
    }

    /// What a pump of this hub delivers to (it does not keep the hub alive).
    fn sink(self: &Arc<Self>) -> Weak<dyn TickSink> {
        let weak: Weak<Hub> = Arc::downgrade(self);
        weak
    }

    /// Replaces the pump of `symbol`, whose subscription failed or ended, if the symbol is
    /// still carried.
    pub fn restart_pump(self: &Arc<Self>, symbol: &Symbol) {
        let mut inner = self.lock();
        if inner.pumps.contains_key(symbol) {
            let pump = self.nats.start_pump(self.sink(), symbol.clone());
            inner.pumps.insert(symbol.clone(), pump);
        }
    }

    /// Unsubscribes; returns the symbols that were subscribed.
    pub fn unsubscribe(&self, id: SessionId, symbols: &[Symbol]) -> Vec<Symbol> {
        let mut inner = self.lock();
        let mut removed = Vec::new();
        for symbol in symbols {
            if !inner.fanout.is_subscribed(id, symbol.as_str()) {
                continue;
            }
            if inner.fanout.unsubscribe(id, symbol.as_str()) {
                stop_pump(&mut inner, symbol);
            }
            removed.push(symbol.clone());
        }
        metrics::gauge!("tickmesh_edge_subscriptions").decrement(removed.len() as f64);
        removed
    }

    pub fn subscriptions(&self, id: SessionId) -> Vec<(Symbol, crate::fanout::Sub)> {
        self.lock().fanout.subscriptions(id)
    }

    pub fn subscription_count(&self, id: SessionId) -> usize {
        self.lock().fanout.subscription_count(id)
    }

    pub fn is_subscribed(&self, id: SessionId, symbol: &str) -> bool {
        self.lock().fanout.is_subscribed(id, symbol)
    }

    /// The snapshot of a new subscription, if it can go out now (see
    /// [`Fanout::take_snapshot`]); otherwise it comes out of a later drain.
    pub fn take_snapshot(
        &self,
        id: SessionId,
        symbol: &str,
        candidate: Option<Arc<SharedTick>>,
    ) -> Option<Arc<SharedTick>> {
        self.lock()
            .fanout
            .take_snapshot(id, symbol, candidate, Instant::now())
    }

    /// Hands a KV read started for [`Subscribed::fetch`] to the core; returns how many
    /// sessions were awaiting it.
    pub fn offer_snapshot(&self, symbol: &str, candidate: Option<Arc<SharedTick>>) -> usize {
        self.lock().fanout.offer_snapshot(symbol, candidate)
    }

    pub fn publish(&self, tick: Arc<SharedTick>) -> bool {
        self.lock().fanout.publish(tick)
    }

    pub fn drain(&self, id: SessionId, now: Instant) -> Drained {
        self.lock().fanout.drain(id, now)
    }

    /// Symbols this edge carries.
    pub fn symbol_count(&self) -> usize {
        self.lock().fanout.symbol_count()
    }
}

fn stop_pump(inner: &mut Inner, symbol: &Symbol) {
    if let Some(pump) = inner.pumps.remove(symbol) {
        pump.abort();
    }
    metrics::gauge!("tickmesh_edge_symbols").set(inner.pumps.len() as f64);
}
