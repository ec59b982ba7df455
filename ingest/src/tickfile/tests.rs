use std::io::Write as _;

use super::*;
use crate::sources::options::OptionsConfig;
use crate::sources::session::SessionConfig;
use crate::sources::sim::{SimParams, Simulator};

fn sample_ticks(n: usize) -> Vec<Tick> {
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
            let mut t = sim.next_tick().1;
            t.seq = 1_000 + k as u64;
            t.epoch = 1_000;
            t.ts = 1_700_000_000_000_000 + k as u64;
            t
        })
        .collect()
}

fn read_all(path: &Path) -> (Vec<Tick>, Vec<Corrupt>, FileSummary) {
    let mut ticks = Vec::new();
    let mut bad = Vec::new();
    let summary = read_file(
        path,
        FileFormat::Auto,
        DEFAULT_MAX_RECORD,
        |t| {
            ticks.push(t);
            ControlFlow::Continue(())
        },
        |c| bad.push(c),
    )
    .unwrap();
    (ticks, bad, summary)
}

#[test]
fn ndjson_round_trips_every_field_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let ticks = sample_ticks(3_000);
    assert!(
        ticks
            .iter()
            .any(|t| t.kind == Kind::Option && t.depth.is_some())
    );
    let plain = dir.path().join("t.ndjson");
    let mut w = std::io::BufWriter::new(File::create(&plain).unwrap());
    for t in &ticks {
        write_ndjson(&mut w, t).unwrap();
    }
    drop(w);
    let gz = dir.path().join("t.ndjson.gz");
    let mut enc =
        flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
    enc.finish().unwrap();
    for path in [&plain, &gz] {
        let (back, bad, summary) = read_all(path);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(summary.ticks, 3_000);
        assert_eq!(back, ticks);
    }
}

#[test]
fn csv_round_trips_level_one_and_option_fields() {
    let dir = tempfile::tempdir().unwrap();
    let ticks = sample_ticks(2_000);
    let path = dir.path().join("t.csv");
    let mut w = std::io::BufWriter::new(File::create(&path).unwrap());
    write_csv_header(&mut w).unwrap();
    for t in &ticks {
        write_csv(&mut w, t).unwrap();
    }
    drop(w);
    let (back, bad, _) = read_all(&path);
    assert!(bad.is_empty(), "{bad:?}");
    let without_depth: Vec<Tick> = ticks
        .into_iter()
        .map(|t| Tick { depth: None, ..t })
        .collect();
    assert_eq!(back, without_depth);
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
        if name.ends_with(".csv") {
            write_csv_header(&mut w).unwrap();
            write_csv(&mut w, &tick).unwrap();
        } else {
            write_ndjson(&mut w, &tick).unwrap();
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
                |t| {
                    assert_eq!(t.symbol, "AAPL");
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
