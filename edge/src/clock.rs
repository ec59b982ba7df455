//! The flush clock: one timer for the whole edge, in place of one per session. A session
//! whose next flush is due at an instant asks to be woken then; sessions due at the same
//! instant (with the shared clock, every hot session of an interval) share one entry, and
//! one task wakes them all when it comes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct Inner {
    /// Who is to be woken at each instant. A session that left is skipped.
    due: Mutex<BTreeMap<Instant, Vec<Weak<Notify>>>>,
    /// Wakes the clock's task when an entry comes before the one it sleeps for.
    sooner: Notify,
}

/// The edge's flush clock; its task stops when the clock is dropped.
#[derive(Debug)]
pub struct Clock {
    inner: Arc<Inner>,
    task: tokio::task::AbortHandle,
}

impl Clock {
    /// Starts the clock's task on the current tokio runtime.
    pub fn start() -> Clock {
        let inner = Arc::new(Inner::default());
        let task = tokio::spawn(run(inner.clone())).abort_handle();
        Clock { inner, task }
    }

    /// Wakes `who` at `at` (at once if that has passed).
    pub fn wake_at(&self, at: Instant, who: &Arc<Notify>) {
        let mut due = self.inner.due.lock().unwrap_or_else(|e| e.into_inner());
        let sooner = due.first_key_value().is_none_or(|(first, _)| at < *first);
        due.entry(at).or_default().push(Arc::downgrade(who));
        drop(due);
        if sooner {
            self.inner.sooner.notify_one();
        }
    }

    /// Instants with sessions waiting for them (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.inner
            .due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(inner: Arc<Inner>) {
    loop {
        let first = {
            let due = inner.due.lock().unwrap_or_else(|e| e.into_inner());
            due.first_key_value().map(|(at, _)| *at)
        };
        match first {
            Some(at) if at > Instant::now() => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = inner.sooner.notified() => continue,
                }
            }
            Some(_) => {}
            None => {
                inner.sooner.notified().await;
                continue;
            }
        }
        let now = Instant::now();
        let woken: Vec<Vec<Weak<Notify>>> = {
            let mut due = inner.due.lock().unwrap_or_else(|e| e.into_inner());
            let later = due.split_off(&(now + std::time::Duration::from_nanos(1)));
            std::mem::replace(&mut *due, later).into_values().collect()
        };
        for who in woken.iter().flatten() {
            if let Some(who) = who.upgrade() {
                who.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn wakes_each_session_at_its_instant_and_sessions_of_one_instant_together() {
        let clock = Clock::start();
        let start = Instant::now();
        let (a, b, c) = (
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
        );
        clock.wake_at(start + Duration::from_millis(250), &a);
        clock.wake_at(start + Duration::from_millis(250), &b);
        clock.wake_at(start + Duration::from_millis(100), &c);
        assert_eq!(clock.pending(), 2, "one entry per instant");
        c.notified().await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        a.notified().await;
        b.notified().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(clock.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_left_is_skipped_and_forgotten() {
        let clock = Clock::start();
        let start = Instant::now();
        let gone = Arc::new(Notify::new());
        let stays = Arc::new(Notify::new());
        clock.wake_at(start + Duration::from_millis(50), &gone);
        clock.wake_at(start + Duration::from_millis(60), &stays);
        drop(gone);
        stays.notified().await;
        assert_eq!(start.elapsed(), Duration::from_millis(60));
        assert_eq!(clock.pending(), 0);
    }
}
