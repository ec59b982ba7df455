//! One account's log: its state as of its last event, and its appends (the expected
//! sequence, the retries, and what a refusal means).

use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use tickmesh_core::account::{
    self, AccountError, AccountState, Data, Event, MAX_WIRE_EVENT, Snapshot,
};

use super::{Writer, WriterError, invalid, publish};
use tickmesh_core::tick::now_us;

/// One account: its state as of its last event, and its appends.
#[derive(Debug)]
pub struct AccountLog {
    writer: Writer,
    state: AccountState,
    /// The stream sequence of the account's last event (0: the stream holds none).
    stream_seq: u64,
    /// The account's last fill, when it is one of its last three events: the events it
    /// entails may still be due (see [`AccountLog::unfinished_fill`]).
    last_fill: Option<Event>,
}

/// How a refused append ends after a look at what the stream holds.
enum Reconciled {
    /// The event is in the stream already (its acknowledgement was lost).
    Stored(u64, Event),
    /// The stream's last event of the account is this writer's last, at another stream
    /// sequence than the writer thought (its events aged out, or the stream was restored).
    ExpectAt(u64),
}

impl AccountLog {
    /// The account's positions, balances and open orders as of its last event.
    pub fn state(&self) -> &AccountState {
        &self.state
    }

    /// The stream sequence of the account's last event (0 when the stream holds none).
    pub fn stream_seq(&self) -> u64 {
        self.stream_seq
    }

    /// The account's last fill and how many of its last events came after it, when
    /// fewer than `within`: the writer may have stopped between a fill and the order,
    /// position and balance events it entails.
    pub fn unfinished_fill(&self, within: u64) -> Option<(&Event, u64)> {
        let fill = self.last_fill.as_ref()?;
        let after = self.state.seq - fill.seq;
        (after < within).then_some((fill, after))
    }

    /// Stamps the account's next `seq` and the time on `data`, appends it, folds it into
    /// the state and puts the new snapshot; returns the event as stored. Retried for
    /// `append_timeout_ms` while the stream cannot take it; a refusal that is not this
    /// writer's own earlier attempt is a [`WriterError::Conflict`].
    pub async fn append(&mut self, data: Data) -> Result<Event, WriterError> {
        let name = self.state.account.clone();
        let event = Event {
            account: name.clone(),
            seq: self.state.seq + 1,
            ts: now_us(),
            data,
        };
        account::check(&event).map_err(invalid(&name))?;
        let size = account::encode_wire(&event).len();
        if size > MAX_WIRE_EVENT {
            return Err(WriterError::Invalid {
                account: name,
                source: AccountError::TooLarge(size),
            });
        }
        let started = Instant::now();
        let (stream_seq, stored) = self.commit(event).await?;
        metrics::histogram!("tickmesh_oms_append_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("tickmesh_oms_events_total", "kind" => stored.data.kind().as_str())
            .increment(1);
        self.state.apply(&stored).map_err(invalid(&name))?;
        self.stream_seq = stream_seq;
        if matches!(stored.data, Data::Fill(_)) {
            self.last_fill = Some(stored.clone());
        }
        self.put_snapshot().await;
        Ok(stored)
    }

    async fn commit(&self, event: Event) -> Result<(u64, Event), WriterError> {
        let deadline = Instant::now() + self.writer.append_timeout;
        let mut expected = self.stream_seq;
        let mut backoff = Duration::from_millis(25);
        let mut refusals = 0;
        loop {
            let error = match publish(&self.writer.js, &event, expected).await {
                Ok(ack) => return Ok((ack.sequence, event)),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    refusals += 1;
                    if refusals > 3 {
                        return Err(WriterError::Inconsistent {
                            account: event.account.clone(),
                            why: format!("seq {} refused {refusals} times: {e}", event.seq),
                        });
                    }
                    metrics::counter!("tickmesh_oms_append_retries_total", "reason" => "refused")
                        .increment(1);
                    match self.reconcile(&event).await {
                        Ok(Reconciled::Stored(at, stored)) => return Ok((at, stored)),
                        Ok(Reconciled::ExpectAt(at)) => {
                            expected = at;
                            continue;
                        }
                        Err(e @ (WriterError::Conflict { .. } | WriterError::Invalid { .. })) => {
                            return Err(e);
                        }
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => {
                    metrics::counter!("tickmesh_oms_append_retries_total", "reason" => "unavailable")
                        .increment(1);
                    e.to_string()
                }
            };
            if Instant::now() + backoff > deadline {
                return Err(WriterError::Unavailable {
                    account: event.account.clone(),
                    seq: event.seq,
                    after: self.writer.append_timeout,
                    last_error: error,
                });
            }
            tracing::warn!(account = %event.account, seq = event.seq, %error, "append failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// After a refusal: is `event` stored already, or where is the account's last event?
    async fn reconcile(&self, event: &Event) -> Result<Reconciled, WriterError> {
        let name = &event.account;
        let last = self.writer.last_stored(&account::filter(name)).await?;
        match last {
            Some((at, stored)) if stored.seq == event.seq && stored.data == event.data => {
                Ok(Reconciled::Stored(at, stored))
            }
            Some((at, stored)) if stored.seq == self.state.seq => Ok(Reconciled::ExpectAt(at)),
            None if self.state.seq == 0 || self.stream_seq != 0 => Ok(Reconciled::ExpectAt(0)),
            None => Err(WriterError::Inconsistent {
                account: name.clone(),
                why: "the stream holds none of its events".into(),
            }),
            Some((at, stored)) => Err(WriterError::Conflict {
                account: name.clone(),
                seq: stored.seq,
                stream_seq: at,
            }),
        }
    }

    /// Puts the account's snapshot; a failure is logged and counted, not fatal: the next
    /// put replaces it, and a reader folds the events after an older one.
    async fn put_snapshot(&self) {
        let snap = Snapshot {
            state: self.state.clone(),
            stream_seq: self.stream_seq,
        };
        let bytes = serde_json::to_vec(&snap).expect("a snapshot serializes");
        if let Err(e) = self
            .writer
            .snapshots
            .put(self.state.account.as_str(), bytes.into())
            .await
        {
            metrics::counter!("tickmesh_oms_snapshot_errors_total").increment(1);
            tracing::warn!(account = %self.state.account, error = %e, "putting the snapshot failed");
        }
    }

    /// The log of an account rebuilt to `state`, whose last event is at `stream_seq`,
    /// with the account's last fill.
    pub(super) async fn open(
        writer: Writer,
        state: AccountState,
        stream_seq: u64,
    ) -> Result<Self, WriterError> {
        let subject = account::subject(&state.account, account::Kind::Fill);
        let last = writer.last_stored(&subject).await?;
        let last_fill = last.map(|(_, e)| e).filter(|e| e.seq <= state.seq);
        Ok(AccountLog {
            writer,
            state,
            stream_seq,
            last_fill,
        })
    }
}
