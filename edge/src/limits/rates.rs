//! REST request rates: one token bucket per address (`limits.rest_requests_per_s_per_ip`)
//! and one per user (`limits.rest_requests_per_s_per_user`), bursts of twice the rate. A
//! request takes its cost from both of its sender's buckets and from nobody else's.
//!
//! The buckets kept are bounded (`limits.max_tracked_ips` per kind): a full bucket holds
//! nothing of its past and is forgotten when room is needed. If every kept bucket is still
//! refilling, a new key is not tracked (nor limited by that kind) until one is.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{TokenBucket, ip_key};
use crate::config::LimitsConfig;

/// A full map is swept for refilled buckets at most this often, so that new keys arriving
/// at a full map cost a scan once per period, not each.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why a request may not go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Its cost is there after this long.
    Wait(Duration),
    /// It costs more than a bucket ever holds (`burst`).
    Never { burst: u32 },
}

#[derive(Debug)]
struct Kept<K> {
    buckets: HashMap<K, TokenBucket>,
    swept: Option<Instant>,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct Rates<K> {
    rate_per_s: u32,
    max_tracked: usize,
    kept: Mutex<Kept<K>>,
}

impl<K: Eq + Hash> Rates<K> {
    pub fn new(rate_per_s: u32, max_tracked: usize) -> Self {
        Rates {
            rate_per_s,
            max_tracked,
            kept: Mutex::new(Kept {
                buckets: HashMap::new(),
                swept: None,
            }),
        }
    }

    /// Takes `cost` tokens from `key`'s bucket, if they are there.
    pub fn take(&self, key: K, cost: u32, now: Instant) -> Result<(), Over> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if !kept.buckets.contains_key(&key) && kept.buckets.len() >= self.max_tracked {
            if kept
                .swept
                .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY)
            {
                kept.swept = Some(now);
                kept.buckets.retain(|_, b| !b.refilled(now));
            }
            if kept.buckets.len() >= self.max_tracked {
                metrics::counter!("tickmesh_edge_rest_untracked_total").increment(1);
                return Ok(());
            }
        }
        let rate = self.rate_per_s;
        let bucket = kept
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(rate, now));
        if cost > bucket.burst() {
            return Err(Over::Never {
                burst: bucket.burst(),
            });
        }
        if bucket.take_n(cost, now) {
            Ok(())
        } else {
            Err(Over::Wait(Duration::from_millis(bucket.wait_ms(cost))))
        }
    }

    /// Buckets kept.
    pub fn tracked(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buckets
            .len()
    }
}

/// Whose rate a refused request was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    Address,
    User,
}

/// The REST request rates of an edge.
#[derive(Debug)]
pub struct RestRates {
    per_ip: Rates<IpAddr>,
    per_user: Rates<String>,
}

impl RestRates {
    pub fn new(limits: &LimitsConfig) -> Self {
        RestRates {
            per_ip: Rates::new(limits.rest_requests_per_s_per_ip, limits.max_tracked_ips),
            per_user: Rates::new(limits.rest_requests_per_s_per_user, limits.max_tracked_ips),
        }
    }

    /// Takes a request's `cost` from its address's bucket (an IPv6 address: its /64), then
    /// from its user's (none for an anonymous request).
    pub fn take(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        cost: u32,
        now: Instant,
    ) -> Result<(), (Whose, Over)> {
        self.per_ip
            .take(ip_key(ip), cost, now)
            .map_err(|o| (Whose::Address, o))?;
        match user {
            Some(user) => self
                .per_user
                .take(user.to_string(), cost, now)
                .map_err(|o| (Whose::User, o)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_key_gets_twice_its_rate_at_once_then_its_rate() {
        let r = Rates::new(10, 100);
        let t0 = Instant::now();
        for _ in 0..20 {
            r.take("a", 1, t0).unwrap();
        }
        assert_eq!(r.take("a", 1, t0), Err(Over::Wait(100 * MS)));
        // Another key is not affected.
        r.take("b", 1, t0).unwrap();
        r.take("a", 1, t0 + 100 * MS).unwrap();
        assert!(r.take("a", 1, t0 + 100 * MS).is_err());
        // A cost of several tokens, and one no bucket can ever hold.
        assert_eq!(r.take("c", 21, t0), Err(Over::Never { burst: 20 }));
        r.take("c", 20, t0).unwrap();
        assert_eq!(r.take("c", 5, t0 + 200 * MS), Err(Over::Wait(300 * MS)));
    }

    #[test]
    fn a_full_map_forgets_refilled_buckets_and_otherwise_tracks_no_new_key() {
        let r = Rates::new(1, 2);
        let t0 = Instant::now();
        r.take(1, 2, t0).unwrap();
        r.take(2, 2, t0).unwrap();
        // Full, and both still refilling: 3 is not tracked, so not limited.
        for _ in 0..5 {
            r.take(3, 2, t0 + MS).unwrap();
        }
        assert_eq!(r.tracked(), 2);
        assert!(r.take(1, 1, t0 + MS).is_err(), "1 is still limited");
        // Two seconds on, both are full again and make room.
        r.take(3, 2, t0 + 2001 * MS).unwrap();
        assert!(r.take(3, 1, t0 + 2001 * MS).is_err(), "3 is tracked now");
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn a_request_costs_its_address_and_its_user_and_an_ipv6_address_is_its_64() {
        let limits = LimitsConfig {
            rest_requests_per_s_per_ip: 5,
            rest_requests_per_s_per_user: 2,
            ..LimitsConfig::default()
        };
        let r = RestRates::new(&limits);
        let t0 = Instant::now();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..4 {
            r.take(ip, Some("alice"), 1, t0).unwrap();
        }
        assert_eq!(r.take(ip, Some("alice"), 1, t0).unwrap_err().0, Whose::User);
        // Bob shares the address, and its bucket of ten: five are gone (the refused
        // request took its address's token), Bob takes one, four are left for anyone.
        r.take(same_64, Some("bob"), 1, t0).unwrap();
        for _ in 0..4 {
            r.take(same_64, None, 1, t0).unwrap();
        }
        assert_eq!(r.take(same_64, None, 1, t0).unwrap_err().0, Whose::Address);
        let elsewhere: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        r.take(elsewhere, Some("bob"), 1, t0).unwrap();
    }
}
