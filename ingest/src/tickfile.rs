//! Tick files: what `record` writes and `replay` reads.
//!
//! - NDJSON (`.ndjson`, `.jsonl`, `.json`): one tick object per line, the fields of the
//!   client protocol's tick object (`symbol` required, everything else optional; unknown
//!   fields such as `type` are ignored, so a capture of a client stream replays too).
//! - CSV (`.csv`): a header naming the columns, any subset of [`CSV_COLUMNS`] that
//!   includes `symbol`; empty cells are absent fields. CSV has no depth.
//! - Either may be gzipped (`.gz`); a reader recognises gzip by its magic bytes.
//!
//! A line that does not parse, or whose tick breaks the wire invariants (symbol grammar,
//! finite numbers, integers below 2^53), is a [`Corrupt`] record: reported with its file
//! and line, and skipped.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tickmesh_core::codec;
use tickmesh_core::tick::{Depth, Kind, Right, Tick};

/// Longest line accepted, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// CSV columns, in the order `record` writes them.
pub const CSV_COLUMNS: [&str; 26] = [
    "symbol",
    "seq",
    "epoch",
    "ts",
    "src_ts",
    "kind",
    "last",
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
];

/// A file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// From the extension (after any `.gz`).
    #[default]
    Auto,
    Ndjson,
    Csv,
}

impl FileFormat {
    /// The concrete format of `path`.
    pub fn resolve(self, path: &Path) -> Result<FileFormat, String> {
        if self != FileFormat::Auto {
            return Ok(self);
        }
        let name = path.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") {
            Ok(FileFormat::Csv)
        } else if [".ndjson", ".jsonl", ".json"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            Ok(FileFormat::Ndjson)
        } else {
            Err(format!(
                "{}: cannot tell the format from the name (.ndjson, .jsonl, .csv, optionally .gz); set it",
                path.display()
            ))
        }
    }
}

/// A record that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: u64,
    pub error: String,
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.error)
    }
}

/// Counts of one file read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub ticks: u64,
    pub corrupt: u64,
}

/// A tick as files hold it: only the symbol is required.
#[derive(Debug, Deserialize)]
struct FileTick {
    symbol: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    epoch: u64,
    #[serde(default)]
    ts: u64,
    src_ts: Option<u64>,
    #[serde(default)]
    kind: Kind,
    last: Option<f64>,
    last_size: Option<u64>,
    bid: Option<f64>,
    ask: Option<f64>,
    bid_size: Option<u64>,
    ask_size: Option<u64>,
    volume: Option<u64>,
    open: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    prev_close: Option<f64>,
    depth: Option<Depth>,
    underlying: Option<String>,
    expiry: Option<String>,
    strike: Option<f64>,
    right: Option<Right>,
    iv: Option<f64>,
    delta: Option<f64>,
    gamma: Option<f64>,
    theta: Option<f64>,
    vega: Option<f64>,
}

impl From<FileTick> for Tick {
    fn from(f: FileTick) -> Tick {
        Tick {
            symbol: f.symbol,
            seq: f.seq,
            epoch: f.epoch,
            ts: f.ts,
            src_ts: f.src_ts,
            kind: f.kind,
            last: f.last,
            last_size: f.last_size,
            bid: f.bid,
            ask: f.ask,
            bid_size: f.bid_size,
            ask_size: f.ask_size,
            volume: f.volume,
            open: f.open,
            high: f.high,
            low: f.low,
            prev_close: f.prev_close,
            depth: f.depth,
            underlying: f.underlying,
            expiry: f.expiry,
            strike: f.strike,
            right: f.right,
            iv: f.iv,
            delta: f.delta,
            gamma: f.gamma,
            theta: f.theta,
            vega: f.vega,
        }
    }
}

/// The wire invariants, plus the option fields' shapes.
fn checked(tick: Tick) -> Result<Tick, String> {
    codec::check(&tick).map_err(|e| e.to_string())?;
    if let Some(u) = &tick.underlying {
        tickmesh_core::symbol::validate(u).map_err(|e| format!("underlying: {e}"))?;
    }
    if let Some(e) = &tick.expiry {
        tickmesh_core::date::Date::parse(e).map_err(|e| format!("expiry: {e}"))?;
    }
    Ok(tick)
}

/// Parses one NDJSON line.
pub fn parse_ndjson(line: &str) -> Result<Tick, String> {
    let f: FileTick = serde_json::from_str(line).map_err(|e| e.to_string())?;
    checked(f.into())
}

/// Writes one NDJSON line.
pub fn write_ndjson(w: &mut impl Write, tick: &Tick) -> io::Result<()> {
    serde_json::to_writer(&mut *w, tick)?;
    w.write_all(b"\n")
}

/// The CSV header line.
pub fn write_csv_header(w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "{}", CSV_COLUMNS.join(","))
}

/// Writes one CSV row (no depth). Fields never need quoting: symbols, dates, numbers.
pub fn write_csv(w: &mut impl Write, t: &Tick) -> io::Result<()> {
    fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    let kind = serde_json::to_value(t.kind).ok();
    let right = t
        .right
        .map(|r| tickmesh_core::occ::right_char(r).to_string());
    let cells = [
        t.symbol.clone(),
        t.seq.to_string(),
        t.epoch.to_string(),
        t.ts.to_string(),
        opt(t.src_ts),
        kind.as_ref()
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string(),
        opt(t.last),
        opt(t.last_size),
        opt(t.bid),
        opt(t.ask),
        opt(t.bid_size),
        opt(t.ask_size),
        opt(t.volume),
        opt(t.open),
        opt(t.high),
        opt(t.low),
        opt(t.prev_close),
        t.underlying.clone().unwrap_or_default(),
        t.expiry.clone().unwrap_or_default(),
        opt(t.strike),
        right.unwrap_or_default(),
        opt(t.iv),
        opt(t.delta),
        opt(t.gamma),
        opt(t.theta),
        opt(t.vega),
    ];
    writeln!(w, "{}", cells.join(","))
}

/// Column positions of a CSV file, checked against [`CSV_COLUMNS`].
#[derive(Debug, Clone)]
pub struct CsvHeader {
    names: Vec<&'static str>,
}

impl CsvHeader {
    pub fn parse(header: &csv::StringRecord) -> Result<CsvHeader, String> {
        let mut names = Vec::new();
        for col in header.iter() {
            let col = col.trim();
            let known = CSV_COLUMNS
                .iter()
                .find(|c| **c == col)
                .ok_or_else(|| format!("unknown column {col:?}"))?;
            if names.contains(known) {
                return Err(format!("column {col:?} appears twice"));
            }
            names.push(*known);
        }
        if !names.contains(&"symbol") {
            return Err("no symbol column".into());
        }
        Ok(CsvHeader { names })
    }

    /// Parses one row into a tick.
    pub fn tick(&self, row: &csv::StringRecord) -> Result<Tick, String> {
        if row.len() != self.names.len() {
            return Err(format!(
                "{} fields where the header has {}",
                row.len(),
                self.names.len()
            ));
        }
        let mut obj = serde_json::Map::new();
        for (name, cell) in self.names.iter().zip(row.iter()) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            let value = match *name {
                "symbol" | "kind" | "underlying" | "expiry" | "right" => {
                    serde_json::Value::String(cell.to_string())
                }
                _ => serde_json::from_str::<serde_json::Number>(cell)
                    .map(serde_json::Value::Number)
                    .map_err(|_| format!("{name}: {cell:?} is not a number"))?,
            };
            obj.insert((*name).to_string(), value);
        }
        let f: FileTick =
            serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())?;
        checked(f.into())
    }
}

/// Opens `path`, decompressing gzip when the file starts with its magic bytes.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let mut file = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let magic = file.fill_buf()?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::read::MultiGzDecoder::new(file);
        Ok(Box::new(BufReader::with_capacity(256 * 1024, gz)))
    } else {
        Ok(Box::new(file))
    }
}

/// Reads `path` in `format`, calling `on_tick` for every good record (it may stop the
/// read) and `on_corrupt` for every skipped one. Errors are I/O errors of the file itself.
pub fn read_file(
    path: &Path,
    format: FileFormat,
    mut on_tick: impl FnMut(Tick) -> ControlFlow<()>,
    mut on_corrupt: impl FnMut(Corrupt),
) -> io::Result<FileSummary> {
    let format = format
        .resolve(path)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let reader = open(path)?;
    let mut summary = FileSummary::default();
    let mut corrupt = |line: u64, error: String, summary: &mut FileSummary| {
        summary.corrupt += 1;
        on_corrupt(Corrupt {
            file: path.to_path_buf(),
            line,
            error,
        });
    };
    match format {
        FileFormat::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(reader);
            let mut header = None;
            let mut row = csv::StringRecord::new();
            loop {
                match csv.read_record(&mut row) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) if e.is_io_error() => return Err(io::Error::other(e)),
                    Err(e) => {
                        let line = e.position().map_or(0, csv::Position::line);
                        corrupt(line, e.to_string(), &mut summary);
                        continue;
                    }
                }
                let line = row.position().map_or(0, csv::Position::line);
                let Some(h) = &header else {
                    let parsed = CsvHeader::parse(&row).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("header: {e}"))
                    })?;
                    header = Some(parsed);
                    continue;
                };
                match h.tick(&row) {
                    Ok(t) => {
                        summary.ticks += 1;
                        if on_tick(t).is_break() {
                            break;
                        }
                    }
                    Err(e) => corrupt(line, e, &mut summary),
                }
            }
        }
        _ => {
            let mut reader = reader;
            let mut buf = Vec::new();
            let mut line = 0u64;
            loop {
                buf.clear();
                let n = (&mut reader)
                    .take(MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut buf)?;
                if n == 0 {
                    break;
                }
                line += 1;
                if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
                    skip_line(&mut reader)?;
                    corrupt(
                        line,
                        format!("line longer than {MAX_LINE} bytes"),
                        &mut summary,
                    );
                    continue;
                }
                let text = match std::str::from_utf8(&buf) {
                    Ok(t) => t.trim(),
                    Err(_) => {
                        corrupt(line, "not UTF-8".into(), &mut summary);
                        continue;
                    }
                };
                if text.is_empty() {
                    continue;
                }
                match parse_ndjson(text) {
                    Ok(t) => {
                        summary.ticks += 1;
                        if on_tick(t).is_break() {
                            break;
                        }
                    }
                    Err(e) => corrupt(line, e, &mut summary),
                }
            }
        }
    }
    Ok(summary)
}

fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(pos + 1);
            return Ok(());
        }
        let n = buf.len();
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests;
