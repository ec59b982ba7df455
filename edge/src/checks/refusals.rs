//! The refusals of one request, bounded: the first `limits.max_errors_per_request` go out
//! one `error` each; the rest are summed up in one `error` per code, with `count`. So a
//! request's reply is bounded by the request's worth, not by how many bad entries it held.

use tickmesh_core::protocol::{ErrorCode, ServerMsg};

/// The `code` label of an error code, for metrics.
pub fn label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::InvalidSymbol => "invalid_symbol",
        ErrorCode::UnknownSymbol => "unknown_symbol",
        ErrorCode::NotEntitled => "not_entitled",
        ErrorCode::TooManySymbols => "too_many_symbols",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::TokenExpired => "token_expired",
        ErrorCode::SlowConsumer => "slow_consumer",
        ErrorCode::Unavailable => "unavailable",
    }
}

pub fn count_error(code: ErrorCode, n: u64) {
    metrics::counter!("tickmesh_edge_errors_total", "code" => label(code)).increment(n);
}

#[derive(Debug)]
pub struct Refusals {
    id: Option<i64>,
    max: usize,
    shown: Vec<ServerMsg>,
    /// Refusals not shown one by one, per code, in order of first appearance.
    omitted: Vec<(ErrorCode, u32)>,
    /// Summaries written as they are (entries not read at all).
    notes: Vec<ServerMsg>,
}

impl Refusals {
    pub fn new(id: Option<i64>, max: usize) -> Self {
        Refusals {
            id,
            max,
            shown: Vec::new(),
            omitted: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Refuses one symbol (or chain); the message is only made if it is shown.
    pub fn symbol(&mut self, code: ErrorCode, symbol: &str, message: impl FnOnce() -> String) {
        let id = self.id;
        self.refuse(code, || {
            ServerMsg::symbol_error(id, code, symbol, message())
        });
    }

    /// Refuses one symbol with a `retry_ms`.
    pub fn symbol_retry(&mut self, code: ErrorCode, symbol: &str, retry_ms: u64, message: &str) {
        let id = self.id;
        self.refuse(code, || symbol_retry(id, code, symbol, retry_ms, message));
    }

    fn refuse(&mut self, code: ErrorCode, make: impl FnOnce() -> ServerMsg) {
        count_error(code, 1);
        if self.shown.len() < self.max {
            let msg = make();
            self.shown.push(msg);
        } else {
            self.omit(code, 1);
        }
    }

    fn omit(&mut self, code: ErrorCode, n: u32) {
        match self.omitted.iter_mut().find(|(c, _)| *c == code) {
            Some((_, count)) => *count = count.saturating_add(n),
            None => self.omitted.push((code, n)),
        }
    }

    /// `n` entries refused at once without being read (past the request's cap).
    pub fn unread(&mut self, code: ErrorCode, n: usize, message: String) {
        count_error(code, n as u64);
        self.notes.push(ServerMsg::Error {
            id: self.id,
            code,
            message,
            symbol: None,
            interval_ms: None,
            retry_ms: None,
            count: Some(u32::try_from(n).unwrap_or(u32::MAX)),
            account: None,
        });
    }

    /// Every error to send: the ones shown, then one summary per code.
    pub fn finish(self) -> Vec<ServerMsg> {
        let Refusals {
            id,
            max,
            mut shown,
            omitted,
            notes,
        } = self;
        for (code, n) in omitted {
            shown.push(ServerMsg::Error {
                id,
                code,
                message: format!(
                    "{n} more entries refused with {}: a reply lists at most {max} refusals one by one",
                    label(code)
                ),
                symbol: None,
                interval_ms: None,
                retry_ms: None,
                count: Some(n),
                account: None,
            });
        }
        shown.extend(notes);
        shown
    }
}

/// An error about `symbol` that says when to try again.
pub fn symbol_retry(
    id: Option<i64>,
    code: ErrorCode,
    symbol: &str,
    retry_ms: u64,
    message: &str,
) -> ServerMsg {
    let mut msg = ServerMsg::symbol_error(id, code, symbol, message);
    if let ServerMsg::Error { retry_ms: r, .. } = &mut msg {
        *r = Some(retry_ms);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_refusals_are_summed_up_per_code() {
        let mut r = Refusals::new(Some(1), 2);
        for i in 0..1000 {
            r.symbol(ErrorCode::InvalidSymbol, "", || format!("bad {i}"));
        }
        r.symbol(ErrorCode::NotEntitled, "X", || "no".into());
        r.unread(ErrorCode::TooManySymbols, 7, "not read".into());
        let out = r.finish();
        assert_eq!(out.len(), 5, "{out:?}");
        let counts: Vec<_> = out
            .iter()
            .map(|m| match m {
                ServerMsg::Error { code, count, .. } => (*code, *count),
                _ => panic!("not an error"),
            })
            .collect();
        assert_eq!(
            counts,
            [
                (ErrorCode::InvalidSymbol, None),
                (ErrorCode::InvalidSymbol, None),
                (ErrorCode::InvalidSymbol, Some(998)),
                (ErrorCode::NotEntitled, Some(1)),
                (ErrorCode::TooManySymbols, Some(7)),
            ]
        );
    }
}
