//! Usage records: who saw which feed's data, in real time or delayed, for display or not,
//! and when. Edges write them to the JetStream stream `usage` (subjects
//! `usage.<YYYY-MM>.<edge instance>.<serial>`, one message per subject kept: the record's
//! latest state); `tickmesh usage` reads a month of them and writes the report exchanges
//! ask distributors for: unique users per feed, entitlement class and use.
//!
//! A record covers one (month, user, feed, class, use) on one edge process, from the first
//! time one of the user's sessions there held such a symbol to the last time it was seen
//! holding one. The report merges records by user, so a user served by two edges, or by
//! one edge before and after a restart, is one user.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::date::{self, Date};

/// The stream's subjects.
pub const SUBJECTS: &str = "usage.>";
/// Largest record accepted when reading (a record is a few hundred bytes).
pub const MAX_RECORD_BYTES: usize = 4096;

/// How the user saw a feed's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    RealTime,
    Delayed,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::RealTime => "real_time",
            Class::Delayed => "delayed",
        }
    }
}

/// What the data was for, as the token says (claim `use`): shown to a person (`display`,
/// the default) or consumed by a program (`non_display`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Use {
    #[default]
    Display,
    NonDisplay,
}

impl Use {
    pub fn as_str(self) -> &'static str {
        match self {
            Use::Display => "display",
            Use::NonDisplay => "non_display",
        }
    }
}

/// The feed a symbol unknown to the reference data (or listed without a feed) is counted
/// under.
pub const UNKNOWN_FEED: &str = "UNKNOWN";

/// A calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// The UTC month of `us` (µs since the Unix epoch).
    pub fn of_unix_us(us: u64) -> Month {
        let d = Date::from_unix_us(us);
        Month {
            year: d.year(),
            month: d.month(),
        }
    }

    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Month, String> {
        let bad = || format!("a month is YYYY-MM (e.g. 2026-12), got {s:?}");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Month { year, month })
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The subject of record `serial` of edge process `instance` for `month`.
pub fn subject(month: Month, instance: &str, serial: u64) -> String {
    format!("usage.{month}.{instance}.{serial}")
}

/// The subjects of one month, for a filtered read.
pub fn month_filter(month: Month) -> String {
    format!("usage.{month}.>")
}

/// A name usable as one subject token: letters, digits, `-` and `_` kept, anything else
/// `_`.
pub fn subject_token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

/// One record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `YYYY-MM`.
    pub month: String,
    /// The token's `sub`; `anonymous` for every anonymous session (counted in
    /// `sessions`).
    pub user: String,
    /// The account of record (claim `org`), or the user when the token names none.
    pub org: String,
    pub feed: String,
    pub class: Class,
    #[serde(rename = "use")]
    pub usage: Use,
    /// First and last time seen, µs since the Unix epoch.
    pub first_us: u64,
    pub last_us: u64,
    /// Sessions of the user that held such data on this edge process this month.
    pub sessions: u64,
    /// The edge process that wrote it.
    pub edge: String,
}

/// One user's usage of a feed in a month, merged over every record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLine {
    pub feed: String,
    pub class: Class,
    pub usage: Use,
    pub user: String,
    pub orgs: BTreeSet<String>,
    pub first_us: u64,
    pub last_us: u64,
    pub sessions: u64,
    pub edges: BTreeSet<String>,
}

/// One line of the summary: a feed, class and use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedLine {
    pub feed: String,
    pub class: Class,
    pub usage: Use,
    /// Unique users.
    pub users: u64,
    /// Unique accounts of record.
    pub orgs: u64,
    pub sessions: u64,
}

/// The report of one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub month: Month,
    /// By feed, class, use, then user.
    pub users: Vec<UserLine>,
    /// Records read that belong to another month or did not parse (counted, not used).
    pub skipped: u64,
}

impl Report {
    /// Merges `records` (in any order, repeats allowed: a record read twice is counted
    /// once) into the report of `month`.
    pub fn build(month: Month, records: impl IntoIterator<Item = Record>) -> Report {
        let wanted = month.to_string();
        let mut skipped = 0;
        // A record is identified by its edge process and key; repeats of one are the
        // same record (its latest state wins).
        let mut unique: BTreeMap<(String, String, String, Class, Use), Record> = BTreeMap::new();
        for r in records {
            if r.month != wanted {
                skipped += 1;
                continue;
            }
            let key = (
                r.edge.clone(),
                r.user.clone(),
                r.feed.clone(),
                r.class,
                r.usage,
            );
            match unique.get_mut(&key) {
                Some(held) if held.last_us >= r.last_us && held.sessions >= r.sessions => {}
                Some(held) => *held = r,
                None => {
                    unique.insert(key, r);
                }
            }
        }
        let mut lines: BTreeMap<(String, Class, Use, String), UserLine> = BTreeMap::new();
        for r in unique.into_values() {
            let key = (r.feed.clone(), r.class, r.usage, r.user.clone());
            let line = lines.entry(key).or_insert_with(|| UserLine {
                feed: r.feed.clone(),
                class: r.class,
                usage: r.usage,
                user: r.user.clone(),
                orgs: BTreeSet::new(),
                first_us: r.first_us,
                last_us: r.last_us,
                sessions: 0,
                edges: BTreeSet::new(),
            });
            line.orgs.insert(r.org);
            line.first_us = line.first_us.min(r.first_us);
            line.last_us = line.last_us.max(r.last_us);
            line.sessions += r.sessions;
            line.edges.insert(r.edge);
        }
        Report {
            month,
            users: lines.into_values().collect(),
            skipped,
        }
    }

    /// Unique users (and accounts, and sessions) per feed, class and use.
    pub fn summary(&self) -> Vec<FeedLine> {
        /// Users, accounts, sessions.
        type Counts<'a> = (u64, BTreeSet<&'a str>, u64);
        let mut out: BTreeMap<(String, Class, Use), Counts> = BTreeMap::new();
        for u in &self.users {
            let e = out.entry((u.feed.clone(), u.class, u.usage)).or_default();
            e.0 += 1;
            e.1.extend(u.orgs.iter().map(String::as_str));
            e.2 += u.sessions;
        }
        out.into_iter()
            .map(|((feed, class, usage), (users, orgs, sessions))| FeedLine {
                feed,
                class,
                usage,
                users,
                orgs: orgs.len() as u64,
                sessions,
            })
            .collect()
    }

    /// The summary as CSV (RFC 4180), with a header line.
    pub fn summary_csv(&self) -> String {
        let mut s = String::from("month,feed,class,use,users,accounts,sessions\n");
        for l in self.summary() {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{}",
                self.month,
                csv_field(&l.feed),
                l.class.as_str(),
                l.usage.as_str(),
                l.users,
                l.orgs,
                l.sessions
            );
        }
        s
    }

    /// One line per user, feed, class and use, as CSV with a header line (times in UTC,
    /// RFC 3339).
    pub fn users_csv(&self) -> String {
        let mut s =
            String::from("month,feed,class,use,user,accounts,first_seen,last_seen,sessions\n");
        for u in &self.users {
            let orgs: Vec<&str> = u.orgs.iter().map(String::as_str).collect();
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{}",
                self.month,
                csv_field(&u.feed),
                u.class.as_str(),
                u.usage.as_str(),
                csv_field(&u.user),
                csv_field(&orgs.join(";")),
                date::rfc3339_seconds(u.first_us),
                date::rfc3339_seconds(u.last_us),
                u.sessions
            );
        }
        s
    }

    /// The summary as an aligned table for a terminal.
    pub fn summary_text(&self) -> String {
        let mut s = format!("usage {}\n", self.month);
        let _ = writeln!(
            s,
            "{:<12} {:<10} {:<12} {:>8} {:>9} {:>9}",
            "feed", "class", "use", "users", "accounts", "sessions"
        );
        for l in self.summary() {
            let _ = writeln!(
                s,
                "{:<12} {:<10} {:<12} {:>8} {:>9} {:>9}",
                l.feed,
                l.class.as_str(),
                l.usage.as_str(),
                l.users,
                l.orgs,
                l.sessions
            );
        }
        if self.users.is_empty() {
            s.push_str("(no usage recorded)\n");
        }
        s
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEC: Month = Month {
        year: 2026,
        month: 12,
    };

    fn rec(edge: &str, user: &str, feed: &str, class: Class, first: u64, last: u64) -> Record {
        Record {
            month: "2026-12".into(),
            user: user.into(),
            org: format!("org-{user}"),
            feed: feed.into(),
            class,
            usage: Use::Display,
            first_us: first,
            last_us: last,
            sessions: 1,
            edge: edge.into(),
        }
    }

    #[test]
    fn months_parse_and_print() {
        assert_eq!(Month::parse("2026-12"), Ok(DEC));
        assert_eq!(DEC.to_string(), "2026-12");
        for bad in [
            "2026-13", "2026-1", "26-12", "2026/12", "", "2026-00", "abcd-ef",
        ] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
        // 2026-12-07T21:00:00Z.
        assert_eq!(Month::of_unix_us(1_796_677_200_000_000), DEC);
    }

    #[test]
    fn a_user_on_two_edges_is_one_user_and_their_sessions_add_up() {
        let r = Report::build(
            DEC,
            [
                rec("edge-a-1", "alice", "XNAS", Class::RealTime, 10, 20),
                rec("edge-b-1", "alice", "XNAS", Class::RealTime, 5, 15),
                rec("edge-a-1", "bob", "XNAS", Class::Delayed, 1, 2),
            ],
        );
        let s = r.summary();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].class, s[0].users, s[0].sessions),
            (Class::RealTime, 1, 2)
        );
        assert_eq!(
            (s[1].class, s[1].users, s[1].sessions),
            (Class::Delayed, 1, 1)
        );
        let alice = &r.users[0];
        assert_eq!((alice.first_us, alice.last_us), (5, 20));
        assert_eq!(alice.edges.len(), 2);
    }

    #[test]
    fn a_record_read_twice_counts_once_and_its_latest_state_wins() {
        let early = rec("edge-a-1", "alice", "XNAS", Class::RealTime, 10, 20);
        let mut late = early.clone();
        late.last_us = 90;
        late.sessions = 3;
        let r = Report::build(DEC, [late.clone(), early.clone(), late]);
        assert_eq!(r.users.len(), 1);
        assert_eq!((r.users[0].last_us, r.users[0].sessions), (90, 3));
    }

    #[test]
    fn other_months_are_skipped_and_csv_fields_are_quoted() {
        let mut nov = rec("e", "x", "F", Class::RealTime, 1, 2);
        nov.month = "2026-11".into();
        let odd = rec("e", "a,\"b\"", "F", Class::RealTime, 1, 2);
        let r = Report::build(DEC, [nov, odd]);
        assert_eq!(r.skipped, 1);
        assert!(
            r.users_csv().contains("\"a,\"\"b\"\"\""),
            "{}",
            r.users_csv()
        );
        assert_eq!(
            r.summary_csv(),
            "month,feed,class,use,users,accounts,sessions\n2026-12,F,real_time,display,1,1,1\n"
        );
    }

    #[test]
    fn subject_tokens_hold_no_dot_space_or_wildcard() {
        assert_eq!(subject_token("edge a.b*>"), "edge_a_b__");
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject(DEC, "edge-a-17", 3), "usage.2026-12.edge-a-17.3");
    }
}
