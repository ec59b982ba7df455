//! What each fuzz target does with its input, kept here so that the targets in
//! `fuzz_targets/` are one line each. Every function feeds untrusted bytes to the decoder
//! the services run on them, then checks what must hold of whatever the decoder accepts.
//! A panic (an `assert!` included) is a finding: libFuzzer saves the input and stops.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tickmesh_core::codec::{self, decode_wire, encode_client, encode_wire};
use tickmesh_core::occ::OptionSymbol;
use tickmesh_core::protocol::{ErrorCode, Request, ServerMsg, decode_client};
use tickmesh_core::refdata::{self, ChainRef, RefValue};
use tickmesh_core::trade::Trade;
use tickmesh_core::{Format, Mode, Symbol, Tick};
use tickmesh_edge::auth::Verifier;
use tickmesh_edge::config::AuthConfig;
use tickmesh_ingest::sources::itch::day::Day;
use tickmesh_ingest::sources::itch::{encode::encode, frames};
use tickmesh_ingest::sources::replay::{self, ReplayConfig, ReplayStats};
use tickmesh_ingest::tickfile::{self, FileFormat, FileTrade, Record};

/// A client's WebSocket message, in `format`: decoded as the session does, then every
/// symbol and chain it names parsed as the session would, and the reply encoded.
pub fn client_message(format: Format, data: &[u8]) {
    let reply = match decode_client(format, data) {
        Ok(msg) => {
            let (symbols, chains) = match &msg.request {
                Request::Subscribe(s) => (&s.symbols[..], &s.chains[..]),
                Request::Unsubscribe(u) => (&u.symbols[..], &u.chains[..]),
                Request::Chains { underlying } => (std::slice::from_ref(underlying), &[][..]),
                Request::Auth { .. } | Request::Ping | Request::List => (&[][..], &[][..]),
            };
            for s in symbols {
                if Symbol::parse(s).is_ok() {
                    let _ = OptionSymbol::parse(s);
                }
            }
            for c in chains {
                let _ = ChainRef::parse(c);
            }
            ServerMsg::Pong { id: msg.id }
        }
        Err(e) => ServerMsg::error(e.id, ErrorCode::BadRequest, e.message),
    };
    let _ = reply.encode(format);
}

/// A tick from NATS or KV (`decode_wire`, as the edge's pumps, snapshots and the
/// recorder run it). An accepted tick must encode to the same bytes through ingest's
/// encoder as through the codec, decode back to itself, and encode for every client.
pub fn wire_tick(data: &[u8]) {
    let Ok(tick) = decode_wire(data) else {
        return;
    };
    let ours = encode_wire(&tick);
    let ingest = tickmesh_ingest::wire::Encoder::new().encode(&tick);
    assert_eq!(
        &ingest[..],
        &ours[..],
        "ingest's encoder and the codec differ"
    );
    match decode_wire(&ours) {
        Ok(back) => assert_eq!(back, tick, "a re-encoded tick decodes differently"),
        // The re-encoding writes every float as float 64: it may outgrow the limit.
        Err(codec::CodecError::TooLarge(_)) => {}
        Err(e) => panic!("a re-encoded tick does not decode: {e}"),
    }
    for format in Format::ALL {
        for mode in Mode::ALL {
            let _ = encode_client(&tick, format, mode, Some("snapshot"));
        }
    }
}

/// Where the file-reading targets write their input: `TICKMESH_FUZZ_TMP` (set by
/// `cargo xtask fuzz`) or the system's temporary folder.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("TICKMESH_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("tickmesh-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the fuzz scratch folder");
        dir
    })
}

/// A tick file's format and whether it is gzipped, from a selector byte; then the content.
fn file_input(data: &[u8]) -> Option<(FileFormat, bool, &[u8])> {
    let (&selector, content) = data.split_first()?;
    let format = if selector & 1 == 0 {
        FileFormat::Ndjson
    } else {
        FileFormat::Csv
    };
    Some((format, selector & 2 != 0, content))
}

/// Writes `content` to a fresh scratch file (gzipped if asked), named for `format`.
fn scratch_file(format: FileFormat, gzip: bool, content: &[u8]) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let ext = if format == FileFormat::Csv {
        "csv"
    } else {
        "ndjson"
    };
    let path = scratch_dir().join(format!("{n}.{ext}{}", if gzip { ".gz" } else { "" }));
    let bytes = if gzip {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(content).expect("gzip into memory");
        gz.finish().expect("gzip into memory")
    } else {
        content.to_vec()
    };
    std::fs::write(&path, bytes).expect("writing a scratch file");
    path
}

/// A recorded tick file, read as replay reads it. Every tick it yields holds the wire
/// invariants.
pub fn tickfile(data: &[u8]) {
    let Some((format, gzip, content)) = file_input(data) else {
        return;
    };
    let path = scratch_file(format, gzip, content);
    let _ = tickfile::read_file(
        &path,
        format,
        tickfile::DEFAULT_MAX_RECORD,
        |record| {
            let tick = &record.tick;
            codec::check(tick).expect("a tick read from a file holds the wire invariants");
            if let Some(t) = record.trade {
                // Published with its tick, the print is one the edge takes.
                let trade = Trade {
                    symbol: tick.symbol.clone(),
                    seq: tick.seq,
                    trade_id: tick.seq,
                    price: t.price,
                    size: t.size,
                    ts: tick.ts,
                    src_ts: tick.src_ts,
                    conditions: t.conditions,
                };
                tickmesh_core::trade::check(&trade)
                    .expect("a print read from a file is one the edge takes");
            }
            ControlFlow::Continue(())
        },
        |_| {},
    );
    let _ = std::fs::remove_file(&path);
}

/// A tick file replayed in a loop: the reader thread must not panic, and each tick's
/// source time must be later in the second pass than in the first.
pub fn replay(data: &[u8]) {
    let Some((format, gzip, content)) = file_input(data) else {
        return;
    };
    let path = scratch_file(format, gzip, content);
    // Every pass yields the same ticks, in the same order: count one pass's.
    let mut config = ReplayConfig {
        files: vec![path.clone()],
        speed: 0.0,
        repeat: false,
        format,
        ..ReplayConfig::default()
    };
    let mut once = replay::spawn(&config, Arc::new(ReplayStats::default()));
    let mut per_pass = 0usize;
    while let Some(batch) = once.blocking_recv() {
        per_pass += batch.len();
    }
    config.repeat = true;
    let mut rx = replay::spawn(&config, Arc::new(ReplayStats::default()));
    // Two passes and a tick of the third; with no ticks the reader stops by itself.
    let mut times = Vec::new();
    while times.len() <= 2 * per_pass {
        let Some(batch) = rx.blocking_recv() else {
            break;
        };
        times.extend(batch.into_iter().map(|r| r.src_ts));
    }
    drop(rx);
    if per_pass > 0 && times.len() > per_pass {
        for (a, b) in times.iter().zip(&times[per_pass..]) {
            if let (Some(a), Some(b)) = (a, b) {
                assert!(b > a, "a looped replay went back in time: {a}, then {b}");
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// A tick or a print as `tickmesh-ingest record` receives it: whatever the wire accepts
/// (a print, on a tick of its own, when a file can hold it) is written to NDJSON and CSV,
/// and reads back as the same record (CSV carries no depth).
pub fn record(data: &[u8]) {
    let record = match decode_wire(data) {
        Ok(tick) => Record::from(tick),
        Err(_) => {
            let Ok(t) = tickmesh_core::trade::decode_wire(data) else {
                return;
            };
            let trade = FileTrade::from(&t);
            if tickfile::check_trade(&trade).is_err() {
                return;
            }
            let tick = Tick {
                symbol: t.symbol,
                seq: t.seq,
                ..Tick::default()
            };
            Record {
                tick,
                trade: Some(trade),
            }
        }
    };
    for format in [FileFormat::Ndjson, FileFormat::Csv] {
        let mut file = Vec::new();
        match format {
            FileFormat::Csv => {
                tickfile::write_csv_header(&mut file).expect("writing to memory");
                tickfile::write_csv(&mut file, &record).expect("writing to memory");
            }
            _ => tickfile::write_ndjson(&mut file, &record).expect("writing to memory"),
        }
        let path = scratch_file(format, false, &file);
        let mut read: Vec<Record> = Vec::new();
        let mut corrupt = Vec::new();
        tickfile::read_file(
            &path,
            format,
            tickfile::DEFAULT_MAX_RECORD,
            |r| {
                read.push(r);
                ControlFlow::Continue(())
            },
            |c| corrupt.push(c.error),
        )
        .expect("reading a recorded file back");
        let _ = std::fs::remove_file(&path);
        let mut want = record.clone();
        if format == FileFormat::Csv {
            want.tick.depth = None;
        }
        assert!(
            corrupt.is_empty(),
            "a recorded {format:?} record reads back as corrupt: {corrupt:?}\n{}",
            String::from_utf8_lossy(&file)
        );
        assert_eq!(
            read,
            [want],
            "a recorded {format:?} record reads back differently"
        );
    }
}

/// The HS256 secret of the `jwt` target's verifier.
pub const JWT_SECRET: &str = "fuzzing-secret-of-at-least-32-bytes!!";

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let config = AuthConfig {
            hs256_secret: Some(JWT_SECRET.into()),
            ..AuthConfig::default()
        };
        Verifier::new(&config).expect("a verifier with an HS256 secret")
    })
}

/// A bearer token, as the upgrade and in-band `auth` verify it. The input is used twice:
/// as the token itself (what any client can send), and, split at the first NUL byte, as a
/// header and claims that are base64-encoded and signed with the verifier's key, so that
/// the claims are parsed too (a forged signature stops before them).
pub fn jwt(data: &[u8]) {
    let v = verifier();
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = v.verify(token);
    }
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, crypto};
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (header, claims) = (&data[..split], &data[split + 1..]);
    let message = format!("{}.{}", b64(header), b64(claims));
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let signature =
        crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HS256 signs anything");
    if let Ok(grant) = v.verify(&format!("{message}.{signature}")) {
        assert!(grant.sub.is_some(), "a verified token names its user");
    }
}

/// A `md_ref` entry as the edge's reference-data watch applies it: the key, a NUL byte,
/// then the value. A chain expands to option symbols for each of its expiries, and each
/// is a valid symbol.
pub fn md_ref(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let Ok(key) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    match refdata::decode_value(key, &data[split + 1..]) {
        Ok(Some(RefValue::Chain(chain))) => {
            for e in &chain.expiries {
                let symbols = chain.symbols(e.expiry).expect("a listed expiry expands");
                for s in symbols {
                    tickmesh_core::symbol::validate(s.as_str())
                        .expect("an expanded option is a valid symbol");
                }
            }
            let _ = serde_json::to_vec(&chain.expiries);
        }
        Ok(Some(RefValue::Instrument(i))) => {
            let _ = serde_json::to_vec(&i);
        }
        Ok(None) | Err(_) => {}
    }
}

/// A message on `ctl.revoke`, as every edge parses it.
pub fn revocation(data: &[u8]) {
    if let Ok(r) = tickmesh_edge::control::parse_revocation(data) {
        assert!(
            r.sub.is_some() || r.jti.is_some(),
            "a revocation names a user or a token"
        );
    }
}

/// An ITCH 5.0 file (frames, messages, books): every message accepted re-encodes to its
/// own bytes, and every book's levels are strictly ordered best first with shares on
/// each.
pub fn itch(data: &[u8]) {
    let mut day = Day::new();
    let mut again = Vec::new();
    let _ = frames::scan(data, 0, true, &mut |offset, frame| {
        if let Ok(m) = &frame {
            again.clear();
            encode(m, &mut again);
            let at = usize::try_from(offset).expect("offsets of an in-memory input");
            assert_eq!(Some(&again[..]), data.get(at..at + again.len()), "at {at}");
        }
        let _ = day.on_frame(frame);
        ControlFlow::Continue(())
    });
    for (_, book) in day.books.iter() {
        for (side, buy) in [(&book.bids, true), (&book.asks, false)] {
            let levels: Vec<(u32, u64)> = side.best_first().collect();
            assert!(levels.iter().all(|l| l.1 > 0), "{}: an empty level", book.symbol);
            let ordered = levels.windows(2).all(|w| match buy {
                true => w[0].0 > w[1].0,
                false => w[0].0 < w[1].0,
            });
            assert!(ordered, "{}: levels out of order", book.symbol);
        }
    }
}

/// permessage-deflate input: with an even first byte, the rest is one compressed message's
/// payload for `deflate::inflate`; with an odd one, a client's byte stream read through
/// `deflate::stream::Inflating` (what tungstenite reads on a session that negotiated it).
pub fn deflate(data: &[u8]) {
    use tickmesh_edge::deflate::stream::{Inflating, refusal};
    use tickmesh_edge::deflate::{compress, inflate};
    use tokio::io::AsyncReadExt;
    const LIMIT: usize = 64 * 1024;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(out) = inflate(rest.to_vec(), LIMIT) {
            assert!(out.len() <= LIMIT);
            assert_eq!(inflate(compress(&out), LIMIT).as_deref(), Ok(&out[..]));
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds");
    rt.block_on(async {
        let mut s = Inflating::new(rest, LIMIT);
        let mut buf = [0u8; 1024];
        let mut out = 0usize;
        let mut refused = 0usize;
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => out += n,
                Err(e) => {
                    // The input never fails; only refusals may, one per frame at most.
                    assert!(refusal(&e).is_some(), "{e}");
                    refused += 1;
                    assert!(refused <= rest.len() / 2 + 1);
                }
            }
        }
        // What comes out is the plain frames as they came, and inflated messages of at
        // most LIMIT bytes each (one per 2-byte frame header at most).
        assert!(out <= rest.len() + (rest.len() / 2 + 1) * (LIMIT + 14));
    });
}
