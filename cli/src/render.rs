//! The live table as lines of text: pure (state and clocks in, lines out), so the layout
//! is tested without a terminal. Colours are plain SGR sequences, left out on request.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use tickmesh_core::tick::State;

use crate::board::{Board, Row};

/// How long a moved price keeps its up/down colour.
pub const MOVE_MARK: Duration = Duration::from_millis(1000);
/// Notes (errors, reconnects) kept at the foot of the table.
pub const MAX_NOTES: usize = 5;

const GREEN: &str = "32";
const RED: &str = "31";
const YELLOW: &str = "33";
const DIM: &str = "2";
const BOLD: &str = "1";
const PLAIN: &str = "";

/// The connection, as the status line shows it.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub url: String,
    /// `connecting`, `open`, `draining`, `reconnecting`, `closed`.
    pub state: String,
    /// Shown after the state, e.g. `in 1.2 s`.
    pub detail: String,
    pub edge: Option<String>,
    pub encoding: String,
    pub mode: String,
    pub interval_ms: u32,
    pub lag_ms: Option<u64>,
    pub updates_per_s: u64,
    pub reconnects: u64,
    pub stale: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// A line at the foot of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `HH:MM:SS` (UTC).
    pub at: String,
    pub level: Level,
    pub text: String,
}

/// What one frame needs besides the board.
#[derive(Debug, Clone, Copy)]
pub struct Screen {
    pub width: usize,
    pub height: usize,
    pub color: bool,
    /// Wall clock, µs since the Unix epoch, for the age of each tick.
    pub now_us: u64,
    /// For the move marks.
    pub now: Instant,
}

struct Span {
    text: String,
    style: &'static str,
}

fn span(text: impl Into<String>, style: &'static str) -> Span {
    Span {
        text: text.into(),
        style,
    }
}

/// A line cut to `width` visible characters.
fn line(spans: &[Span], width: usize, color: bool) -> String {
    let mut out = String::new();
    let mut left = width;
    for s in spans {
        if left == 0 {
            break;
        }
        let text: String = s.text.chars().take(left).collect();
        left -= text.chars().count();
        if color && !s.style.is_empty() {
            out.push_str(&format!("\x1b[{}m{text}\x1b[0m", s.style));
        } else {
            out.push_str(&text);
        }
    }
    out
}

/// A price with its own decimals, at least two and at most six: 189.1 → "189.10".
pub fn price(v: f64) -> String {
    let s = v.to_string();
    let decimals = s.find('.').map_or(0, |dot| s.len() - dot - 1);
    format!("{v:.*}", decimals.clamp(2, 6))
}

pub fn volume(v: u64) -> String {
    match v {
        1_000_000_000.. => format!("{:.2}B", v as f64 / 1e9),
        1_000_000.. => format!("{:.2}M", v as f64 / 1e6),
        10_000.. => format!("{:.1}K", v as f64 / 1e3),
        _ => v.to_string(),
    }
}

fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{v:.2}")
    } else if v < 0.0 {
        format!("{v:.2}")
    } else {
        "0.00".into()
    }
}

/// How old a tick stamped at `ts_us` is at `now_us`.
pub fn age(ts_us: u64, now_us: u64) -> String {
    let ms = now_us.saturating_sub(ts_us) / 1000;
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

/// `HH:MM:SS` of a wall-clock time in µs, UTC.
pub fn clock(now_us: u64) -> String {
    let s = now_us / 1_000_000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

const HEADS: [&str; 9] = [
    "SYMBOL", "LAST", "BID", "ASK", "CHG", "CHG%", "VOLUME", "SEQ", "AGE",
];
const WIDTHS: [usize; 9] = [0, 11, 11, 11, 9, 8, 9, 17, 7];

fn status_line(st: &Status) -> Vec<Span> {
    let state_style = match st.state.as_str() {
        "open" => GREEN,
        "closed" => RED,
        _ => YELLOW,
    };
    let mut state = st.state.clone();
    if !st.detail.is_empty() {
        state = format!("{state} {}", st.detail);
    }
    let lag = st.lag_ms.map_or("—".into(), |l| format!("{l} ms"));
    vec![
        span("TickMesh", BOLD),
        span("  ", PLAIN),
        span(state, state_style),
        span("  edge ", DIM),
        span(st.edge.clone().unwrap_or_else(|| "—".into()), PLAIN),
        span("  enc ", DIM),
        span(st.encoding.clone(), PLAIN),
        span("  mode ", DIM),
        span(format!("{}/{}ms", st.mode, st.interval_ms), PLAIN),
        span("  lag ", DIM),
        span(lag, PLAIN),
        span("  upd/s ", DIM),
        span(st.updates_per_s.to_string(), PLAIN),
        span("  reconnects ", DIM),
        span(st.reconnects.to_string(), PLAIN),
        span("  stale ", DIM),
        span(st.stale.to_string(), PLAIN),
    ]
}

fn row_line(row: &Row, sym_width: usize, scr: &Screen) -> Vec<Span> {
    let cell = |i: usize, text: String, style: &'static str| {
        span(format!(" {text:>w$}", w = WIDTHS[i]), style)
    };
    let mut spans = vec![span(format!("{:<sym_width$}", row.symbol), BOLD)];
    if let Some(reason) = &row.refused {
        spans.push(span(format!("  refused: {reason}"), RED));
        return spans;
    }
    let Some(t) = &row.tick else {
        spans.push(span("  waiting for data", DIM));
        return spans;
    };
    let opt = |v: Option<f64>| v.map(price).unwrap_or_default();
    let moved = match row.moved {
        Some((at, Ordering::Greater)) if scr.now.duration_since(at) < MOVE_MARK => GREEN,
        Some((at, Ordering::Less)) if scr.now.duration_since(at) < MOVE_MARK => RED,
        _ => PLAIN,
    };
    spans.push(cell(1, opt(t.last), moved));
    spans.push(cell(2, opt(t.bid), PLAIN));
    spans.push(cell(3, opt(t.ask), PLAIN));
    match (t.last, t.prev_close) {
        (Some(last), Some(prev)) if prev != 0.0 => {
            let chg = last - prev;
            let style = match chg.partial_cmp(&0.0) {
                Some(Ordering::Greater) => GREEN,
                Some(Ordering::Less) => RED,
                _ => PLAIN,
            };
            spans.push(cell(4, signed(chg), style));
            spans.push(cell(5, format!("{}%", signed(chg / prev * 100.0)), style));
        }
        _ => {
            spans.push(cell(4, String::new(), PLAIN));
            spans.push(cell(5, String::new(), PLAIN));
        }
    }
    spans.push(cell(6, t.volume.map(volume).unwrap_or_default(), PLAIN));
    spans.push(cell(7, t.seq.to_string(), DIM));
    spans.push(cell(8, age(t.ts, scr.now_us), DIM));
    match t.state {
        Some(State::Halted) => spans.push(span("  HALTED", RED)),
        Some(State::PreOpen) => spans.push(span("  pre-open", DIM)),
        Some(State::Closed) => spans.push(span("  closed", DIM)),
        Some(State::Open) | None => {}
    }
    spans
}

/// The whole frame, one string per screen line, none wider than `scr.width` characters
/// and no more lines than `scr.height`.
pub fn render(board: &Board, status: &Status, notes: &[Note], scr: &Screen) -> Vec<String> {
    let sym_width = board
        .rows()
        .iter()
        .map(|r| r.symbol.len())
        .chain([HEADS[0].len()])
        .max()
        .unwrap_or(6);
    let mut head = vec![span(format!("{:<sym_width$}", HEADS[0]), DIM)];
    for i in 1..HEADS.len() {
        head.push(span(format!(" {:>w$}", HEADS[i], w = WIDTHS[i]), DIM));
    }
    let shown_notes = &notes[notes.len().saturating_sub(MAX_NOTES)..];
    // Status, URL, blank, header; then rows; then blank, notes, and the key hint.
    let fixed = 4 + 1 + shown_notes.len() + 1;
    let room = scr.height.saturating_sub(fixed).max(1);
    let rows = board.rows();
    let (shown, hidden) = if rows.len() > room {
        (
            &rows[..room.saturating_sub(1)],
            rows.len() - room.saturating_sub(1),
        )
    } else {
        (rows, 0)
    };

    let mut out = vec![
        line(&status_line(status), scr.width, scr.color),
        line(&[span(status.url.clone(), DIM)], scr.width, scr.color),
        String::new(),
        line(&head, scr.width, scr.color),
    ];
    for row in shown {
        out.push(line(&row_line(row, sym_width, scr), scr.width, scr.color));
    }
    if hidden > 0 {
        let more = format!("… {hidden} more symbols (a taller window shows them)");
        out.push(line(&[span(more, DIM)], scr.width, scr.color));
    }
    out.push(String::new());
    for n in shown_notes {
        let style = match n.level {
            Level::Info => DIM,
            Level::Warn => YELLOW,
            Level::Error => RED,
        };
        let spans = [
            span(format!("{}  ", n.at), DIM),
            span(n.text.clone(), style),
        ];
        out.push(line(&spans, scr.width, scr.color));
    }
    out.push(line(&[span("Ctrl-C to quit", DIM)], scr.width, scr.color));
    out.truncate(scr.height.max(1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_core::Tick;

    fn screen(width: usize, height: usize) -> Screen {
        Screen {
            width,
            height,
            color: false,
            now_us: 1_000_000_000_000 + 250_000,
            now: Instant::now(),
        }
    }

    fn board() -> Board {
        let mut b = Board::new(&["AAPL".into(), "SPY".into(), "SECRET".into()]);
        b.update(
            Tick {
                symbol: "AAPL".into(),
                seq: 1_700_000_000_000_042,
                epoch: 1_700_000_000_000_000,
                ts: 1_000_000_000_000,
                last: Some(189.1),
                bid: Some(189.09),
                ask: Some(189.12),
                prev_close: Some(188.0),
                volume: Some(1_234_567),
                ..Default::default()
            },
            Instant::now(),
        );
        b.update(
            Tick {
                symbol: "SPY".into(),
                seq: 7,
                last: Some(500.0),
                state: Some(State::Halted),
                ..Default::default()
            },
            Instant::now(),
        );
        b.refuse("SECRET", "not_entitled");
        b
    }

    fn status() -> Status {
        Status {
            url: "ws://127.0.0.1:8080/v1/stream".into(),
            state: "open".into(),
            edge: Some("edge-local-1".into()),
            encoding: "json".into(),
            mode: "quote".into(),
            interval_ms: 250,
            lag_ms: Some(3),
            updates_per_s: 12,
            ..Default::default()
        }
    }

    #[test]
    fn formats() {
        assert_eq!(price(189.1), "189.10");
        assert_eq!(price(189.125), "189.125");
        assert_eq!(price(0.0001234567), "0.000123");
        assert_eq!(price(42.0), "42.00");
        assert_eq!(volume(999), "999");
        assert_eq!(volume(12_345), "12.3K");
        assert_eq!(volume(1_234_567), "1.23M");
        assert_eq!(volume(2_500_000_000), "2.50B");
        assert_eq!(signed(1.1), "+1.10");
        assert_eq!(signed(-0.5), "-0.50");
        assert_eq!(age(1_000_000, 1_250_000), "250ms");
        assert_eq!(age(1_000_000, 3_500_000), "2.5s");
        assert_eq!(age(0, 120_000_000), "2m");
        assert_eq!(
            age(2_000_000, 1_000_000),
            "0ms",
            "a tick from the future is new"
        );
        assert_eq!(clock(3_723_000_000), "01:02:03");
    }

    #[test]
    fn the_table_shows_each_symbol_in_order_with_its_fields() {
        let lines = render(&board(), &status(), &[], &screen(200, 40));
        let text = lines.join("\n");
        assert!(
            lines[0].starts_with("TickMesh  open  edge edge-local-1"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("lag 3 ms"));
        assert!(lines[3].starts_with("SYMBOL") && lines[3].contains("SEQ"));
        let aapl = &lines[4];
        for want in [
            "AAPL",
            "189.10",
            "189.09",
            "189.12",
            "+1.10",
            "+0.59%",
            "1.23M",
            "1700000000000042",
            "250ms",
        ] {
            assert!(aapl.contains(want), "{want} in {aapl:?}");
        }
        assert!(!aapl.contains("HALTED"), "{aapl:?}");
        assert!(
            lines[5].starts_with("SPY") && lines[5].ends_with("HALTED"),
            "{:?}",
            lines[5]
        );
        assert!(lines[6].contains("refused: not_entitled"));
        assert!(!text.contains('\x1b'), "no colour when asked for none");
    }

    #[test]
    fn frames_fit_the_terminal() {
        let notes: Vec<Note> = (0..8)
            .map(|i| Note {
                at: "00:00:00".into(),
                level: Level::Error,
                text: format!("note {i}"),
            })
            .collect();
        let mut s = screen(40, 12);
        s.color = true;
        let mut b = Board::new(&(0..30).map(|i| format!("S{i}")).collect::<Vec<_>>());
        b.refuse("S0", "x");
        let lines = render(&b, &status(), &notes, &s);
        assert!(lines.len() <= 12, "{} lines", lines.len());
        for l in &lines {
            let visible = l
                .split('\x1b')
                .enumerate()
                .map(|(i, part)| {
                    if i == 0 {
                        part.chars().count()
                    } else {
                        part.split_once('m').map_or(0, |(_, t)| t.chars().count())
                    }
                })
                .sum::<usize>();
            assert!(visible <= 40, "{visible} columns: {l:?}");
        }
        let text = lines.join("\n");
        assert!(text.contains("more symbols"), "{text}");
        assert!(
            text.contains("note 7") && !text.contains("note 2"),
            "the latest notes"
        );
    }
}
