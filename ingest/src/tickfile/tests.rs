use std::io::Write as _;

use super::*;
use crate::sources::options::OptionsConfig;
use crate::sources::session::SessionConfig;
use crate::sources::sim::{SimParams, Simulator};

/// `n` records of the simulator, its prints on them (about 40 % of the listed ticks).
fn sample_records(n: usize) -> Vec<Record> {
    let session = SessionConfig::default();
    let options = OptionsConfig::default();
    let mut sim = Simulator::new(&SimParams {
        seed: 11,
        ticks_per_sec: 2000.0,
        universe: &[],
        session: &session,
        options: &options,
        depth: 5,
        today: tickmesh_core::date::Date::parse("2026-03-02").unwrap(),
    });
    (0..n)
        .map(|k| {
            let mut tick = sim.next_tick().1;
            tick.seq = 1_000 + k as u64;
            tick.epoch = 1_000;
            tick.ts = 1_700_000_000_000_000 + k as u64;
            let trade = sim.take_print().map(|p| FileTrade {
                price: p.price,
                size: p.size,
                trade_id: Some(tick.seq),
                conditions: p.conditions,
            });
            Record { tick, trade }
        })
        .collect()
}

fn write_records(path: &Path, records: &[Record]) {
    let mut w = std::io::BufWriter::new(File::create(path).unwrap());
    let csv = path.to_string_lossy().ends_with(".csv");
    if csv {
        write_csv_header(&mut w).unwrap();
    }
    for r in records {
        match csv {
            true => write_csv(&mut w, r).unwrap(),
            false => write_ndjson(&mut w, r).unwrap(),
        }
    }
}

fn read_records(path: &Path) -> (Vec<Record>, Vec<Corrupt>, FileSummary) {
    let mut records = Vec::new();
    let mut bad = Vec::new();
    let summary = read_file(
        path,
        FileFormat::Auto,
        DEFAULT_MAX_RECORD,
        |r| {
            records.push(r);
            ControlFlow::Continue(())
        },
        |c| bad.push(c),
    )
    .unwrap();
    (records, bad, summary)
}

/// [`read_records`], the ticks only.
fn read_all(path: &Path) -> (Vec<Tick>, Vec<Corrupt>, FileSummary) {
    let (records, bad, summary) = read_records(path);
    (records.into_iter().map(|r| r.tick).collect(), bad, summary)
}

#[test]
fn ndjson_round_trips_every_field_and_print_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let records = sample_records(3_000);
    assert!(
        records
            .iter()
            .any(|r| r.tick.kind == Kind::Option && r.tick.depth.is_some())
    );
    let printed = records.iter().filter(|r| r.trade.is_some()).count() as u64;
    assert!(printed > 300, "{printed} prints");
    let plain = dir.path().join("t.ndjson");
    write_records(&plain, &records);
    let gz = dir.path().join("t.ndjson.gz");
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    enc.finish().unwrap();
    for path in [&plain, &gz] {
        let (back, bad, summary) = read_records(path);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!((summary.ticks, summary.trades), (3_000, printed));
        assert_eq!(back, records);
    }
    // A print is the tick's `trade` object, on the tick's line.
    let text = std::fs::read_to_string(&plain).unwrap();
    let line = text.lines().find(|l| l.contains("\"trade\"")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(v["trade"]["price"].as_f64().unwrap() > 0.0, "{line}");
    assert_eq!(v["trade"]["trade_id"], v["seq"], "{line}");
}

#[test]
fn csv_round_trips_level_one_option_fields_and_prints() {
    let dir = tempfile::tempdir().unwrap();
    let mut records = sample_records(2_000);
    // Conditions, several to a print: the simulator's only one is `opening`.
    records
        .iter_mut()
        .filter_map(|r| r.trade.as_mut())
        .step_by(7)
        .for_each(|t| {
            t.conditions = vec!["cross".into(), "opening".into()];
        });
    let path = dir.path().join("t.csv");
    write_records(&path, &records);
    let (back, bad, summary) = read_records(&path);
    assert!(bad.is_empty(), "{bad:?}");
    assert!(summary.trades > 200, "{summary:?}");
    let without_depth: Vec<Record> = records
        .into_iter()
        .map(|r| Record {
            tick: Tick {
                depth: None,
                ..r.tick
            },
            ..r
        })
        .collect();
    assert_eq!(back, without_depth);
}

/// Files written before prints (no `trade`, no `trade_*` columns) read as they did:
/// ticks without prints.
#[test]
fn files_without_prints_read_as_ticks_without_prints() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/ticks.ndjson");
    let (records, bad, summary) = read_records(&sample);
    assert!(bad.is_empty(), "{bad:?}");
    assert!(summary.ticks >= 200 && summary.trades == 0, "{summary:?}");
    assert!(records.iter().all(|r| r.trade.is_none()));
    let path = dir.path().join("old.csv");
    std::fs::write(&path, "symbol,src_ts,last,state\nAAPL,10,1.5,halted\n").unwrap();
    let (records, bad, _) = read_records(&path);
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].trade, None);
    assert_eq!(records[0].tick.state, Some(State::Halted));
}

/// A print that could not be published, or that does not parse, makes its record
/// corrupt: reported with its line and offset, skipped with its tick; the records around
/// it are read.
#[test]
fn a_record_with_a_bad_print_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"symbol":"AAPL","src_ts":10,"last":1.5,"trade":{"price":1.5,"size":100}}"#;
    let bad = [
        r#"{"symbol":"AAPL","trade":{"price":0,"size":100}}"#,
        r#"{"symbol":"AAPL","trade":{"price":-1.5,"size":100}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":0}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":-3}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":2.5}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":9007199254740993}}"#,
        r#"{"symbol":"AAPL","trade":{"size":100}}"#,
        r#"{"symbol":"AAPL","trade":{"price":"1.5","size":100}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":100,"trade_id":9007199254740993}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":100,"conditions":"cross"}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":100,"conditions":[""]}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":100,"conditions":["a,b"]}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":100,"conditions":["seventeen_chars__"]}}"#,
        r#"{"symbol":"AAPL","trade":{"price":1.5,"size":100,"conditions":["a","b","c","d","e","f","g","h","i"]}}"#,
        r#"{"symbol":"AAPL","trade":"1.5x100"}"#,
        r#"{"symbol":"AAPL","trade":{"price":1e999,"size":100}}"#,
    ];
    let mut body = format!("{good}\n");
    for b in bad {
        body.push_str(b);
        body.push('\n');
    }
    body.push_str(&format!("{good}\n"));
    let path = dir.path().join("bad.ndjson");
    std::fs::write(&path, &body).unwrap();
    let (records, found, summary) = read_records(&path);
    let lines: Vec<u64> = found.iter().map(|c| c.line).collect();
    let want: Vec<u64> = (2..2 + bad.len() as u64).collect();
    assert_eq!(lines, want, "{found:#?}");
    assert_eq!(
        (summary.ticks, summary.trades, summary.corrupt),
        (2, 2, bad.len() as u64)
    );
    assert_eq!(records[1].trade.as_ref().unwrap().size, 100);
    let first_bad_at = good.len() as u64 + 1;
    assert_eq!(found[0].offset, first_bad_at);
    assert!(
        found[0].error.contains("price must be positive"),
        "{}",
        found[0].error
    );
    assert!(found[2].error.contains("size"), "{}", found[2].error);
    assert!(found[12].error.contains("condition"), "{}", found[12].error);

    // The same in CSV: a row with a print that is not positive, half a print, a
    // condition list with an empty entry.
    let path = dir.path().join("bad.csv");
    std::fs::write(
        &path,
        "symbol,last,trade_price,trade_size,trade_conditions\n\
         AAPL,1.5,1.5,100,cross;opening\n\
         AAPL,1.5,0,100,\n\
         AAPL,1.5,1.5,,\n\
         AAPL,1.5,,100,\n\
         AAPL,1.5,1.5,100,cross;;opening\n\
         AAPL,1.5,1.5,abc,\n\
         AAPL,1.5,,,\n",
    )
    .unwrap();
    let (records, found, _) = read_records(&path);
    let lines: Vec<u64> = found.iter().map(|c| c.line).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7], "{found:#?}");
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0].trade.as_ref().unwrap().conditions,
        ["cross", "opening"]
    );
    assert_eq!(records[1].trade, None);
    assert!(found[1].error.contains("trade_size"), "{}", found[1].error);
}

#[test]
fn recorded_prices_read_back_bit_for_bit() {
    // Found by the record fuzz target: 0.10000232458114412 was written as such and read
    // back as 0.10000232458114411 (JSON numbers were not parsed to the nearest float).
    let dir = tempfile::tempdir().unwrap();
    let tick = Tick {
        symbol: "AAPL261218C00150000".into(),
        vega: Some(0.10000232458114412),
        last: Some(189.13000000014566),
        strike: Some(150.0),
        ..Tick::default()
    };
    for name in ["t.ndjson", "t.csv"] {
        let path = dir.path().join(name);
        let mut w = File::create(&path).unwrap();
        let record = Record::from(tick.clone());
        if name.ends_with(".csv") {
            write_csv_header(&mut w).unwrap();
            write_csv(&mut w, &record).unwrap();
        } else {
            write_ndjson(&mut w, &record).unwrap();
        }
        drop(w);
        let (back, bad, _) = read_all(&path);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(back, std::slice::from_ref(&tick), "{name}");
    }
}

#[test]
fn corrupt_records_are_reported_with_their_line_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.ndjson");
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"symbol\":\"AAPL\",\"last\":1.5,\"src_ts\":10}\n");
    body.extend_from_slice(b"{\"symbol\":\"AAPL\",\"last\":\n");
    body.extend_from_slice(b"\n");
    body.extend_from_slice(b"{\"symbol\":\"md.>\",\"last\":1}\n");
    body.extend_from_slice(b"{\"symbol\":\"MSFT\",\"last\":\"x\"}\n");
    body.extend_from_slice(b"\xff\xfe\n");
    body.extend_from_slice(&vec![b'x'; DEFAULT_MAX_RECORD + 10]);
    body.extend_from_slice(b"\n{\"symbol\":\"MSFT\",\"seq\":9007199254740993}\n");
    body.extend_from_slice(b"{\"symbol\":\"MSFT\",\"last\":1,\"state\":\"lunch\"}\n");
    body.extend_from_slice(b"{\"symbol\":\"SPY\",\"bid\":2,\"type\":\"snapshot\"}");
    std::fs::write(&path, body).unwrap();
    let (ticks, bad, summary) = read_all(&path);
    let symbols: Vec<&str> = ticks.iter().map(|t| t.symbol.as_str()).collect();
    assert_eq!(symbols, ["AAPL", "SPY"]);
    let lines: Vec<u64> = bad.iter().map(|c| c.line).collect();
    assert_eq!(lines, [2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        summary,
        FileSummary {
            ticks: 2,
            trades: 0,
            corrupt: 7
        }
    );
    assert!(bad[6].error.contains("lunch"), "{}", bad[6].error);
    assert!(
        bad[0]
            .to_string()
            .starts_with(&format!("{}:2: ", path.display()))
    );
    assert!(bad[1].error.contains("symbol"), "{}", bad[1].error);
}

#[test]
fn csv_rows_and_headers_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    std::fs::write(
        &path,
        "symbol,src_ts,last,bid_size\nAAPL,10,1.5,100\nAAPL,11,abc,100\nAAPL,12\nMSFT,13,2,1.5\nmsft,14,2,1\nSPY,15,,\n",
    )
    .unwrap();
    let (ticks, bad, _) = read_all(&path);
    assert_eq!(ticks.len(), 2);
    assert_eq!(ticks[1].symbol, "SPY");
    assert_eq!(ticks[1].last, None);
    let lines: Vec<u64> = bad.iter().map(|c| c.line).collect();
    assert_eq!(lines, [3, 4, 5, 6]);
    std::fs::write(&path, "symbol,colour\nAAPL,red\n").unwrap();
    let e = read_file(
        &path,
        FileFormat::Auto,
        DEFAULT_MAX_RECORD,
        |_| ControlFlow::Continue(()),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn formats_come_from_the_name_unless_set() {
    let r = |p: &str| FileFormat::Auto.resolve(Path::new(p));
    assert_eq!(r("a.ndjson.gz"), Ok(FileFormat::Ndjson));
    assert_eq!(r("a.JSONL"), Ok(FileFormat::Ndjson));
    assert_eq!(r("a.csv.gz"), Ok(FileFormat::Csv));
    assert!(r("a.txt").is_err());
    assert_eq!(
        FileFormat::Csv.resolve(Path::new("a.txt")),
        Ok(FileFormat::Csv)
    );
}

/// A record over the bound is refused with its line and byte offset, and never read into
/// memory (a reader that buffered whole lines would hold the 64 MiB line here); the
/// records around it are read. Both formats, plain and gzipped.
#[test]
fn records_over_the_bound_are_skipped_unread_with_their_line_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let max = 1024;
    let huge = 64 << 20;
    for (name, head, good) in [
        ("t.ndjson", "", "{\"symbol\":\"AAPL\",\"last\":1.5}"),
        ("t.csv", "symbol,last\n", "AAPL,1.5"),
    ] {
        let mut body = head.as_bytes().to_vec();
        body.extend_from_slice(format!("{good}\n").as_bytes());
        let long_at = body.len() as u64;
        body.extend(std::iter::repeat_n(b'7', huge));
        body.extend_from_slice(format!("\n{good}\r\n").as_bytes());
        let exact = format!("{good}{}", " ".repeat(max - good.len()));
        body.extend_from_slice(format!("{exact}\n{exact} \n{good}").as_bytes());
        let plain = dir.path().join(name);
        std::fs::write(&plain, &body).unwrap();
        let gz = dir.path().join(format!("{name}.gz"));
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(&body).unwrap();
        enc.finish().unwrap();
        drop(body);
        for path in [&plain, &gz] {
            let mut ticks = 0;
            let mut bad = Vec::new();
            let summary = read_file(
                path,
                FileFormat::Auto,
                max,
                |r| {
                    assert_eq!(r.tick.symbol, "AAPL");
                    ticks += 1;
                    ControlFlow::Continue(())
                },
                |c| bad.push(c),
            )
            .unwrap();
            let first = u64::from(!head.is_empty());
            let found: Vec<(u64, u64)> = bad.iter().map(|c| (c.line, c.offset)).collect();
            let exact_at = long_at + huge as u64 + 1 + good.len() as u64 + 2;
            let over_at = exact_at + max as u64 + 1;
            assert_eq!(
                found,
                [(first + 2, long_at), (first + 5, over_at)],
                "{}",
                path.display()
            );
            assert!(
                bad[0].error.contains("longer than 1024 bytes"),
                "{:?}",
                bad[0]
            );
            assert_eq!((ticks, summary.corrupt), (4, 2), "{}", path.display());
        }
    }
}

/// An NDJSON record nested past the decoders' bound (`tickmesh_core::nesting`) is a
/// corrupt record, counted with its line; the records around it are read.
#[test]
fn a_record_nested_past_the_bound_is_corrupt_and_the_others_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.ndjson");
    let deep = format!(
        r#"{{"symbol":"AAPL","seq":2,"last":1.0,"x":{}1{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let ok = |seq: u64| format!(r#"{{"symbol":"AAPL","seq":{seq},"last":1.0}}"#);
    std::fs::write(&path, format!("{}\n{deep}\n{}\n", ok(1), ok(3))).unwrap();
    let (ticks, bad, summary) = read_all(&path);
    assert_eq!(ticks.len(), 2, "{ticks:?}");
    assert_eq!(summary.corrupt, 1);
    assert_eq!(bad[0].line, 2, "{:?}", bad[0]);
    assert!(bad[0].error.contains("nested"), "{}", bad[0].error);
}
