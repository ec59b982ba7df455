//! The OpenAPI document, and real answers checked against it.

use std::sync::Arc;

use serde_json::{Value, json};
use tickmesh_core::bar::{Bar, Timeframe};
use tickmesh_core::protocol::{ErrorCode, ServerMsg};
use tickmesh_core::refdata::ChainExpiry;
use tickmesh_core::tick::{Depth, Kind, Right, State, Tick};
use tickmesh_core::{Format, Mode};

use super::answers::{bars_body, snapshot_body};
use super::openapi::document;
use crate::fanout::SharedTick;
use crate::tape::Shared;

fn doc() -> Value {
    serde_json::from_slice(&document()).expect("the document is JSON")
}

/// `schema` resolved through `$ref` in `doc`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local reference");
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{r} not found"));
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_fits(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

/// Whether `v` fits `schema`, strictly: an object may hold no property the schema does
/// not name, so that a field the code sends and the document leaves out fails.
fn fits(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    for (key, any) in [("oneOf", true), ("anyOf", true), ("allOf", false)] {
        if let Some(alternatives) = schema.get(key).and_then(Value::as_array) {
            let results: Vec<_> = alternatives.iter().map(|s| fits(doc, s, v, at)).collect();
            let ok = if any {
                results.iter().any(Result::is_ok)
            } else {
                results.iter().all(Result::is_ok)
            };
            if !ok {
                return Err(format!("{at}: {key} failed: {results:?}"));
            }
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {allowed:?}"));
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_fits(t, v) => {
            return Err(format!("{at}: {v} is not {t}"));
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_fits(t.as_str().unwrap_or(""), v)) => {
            return Err(format!("{at}: {v} is none of {ts:?}"));
        }
        _ => {}
    }
    if let Some(object) = v.as_object()
        && schema.get("properties").is_some()
    {
        let properties = &schema["properties"];
        for (key, value) in object {
            let property = properties
                .get(key)
                .ok_or_else(|| format!("{at}: `{key}` is not described"))?;
            fits(doc, property, value, &format!("{at}.{key}"))?;
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let key = required.as_str().unwrap_or("");
            if !object.contains_key(key) {
                return Err(format!("{at}: required `{key}` is missing"));
            }
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(each) = schema.get("items").filter(|i| i.is_object()) {
            for (i, item) in items.iter().enumerate() {
                fits(doc, each, item, &format!("{at}[{i}]"))?;
            }
        }
        if let Some(positions) = schema.get("prefixItems").and_then(Value::as_array) {
            for (i, (s, item)) in positions.iter().zip(items).enumerate() {
                fits(doc, s, item, &format!("{at}[{i}]"))?;
            }
        }
    }
    Ok(())
}

/// The schema of `path`'s `status` answer.
fn answer_schema<'a>(doc: &'a Value, path: &str, status: &str) -> &'a Value {
    let pointer = format!(
        "/paths/{}/get/responses/{status}/content/application~1json/schema",
        path.replace('/', "~1")
    );
    doc.pointer(&pointer)
        .unwrap_or_else(|| panic!("no schema at {pointer}"))
}

fn option_tick() -> Tick {
    Tick {
        symbol: "AAPL261218C00150000".into(),
        seq: 41,
        epoch: 1_700_000_000_000_000,
        ts: 1_700_000_000_123_456,
        src_ts: Some(1_700_000_000_123_000),
        kind: Kind::Option,
        last: Some(12.5),
        last_size: Some(3),
        bid: Some(12.4),
        ask: Some(12.6),
        bid_size: Some(10),
        ask_size: Some(12),
        volume: Some(1200),
        open: Some(11.0),
        high: Some(13.0),
        low: Some(10.5),
        prev_close: Some(11.2),
        depth: Some(Depth {
            bids: vec![(12.4, 10), (12.3, 20)],
            asks: vec![(12.6, 12)],
        }),
        underlying: Some("AAPL".into()),
        expiry: Some("2026-12-18".into()),
        strike: Some(150.0),
        right: Some(Right::Call),
        iv: Some(0.31),
        delta: Some(0.52),
        gamma: Some(0.02),
        theta: Some(-0.05),
        vega: Some(0.12),
        state: Some(State::Open),
    }
}

fn error_with(
    code: ErrorCode,
    symbol: Option<&str>,
    retry_ms: Option<u64>,
    count: Option<u32>,
) -> ServerMsg {
    let mut e = match symbol {
        Some(s) => ServerMsg::symbol_error(None, code, s, "refused"),
        None => ServerMsg::error(None, code, "refused"),
    };
    if let ServerMsg::Error {
        retry_ms: r,
        count: c,
        ..
    } = &mut e
    {
        (*r, *c) = (retry_ms, count);
    }
    e
}

#[test]
fn the_document_lists_the_three_routes_with_their_parameters_and_answers() {
    let doc = doc();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let params = |path: &str| -> Vec<(String, String, bool)> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no parameters"))
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["in"].as_str().unwrap().to_owned(),
                    p["required"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    };
    let p = |name: &str, place: &str, required| (name.to_owned(), place.to_owned(), required);
    assert_eq!(
        params("/v1/snapshot"),
        [p("symbols", "query", true), p("mode", "query", false)]
    );
    assert_eq!(
        params("/v1/chains/{underlying}"),
        [p("underlying", "path", true)]
    );
    assert_eq!(
        params("/v1/bars/{symbol}"),
        [
            p("symbol", "path", true),
            p("tf", "query", true),
            p("n", "query", false)
        ]
    );
    let statuses = |path: &str| -> Vec<String> {
        let responses = doc["paths"][path]["get"]["responses"].as_object().unwrap();
        for (status, r) in responses {
            assert!(
                r["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{path} {status} has no description"
            );
        }
        responses.keys().cloned().collect()
    };
    assert_eq!(
        statuses("/v1/snapshot"),
        ["200", "400", "401", "429", "503"]
    );
    assert_eq!(
        statuses("/v1/chains/{underlying}"),
        ["200", "400", "401", "404", "429", "503"]
    );
    assert_eq!(
        statuses("/v1/bars/{symbol}"),
        ["200", "400", "401", "403", "404", "429", "503"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    );
    // The protocol never sends null, and the document says so.
    let text = String::from_utf8(document()).unwrap();
    assert!(!text.contains("\"null\""), "a nullable schema is left");
    // The enumerations are the protocol's.
    let schemas = &doc["components"]["schemas"];
    let mode = "/paths/~1v1~1snapshot/get/parameters/1/schema/enum";
    assert_eq!(doc.pointer(mode), Some(&json!(["ltp", "quote", "full"])));
    assert_eq!(
        schemas["Timeframe"]["enum"],
        json!(["1s", "1m", "5m", "1h", "1d"])
    );
    assert_eq!(schemas["ErrorCode"]["enum"].as_array().unwrap().len(), 10);
}

/// Every object an answer carries, every field of a tick in every mode included, is
/// described; a field the code sends that the document leaves out (or names otherwise)
/// fails here.
#[test]
fn real_answers_fit_the_document() {
    let doc = doc();
    let tick = Arc::new(SharedTick::new(option_tick(), 200));
    let errors = [
        error_with(ErrorCode::InvalidSymbol, Some("aapl"), None, None),
        error_with(ErrorCode::Unavailable, Some("MSFT"), Some(2000), None),
        error_with(ErrorCode::NotEntitled, None, None, Some(7)),
    ];
    for mode in Mode::ALL {
        let body: Value =
            serde_json::from_slice(&snapshot_body(std::slice::from_ref(&tick), mode, &errors))
                .expect("a snapshot answer is JSON");
        let schema = answer_schema(&doc, "/v1/snapshot", "200");
        fits(&doc, schema, &body, "snapshot").unwrap();
        // The tick object is the WebSocket's snapshot without `type`.
        let mut ws: Value = serde_json::from_slice(tick.snapshot(Format::Json, mode)).unwrap();
        ws.as_object_mut().unwrap().remove("type");
        assert_eq!(body["snapshots"][0], ws, "{mode:?}");
    }
    let mut bar = Bar::open_with("AAPL", Timeframe::M1, 1_700_000_040_000_000, 10.0, 5);
    bar.add(11.0, 2);
    bar.closed = true;
    let body: Value =
        serde_json::from_slice(&bars_body(Timeframe::M1, &[Arc::new(Shared::new(bar))])).unwrap();
    fits(
        &doc,
        answer_schema(&doc, "/v1/bars/{symbol}", "200"),
        &body,
        "bars",
    )
    .unwrap();
    let chains = ServerMsg::Chains {
        id: None,
        underlying: "AAPL".into(),
        expiries: vec![ChainExpiry {
            expiry: "2026-12-18".parse().unwrap(),
            strikes: vec![145.0, 150.0],
        }],
    };
    let body: Value = serde_json::from_slice(&chains.encode(Format::Json)).unwrap();
    let schema = answer_schema(&doc, "/v1/chains/{underlying}", "200");
    fits(&doc, schema, &body, "chains").unwrap();
    for (path, status) in [("/v1/bars/{symbol}", "404"), ("/v1/snapshot", "503")] {
        for e in &errors {
            let body: Value = serde_json::from_slice(&e.encode(Format::Json)).unwrap();
            fits(&doc, answer_schema(&doc, path, status), &body, "error").unwrap();
        }
    }
    // The checker itself refuses what the document does not describe.
    let mut odd: Value = serde_json::from_slice(&snapshot_body(&[tick], Mode::Ltp, &[])).unwrap();
    odd["snapshots"][0]["lastt"] = json!(1);
    let schema = answer_schema(&doc, "/v1/snapshot", "200");
    assert!(fits(&doc, schema, &odd, "odd").is_err());
}
