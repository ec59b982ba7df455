//! An account followed by `tickmesh watch --account`: its last seq, kept across
//! connections, so that every reconnect resumes with `from_seq` and each event is shown
//! exactly once.

use serde_json::{Value, json};

/// What to do with an account event.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// The next one: show it.
    Next,
    /// Seen already (a replay overlapping what came before): drop it.
    Seen,
    /// Seqs were skipped: show it, and say which are missing.
    After { missing_from: u64 },
}

#[derive(Debug, Clone)]
pub struct AccountFeed {
    pub name: String,
    /// The last seq shown (from a snapshot or an event).
    last: Option<u64>,
}

impl AccountFeed {
    pub fn new(name: &str) -> Self {
        AccountFeed {
            name: name.to_string(),
            last: None,
        }
    }

    /// The `subscribe` for a (re)connection: from the next seq when one was seen, else
    /// from a snapshot.
    pub fn request(&self, id: i64) -> Value {
        match self.last {
            Some(last) => {
                json!({"op": "subscribe", "id": id, "account": self.name, "from_seq": last + 1})
            }
            None => json!({"op": "subscribe", "id": id, "account": self.name}),
        }
    }

    /// A snapshot as of `seq`: what follows is after it.
    pub fn snapshot(&mut self, seq: u64) {
        self.last = Some(seq);
    }

    /// An event: shown once, in order.
    pub fn admit(&mut self, seq: u64) -> Admit {
        match self.last {
            Some(last) if seq <= last => Admit::Seen,
            Some(last) if seq > last + 1 => {
                self.last = Some(seq);
                Admit::After {
                    missing_from: last + 1,
                }
            }
            _ => {
                self.last = Some(seq);
                Admit::Next
            }
        }
    }
}

/// One line for an event: `#12 fill BUY 10 AAPL @ 190.50`.
pub fn describe(event: &Value) -> String {
    let data = &event["data"];
    let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or_default();
    let num = |k: &str| data.get(k).and_then(Value::as_f64).unwrap_or_default();
    let seq = event.get("seq").and_then(Value::as_u64).unwrap_or_default();
    let kind = event
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let what = match kind {
        "order" => format!(
            "order {} {} {} {} {} {}/{}",
            text("order_id"),
            text("status"),
            text("side").to_uppercase(),
            text("type"),
            text("symbol"),
            num("filled_qty"),
            num("qty")
        ),
        "fill" => format!(
            "fill {} {} {} @ {:.2}",
            text("side").to_uppercase(),
            num("qty"),
            text("symbol"),
            num("price")
        ),
        "position" => format!(
            "position {} {} @ {:.2} (realised {:.2})",
            text("symbol"),
            num("qty"),
            num("avg_price"),
            num("realized_pnl")
        ),
        "balance" => format!("balance {} {:.2}", text("currency"), num("cash")),
        other => other.to_string(),
    };
    format!("#{seq} {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_resumes_after_the_last_seq_and_each_event_passes_once() {
        let mut feed = AccountFeed::new("DEMO1");
        assert_eq!(feed.request(1).get("from_seq"), None, "first: a snapshot");
        feed.snapshot(10);
        assert_eq!(feed.admit(11), Admit::Next);
        assert_eq!(feed.admit(12), Admit::Next);
        // The connection drops; the next one asks from 13, and a replay overlapping
        // what was shown passes nothing twice.
        assert_eq!(feed.request(2)["from_seq"], 13);
        assert_eq!(feed.admit(12), Admit::Seen);
        assert_eq!(feed.admit(13), Admit::Next);
        assert_eq!(feed.admit(16), Admit::After { missing_from: 14 });
        assert_eq!(feed.request(3)["from_seq"], 17);
    }

    #[test]
    fn events_read_as_a_blotter_line() {
        let fill = json!({"seq": 7, "kind": "fill", "data": {"side": "buy", "qty": 10, "symbol": "AAPL", "price": 190.5}});
        assert_eq!(describe(&fill), "#7 fill BUY 10 AAPL @ 190.50");
    }
}
