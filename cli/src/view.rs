//! Where events go: the table, redrawn in place at most ten times a second, or one JSON
//! line per tick or snapshot (`--json`, for scripts).
//!
//! Notes (server errors, reconnects) go to stderr. When the table and stderr share one
//! terminal, stderr lines would be drawn over at the next frame: the notes are then shown
//! at the foot of the table, and the warnings and errors among them are written to stderr
//! once the table is gone.

use std::collections::VecDeque;
use std::io::{self, BufWriter, IsTerminal, Stdout, Write};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tickmesh_core::Tick;

use crate::board::Board;
use crate::render::{self, Level, Note, Screen, Status};

/// Shortest time between two frames.
pub const FRAME: Duration = Duration::from_millis(100);
/// A frame at least this often, so ages keep counting while nothing ticks.
const IDLE_FRAME: Duration = Duration::from_secs(1);
/// Warnings and errors kept for stderr when the table ends.
const MAX_KEPT: usize = 100;

/// Field order of a JSON line: the protocol's order for tick objects.
const FIELD_ORDER: [&str; 27] = [
    "symbol",
    "seq",
    "epoch",
    "ts",
    "last",
    "src_ts",
    "kind",
    "last_size",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "volume",
    "open",
    "high",
    "low",
    "prev_close",
    "underlying",
    "expiry",
    "strike",
    "right",
    "iv",
    "delta",
    "gamma",
    "theta",
    "vega",
    "depth",
];

/// `{"type":"<kind>", ...tick fields}`, fields in protocol order, unknown ones after.
pub fn json_line(kind: &str, tick: &Map<String, Value>) -> String {
    let mut out = format!("{{\"type\":{}", Value::from(kind));
    let mut field = |k: &str, v: &Value| {
        out.push(',');
        out.push_str(&Value::from(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    };
    for k in FIELD_ORDER {
        if let Some(v) = tick.get(k) {
            field(k, v);
        }
    }
    for (k, v) in tick {
        if k != "type" && !FIELD_ORDER.contains(&k.as_str()) {
            field(k, v);
        }
    }
    out.push('}');
    out
}

pub use tickmesh_core::tick::now_us;

pub struct View {
    json: bool,
    /// The table and stderr share a terminal.
    inline_notes: bool,
    /// Drawing on a terminal: alternate screen, cursor moves, colours.
    tty: bool,
    color: bool,
    out: BufWriter<Stdout>,
    board: Board,
    pub status: Status,
    notes: VecDeque<Note>,
    kept: Vec<Note>,
    dirty: bool,
    drawn_at: Option<Instant>,
    entered: bool,
    window_start: Instant,
    window_updates: u64,
}

impl View {
    pub fn new(json: bool, symbols: &[String], status: Status) -> Self {
        let tty = io::stdout().is_terminal();
        View {
            json,
            inline_notes: !json && tty && io::stderr().is_terminal(),
            tty,
            color: tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
            board: Board::new(symbols),
            status,
            notes: VecDeque::new(),
            kept: Vec::new(),
            dirty: true,
            drawn_at: None,
            entered: false,
            window_start: Instant::now(),
            window_updates: 0,
        }
    }

    /// A tick or snapshot that passed the seq gate. `fields` is the tick object as sent.
    pub fn tick(&mut self, fields: &Map<String, Value>, snapshot: bool) -> io::Result<()> {
        self.window_updates += 1;
        if self.json {
            let line = json_line(if snapshot { "snapshot" } else { "tick" }, fields);
            self.out.write_all(line.as_bytes())?;
            return self.out.write_all(b"\n");
        }
        // A tick the core model cannot read is shown in JSON mode only.
        if let Ok(tick) = serde_json::from_value::<Tick>(Value::Object(fields.clone())) {
            self.board.update(tick, Instant::now());
            self.dirty = true;
        }
        Ok(())
    }

    /// An account message (`account` or `account_snapshot`): the message as one JSON
    /// line, or `text` as a note under the table.
    pub fn account(&mut self, msg: &Value, text: impl Into<String>) -> io::Result<()> {
        if self.json {
            let Value::Object(fields) = msg else {
                return Ok(());
            };
            let kind = fields
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("account");
            let line = json_line(kind, fields);
            self.out.write_all(line.as_bytes())?;
            return self.out.write_all(b"\n");
        }
        self.note(Level::Info, text);
        Ok(())
    }

    pub fn refuse(&mut self, symbol: &str, code: &str) {
        self.board.refuse(symbol, code);
        self.dirty = true;
    }

    /// Something to tell the user: stderr, or the foot of the table.
    pub fn note(&mut self, level: Level, text: impl Into<String>) {
        let note = Note {
            at: render::clock(now_us()),
            level,
            text: text.into(),
        };
        if self.inline_notes {
            if level != Level::Info && self.kept.len() < MAX_KEPT {
                self.kept.push(note.clone());
            }
            self.notes.push_back(note);
            while self.notes.len() > render::MAX_NOTES {
                self.notes.pop_front();
            }
            self.dirty = true;
        } else {
            eprintln!("tickmesh: {}", note.text);
        }
    }

    pub fn set_state(&mut self, state: &str, detail: impl Into<String>) {
        self.status.state = state.to_string();
        self.status.detail = detail.into();
        self.dirty = true;
    }

    /// Pushes out what a message produced (JSON lines are flushed per WebSocket frame).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.json {
            self.out.flush()?;
        }
        Ok(())
    }

    /// Called every [`FRAME`]: updates the rate and redraws the table if anything changed.
    pub fn frame(&mut self, now: Instant) -> io::Result<()> {
        let window = now.duration_since(self.window_start);
        if window >= Duration::from_secs(1) {
            self.status.updates_per_s =
                (self.window_updates as f64 / window.as_secs_f64()).round() as u64;
            self.window_updates = 0;
            self.window_start = now;
            self.dirty = true;
        }
        if self.json {
            return self.out.flush();
        }
        let due = match self.drawn_at {
            None => true,
            Some(at) if self.tty => {
                now.duration_since(at) >= IDLE_FRAME
                    || (self.dirty && now.duration_since(at) >= FRAME)
            }
            // Not a terminal: a plain frame a second, appended.
            Some(at) => now.duration_since(at) >= IDLE_FRAME,
        };
        if due {
            self.draw(now)?;
        }
        Ok(())
    }

    fn draw(&mut self, now: Instant) -> io::Result<()> {
        let (width, height) = if self.tty {
            crossterm::terminal::size().map_or((120, 40), |(w, h)| (w as usize, h as usize))
        } else {
            (usize::MAX, usize::MAX)
        };
        let screen = Screen {
            width: width.max(20),
            height: height.max(5),
            color: self.color,
            now_us: now_us(),
            now,
        };
        let notes: Vec<Note> = self.notes.iter().cloned().collect();
        let lines = render::render(&self.board, &self.status, &notes, &screen);
        let mut buf = String::with_capacity(lines.len() * 100);
        if self.tty {
            if !self.entered {
                // Alternate screen, cursor hidden; undone in `finish`.
                buf.push_str("\x1b[?1049h\x1b[?25l");
                self.entered = true;
            }
            buf.push_str("\x1b[H");
            for (i, l) in lines.iter().enumerate() {
                buf.push_str(l);
                buf.push_str("\x1b[K");
                if i + 1 < lines.len() {
                    buf.push_str("\r\n");
                }
            }
            buf.push_str("\x1b[J");
        } else {
            for l in &lines {
                buf.push_str(l);
                buf.push('\n');
            }
            buf.push('\n');
        }
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()?;
        self.dirty = false;
        self.drawn_at = Some(now);
        Ok(())
    }

    /// Restores the terminal and writes what the table showed of warnings and errors.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.entered {
            self.out.write_all(b"\x1b[?25h\x1b[?1049l")?;
            self.entered = false;
        }
        self.out.flush()?;
        for n in self.kept.drain(..) {
            eprintln!("tickmesh: {} {}", n.at, n.text);
        }
        Ok(())
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // Leaves the terminal usable even when an error ends the command early.
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_lines_put_the_type_first_and_fields_in_protocol_order() {
        let v = json!({"type": "snapshot", "ts": 3, "zeta": 1, "last": 1.5, "seq": 2, "symbol": "AAPL", "epoch": 1, "bid": 1.25});
        let line = json_line("snapshot", v.as_object().unwrap());
        assert_eq!(
            line,
            r#"{"type":"snapshot","symbol":"AAPL","seq":2,"epoch":1,"ts":3,"last":1.5,"bid":1.25,"zeta":1}"#
        );
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["seq"], 2);
    }
}
