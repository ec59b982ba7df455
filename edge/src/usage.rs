//! Usage records ([`tickmesh_core::usage`]): which users saw which feed's data, in real
//! time or delayed, for display or not, when, and in how many sessions.
//!
//! Sessions report what they hold ([`Usage::touch`]) when a request changes it and, while
//! they hold anything, every `usage.touch_ms`. Records are kept in memory per (month,
//! user, account, use, feed, class) and written every `usage.flush_ms`, those that changed
//! only, to the stream `usage.stream` of the edge's own NATS domain: one subject per
//! record, one message kept per subject (the record's latest state). A crash loses at
//! most the usage of the last `flush_ms`, and a `last_seen` at most `touch_ms` old; a
//! write that fails is tried again at the next flush.
//!
//! A record is named by this process (edge name and start time) and a serial, so a
//! restarted edge writes new records beside the old ones, and the report
//! (`tickmesh usage`) merges records by user: a user served by two edges is one user.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::future::join_all;
use tickmesh_core::tick::now_us;
use tickmesh_core::usage::{self, Class, Month, Record, Use};
use tokio_util::sync::CancellationToken;

use crate::auth::Grant;
use crate::config::UsageConfig;

/// The user anonymous sessions are recorded under.
pub const ANONYMOUS: &str = "anonymous";
/// Records written at once, each awaiting its acknowledgement.
const WRITES_IN_FLIGHT: usize = 256;
/// A record that has not changed for this long, and is written, leaves memory (a later
/// touch starts a new one; the report merges them).
const IDLE_US: u64 = 3_600_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    month: Month,
    user: Arc<str>,
    org: Arc<str>,
    usage: Use,
    feed: Arc<str>,
    class: Class,
}

#[derive(Debug)]
struct Entry {
    serial: u64,
    first_us: u64,
    last_us: u64,
    sessions: u64,
    /// Changed since last written.
    dirty: bool,
    /// Being written: a change meanwhile sets `dirty` again.
    writing: bool,
}

#[derive(Debug, Default)]
struct Records {
    by_key: HashMap<Key, Entry>,
    next_serial: u64,
}

/// Who a session is, for usage: made from its grant (again after an `auth`).
#[derive(Debug, Clone)]
pub struct Who {
    user: Arc<str>,
    org: Arc<str>,
    usage: Use,
}

/// A session's part of the records: the (month, feed, class) it was counted in, and when
/// it last reported.
#[derive(Debug)]
pub struct SessionUsage {
    who: Who,
    counted: HashSet<(Month, Arc<str>, Class)>,
    last_touch: Option<Instant>,
    /// What the session held when it last reported, as counts (see [`SessionUsage::held`]).
    held: Option<(usize, usize, usize)>,
}

impl SessionUsage {
    /// Notes what the session holds now (counts of real-time symbols, delayed symbols,
    /// tapes and bars); true if it differs from what it held when it last noted it. A
    /// request that changes nothing held (a ping, a list) need not report.
    pub fn held(&mut self, counts: (usize, usize, usize)) -> bool {
        self.held.replace(counts) != Some(counts)
    }

    /// Whether the session should report again: it never has, or `touch_ms` passed.
    pub fn due(&self, every: Duration, now: Instant) -> bool {
        self.last_touch
            .is_none_or(|at| now.saturating_duration_since(at) >= every)
    }
}

/// The edge's usage records.
#[derive(Debug)]
pub struct Usage {
    config: UsageConfig,
    /// This process, as a subject token: `<edge name>-<start, ms since the epoch>`.
    instance: String,
    records: Mutex<Records>,
}

impl Usage {
    pub fn new(edge_name: &str, config: &UsageConfig) -> Arc<Usage> {
        Arc::new(Usage {
            config: config.clone(),
            instance: format!("{}-{}", usage::subject_token(edge_name), now_us() / 1000),
            records: Mutex::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// How often a session holding data reports again.
    pub fn touch_every(&self) -> Duration {
        Duration::from_millis(self.config.touch_ms)
    }

    /// A session's part, for `grant`. Anonymous sessions are one user, `anonymous`, and
    /// are counted as its sessions: a user per anonymous session would let anyone who can
    /// connect grow the records (in memory and in the stream) by reconnecting.
    pub fn session(&self, grant: &Grant) -> SessionUsage {
        let user: Arc<str> = match &grant.sub {
            Some(sub) => sub.as_str().into(),
            None => ANONYMOUS.into(),
        };
        let org = grant.org.as_deref().map_or_else(|| user.clone(), Arc::from);
        SessionUsage {
            who: Who {
                user,
                org,
                usage: grant.usage,
            },
            counted: HashSet::new(),
            last_touch: None,
            held: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that the session holds data of each (feed, class) of `held`, now.
    pub fn touch<'a>(
        &self,
        session: &mut SessionUsage,
        held: impl IntoIterator<Item = (&'a str, Class)>,
        now: Instant,
    ) {
        if !self.config.enabled {
            return;
        }
        session.last_touch = Some(now);
        let at = now_us();
        let month = Month::of_unix_us(at);
        let mut records = self.lock();
        let records = &mut *records;
        for (feed, class) in held {
            let feed: Arc<str> = feed.into();
            let first_in_session = session.counted.insert((month, feed.clone(), class));
            let key = Key {
                month,
                user: session.who.user.clone(),
                org: session.who.org.clone(),
                usage: session.who.usage,
                feed,
                class,
            };
            let entry = records.by_key.entry(key).or_insert_with(|| {
                records.next_serial += 1;
                Entry {
                    serial: records.next_serial,
                    first_us: at,
                    last_us: at,
                    sessions: 0,
                    dirty: true,
                    writing: false,
                }
            });
            entry.last_us = entry.last_us.max(at);
            entry.sessions += u64::from(first_in_session);
            entry.dirty = true;
        }
    }

    /// Records held in memory.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records changed since last written, marked as being written; drops those
    /// idle and written.
    fn take_changed(&self) -> Vec<(Key, String, Bytes)> {
        let now = now_us();
        let month = Month::of_unix_us(now);
        let mut records = self.lock();
        records.by_key.retain(|key, e| {
            e.dirty || e.writing || (key.month == month && now.saturating_sub(e.last_us) < IDLE_US)
        });
        let mut out = Vec::new();
        for (key, e) in records.by_key.iter_mut().filter(|(_, e)| e.dirty) {
            e.dirty = false;
            e.writing = true;
            let record = Record {
                month: key.month.to_string(),
                user: key.user.to_string(),
                org: key.org.to_string(),
                feed: key.feed.to_string(),
                class: key.class,
                usage: key.usage,
                first_us: e.first_us,
                last_us: e.last_us,
                sessions: e.sessions,
                edge: self.instance.clone(),
            };
            let subject = usage::subject(key.month, &self.instance, e.serial);
            let body = serde_json::to_vec(&record).expect("a record always serializes");
            out.push((key.clone(), subject, Bytes::from(body)));
        }
        out
    }

    /// Marks what was written (or not).
    fn written(&self, key: &Key, ok: bool) {
        if let Some(e) = self.lock().by_key.get_mut(key) {
            e.writing = false;
            e.dirty |= !ok;
        }
    }

    /// Writes every changed record; returns how many were written and how many failed
    /// (kept for the next flush).
    pub async fn flush(&self, js: &jetstream::Context) -> (usize, usize) {
        let changed = self.take_changed();
        let (mut ok, mut failed) = (0, 0);
        let mut changed = changed.into_iter().peekable();
        while changed.peek().is_some() {
            let batch: Vec<_> = changed.by_ref().take(WRITES_IN_FLIGHT).collect();
            let writes = batch.iter().map(|(_, subject, body)| async move {
                let ack = js.publish(subject.clone(), body.clone()).await?;
                ack.await.map(|_| ()).map_err(anyhow::Error::from)
            });
            let results = join_all(writes).await;
            for ((key, subject, _), result) in batch.iter().zip(results) {
                let written = match result {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(%subject, error = %e, "usage record not written");
                        false
                    }
                };
                self.written(key, written);
                if written { ok += 1 } else { failed += 1 }
            }
        }
        metrics::counter!("tickmesh_edge_usage_writes_total").increment(ok as u64);
        metrics::counter!("tickmesh_edge_usage_write_errors_total").increment(failed as u64);
        metrics::gauge!("tickmesh_edge_usage_records").set(self.len() as f64);
        (ok, failed)
    }

    /// Makes the stream (when missing), then writes changed records every `flush_ms`
    /// until `stop`, and once more after it (sessions report as they close).
    pub fn spawn(
        self: &Arc<Self>,
        client: async_nats::Client,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.config.enabled {
            return None;
        }
        let usage = self.clone();
        Some(tokio::spawn(async move {
            let js = jetstream::new(client);
            let every = Duration::from_millis(usage.config.flush_ms);
            while let Err(e) = usage.open_stream(&js).await {
                tracing::warn!(error = %e, stream = %usage.config.stream, "usage stream not ready; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
            }
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let (_, failed) = usage.flush(&js).await;
                if failed > 0 {
                    tracing::warn!(
                        failed,
                        "usage records not written; retrying at the next flush"
                    );
                }
            }
        }))
    }

    async fn open_stream(&self, js: &jetstream::Context) -> anyhow::Result<()> {
        let config = stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![usage::SUBJECTS.into()],
            storage: stream::StorageType::File,
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(self.config.keep_days * 86_400),
            num_replicas: self.config.replicas,
            ..Default::default()
        };
        let description = "TickMesh usage records: the latest state of each, one per subject";
        tickmesh_service::stream::open_or_create(js, config, description).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(sub: Option<&str>, org: Option<&str>) -> Grant {
        let mut g = crate::auth::test_keys::grant(&["*"], 10);
        g.sub = sub.map(Into::into);
        g.org = org.map(Into::into);
        g
    }

    fn records(u: &Usage) -> Vec<Record> {
        let mut out: Vec<Record> = u
            .take_changed()
            .into_iter()
            .map(|(_, _, body)| serde_json::from_slice(&body).unwrap())
            .collect();
        out.sort_by(|a, b| (&a.user, &a.feed, a.class).cmp(&(&b.user, &b.feed, b.class)));
        out
    }

    #[test]
    fn a_session_counts_once_per_feed_and_class_however_often_it_reports() {
        let u = Usage::new("edge a", &UsageConfig::default());
        let mut s = u.session(&grant(Some("alice"), Some("acme")));
        let now = Instant::now();
        u.touch(
            &mut s,
            [("XNAS", Class::RealTime), ("XNAS", Class::Delayed)],
            now,
        );
        u.touch(&mut s, [("XNAS", Class::RealTime)], now);
        let mut other = u.session(&grant(Some("alice"), Some("acme")));
        u.touch(&mut other, [("XNAS", Class::RealTime)], now);
        let r = records(&u);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].class, r[0].sessions), (Class::RealTime, 2));
        assert_eq!((r[1].class, r[1].sessions), (Class::Delayed, 1));
        assert_eq!(r[0].org, "acme");
        assert!(r[0].edge.starts_with("edge_a-"), "{}", r[0].edge);
        // Written: nothing changed since.
        assert!(records(&u).is_empty());
        // A request that changes nothing held need not report; a move to delayed does.
        assert!(other.held((1, 0, 0)));
        assert!(!other.held((1, 0, 0)));
        assert!(other.held((0, 1, 0)));
    }

    #[test]
    fn a_failed_write_is_written_again_and_a_change_during_a_write_is_not_lost() {
        let u = Usage::new("e", &UsageConfig::default());
        let mut s = u.session(&grant(Some("bob"), None));
        u.touch(&mut s, [("SIM", Class::RealTime)], Instant::now());
        let taken = u.take_changed();
        assert_eq!(taken.len(), 1);
        u.written(&taken[0].0, false);
        let again = records(&u);
        assert_eq!(again.len(), 1, "a failed write is tried again");
        assert_eq!(
            again[0].org, "bob",
            "no org: the user is the account of record"
        );
        let taken = u.take_changed();
        assert!(taken.is_empty());
        u.touch(&mut s, [("SIM", Class::RealTime)], Instant::now());
        let during = u.take_changed();
        assert_eq!(during.len(), 1, "a touch while nothing is being written");
    }

    #[test]
    fn anonymous_sessions_share_one_record_and_disabled_records_nothing() {
        let u = Usage::new("e", &UsageConfig::default());
        // However many anonymous sessions come and go: one record, their count in it.
        for _ in 0..1000 {
            let mut s = u.session(&grant(None, None));
            u.touch(&mut s, [("SIM", Class::Delayed)], Instant::now());
        }
        assert_eq!(u.len(), 1);
        let r = records(&u);
        assert_eq!((r[0].user.as_str(), r[0].sessions), (ANONYMOUS, 1000));

        let off = Usage::new(
            "e",
            &UsageConfig {
                enabled: false,
                ..UsageConfig::default()
            },
        );
        let mut s = off.session(&grant(Some("x"), None));
        off.touch(&mut s, [("SIM", Class::RealTime)], Instant::now());
        assert!(off.is_empty());
    }
}
