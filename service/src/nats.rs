//! How a TickMesh service connects to NATS: TLS and credentials, shared by ingest, the
//! edge and the tools. The files (the password, the certificates) are read when the
//! config is validated and when the service connects.
//!
//! In a service's config, under its `[nats]` table:
//!
//! ```toml
//! [nats.tls]
//! ca_file = "/etc/tickmesh/nats-ca.pem"      # verify the servers with this CA
//! cert_file = "/etc/tickmesh/edge.pem"       # optional client certificate...
//! key_file = "/etc/tickmesh/edge-key.pem"    # ...and its key
//!
//! [nats.auth]
//! user = "edge"
//! password_file = "/etc/tickmesh/nats-edge.password"
//! # or: creds_file = "/etc/tickmesh/edge.creds" (operator mode: JWT and nkey seed)
//! ```
//!
//! A service logged in as user U takes its replies (requests, JetStream calls, watches) on
//! `_INBOX_U.>` rather than the shared `_INBOX.>`, so that the servers can let each user
//! subscribe to its own replies and to no other user's (`nats/include/permissions.conf`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// A service's `[nats]` table, as ingest and the order system have it (the edge's has more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// NATS server URLs, tried in order.
    pub urls: Vec<String>,
    /// Client name shown by the server.
    pub name: String,
    /// TLS towards NATS (`[nats.tls]`).
    pub tls: NatsTls,
    /// Credentials on NATS (`[nats.auth]`).
    pub auth: NatsAuth,
}

/// TLS towards NATS. Any file set here, or a `tls://` URL, makes TLS required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsTls {
    /// PEM CA bundle the servers' certificates are verified with; none: the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify their clients (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Require TLS even with no file set (a server with a publicly trusted certificate).
    pub required: bool,
}

/// Who the service is on NATS: a user and password, or a credentials file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsAuth {
    /// User name; the password is read from `password_file`. One subject token (no `.`,
    /// `*`, `>` or whitespace): replies come to `_INBOX_<user>.>` ([`inbox_prefix`]).
    pub user: Option<String>,
    /// File whose first line is the password (never the config itself: configs are shared).
    pub password_file: Option<PathBuf>,
    /// NATS credentials file (user JWT and nkey seed), for operator-mode servers.
    pub creds_file: Option<PathBuf>,
}

/// A setting that is wrong: its key under the service's config (`nats.tls.ca_file`) and why.
pub type Invalid = (&'static str, String);

impl NatsTls {
    fn is_set(&self) -> bool {
        self.required || self.ca_file.is_some() || self.cert_file.is_some()
    }

    /// Checks that the settings fit together and that the files are readable.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(("nats.tls", "cert_file and key_file go together".into()));
        }
        for (key, file) in [
            ("nats.tls.ca_file", &self.ca_file),
            ("nats.tls.cert_file", &self.cert_file),
            ("nats.tls.key_file", &self.key_file),
        ] {
            if let Some(path) = file {
                readable(path).map_err(|e| (key, format!("{e:#}")))?;
            }
        }
        Ok(())
    }
}

impl NatsAuth {
    /// Checks that the settings fit together and that the files are readable.
    pub fn validate(&self) -> Result<(), Invalid> {
        match (&self.user, &self.password_file, &self.creds_file) {
            (Some(_), Some(_), None) | (None, None, None) => {}
            (None, None, Some(path)) => {
                readable(path).map_err(|e| ("nats.auth.creds_file", format!("{e:#}")))?;
            }
            (Some(_), None, _) => return Err(("nats.auth", "user needs password_file".into())),
            (None, Some(_), _) => return Err(("nats.auth", "password_file needs user".into())),
            (Some(_), Some(_), Some(_)) => {
                return Err((
                    "nats.auth",
                    "either user and password_file, or creds_file".into(),
                ));
            }
        }
        if let Some(user) = &self.user
            && !is_subject_token(user)
        {
            return Err((
                "nats.auth.user",
                format!(
                    "{user:?} is not one subject token (no '.', '*', '>' or whitespace): \
                     replies come to _INBOX_<user>"
                ),
            ));
        }
        if let Some(path) = &self.password_file {
            password(path).map_err(|e| ("nats.auth.password_file", format!("{e:#}")))?;
        }
        Ok(())
    }
}

impl NatsConfig {
    /// The local server (`nats://127.0.0.1:4222`), as client `name`.
    pub fn named(name: &str) -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            name: name.into(),
            tls: NatsTls::default(),
            auth: NatsAuth::default(),
        }
    }

    /// Checks that there is a URL, and that TLS and the credentials fit together, their
    /// files readable.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.urls.is_empty() {
            return Err(("nats.urls", "at least one URL is needed".into()));
        }
        self.tls.validate()?;
        self.auth.validate()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig::named("tickmesh")
    }
}

/// The subject prefix of this user's replies: `_INBOX_<user>`, or nats's own `_INBOX` for
/// a credentials file (whose user is named by its JWT, not here).
pub fn inbox_prefix(auth: &NatsAuth) -> String {
    match &auth.user {
        Some(user) => format!("_INBOX_{user}"),
        None => "_INBOX".to_string(),
    }
}

fn is_subject_token(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace())
}

/// Connect options with this TLS and these credentials applied.
pub async fn options(tls: &NatsTls, auth: &NatsAuth) -> anyhow::Result<async_nats::ConnectOptions> {
    let mut options = match &auth.creds_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .with_context(|| format!("reading NATS credentials {}", path.display()))?,
        None => async_nats::ConnectOptions::new(),
    };
    if let (Some(user), Some(path)) = (&auth.user, &auth.password_file) {
        options = options.user_and_password(user.clone(), password(path)?);
    }
    options = options.custom_inbox_prefix(inbox_prefix(auth));
    if tls.is_set() {
        options = options.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

fn readable(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(())
}

fn password(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        bail!(
            "{} is empty: the password is its first line",
            path.display()
        );
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tickmesh-service-nats-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_password_is_the_first_line_of_its_file() {
        let dir = temp_dir("password");
        assert_eq!(
            password(&file(&dir, "p", "s3cret\nignored\n")).unwrap(),
            "s3cret"
        );
        assert_eq!(
            password(&file(&dir, "crlf", "s3cret\r\n")).unwrap(),
            "s3cret"
        );
        let err = password(&file(&dir, "empty", "\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn each_user_takes_its_replies_under_its_own_inbox_prefix() {
        let edge = NatsAuth {
            user: Some("edge".into()),
            ..Default::default()
        };
        assert_eq!(inbox_prefix(&edge), "_INBOX_edge");
        assert_eq!(inbox_prefix(&NatsAuth::default()), "_INBOX");
    }

    #[test]
    fn settings_that_do_not_fit_together_are_refused_by_name() {
        let dir = temp_dir("validate");
        let pw = file(&dir, "pw", "x\n");
        let ok = NatsAuth {
            user: Some("edge".into()),
            password_file: Some(pw.clone()),
            creds_file: None,
        };
        ok.validate().unwrap();
        NatsAuth::default().validate().unwrap();
        let cases = [
            (
                NatsAuth {
                    password_file: None,
                    ..ok.clone()
                },
                ("nats.auth", "user needs password_file"),
            ),
            (
                NatsAuth {
                    user: None,
                    ..ok.clone()
                },
                ("nats.auth", "password_file needs user"),
            ),
            (
                NatsAuth {
                    creds_file: Some(pw.clone()),
                    ..ok.clone()
                },
                ("nats.auth", "either user and password_file, or creds_file"),
            ),
            (
                NatsAuth {
                    user: Some("edge.eu".into()),
                    ..ok.clone()
                },
                ("nats.auth.user", "not one subject token"),
            ),
            (
                NatsAuth {
                    password_file: Some(dir.join("missing")),
                    ..ok.clone()
                },
                ("nats.auth.password_file", "missing"),
            ),
        ];
        for (auth, (key, why)) in cases {
            let (k, reason) = auth.validate().unwrap_err();
            assert_eq!(k, key);
            assert!(reason.contains(why), "{reason} does not say {why}");
        }
        let tls = NatsTls {
            cert_file: Some(pw.clone()),
            ..Default::default()
        };
        assert_eq!(
            tls.validate().unwrap_err(),
            ("nats.tls", "cert_file and key_file go together".into())
        );
        let tls = NatsTls {
            ca_file: Some(dir.join("nope.pem")),
            ..Default::default()
        };
        let (key, reason) = tls.validate().unwrap_err();
        assert_eq!(key, "nats.tls.ca_file");
        assert!(reason.contains("nope.pem"), "{reason}");
    }
}
