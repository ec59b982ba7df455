//! The key-value operations ingest's writers use (`md_last`, `md_ref`, the lease), apart
//! from any client: [`crate::nats`] implements them on JetStream KV, and the unit tests
//! on a bucket in memory, so that the writers' decisions are tested without a server.

use bytes::Bytes;
use futures_util::future::BoxFuture;

/// An entry as read back: its revision, and its value unless it is a delete or purge
/// marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub revision: u64,
    /// `None`: the key was deleted or purged (at `revision`).
    pub value: Option<Bytes>,
}

/// Why a compare-and-set write failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The key is no longer at the revision the write named: another writer got in first.
    /// Carries the client's own error, so that a log says what the server said.
    #[error(transparent)]
    WrongRevision(anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// One KV bucket. Boxed futures, so that a lease can hold its bucket as `dyn Bucket`
/// whatever keeps it; every call is a round trip to a server anyway.
pub trait Bucket: Send + Sync + std::fmt::Debug {
    /// The key's latest entry; `None` if it has none.
    fn entry<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Entry>>>;

    /// Writes `value` if the key has no value (never written, deleted or purged); the
    /// new revision.
    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, anyhow::Result<u64>>;

    /// Writes `value` if the key is still at `revision` (0: has never been written); the
    /// new revision.
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<u64, UpdateError>>;

    /// Writes `value` whatever the key holds; the new revision.
    fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, anyhow::Result<u64>>;

    /// Deletes the key (leaving a delete marker).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

#[cfg(test)]
pub(crate) mod memory {
    //! A bucket in memory with JetStream's revision rules, for unit tests.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Clones share the bucket.
    #[derive(Debug, Default, Clone)]
    pub struct Memory {
        /// Key → latest entry; one revision counter for the whole bucket, as in a stream.
        inner: Arc<Mutex<(u64, HashMap<String, Entry>)>>,
    }

    impl Memory {
        /// The value stored under `key`, if any.
        pub fn value(&self, key: &str) -> Option<Bytes> {
            self.inner.lock().unwrap().1.get(key)?.value.clone()
        }

        fn write(
            &self,
            key: &str,
            value: Option<Bytes>,
            expect: Option<u64>,
        ) -> Result<u64, UpdateError> {
            let mut inner = self.inner.lock().unwrap();
            let (last, entries) = &mut *inner;
            if let Some(expect) = expect {
                let current = entries.get(key).map_or(0, |e| e.revision);
                if current != expect {
                    return Err(UpdateError::WrongRevision(anyhow::anyhow!(
                        "wrong last revision"
                    )));
                }
            }
            *last += 1;
            let revision = *last;
            entries.insert(key.to_string(), Entry { revision, value });
            Ok(revision)
        }
    }

    impl Bucket for Memory {
        fn entry<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Entry>>> {
            let entry = self.inner.lock().unwrap().1.get(key).cloned();
            Box::pin(async move { Ok(entry) })
        }

        fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, anyhow::Result<u64>> {
            let current = self.inner.lock().unwrap().1.get(key).cloned();
            let result = match current {
                Some(Entry {
                    revision,
                    value: Some(_),
                }) => Err(anyhow::anyhow!("{key} exists at revision {revision}")),
                other => self
                    .write(key, Some(value), Some(other.map_or(0, |e| e.revision)))
                    .map_err(anyhow::Error::from),
            };
            Box::pin(async move { result })
        }

        fn update<'a>(
            &'a self,
            key: &'a str,
            value: Bytes,
            revision: u64,
        ) -> BoxFuture<'a, Result<u64, UpdateError>> {
            let result = self.write(key, Some(value), Some(revision));
            Box::pin(async move { result })
        }

        fn put<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, anyhow::Result<u64>> {
            let result = self
                .write(key, Some(value), None)
                .map_err(anyhow::Error::from);
            Box::pin(async move { result })
        }

        fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
            let result = self
                .write(key, None, None)
                .map(drop)
                .map_err(anyhow::Error::from);
            Box::pin(async move { result })
        }
    }
}
