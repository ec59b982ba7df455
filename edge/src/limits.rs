//! Admission limits (connections per process, per IP and per user), the symbol budgets of
//! an address and a user, and the per-session message rate limit; [`peers`]: what an
//! address may do before its token is checked; [`rates`]: REST requests per address and
//! per user.
//!
//! Per-address counts key an IPv6 address by its /64 ([`ip_key`]): one host commonly holds
//! a whole /64, so counting its addresses one by one would bound nothing.

mod budget;
pub mod peers;
pub mod rates;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::LimitsConfig;

pub use budget::BudgetRefusal;

/// The key an address is counted under: an IPv4 address itself (an IPv4-mapped IPv6
/// address as IPv4), an IPv6 address its /64 prefix.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was not admitted; the HTTP status says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this gateway is full: connect to another")]
    Process,
    #[error("too many connections from this address")]
    Ip,
    #[error("too many sessions for this user")]
    User,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
}

/// Open sessions, counted for admission, and the symbols they hold.
#[derive(Debug, Default)]
pub struct Registry {
    counts: Mutex<Counts>,
    holders: Mutex<budget::Holders>,
}

/// An admitted session's place in the counts and its symbols in the budgets of its address
/// and user, given back on drop (a session that ends in any way, a panic included).
#[derive(Debug)]
pub struct Admission {
    registry: Arc<Registry>,
    /// The address's key ([`ip_key`]).
    ip: IpAddr,
    user: Option<String>,
    held: budget::Held,
}

impl Registry {
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        user: Option<&str>,
        limits: &LimitsConfig,
    ) -> Result<Admission, Refusal> {
        let ip = ip_key(ip);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= limits.max_connections {
            return Err(Refusal::Process);
        }
        if c.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_ip {
            return Err(Refusal::Ip);
        }
        if let Some(user) = user
            && c.per_user.get(user).copied().unwrap_or(0) >= limits.max_sessions_per_user
        {
            return Err(Refusal::User);
        }
        c.total += 1;
        metrics::gauge!("tickmesh_edge_connections").set(c.total as f64);
        *c.per_ip.entry(ip).or_default() += 1;
        if let Some(user) = user {
            *c.per_user.entry(user.to_string()).or_default() += 1;
        }
        Ok(Admission {
            registry: self.clone(),
            ip,
            user: user.map(str::to_owned),
            held: budget::Held::default(),
        })
    }

    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Admission {
    /// Moves the session's user count to `user` (after an in-band token refresh), within
    /// `max_sessions_per_user` like an upgrade: a move that would put `user` over it is
    /// refused and changes nothing.
    pub fn set_user(&mut self, user: Option<&str>, limits: &LimitsConfig) -> Result<(), Refusal> {
        if self.user.as_deref() == user {
            return Ok(());
        }
        self.move_held(user);
        let mut c = self
            .registry
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(user) = user
            && c.per_user.get(user).copied().unwrap_or(0) >= limits.max_sessions_per_user
        {
            return Err(Refusal::User);
        }
        if let Some(old) = self.user.take() {
            decrement(&mut c.per_user, &old);
        }
        if let Some(user) = user {
            *c.per_user.entry(user.to_string()).or_default() += 1;
        }
        self.user = user.map(str::to_owned);
        Ok(())
    }
}

fn decrement<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut c = self
            .registry
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        metrics::gauge!("tickmesh_edge_connections").set(c.total as f64);
        decrement(&mut c.per_ip, &self.ip);
        if let Some(user) = &self.user {
            decrement(&mut c.per_user, user);
        }
        drop(c);
        self.release_all();
    }
}

/// A token bucket: `rate` messages per second, bursts of twice that.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_s: u32, now: Instant) -> Self {
        let rate = f64::from(rate_per_s.max(1));
        TokenBucket {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last: now,
        }
    }

    /// `per_min` tokens a minute, bursts of `burst`, starting full.
    pub fn per_minute(per_min: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(per_min.max(1)) / 60.0,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Changes the rate (a new tier), keeping the tokens it has.
    pub fn set_rate(&mut self, rate_per_s: u32) {
        self.rate = f64::from(rate_per_s.max(1));
        self.burst = self.rate * 2.0;
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(1, now)
    }

    /// Takes `n` tokens if there are that many (never, if `n` is over the burst).
    pub fn take_n(&mut self, n: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now`: it holds nothing of its past.
    pub fn refilled(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// The most tokens it can ever hold.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// How long until `n` tokens are there, ms (rounded up; 0 if they are).
    pub fn wait_ms(&self, n: u32) -> u64 {
        let missing = (f64::from(n) - self.tokens).max(0.0);
        (missing * 1000.0 / self.rate).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn admission_counts_and_gives_back() {
        let r = Arc::new(Registry::default());
        let limits = LimitsConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            max_sessions_per_user: 1,
            ..LimitsConfig::default()
        };
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = r.admit(a, Some("u"), &limits).unwrap();
        assert_eq!(r.admit(b, Some("u"), &limits).unwrap_err(), Refusal::User);
        let _second = r.admit(a, None, &limits).unwrap();
        assert_eq!(r.admit(a, None, &limits).unwrap_err(), Refusal::Ip);
        let _third = r.admit(b, None, &limits).unwrap();
        assert_eq!(r.admit(b, None, &limits).unwrap_err(), Refusal::Process);
        drop(first);
        assert_eq!(r.total(), 2);
        r.admit(b, Some("u"), &limits).unwrap();
    }

    #[test]
    fn a_session_that_becomes_a_user_counts_within_the_users_cap() {
        let r = Arc::new(Registry::default());
        let limits = LimitsConfig {
            max_sessions_per_user: 1,
            ..LimitsConfig::default()
        };
        let ip: IpAddr = [127, 0, 0, 1].into();
        let _u = r.admit(ip, Some("u"), &limits).unwrap();
        let mut anon = r.admit(ip, None, &limits).unwrap();
        assert_eq!(anon.set_user(Some("u"), &limits), Err(Refusal::User));
        // Refused: still anonymous, and `v` has room.
        anon.set_user(Some("v"), &limits).unwrap();
        assert_eq!(r.admit(ip, Some("v"), &limits).unwrap_err(), Refusal::User);
        drop(anon);
        r.admit(ip, Some("v"), &limits).unwrap();
    }

    #[test]
    fn ipv6_is_counted_per_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(other));
        let v4: IpAddr = [192, 0, 2, 7].into();
        assert_eq!(ip_key(v4), v4);
        assert_eq!(ip_key("::ffff:192.0.2.7".parse().unwrap()), v4);

        // Two addresses of one /64 share its connection count.
        let r = Arc::new(Registry::default());
        let limits = LimitsConfig {
            max_connections_per_ip: 1,
            ..LimitsConfig::default()
        };
        let _first = r.admit(a, None, &limits).unwrap();
        assert_eq!(r.admit(b, None, &limits).unwrap_err(), Refusal::Ip);
        r.admit(other, None, &limits).unwrap();
    }

    #[test]
    fn requests_cost_by_their_entries() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert!(b.take_n(15, t0));
        assert!(!b.take_n(6, t0));
        assert_eq!(b.wait_ms(6), 100);
        assert!(
            !b.take_n(21, t0 + Duration::from_secs(60)),
            "over the burst"
        );
        assert!(b.take_n(20, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert_eq!((0..30).filter(|_| b.take(t0)).count(), 20);
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }
}
