//! The dashboard's static files, built into the binary: nothing comes from a CDN.

use warp::Filter;
use warp::reply::{Reply, Response};

const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    (
        "tickmesh.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/tickmesh.js"),
    ),
    (
        "msgpack.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/msgpack.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
];

fn serve(name: &str) -> Option<Response> {
    let (_, mime, body) = FILES.iter().find(|(n, _, _)| *n == name)?;
    Some(warp::reply::with_header(*body, "content-type", *mime).into_response())
}

pub fn routes() -> warp::filters::BoxedFilter<(Response,)> {
    let index = warp::path::end().map(|| serve("index.html").expect("index.html is built in"));
    let file = warp::path::param::<String>()
        .and(warp::path::end())
        .and_then(|name: String| async move { serve(&name).ok_or_else(warp::reject::not_found) });
    index.or(file).unify().boxed()
}
