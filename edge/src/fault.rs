//! Faults a test can inject into a running edge, to check that the edge survives them
//! without leaking or freezing. Built only with the `fault-injection` feature, which the end-to-end
//! tests turn on; inert until a test arms it from inside the process (no config key, no
//! client message and no environment variable can).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use tickmesh_core::protocol::{ClientMsg, Request};

/// The `ping` id that makes a session panic; `i64::MIN` (no client can be sure to hit it
/// by chance, and none can arm it) while disarmed.
static PANIC_ON_PING_ID: AtomicI64 = AtomicI64::new(i64::MIN);

/// From now on, a session that receives `ping` with this `id` panics.
pub fn panic_on_ping(id: i64) {
    PANIC_ON_PING_ID.store(id, Ordering::Relaxed);
}

/// The symbol whose NATS subscription its pump unsubscribes once, as if the subscription
/// had been closed under it.
static END_PUMP_OF: Mutex<Option<String>> = Mutex::new(None);
/// Whether `END_PUMP_OF` is set: the per-tick check stays a load while disarmed.
static PUMP_END_ARMED: AtomicBool = AtomicBool::new(false);

/// The pump of `symbol` ends its NATS subscription after its next tick.
pub fn end_pump_of(symbol: &str) {
    *END_PUMP_OF.lock().unwrap_or_else(|e| e.into_inner()) = Some(symbol.to_string());
    PUMP_END_ARMED.store(true, Ordering::Release);
}

/// Called by a pump for each tick; true once for the armed symbol.
pub(crate) fn take_pump_end(symbol: &str) -> bool {
    if !PUMP_END_ARMED.load(Ordering::Acquire) {
        return false;
    }
    let mut armed = END_PUMP_OF.lock().unwrap_or_else(|e| e.into_inner());
    if armed.as_deref() == Some(symbol) {
        *armed = None;
        PUMP_END_ARMED.store(false, Ordering::Release);
        return true;
    }
    false
}

/// The symbol whose next ticks its pump drops, and how many: as if NATS had dropped them
/// on the way to the edge (a slow consumer).
static DROP_TICKS_OF: Mutex<Option<String>> = Mutex::new(None);
static DROPS_LEFT: AtomicU64 = AtomicU64::new(0);

/// The pump of `symbol` drops its next `n` ticks.
pub fn drop_ticks_of(symbol: &str, n: u64) {
    *DROP_TICKS_OF.lock().unwrap_or_else(|e| e.into_inner()) = Some(symbol.to_string());
    DROPS_LEFT.store(n, Ordering::Release);
}

/// Called by a pump for each tick; true for the ticks it must drop.
pub(crate) fn take_tick_drop(symbol: &str) -> bool {
    if DROPS_LEFT.load(Ordering::Acquire) == 0 {
        return false;
    }
    let armed = DROP_TICKS_OF.lock().unwrap_or_else(|e| e.into_inner());
    armed.as_deref() == Some(symbol)
        && DROPS_LEFT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
}

/// How long a followed tape or bars feed waits, its live subscription made, before it
/// reads its history: what is published meanwhile reaches it both ways.
static HISTORY_DELAY_MS: AtomicU64 = AtomicU64::new(0);

/// Followed tapes and bars wait `ms` before each read of their history.
pub fn delay_history(ms: u64) {
    HISTORY_DELAY_MS.store(ms, Ordering::Release);
}

/// Called before each read of a history.
pub(crate) fn history_delay() -> std::time::Duration {
    std::time::Duration::from_millis(HISTORY_DELAY_MS.load(Ordering::Acquire))
}

/// Called by a session for each request it decoded.
pub(crate) fn on_request(req: &ClientMsg) {
    let armed = PANIC_ON_PING_ID.load(Ordering::Relaxed);
    if armed != i64::MIN && matches!(req.request, Request::Ping) && req.id == Some(armed) {
        panic!("fault injection: ping {armed}");
    }
}
