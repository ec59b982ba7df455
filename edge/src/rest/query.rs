//! What a REST request asks, read from its path and query string. Pure: every refusal of
//! bad input is a unit test. The parameter types are also what the OpenAPI description
//! is generated from ([`super::openapi`]).

use std::borrow::Cow;

use tickmesh_core::Mode;
use tickmesh_core::bar::{self, Timeframe};
use utoipa::IntoParams;

/// The routes, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Snapshot,
    Chains,
    Bars,
    OpenApi,
}

impl Route {
    /// The route serving `path`, if REST serves it.
    pub fn of(path: &str) -> Option<Route> {
        match path {
            "/v1/snapshot" => Some(Route::Snapshot),
            "/v1/openapi.json" => Some(Route::OpenApi),
            p if p.starts_with(CHAINS) => Some(Route::Chains),
            p if p.starts_with(BARS) => Some(Route::Bars),
            _ => None,
        }
    }

    /// The `route` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::Snapshot => "snapshot",
            Route::Chains => "chains",
            Route::Bars => "bars",
            Route::OpenApi => "openapi",
        }
    }
}

const CHAINS: &str = "/v1/chains/";
const BARS: &str = "/v1/bars/";

/// `GET /v1/snapshot`'s parameters.
#[derive(Debug, Clone, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// The symbols, comma-separated (`AAPL,MSFT`); several `symbols` parameters add up.
    /// Read up to `limits.request_entries_factor` times the token's `max_symbols`
    /// entries; at most `max_symbols` are answered.
    #[param(example = "AAPL,MSFT")]
    pub symbols: String,
    /// The fields of each tick object: `ltp`, `quote` (the default) or `full`.
    #[param(inline)]
    pub mode: Option<Mode>,
}

impl SnapshotQuery {
    /// The entries asked for, in order (empty ones included: they are invalid symbols).
    pub fn entries(&self) -> Vec<String> {
        self.symbols.split(',').map(str::to_owned).collect()
    }
}

/// `GET /v1/chains/{underlying}`'s path.
#[derive(Debug, Clone, PartialEq, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ChainsPath {
    /// The underlying, looked up exactly as sent (no upper-casing).
    #[param(example = "AAPL")]
    pub underlying: String,
}

/// `GET /v1/bars/{symbol}`'s path.
#[derive(Debug, Clone, PartialEq, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BarsPath {
    /// The instrument.
    #[param(example = "AAPL")]
    pub symbol: String,
}

/// `GET /v1/bars/{symbol}`'s parameters.
#[derive(Debug, Clone, PartialEq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BarsQuery {
    /// The timeframe: `1s`, `1m`, `5m`, `1h` or `1d`.
    #[param(inline)]
    pub tf: Timeframe,
    /// How many of the latest completed bars, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub n: Option<u32>,
}

/// A request as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    Snapshot(SnapshotQuery),
    Chains(ChainsPath),
    Bars(BarsPath, BarsQuery),
    OpenApi,
}

/// Why a request cannot be read: HTTP 400, `error` `bad_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Cuts what a client sent to 80 characters for an error message.
fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The one path segment after `prefix`, percent-decoded.
fn segment(path: &str, prefix: &str, name: &str) -> Result<String, BadInput> {
    let raw = &path[prefix.len()..];
    if raw.is_empty() || raw.contains('/') {
        return Err(BadInput(format!(
            "the path is {prefix}{{{name}}}, one segment, got {:?}",
            shown(path)
        )));
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| BadInput(format!("{name} is not UTF-8 once decoded")))
}

/// The query's parameters: `symbols` add up, the others may be given once; unknown
/// parameters are ignored, as unknown fields of a WebSocket request are.
#[derive(Debug, Default)]
struct Params {
    symbols: Option<String>,
    mode: Option<String>,
    tf: Option<String>,
    n: Option<String>,
}

impl Params {
    fn read(query: &str) -> Result<Params, BadInput> {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let once = |slot: &mut Option<String>| match slot {
                Some(_) => Err(BadInput(format!("`{k}` is given more than once"))),
                None => {
                    *slot = Some(v.clone().into_owned());
                    Ok(())
                }
            };
            match &*k {
                "symbols" => match &mut p.symbols {
                    Some(s) => {
                        s.push(',');
                        s.push_str(&v);
                    }
                    None => p.symbols = Some(v.into_owned()),
                },
                "mode" => once(&mut p.mode)?,
                "tf" => once(&mut p.tf)?,
                "n" => once(&mut p.n)?,
                "token" => {
                    return Err(BadInput(
                        "REST takes the token in `Authorization: Bearer`, never in the URL".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

fn mode(raw: Option<String>) -> Result<Option<Mode>, BadInput> {
    raw.map(|m| {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == m)
            .ok_or_else(|| BadInput(format!("unknown mode {:?}: ltp, quote or full", shown(&m))))
    })
    .transpose()
}

fn timeframe(raw: Option<String>) -> Result<Timeframe, BadInput> {
    let raw = raw.ok_or_else(|| BadInput("`tf` is required: 1s, 1m, 5m, 1h or 1d".into()))?;
    Timeframe::parse(&raw).ok_or_else(|| {
        BadInput(format!(
            "unknown tf {:?}: 1s, 1m, 5m, 1h or 1d",
            shown(&raw)
        ))
    })
}

fn count(raw: Option<String>) -> Result<Option<u32>, BadInput> {
    let max = bar::MAX_HISTORY;
    raw.map(|n| match n.parse::<u32>() {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(BadInput(format!(
            "`n` must be 1 to {max}, got {:?}",
            shown(&n)
        ))),
    })
    .transpose()
}

/// Reads the request of `route` at `path` with `query` (the part after `?`).
pub fn parse(route: Route, path: &str, query: Option<&str>) -> Result<Ask, BadInput> {
    let p = Params::read(query.unwrap_or(""))?;
    Ok(match route {
        Route::OpenApi => Ask::OpenApi,
        Route::Snapshot => {
            let symbols = p
                .symbols
                .filter(|s| !s.is_empty())
                .ok_or_else(|| BadInput("`symbols` is required: a comma-separated list".into()))?;
            Ask::Snapshot(SnapshotQuery {
                symbols,
                mode: mode(p.mode)?,
            })
        }
        Route::Chains => Ask::Chains(ChainsPath {
            underlying: segment(path, CHAINS, "underlying")?,
        }),
        Route::Bars => {
            let symbol = segment(path, BARS, "symbol")?;
            let query = BarsQuery {
                tf: timeframe(p.tf)?,
                n: count(p.n)?,
            };
            Ask::Bars(BarsPath { symbol }, query)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(path: &str, query: &str) -> Result<Ask, String> {
        let route = Route::of(path).ok_or("no route")?;
        parse(route, path, Some(query)).map_err(|e| e.0)
    }

    #[test]
    fn routes_are_found_by_path() {
        assert_eq!(Route::of("/v1/snapshot"), Some(Route::Snapshot));
        assert_eq!(Route::of("/v1/chains/AAPL"), Some(Route::Chains));
        assert_eq!(Route::of("/v1/bars/AAPL"), Some(Route::Bars));
        assert_eq!(Route::of("/v1/openapi.json"), Some(Route::OpenApi));
        for other in ["/v1/stream", "/v1/snapshot/", "/v1/chains", "/readyz", "/"] {
            assert_eq!(Route::of(other), None, "{other}");
        }
    }

    #[test]
    fn a_snapshot_reads_its_symbols_in_order_and_its_mode() {
        let want = |symbols: &str, mode| {
            Ok(Ask::Snapshot(SnapshotQuery {
                symbols: symbols.into(),
                mode,
            }))
        };
        assert_eq!(
            ask("/v1/snapshot", "symbols=AAPL,MSFT"),
            want("AAPL,MSFT", None)
        );
        assert_eq!(
            ask(
                "/v1/snapshot",
                "symbols=AAPL&mode=full&symbols=SPY%2CBRK-B&x=1"
            ),
            want("AAPL,SPY,BRK-B", Some(Mode::Full))
        );
        let Ok(Ask::Snapshot(q)) = ask("/v1/snapshot", "symbols=A,,b") else {
            panic!()
        };
        assert_eq!(q.entries(), ["A", "", "b"]);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        for (path, query, says) in [
            ("/v1/snapshot", "", "`symbols` is required"),
            ("/v1/snapshot", "symbols=", "`symbols` is required"),
            ("/v1/snapshot", "symbols=A&mode=LTP", "unknown mode"),
            (
                "/v1/snapshot",
                "symbols=A&mode=ltp&mode=full",
                "more than once",
            ),
            (
                "/v1/snapshot",
                "symbols=A&token=abc",
                "Authorization: Bearer",
            ),
            ("/v1/bars/AAPL", "", "`tf` is required"),
            ("/v1/bars/AAPL", "tf=2m", "unknown tf"),
            ("/v1/bars/AAPL", "tf=1m&n=0", "`n` must be 1 to 1000"),
            ("/v1/bars/AAPL", "tf=1m&n=1001", "`n` must be 1 to 1000"),
            ("/v1/bars/AAPL", "tf=1m&n=-1", "`n` must be 1 to 1000"),
            (
                "/v1/bars/AAPL",
                "tf=1m&n=99999999999999999999",
                "`n` must be",
            ),
            ("/v1/bars/AAPL/x", "tf=1m", "one segment"),
            ("/v1/chains/", "", "one segment"),
            ("/v1/chains/%FF", "", "not UTF-8"),
        ] {
            let e = ask(path, query).unwrap_err();
            assert!(e.contains(says), "{path}?{query}: {e}");
        }
        // What is echoed is cut.
        let long = "x".repeat(5000);
        let e = ask("/v1/bars/AAPL", &format!("tf={long}")).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn path_segments_are_decoded_and_bars_take_tf_and_n() {
        assert_eq!(
            ask("/v1/chains/BRK%2DB", ""),
            Ok(Ask::Chains(ChainsPath {
                underlying: "BRK-B".into()
            }))
        );
        assert_eq!(
            ask("/v1/bars/aapl", "tf=5m&n=1000"),
            Ok(Ask::Bars(
                BarsPath {
                    symbol: "aapl".into()
                },
                BarsQuery {
                    tf: Timeframe::M5,
                    n: Some(1000)
                }
            ))
        );
    }
}
