//! The demo's TLS and NATS credentials, made fresh on every run under `.tools/demo/pki/`:
//! a CA, one certificate for 127.0.0.1 and localhost (every nats-server, and the edges'
//! `wss://` with `--tls`), and a password file per NATS user of `nats/include/`.
//! Development only: a deployment brings its own certificates and secrets.

use std::path::{Path, PathBuf};

/// The NATS users the demo's services and tools log in as.
const USERS: [&str; 5] = ["ingest", "edge", "admin", "oms", "region"];

pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    dir: PathBuf,
    passwords: Vec<(&'static str, String)>,
}

impl Pki {
    pub fn create(state: &Path) -> anyhow::Result<Pki> {
        let dir = state.join("pki");
        std::fs::create_dir_all(&dir)?;
        let certs = tickmesh_core::dev_pki::generate("TickMesh demo")?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id());
        let passwords = USERS
            .iter()
            .enumerate()
            .map(|(i, user)| {
                (
                    *user,
                    format!("demo-{user}-{:x}", seed.rotate_left(i as u32 * 17)),
                )
            })
            .collect();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            dir,
            passwords,
        };
        std::fs::write(&pki.ca, &certs.ca_pem)?;
        std::fs::write(&pki.cert, &certs.cert_pem)?;
        write_private(&pki.key, &certs.key_pem)?;
        for (user, password) in &pki.passwords {
            write_private(&pki.password_file(user), &format!("{password}\n"))?;
        }
        Ok(pki)
    }

    pub fn password(&self, user: &str) -> &str {
        self.passwords
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_default()
    }

    pub fn password_file(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.password"))
    }

    /// What `nats/hub.conf` and `nats/leaf.conf` read: TLS files and the users' passwords.
    pub fn server_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "TICKMESH_NATS_TLS_CA".to_string(),
                self.ca.display().to_string(),
            ),
            (
                "TICKMESH_NATS_TLS_CERT".into(),
                self.cert.display().to_string(),
            ),
            (
                "TICKMESH_NATS_TLS_KEY".into(),
                self.key.display().to_string(),
            ),
            ("TICKMESH_NATS_LEAF_USER".into(), "region".into()),
            (
                "TICKMESH_NATS_LEAF_PASSWORD".into(),
                self.password("region").into(),
            ),
        ];
        for user in ["ingest", "edge", "admin", "oms"] {
            let var = format!("TICKMESH_NATS_{}_PASSWORD", user.to_uppercase());
            env.push((var, self.password(user).into()));
        }
        env
    }

    /// A service's NATS settings (`prefix` is `TICKMESH_EDGE_`, `TICKMESH_INGEST_` or
    /// `TICKMESH_OMS_`).
    pub fn service_env(&self, prefix: &str, user: &str) -> Vec<(String, String)> {
        vec![
            (
                format!("{prefix}NATS__TLS__CA_FILE"),
                self.ca.display().to_string(),
            ),
            (format!("{prefix}NATS__AUTH__USER"), user.into()),
            (
                format!("{prefix}NATS__AUTH__PASSWORD_FILE"),
                self.password_file(user).display().to_string(),
            ),
        ]
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())?;
    Ok(())
}
