//! `cargo xtask token`: mints a development token for the demo's development key.
//!
//! DEVELOPMENT ONLY. The key is a random HS256 secret made on first use in
//! `.tools/dev-hs256.secret` (git-ignored); the demo's edges trust it. Production edges
//! trust an identity provider's public keys (RS256 / EdDSA) instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

const USAGE: &str = "usage: cargo xtask token [--sub USER] [--ent PATTERN,...] [--dly PATTERN,...] [--acct ACCOUNT,...] [--tier NAME] [--org ACCOUNT] [--use display|non_display] [--ttl SECONDS] [--max-symbols N] [--jti ID]";

/// How long the demo's dashboard token lasts: a working day of demo.
const DEMO_TTL_S: &str = "43200";

/// The development secret's path, creating the secret if it does not exist.
pub fn ensure_dev_secret(root: &Path) -> anyhow::Result<PathBuf> {
    let path = root.join(".tools/dev-hs256.secret");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(root.join(".tools"))?;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, hex).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub fn token(root: &Path, args: &[String]) -> anyhow::Result<()> {
    if let Some(token) = mint(root, args)? {
        println!("{token}");
    }
    Ok(())
}

/// Families the demo token has in real time: the dashboard's default watchlist but TSLA,
/// which it has delayed (like every other symbol), so that a visitor sees the difference.
const DEMO_REAL_TIME: &str = "AAPL*,MSFT*,NVDA*,SPY*,QQQ*,AMZN*,GOOGL*,META*,AMD*";

/// The token the demo's dashboard URLs carry: the watchlist in real time but TSLA, every
/// other symbol delayed (`dly`), and the account `DEMO1` of the simulated order system
/// (its blotter), for twelve hours.
pub fn demo_token(root: &Path) -> anyhow::Result<String> {
    let args = [
        "--sub",
        "demo",
        "--ent",
        DEMO_REAL_TIME,
        "--dly",
        "*",
        "--acct",
        "DEMO1",
        "--ttl",
        DEMO_TTL_S,
    ]
    .map(String::from);
    mint(root, &args)?.context("a demo token")
}

/// The token `args` ask for, signed with the development secret under `root` (made now
/// if there is none); None when only the usage was asked for.
fn mint(root: &Path, args: &[String]) -> anyhow::Result<Option<String>> {
    let mut sub = "dev".to_string();
    let mut ent = vec!["*".to_string()];
    let mut dly: Vec<String> = Vec::new();
    let mut acct: Vec<String> = Vec::new();
    let mut tier = "realtime".to_string();
    let mut ttl: u64 = 3600;
    let mut max_symbols: Option<u32> = None;
    let mut jti: Option<String> = None;
    let mut org: Option<String> = None;
    let mut usage: Option<String> = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--sub" => sub = value()?.clone(),
            "--ent" => ent = value()?.split(',').map(|s| s.trim().to_string()).collect(),
            "--dly" => dly = value()?.split(',').map(|s| s.trim().to_string()).collect(),
            "--acct" => acct = value()?.split(',').map(|s| s.trim().to_string()).collect(),
            "--tier" => tier = value()?.clone(),
            "--ttl" => ttl = value()?.parse().context("--ttl takes seconds")?,
            "--max-symbols" => {
                max_symbols = Some(value()?.parse().context("--max-symbols takes a number")?)
            }
            "--jti" => jti = Some(value()?.clone()),
            "--org" => org = Some(value()?.clone()),
            "--use" => match value()?.as_str() {
                u @ ("display" | "non_display") => usage = Some(u.to_string()),
                other => bail!("--use takes display or non_display, not {other:?}"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let secret = std::fs::read(ensure_dev_secret(root)?)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::json!({
        "sub": sub, "iat": now, "exp": now + ttl, "ent": ent, "tier": tier,
    });
    if !dly.is_empty() {
        claims["dly"] = dly.into();
    }
    if !acct.is_empty() {
        claims["acct"] = acct.into();
    }
    if let Some(m) = max_symbols {
        claims["max_symbols"] = m.into();
    }
    if let Some(j) = jti {
        claims["jti"] = j.into();
    }
    if let Some(o) = org {
        claims["org"] = o.into();
    }
    if let Some(u) = usage {
        claims["use"] = u.into();
    }
    let token = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.trim_ascii()),
    )?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use tickmesh_edge::auth::Verifier;
    use tickmesh_edge::config::AuthConfig;

    use super::*;

    /// A token from `cargo xtask token` verifies on an edge that trusts the development
    /// secret, as the demo's does (`auth.hs256_secret_file`), with the claims asked for;
    /// the secret is made on first use and kept.
    #[test]
    fn a_development_token_verifies_with_the_demo_edges_key() {
        let root = std::env::temp_dir().join(format!("xtask-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let args: Vec<String> = ["--sub", "alice", "--ent", "AAPL*,SPY", "--tier", "pro"]
            .map(String::from)
            .to_vec();
        let token = mint(&root, &args).unwrap().unwrap();
        let secret_file = root.join(".tools/dev-hs256.secret");
        let secret = std::fs::read_to_string(&secret_file).unwrap();
        assert_eq!(secret.len(), 64, "a 32-byte secret in hex");
        let config = AuthConfig {
            hs256_secret_file: Some(secret_file.clone()),
            ..AuthConfig::default()
        };
        let grant = Verifier::new(&config).unwrap().verify(&token).unwrap();
        assert_eq!(grant.sub.as_deref(), Some("alice"));
        assert_eq!(grant.tier, "pro");
        assert_eq!(grant.ent, ["AAPL*", "SPY"]);
        // The second token is signed with the same secret.
        let again = mint(&root, &args).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), secret);
        assert!(Verifier::new(&config).unwrap().verify(&again).is_ok());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The demo's dashboard token names the account DEMO1 (its blotter), the watchlist in
    /// real time but TSLA, every symbol delayed, and lasts the twelve hours of a demo.
    #[test]
    fn the_demo_token_names_demo1_for_twelve_hours() {
        let root = std::env::temp_dir().join(format!("xtask-demo-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let token = demo_token(&root).unwrap();
        let config = AuthConfig {
            hs256_secret_file: Some(root.join(".tools/dev-hs256.secret")),
            ..AuthConfig::default()
        };
        let grant = Verifier::new(&config).unwrap().verify(&token).unwrap();
        assert_eq!(grant.acct, ["DEMO1"]);
        assert!(grant.ent.iter().all(|p| p.ends_with('*') && p != "*"));
        assert!(!grant.ent.iter().any(|p| p == "TSLA*"));
        assert_eq!(grant.dly, ["*"]);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let left = grant.exp.unwrap() - now;
        assert!((43_190..=43_200).contains(&left), "{left} s left");
        let _ = std::fs::remove_dir_all(&root);
    }
}
