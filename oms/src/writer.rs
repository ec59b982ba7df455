//! The single writer of accounts' events: the stream `acct` and the bucket `acct_snap`
//! (created here, by the service that owns them), each account's state rebuilt from its
//! snapshot and the events after it, and every append checked by JetStream.
//!
//! An append carries three headers:
//!
//! - `Nats-Expected-Last-Subject-Sequence: <n>` with
//!   `Nats-Expected-Last-Subject-Sequence-Subject: acct.<account>.>`: the stream takes the
//!   event only if the last message on any subject of the account is at stream sequence
//!   `n`, the one this writer appended last. A second writer, or a writer that missed an
//!   append of its own, is refused instead of doubling or skipping a `seq`. (nats-server
//!   2.15.1 honours the `-Subject` header: the check spans every kind of one account.)
//! - `Nats-Msg-Id: <account>-<seq>`: a retry within the stream's duplicate window is
//!   recognised as the same event.
//!
//! The server checks the expected sequence before it looks at the message id, so a
//! retry of an append that was stored but whose acknowledgement was lost is refused as
//! "wrong last sequence", not acknowledged as a duplicate. The writer then reads the
//! account's last stored event (from the stream's leader): if it is the event being
//! appended, the append is done; if it holds a `seq` this writer did not write, another
//! writer is at work on the account and the append fails with [`WriterError::Conflict`].
//!
//! Here: opening the stream and the bucket ([`Writer`]) and rebuilding an account; in
//! `settings`, the `[stream]` config ([`StreamConfig`]); in `log`, an account's appends
//! ([`AccountLog`]).

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use tickmesh_core::account::{
    self, AccountError, AccountState, Event, SNAPSHOTS, STREAM, Snapshot,
};

/// The expected stream sequence of the last message on the subjects the next header names.
pub const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// The subject (wildcards allowed) [`EXPECTED_LAST_SUBJECT_SEQ`] is about.
pub const EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
/// The id by which the stream recognises a retried message within its duplicate window.
pub const MSG_ID: &str = "Nats-Msg-Id";

mod log;
mod settings;

pub use log::AccountLog;
pub use settings::StreamConfig;

/// Why the writer could not open the stream, rebuild an account or append to it.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("{context}: {source}")]
    Nats {
        context: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("account {account}: {source}")]
    Invalid {
        account: String,
        #[source]
        source: AccountError,
    },
    #[error("account {account}: the stream and the snapshot disagree: {why}")]
    Inconsistent { account: String, why: String },
    #[error(
        "account {account}: seq {seq} is stored (stream seq {stream_seq}) but not as this \
         writer wrote it: another writer appends to the account"
    )]
    Conflict {
        account: String,
        seq: u64,
        stream_seq: u64,
    },
    #[error("account {account}: event {seq} not appended within {after:?}: {last_error}")]
    Unavailable {
        account: String,
        seq: u64,
        after: Duration,
        last_error: String,
    },
}

fn nats(context: impl Into<String>) -> impl FnOnce(async_nats::Error) -> WriterError {
    let context = context.into();
    move |source| WriterError::Nats { context, source }
}

fn invalid(account: &str) -> impl FnOnce(AccountError) -> WriterError + '_ {
    move |source| WriterError::Invalid {
        account: account.to_string(),
        source,
    }
}

/// The stream and the bucket, opened or created: hands out each account's [`AccountLog`].
#[derive(Debug, Clone)]
pub struct Writer {
    js: jetstream::Context,
    stream: stream::Stream,
    snapshots: kv::Store,
    append_timeout: Duration,
}

impl Writer {
    /// Opens `acct` and `acct_snap`, creating them if missing; an existing stream whose
    /// age, size, duplicate window, replicas, consumer bound or republishing differ from `config` is updated to them.
    /// Tried again for `append_timeout_ms` while the servers cannot answer (a cluster
    /// still electing its leaders).
    pub async fn open(js: jetstream::Context, config: &StreamConfig) -> Result<Self, WriterError> {
        let within = Duration::from_millis(config.append_timeout_ms);
        retrying(within, "opening the account stream", || {
            Self::try_open(&js, config)
        })
        .await
    }

    async fn try_open(js: &jetstream::Context, config: &StreamConfig) -> Result<Self, WriterError> {
        let js = js.clone();
        let want = config.stream();
        let description = "TickMesh account events: orders, fills, positions, balances";
        let mut stream = tickmesh_service::stream::open_or_create(&js, want.clone(), description)
            .await
            .map_err(|e| nats(format!("opening stream {STREAM}"))(e.into()))?;
        let have = stream.cached_info().config.clone();
        let updated = stream::Config {
            max_age: want.max_age,
            max_bytes: want.max_bytes,
            duplicate_window: want.duplicate_window,
            num_replicas: want.num_replicas,
            max_consumers: want.max_consumers,
            allow_direct: true,
            republish: want.republish.clone(),
            ..have.clone()
        };
        if updated != have {
            tracing::info!(
                stream = STREAM,
                max_age_s = config.max_age_s,
                max_bytes = config.max_bytes,
                replicas = config.replicas,
                "updating the stream's limits to the config's"
            );
            js.update_stream(updated)
                .await
                .map_err(|e| nats(format!("updating stream {STREAM}"))(e.into()))?;
            stream = js
                .get_stream(STREAM)
                .await
                .map_err(|e| nats(format!("opening stream {STREAM}"))(e.into()))?;
        }
        let bucket = kv::Config {
            bucket: SNAPSHOTS.into(),
            description: "TickMesh account snapshots: each account as of its last event".into(),
            history: 1,
            num_replicas: config.replicas,
            storage: StorageType::File,
            ..Default::default()
        };
        let snapshots = tickmesh_service::stream::open_or_create_bucket(&js, bucket)
            .await
            .map_err(|e| nats(format!("opening KV bucket {SNAPSHOTS}"))(e.into()))?;
        Ok(Writer {
            js,
            stream,
            snapshots,
            append_timeout: Duration::from_millis(config.append_timeout_ms),
        })
    }

    /// The JetStream context the writer appends through.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The account's log, its state rebuilt from its snapshot in `acct_snap` and the
    /// events the stream holds after it: the next append continues its `seq`. Reads that
    /// fail for want of a server (a bucket or stream whose replicas are still forming, a
    /// leader being elected) are tried again for `append_timeout_ms`.
    pub async fn account(&self, name: &str) -> Result<AccountLog, WriterError> {
        account::validate(name).map_err(invalid(name))?;
        let what = format!("rebuilding account {name}");
        retrying(self.append_timeout, &what, || self.rebuild(name)).await
    }

    async fn rebuild(&self, name: &str) -> Result<AccountLog, WriterError> {
        let (mut state, from) = match self.snapshot(name).await? {
            Some(snap) => (snap.state, snap.stream_seq),
            None => (AccountState::new(name), 0),
        };
        if state.account != name {
            return Err(WriterError::Inconsistent {
                account: name.into(),
                why: format!("its snapshot is {}'s", state.account),
            });
        }
        let last = self.last_stored(&account::filter(name)).await?;
        let stream_seq = match last {
            // Nothing retained: a new account, or its events have all aged out.
            None => 0,
            Some((at, event)) if at <= from => {
                if at < from || event.seq != state.seq {
                    return Err(WriterError::Inconsistent {
                        account: name.into(),
                        why: format!(
                            "the snapshot is as of seq {} at stream seq {from}; the stream's \
                             last event is seq {} at stream seq {at}",
                            state.seq, event.seq
                        ),
                    });
                }
                at
            }
            Some((at, _)) => {
                self.replay(&mut state, from, at).await?;
                at
            }
        };
        AccountLog::open(self.clone(), state, stream_seq).await
    }

    async fn snapshot(&self, name: &str) -> Result<Option<Snapshot>, WriterError> {
        let bytes = self
            .snapshots
            .get(name)
            .await
            .map_err(|e| nats(format!("reading {SNAPSHOTS} {name}"))(e.into()))?;
        bytes
            .map(|b| account::decode_snapshot(&b).map_err(invalid(name)))
            .transpose()
    }

    /// The last event on `subject` (wildcards allowed) and its stream sequence, read from
    /// the stream's leader (a replica may lag behind the append just acknowledged).
    async fn last_stored(&self, subject: &str) -> Result<Option<(u64, Event)>, WriterError> {
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(msg) => {
                let event = account::decode_wire(&msg.payload).map_err(invalid(subject))?;
                Ok(Some((msg.sequence, event)))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats(format!("reading the last event on {subject}"))(
                e.into(),
            )),
        }
    }

    /// Folds into `state` the account's events after stream sequence `from`, up to and
    /// including `to`, through an ordered consumer filtered to the account.
    async fn replay(
        &self,
        state: &mut AccountState,
        from: u64,
        to: u64,
    ) -> Result<(), WriterError> {
        let name = state.account.clone();
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: account::filter(&name),
                deliver_policy: match from {
                    0 => DeliverPolicy::All,
                    n => DeliverPolicy::ByStartSequence {
                        start_sequence: n + 1,
                    },
                },
                ..Default::default()
            })
            .await
            .map_err(|e| nats(format!("reading account {name}"))(e.into()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| nats(format!("reading account {name}"))(e.into()))?;
        loop {
            let next = tokio::time::timeout(self.append_timeout, messages.next()).await;
            let msg = match next {
                Ok(Some(Ok(msg))) => msg,
                Ok(Some(Err(e))) => return Err(nats(format!("reading account {name}"))(e.into())),
                Ok(None) | Err(_) => {
                    return Err(WriterError::Unavailable {
                        account: name,
                        seq: state.seq + 1,
                        after: self.append_timeout,
                        last_error: format!("the stream stopped short of stream seq {to}"),
                    });
                }
            };
            let at = msg
                .info()
                .map(|i| i.stream_sequence)
                .map_err(nats("reading account"))?;
            let event = account::decode_wire(&msg.payload).map_err(invalid(&name))?;
            state.apply(&event).map_err(|e| WriterError::Inconsistent {
                account: name.clone(),
                why: format!("replaying from stream seq {}: {e}", from + 1),
            })?;
            if at >= to {
                return Ok(());
            }
        }
    }
}

/// Runs `attempt` until it succeeds, fails for another reason than the servers' (an error
/// other than [`WriterError::Nats`] or [`WriterError::Unavailable`]), or `within` has
/// passed.
async fn retrying<T, F, Fut>(within: Duration, what: &str, mut attempt: F) -> Result<T, WriterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WriterError>>,
{
    let deadline = Instant::now() + within;
    let mut backoff = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(e @ (WriterError::Nats { .. } | WriterError::Unavailable { .. }))
                if Instant::now() + backoff < deadline =>
            {
                tracing::warn!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            done => return done,
        }
    }
}

/// One append attempt of `event`, expecting the account's last message at stream
/// sequence `expected_last` (0: none), with its `Nats-Msg-Id`. The writer's own retries
/// go through [`AccountLog::append`]; this is the bare check, for tests and tools.
pub async fn publish(
    js: &jetstream::Context,
    event: &Event,
    expected_last: u64,
) -> Result<PublishAck, PublishError> {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID, format!("{}-{}", event.account, event.seq));
    headers.insert(EXPECTED_LAST_SUBJECT_SEQ, expected_last.to_string());
    headers.insert(
        EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
        account::filter(&event.account),
    );
    let payload = account::encode_wire(event);
    js.publish_with_headers(event.subject(), headers, payload.into())
        .await?
        .await
}
