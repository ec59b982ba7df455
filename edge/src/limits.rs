//! Admission limits (connections per process, per IP and per user) and the per-session
//! message rate limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::LimitsConfig;

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

/// Open sessions, counted for admission.
#[derive(Debug, Default)]
pub struct Registry {
    counts: Mutex<Counts>,
}

/// An admitted session's place in the counts, given back on drop.
#[derive(Debug)]
pub struct Admission {
    registry: Arc<Registry>,
    ip: IpAddr,
    user: Option<String>,
}

impl Registry {
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        user: Option<&str>,
        limits: &LimitsConfig,
    ) -> Result<Admission, Refusal> {
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
        if let Some(user) = self.user.take() {
            decrement(&mut c.per_user, &user);
        }
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

    /// Changes the rate (a new tier), keeping the tokens it has.
    pub fn set_rate(&mut self, rate_per_s: u32) {
        self.rate = f64::from(rate_per_s.max(1));
        self.burst = self.rate * 2.0;
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
    fn bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert_eq!((0..30).filter(|_| b.take(t0)).count(), 20);
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }
}
