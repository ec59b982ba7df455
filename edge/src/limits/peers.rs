//! What one address may cost before its token is checked: connections that have not sent
//! their first request yet ([`PendingHandshakes`]), and failed upgrades ([`AuthThrottle`]).
//! Both key addresses by [`super::ip_key`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ip_key;

/// Connections of each address between the accept and their first request.
#[derive(Debug)]
pub struct PendingHandshakes {
    max_per_ip: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in its address's count, given back on drop.
#[derive(Debug)]
pub struct Pending {
    owner: Arc<PendingHandshakes>,
    key: IpAddr,
}

impl PendingHandshakes {
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(PendingHandshakes {
            max_per_ip,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more pending connection of `ip`; None at the cap. The map holds
    /// one entry per address with a pending connection, so it is bounded by the open
    /// connections.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Pending> {
        let key = ip_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_default();
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(Pending {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// One address's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Failed upgrades per address in fixed windows; an address past `max_failures` in its
/// window is refused until the window ends.
#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    max_tracked: usize,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthThrottle {
    pub fn new(max_failures: u32, window: Duration, max_tracked: usize) -> Self {
        AuthThrottle {
            max_failures,
            window,
            max_tracked,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` is still refused, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.get(&ip_key(ip))?;
        let ends = w.start + self.window;
        (w.failures >= self.max_failures && now < ends).then(|| ends - now)
    }

    /// Counts a failed upgrade of `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let key = ip_key(ip);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !windows.contains_key(&key) && windows.len() >= self.max_tracked {
            let window = self.window;
            windows.retain(|_, w| now.saturating_duration_since(w.start) < window);
            if windows.len() >= self.max_tracked {
                metrics::counter!("tickmesh_edge_auth_throttle_untracked_total").increment(1);
                return;
            }
        }
        let w = windows.entry(key).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(w.start) >= self.window {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// Addresses tracked.
    pub fn tracked(&self) -> usize {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_are_capped_per_address_and_given_back() {
        let p = PendingHandshakes::new(2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let first = p.enter(a).unwrap();
        let _second = p.enter(a).unwrap();
        assert!(p.enter(a).is_none());
        assert!(p.enter(b).is_some(), "another address is not affected");
        drop(first);
        assert!(p.enter(a).is_some());
        // One /64 is one address.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let _x = p.enter(v6("2001:db8::1")).unwrap();
        let _y = p.enter(v6("2001:db8::2")).unwrap();
        assert!(p.enter(v6("2001:db8::ffff:3")).is_none());
        assert!(p.enter(v6("2001:db8:0:1::1")).is_some());
    }

    #[test]
    fn failed_upgrades_block_an_address_for_the_rest_of_its_window() {
        let t = AuthThrottle::new(3, Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let a: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..2 {
            t.failed(a, t0);
        }
        assert_eq!(t.blocked(a, t0), None);
        t.failed(a, t0 + Duration::from_secs(1));
        assert_eq!(
            t.blocked(a, t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(t.blocked([127, 0, 0, 3].into(), t0), None);
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(60)), None);
        // A new window starts from nothing.
        t.failed(a, t0 + Duration::from_secs(61));
        assert_eq!(t.blocked(a, t0 + Duration::from_secs(61)), None);

        // Bounded: a full map forgets ended windows, else leaves new addresses untracked.
        t.failed([10, 0, 0, 1].into(), t0 + Duration::from_secs(61));
        t.failed([10, 0, 0, 2].into(), t0 + Duration::from_secs(62));
        assert_eq!(t.tracked(), 2);
        t.failed([10, 0, 0, 3].into(), t0 + Duration::from_secs(200));
        assert_eq!(t.tracked(), 1);
    }
}
