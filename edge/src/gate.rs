//! Who is asking: the token of an HTTP request (a WebSocket upgrade or a REST request),
//! verified the same way for both, revocations included, with the refused tokens of an
//! address throttled (`limits.max_auth_failures_per_ip`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hyper::header::{self, HeaderMap};
use hyper::http::Uri;

use crate::auth::{AuthError, Grant};
use crate::state::Edge;

/// Why a request gets no grant.
#[derive(Debug)]
pub enum Denied {
    /// Too many refused tokens from this address lately: refused for this long more
    /// (HTTP 429 with `Retry-After`).
    Throttled(Duration),
    /// The token was refused, or none was given with anonymous access off (HTTP 401).
    Refused(AuthError),
}

/// The token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
}

/// The `token` query parameter, if any (browsers cannot set headers on a WebSocket).
pub fn query_token(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// The grant of a request from `ip` with `token` (anonymous without one, when the edge
/// allows it). A refused token counts against its address, and is counted in
/// `tickmesh_edge_auth_failures_total` (the caller logs it, with the reason and the peer;
/// never the token); an address over its refusals is turned away before its token is
/// read.
pub fn admit(edge: &Edge, ip: IpAddr, token: Option<&str>) -> Result<Grant, Denied> {
    if let Some(left) = edge.auth_throttle.blocked(ip, Instant::now()) {
        metrics::counter!("tickmesh_edge_admission_refusals_total", "reason" => "auth_failures")
            .increment(1);
        return Err(Denied::Throttled(left));
    }
    let grant = match token {
        Some(token) => edge.verifier.verify(token),
        None => edge.verifier.anonymous(),
    };
    grant.map_err(|e| {
        edge.auth_throttle.failed(ip, Instant::now());
        metrics::counter!("tickmesh_edge_auth_failures_total", "reason" => e.label()).increment(1);
        Denied::Refused(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_taken_from_the_authorization_header_only() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer xyz".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("xyz"));
        h.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(bearer(&h), None);
        let uri: Uri = "/v1/stream?a=1&token=t%2B1".parse().unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("t+1"));
        assert_eq!(query_token(&"/v1/stream".parse().unwrap()), None);
    }
}
