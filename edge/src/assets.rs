//! The dashboard's static files and the JS client's modules, built into the binary:
//! nothing comes from a CDN. Each is sent with a Content-Security-Policy,
//! `Referrer-Policy: no-referrer` and framing refused.

use warp::Filter;
use warp::http::HeaderValue;
use warp::reply::{Reply, Response};

const JS: &str = "text/javascript; charset=utf-8";

/// A module of the JS client package (`clients/js/src`): the page loads the package's own
/// files, so there is one copy of the client, and the SharedWorker (`worker.js`) that holds
/// one connection for all of an origin's tabs comes from the page's origin, as it must.
macro_rules! client_module {
    ($name:literal) => {
        (
            $name,
            JS,
            include_str!(concat!("../../clients/js/src/", $name)),
        )
    };
}

const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    ),
    ("app.js", JS, include_str!("../static/app.js")),
    ("blotter.js", JS, include_str!("../static/blotter.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
    client_module!("index.js"),
    client_module!("tickmesh.js"),
    client_module!("msgpack.js"),
    client_module!("events.js"),
    client_module!("api.js"),
    client_module!("ledger.js"),
    client_module!("shared.js"),
    client_module!("worker.js"),
    client_module!("hub.js"),
    client_module!("holders.js"),
    client_module!("pace.js"),
    client_module!("replay.js"),
    client_module!("fallback.js"),
];

/// What the page may load and where it may connect: its own scripts, styles and images
/// (the favicon is a `data:` URL), and its stream on the host that served it. `'self'`
/// covers `ws:`/`wss:` to that host in current browsers; the host's own `ws://` and
/// `wss://` are named too for older ones. No inline script or style, no plugin, no
/// `<base>`, and no page may frame it (clickjacking).
fn content_security_policy(host: Option<&str>) -> String {
    let mut connect = String::from("'self'");
    if let Some(host) = host.filter(|h| is_plain_host(h)) {
        connect.push_str(&format!(" ws://{host} wss://{host}"));
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// A `Host` header that can go into the policy as it is: a name or address and a port,
/// nothing that could end a source list or start a directive.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
}

fn serve(name: &str, host: Option<&str>) -> Option<Response> {
    let (_, mime, body) = FILES.iter().find(|(n, _, _)| *n == name)?;
    let mut res = warp::reply::with_header(*body, "content-type", *mime).into_response();
    let h = res.headers_mut();
    let csp = HeaderValue::from_str(&content_security_policy(host))
        .expect("the policy is built from plain ASCII");
    h.insert("content-security-policy", csp);
    // The page's URL may carry `?token=`: it goes to no other site as a Referer.
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Some(res)
}

pub fn routes() -> warp::filters::BoxedFilter<(Response,)> {
    let host = warp::header::optional::<String>("host");
    let index = warp::path::end().and(host).map(|host: Option<String>| {
        serve("index.html", host.as_deref()).expect("index.html is built in")
    });
    let file = warp::path::param::<String>()
        .and(warp::path::end())
        .and(host)
        .and_then(|name: String, host: Option<String>| async move {
            serve(&name, host.as_deref()).ok_or_else(warp::reject::not_found)
        });
    index.or(file).unify().boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_only_a_plain_host() {
        let csp = content_security_policy(Some("edge.example.com:8443"));
        assert!(
            csp.contains(
                "connect-src 'self' ws://edge.example.com:8443 wss://edge.example.com:8443;"
            ),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        for host in ["a; script-src *", "a b", "", "evil.com/x", "a,b"] {
            let csp = content_security_policy(Some(host));
            assert!(csp.contains("connect-src 'self';"), "{host:?}: {csp}");
        }
    }
}
