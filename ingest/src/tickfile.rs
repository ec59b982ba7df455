//! Tick files: what `record` writes and `replay` reads.
//!
//! - NDJSON (`.ndjson`, `.jsonl`, `.json`): one tick object per line, the fields of the
//!   client protocol's tick object (`symbol` required, everything else optional; unknown
//!   fields such as `type` are ignored, so a capture of a client stream replays too).
//!   A tick that printed a trade carries it as a `trade` object ([`FileTrade`]:
//!   `{"price", "size", "trade_id"?, "conditions"?}`) on its own line.
//! - CSV (`.csv`): a header naming the columns, any subset of [`CSV_COLUMNS`] that
//!   includes `symbol`; empty cells are absent fields. CSV has no depth. A print is in
//!   the `trade_price`, `trade_size`, `trade_id` and `trade_conditions` columns
//!   (conditions separated by `;`), empty when the tick printed nothing.
//! - Either may be gzipped (`.gz`); a reader recognises gzip by its magic bytes.
//!
//! A print rides on the record of its tick, not on a line of its own: a print belongs to
//! exactly one tick (its seq is the tick's), so one record is read, skipped or replayed
//! whole, in file order, with nothing to match up; and a file without prints is the same
//! file as before.
//!
//! A line that does not parse, or whose tick breaks the wire invariants (symbol grammar,
//! finite numbers, integers below 2^53), or whose print is not one that could be
//! published ([`check_trade`]), is a [`Corrupt`] record: reported with its file, line and
//! byte offset, and skipped, tick and print together. So is a line longer than the
//! record bound, which is skipped without being read into memory; a CSV record is one
//! line.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tickmesh_core::tick::{Depth, Kind, MAX_SAFE_INTEGER, Right, State, Tick};
use tickmesh_core::trade::{MAX_CONDITIONS, Trade};
use tickmesh_core::{codec, nesting};

/// Longest record (an NDJSON line, a CSV row; line ending excluded) that a replay reads by
/// default, in bytes: `replay.max_record_bytes`. A tick the edge accepts (at most
/// [`tickmesh_core::codec::MAX_WIRE_TICK`] bytes of MessagePack) is well under it as text.
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024;

/// CSV columns, in the order `record` writes them.
pub const CSV_COLUMNS: [&str; 31] = [
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
    "state",
    "trade_price",
    "trade_size",
    "trade_id",
    "trade_conditions",
];

/// Separates the conditions of a print in the CSV column `trade_conditions`.
pub const CSV_CONDITION_SEPARATOR: char = ';';
/// Longest sale condition a file holds, in bytes (the wire's bound).
pub const MAX_CONDITION_LEN: usize = 16;

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
    /// Byte offset of the line's start in the (decompressed) file.
    pub offset: u64,
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
    /// Of the ticks, those that carried a print.
    pub trades: u64,
    pub corrupt: u64,
}

/// One record of a file: a tick, and the trade it printed, if it printed one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub tick: Tick,
    pub trade: Option<FileTrade>,
}

impl From<Tick> for Record {
    fn from(tick: Tick) -> Record {
        Record { tick, trade: None }
    }
}

/// A print as a file holds it, on the record of the tick it printed at: its symbol, seq
/// and times are the tick's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileTrade {
    pub price: f64,
    pub size: u64,
    /// The `trade_id` it had where it was recorded. A replay does not reuse it: the
    /// replayed tick takes a new seq, and its print takes that seq as its id, unique per
    /// symbol however often the file is replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_id: Option<u64>,
    /// Sale conditions, as on the wire (`opening`, `cross`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
}

impl From<&Trade> for FileTrade {
    fn from(t: &Trade) -> FileTrade {
        FileTrade {
            price: t.price,
            size: t.size,
            trade_id: Some(t.trade_id),
            conditions: t.conditions.clone(),
        }
    }
}

/// Whether `c` can be a sale condition in a file: 1 to [`MAX_CONDITION_LEN`] printable
/// ASCII characters, none of them a space, `,`, `;` or `"`, so that a CSV cell never
/// needs quoting and the conditions of a cell split back as they were.
fn condition_ok(c: &str) -> bool {
    (1..=MAX_CONDITION_LEN).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b';' | b'"'))
}

/// Why a print cannot be in a file: a price that is not a positive finite number, a size
/// of 0 or not below 2^53, a `trade_id` not below 2^53, more than
/// [`tickmesh_core::trade::MAX_CONDITIONS`] conditions or one that is not a short code
/// (1 to 16 printable ASCII characters other than space, `,`, `;` and `"`). What passes
/// is a print the publisher sends and an edge takes.
pub fn check_trade(t: &FileTrade) -> Result<(), String> {
    if !(t.price.is_finite() && t.price > 0.0) {
        return Err(format!("trade: price must be positive, got {}", t.price));
    }
    if t.size == 0 || t.size > MAX_SAFE_INTEGER {
        return Err(format!("trade: size must be 1..2^53, got {}", t.size));
    }
    if t.trade_id.is_some_and(|v| v > MAX_SAFE_INTEGER) {
        return Err("trade: trade_id is not below 2^53".into());
    }
    if t.conditions.len() > MAX_CONDITIONS {
        return Err(format!(
            "trade: {} conditions; at most {MAX_CONDITIONS}",
            t.conditions.len()
        ));
    }
    match t.conditions.iter().find(|c| !condition_ok(c)) {
        Some(c) => Err(format!(
            "trade: condition {:?} is not 1 to {MAX_CONDITION_LEN} printable characters other than space , ; \"",
            c.chars().take(40).collect::<String>()
        )),
        None => Ok(()),
    }
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
    state: Option<State>,
    trade: Option<FileTrade>,
}

impl FileTick {
    /// The tick, and its print.
    fn split(self) -> (Tick, Option<FileTrade>) {
        let f = self;
        let tick = Tick {
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
            state: f.state,
        };
        (tick, f.trade)
    }
}

/// The wire invariants, plus the option fields' shapes, and the print's checks.
fn checked(f: FileTick) -> Result<Record, String> {
    let (tick, trade) = f.split();
    codec::check(&tick).map_err(|e| e.to_string())?;
    if let Some(u) = &tick.underlying {
        tickmesh_core::symbol::validate(u).map_err(|e| format!("underlying: {e}"))?;
    }
    if let Some(e) = &tick.expiry {
        tickmesh_core::date::Date::parse(e).map_err(|e| format!("expiry: {e}"))?;
    }
    if let Some(t) = &trade {
        check_trade(t)?;
    }
    Ok(Record { tick, trade })
}

/// Parses one NDJSON line.
pub fn parse_ndjson(line: &str) -> Result<Record, String> {
    let f: FileTick = nesting::from_json(line.as_bytes()).map_err(|e| e.to_string())?;
    checked(f)
}

/// An NDJSON line: the tick object, with the print as its `trade`.
#[derive(Serialize)]
struct NdjsonLine<'a> {
    #[serde(flatten)]
    tick: &'a Tick,
    #[serde(skip_serializing_if = "Option::is_none")]
    trade: Option<&'a FileTrade>,
}

/// Writes one NDJSON line.
pub fn write_ndjson(w: &mut impl Write, r: &Record) -> io::Result<()> {
    let line = NdjsonLine {
        tick: &r.tick,
        trade: r.trade.as_ref(),
    };
    serde_json::to_writer(&mut *w, &line)?;
    w.write_all(b"\n")
}

/// The CSV header line.
pub fn write_csv_header(w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "{}", CSV_COLUMNS.join(","))
}

/// Writes one CSV row (no depth). Fields never need quoting: symbols, dates, numbers,
/// and conditions that [`check_trade`] passes.
pub fn write_csv(w: &mut impl Write, r: &Record) -> io::Result<()> {
    fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    let (t, trade) = (&r.tick, r.trade.as_ref());
    let separator = CSV_CONDITION_SEPARATOR.to_string();
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
        t.state.map(State::as_str).unwrap_or_default().to_string(),
        opt(trade.map(|p| p.price)),
        opt(trade.map(|p| p.size)),
        opt(trade.and_then(|p| p.trade_id)),
        trade
            .map(|p| p.conditions.join(&separator))
            .unwrap_or_default(),
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

    /// Parses one row into a record.
    pub fn record(&self, row: &csv::StringRecord) -> Result<Record, String> {
        if row.len() != self.names.len() {
            return Err(format!(
                "{} fields where the header has {}",
                row.len(),
                self.names.len()
            ));
        }
        use serde_json::Value;
        let mut obj = serde_json::Map::new();
        // The print's columns, as the NDJSON `trade` object holds them.
        let mut trade = serde_json::Map::new();
        for (name, cell) in self.names.iter().zip(row.iter()) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            let value = match *name {
                "symbol" | "kind" | "underlying" | "expiry" | "right" | "state" => {
                    Value::String(cell.to_string())
                }
                "trade_conditions" => Value::Array(
                    cell.split(CSV_CONDITION_SEPARATOR)
                        .map(|c| Value::String(c.to_string()))
                        .collect(),
                ),
                _ => serde_json::from_str::<serde_json::Number>(cell)
                    .map(Value::Number)
                    .map_err(|_| format!("{name}: {cell:?} is not a number"))?,
            };
            match *name {
                "trade_price" => trade.insert("price".into(), value),
                "trade_size" => trade.insert("size".into(), value),
                "trade_id" => trade.insert("trade_id".into(), value),
                "trade_conditions" => trade.insert("conditions".into(), value),
                _ => obj.insert((*name).to_string(), value),
            };
        }
        if !trade.is_empty() {
            for (column, key) in [("trade_price", "price"), ("trade_size", "size")] {
                if !trade.contains_key(key) {
                    return Err(format!("{column} is empty in a row with a print"));
                }
            }
            obj.insert("trade".into(), Value::Object(trade));
        }
        let f: FileTick = serde_json::from_value(Value::Object(obj)).map_err(|e| e.to_string())?;
        checked(f)
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

/// Reads `path` in `format`, calling `on_record` for every good record (it may stop the
/// read) and `on_corrupt` for every skipped one. A record (an NDJSON line, a CSV row)
/// longer than `max_record` bytes is skipped unread and reported. Errors are I/O errors of
/// the file itself, and a CSV header that cannot be read.
pub fn read_file(
    path: &Path,
    format: FileFormat,
    max_record: usize,
    mut on_record: impl FnMut(Record) -> ControlFlow<()>,
    mut on_corrupt: impl FnMut(Corrupt),
) -> io::Result<FileSummary> {
    let format = format
        .resolve(path)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut lines = Lines::new(open(path)?, max_record);
    let mut summary = FileSummary::default();
    let mut corrupt = |line: &Line<'_>, error: String, summary: &mut FileSummary| {
        summary.corrupt += 1;
        on_corrupt(Corrupt {
            file: path.to_path_buf(),
            line: line.number,
            offset: line.offset,
            error,
        });
    };
    let too_long = format!("record longer than {max_record} bytes; skipped unread");
    let mut csv = (format == FileFormat::Csv).then(CsvSplitter::new);
    let mut header = None;
    let mut row = csv::StringRecord::new();
    while let Some(line) = lines.next_line()? {
        let Some(text) = line.text else {
            if csv.is_some() && header.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "header: too long",
                ));
            }
            corrupt(&line, too_long.clone(), &mut summary);
            continue;
        };
        let Ok(text) = std::str::from_utf8(text) else {
            corrupt(&line, "not UTF-8".into(), &mut summary);
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let parsed = match &mut csv {
            None => parse_ndjson(text),
            Some(splitter) => {
                splitter.split(text.as_bytes(), &mut row);
                let Some(h) = &header else {
                    let parsed = CsvHeader::parse(&row).map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("header: {e}"))
                    })?;
                    header = Some(parsed);
                    continue;
                };
                h.record(&row)
            }
        };
        match parsed {
            Ok(r) => {
                summary.ticks += 1;
                summary.trades += u64::from(r.trade.is_some());
                if on_record(r).is_break() {
                    break;
                }
            }
            Err(e) => corrupt(&line, e, &mut summary),
        }
    }
    Ok(summary)
}

/// One line of a file, as [`Lines`] hands it out.
struct Line<'a> {
    /// 1-based.
    number: u64,
    /// Byte offset of its start in the (decompressed) file.
    offset: u64,
    /// Without its line ending; `None` when it was longer than the bound.
    text: Option<&'a [u8]>,
}

/// Reads lines of at most `max` bytes (line ending excluded), holding no more than that:
/// the rest of a longer line is skipped as it streams past, never read into memory.
struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    max: usize,
    number: u64,
    offset: u64,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R, max: usize) -> Self {
        Lines {
            reader,
            buf: Vec::new(),
            max,
            number: 0,
            offset: 0,
        }
    }

    fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        // Room for the longest line and a CRLF.
        let limit = self.max as u64 + 2;
        let n = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        let offset = self.offset;
        let mut consumed = n as u64;
        let ended = self.buf.last() == Some(&b'\n');
        if !ended && consumed == limit {
            consumed += skip_line(&mut self.reader)?;
        }
        self.offset += consumed;
        let text = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        Ok(Some(Line {
            number: self.number,
            offset,
            text: (consumed <= limit && text.len() <= self.max).then_some(text),
        }))
    }
}

/// Skips to the end of the current line; returns the bytes skipped.
fn skip_line(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(skipped);
        }
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(pos + 1);
            return Ok(skipped + pos as u64 + 1);
        }
        let n = buf.len();
        reader.consume(n);
        skipped += n as u64;
    }
}

/// Splits one CSV line into fields (RFC 4180 quoting, within the line: a CSV record is
/// one line, so that the record bound of [`Lines`] holds), reusing its buffers.
struct CsvSplitter {
    reader: csv_core::Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
}

impl CsvSplitter {
    fn new() -> Self {
        CsvSplitter {
            reader: csv_core::Reader::new(),
            fields: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Fields that are not UTF-8 cannot occur: `line` is a `str`, and unquoting only
    /// removes ASCII quotes.
    fn split(&mut self, line: &[u8], row: &mut csv::StringRecord) {
        use csv_core::ReadRecordResult as R;
        self.reader.reset();
        // Unquoting only shrinks fields, and n bytes hold at most n + 1 fields.
        self.fields.resize(line.len() + 1, 0);
        self.ends.resize(line.len() + 2, 0);
        let (mut input, mut nout, mut nends) = (line, 0, 0);
        // The line, then an empty input for the end of the record: two calls.
        for _ in 0..3 {
            let (res, nin, o, e) =
                self.reader
                    .read_record(input, &mut self.fields[nout..], &mut self.ends[nends..]);
            input = &input[nin..];
            nout += o;
            nends += e;
            if matches!(res, R::Record | R::End | R::OutputFull | R::OutputEndsFull) {
                break;
            }
        }
        row.clear();
        let mut start = 0;
        for &end in &self.ends[..nends] {
            row.push_field(std::str::from_utf8(&self.fields[start..end]).unwrap_or_default());
            start = end;
        }
    }
}

#[cfg(test)]
mod tests;
