//! Faults a test can inject into a running edge, to check that the edge survives them
//! without leaking. Built only with the `fault-injection` feature, which the end-to-end
//! tests turn on; inert until a test arms it from inside the process (no config key, no
//! client message and no environment variable can).

use std::sync::atomic::{AtomicI64, Ordering};

use tickmesh_core::protocol::{ClientMsg, Request};

/// The `ping` id that makes a session panic; `i64::MIN` (no client can be sure to hit it
/// by chance, and none can arm it) while disarmed.
static PANIC_ON_PING_ID: AtomicI64 = AtomicI64::new(i64::MIN);

/// From now on, a session that receives `ping` with this `id` panics.
pub fn panic_on_ping(id: i64) {
    PANIC_ON_PING_ID.store(id, Ordering::Relaxed);
}

/// Called by a session for each request it decoded.
pub(crate) fn on_request(req: &ClientMsg) {
    let armed = PANIC_ON_PING_ID.load(Ordering::Relaxed);
    if armed != i64::MIN && matches!(req.request, Request::Ping) && req.id == Some(armed) {
        panic!("fault injection: ping {armed}");
    }
}
