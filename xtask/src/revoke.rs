//! `cargo xtask revoke --sub USER | --jti ID`: revokes on the running demo mesh, as NATS
//! user `admin`, what production does with `nats kv put` (docs/operations.md).
//!
//! It writes `sub.<base64url>` / `jti.<base64url>` = `{"at": <now>}` into the hub's KV
//! bucket `ctl_revoked`, creating the bucket (and each demo region's mirror of it) when
//! missing. Every edge then closes the matching sessions with 4403 and refuses those
//! tokens, and an edge started later replays the bucket before it turns ready.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tickmesh_core::revocation::{DEFAULT_TTL_S, Revoked};
use tickmesh_service::nats::{NatsAuth, NatsTls};
use tickmesh_service::revocation;

const USAGE: &str = "usage: cargo xtask revoke (--sub USER | --jti ID) [--at SECONDS] [--ttl SECONDS]\n\
  --sub USER     every token of USER issued (iat) at or before --at\n\
  --jti ID       the token with this jti\n\
  --at SECONDS   the revocation time, seconds since the Unix epoch (default: now)\n\
  --ttl SECONDS  the bucket's TTL when this creates it (default 86400; at least the\n\
                 edges' auth.max_token_lifetime_s)";

/// The demo's hub JetStream domain.
const HUB_DOMAIN: &str = "hub";

pub fn revoke(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut what = None;
    let mut at = None;
    let mut ttl = DEFAULT_TTL_S;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--sub" if what.is_none() => what = Some(Revoked::Sub(value()?)),
            "--jti" if what.is_none() => what = Some(Revoked::Jti(value()?)),
            "--at" => at = Some(value()?.parse().context("--at: seconds since the epoch")?),
            "--ttl" => ttl = value()?.parse().context("--ttl: seconds")?,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unexpected {other}\n{USAGE}"),
        }
    }
    let Some(what) = what else {
        bail!("name one user or one token\n{USAGE}");
    };
    what.key()?;
    if ttl == 0 {
        bail!("--ttl must be at least 1 second");
    }
    let at = match at {
        Some(at) => at,
        None => SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    };
    let pki = root.join(".tools/demo/pki");
    if !pki.join("admin.password").exists() {
        bail!(
            "no demo mesh credentials in {}: start `cargo xtask demo` first",
            pki.display()
        );
    }
    let tls = NatsTls {
        ca_file: Some(pki.join("ca.pem")),
        ..NatsTls::default()
    };
    let auth = NatsAuth {
        user: Some("admin".into()),
        password_file: Some(pki.join("admin.password")),
        creds_file: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let key = rt.block_on(async {
        let ttl = Duration::from_secs(ttl);
        let hub: Vec<String> = crate::DEMO_HUB
            .iter()
            .map(|h| format!("nats://127.0.0.1:{}", h.1))
            .collect();
        let client = connect(&tls, &auth, &hub).await?;
        let js = async_nats::jetstream::new(client);
        let store = revocation::ensure_bucket(&js, ttl, DEMO_HUB_REPLICAS).await?;
        for region in &crate::DEMO_REGIONS {
            let urls: Vec<String> = region
                .leaves
                .iter()
                .map(|l| format!("nats://127.0.0.1:{}", l.1))
                .collect();
            let client = connect(&tls, &auth, &urls).await?;
            revocation::ensure_mirror(&client, region.name, Some(HUB_DOMAIN), ttl, 1).await?;
        }
        revocation::revoke(&store, &what, at).await
    })?;
    let (kind, id) = match &what {
        Revoked::Sub(sub) => ("user", sub),
        Revoked::Jti(jti) => ("token", jti),
    };
    println!("revoked {kind} {id:?}: ctl_revoked {key} = {{\"at\": {at}}}");
    Ok(())
}

/// The demo's hub is three nodes: the bucket keeps three copies, like md_last.
const DEMO_HUB_REPLICAS: usize = 3;

async fn connect(
    tls: &NatsTls,
    auth: &NatsAuth,
    urls: &[String],
) -> anyhow::Result<async_nats::Client> {
    let options = tickmesh_service::nats::options(tls, auth).await?;
    tokio::time::timeout(Duration::from_secs(10), options.connect(urls))
        .await
        .with_context(|| format!("connecting to {urls:?}: is `cargo xtask demo` running?"))?
        .with_context(|| format!("connecting to {urls:?}"))
}
