//! The mesh's TLS and credentials, made fresh for each mesh: a CA, one certificate for
//! every server (127.0.0.1 and localhost), and a password file per NATS user of
//! `nats/include/hub-users.conf` and `nats/include/region-users.conf`. Nothing here is ever committed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tickmesh_service::nats::{NatsAuth, NatsTls};

/// The NATS users the mesh's configs define.
pub const USERS: [&str; 4] = ["ingest", "edge", "admin", "oms"];

#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    dir: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> anyhow::Result<Pki> {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir)?;
        let certs = tickmesh_core::dev_pki::generate("TickMesh test")?;
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            dir,
        };
        std::fs::write(&pki.ca, &certs.ca_pem)?;
        std::fs::write(&pki.cert, &certs.cert_pem)?;
        std::fs::write(&pki.key, &certs.key_pem)?;
        for user in USERS {
            std::fs::write(pki.password_file(user), format!("{}\n", password(user)))?;
        }
        Ok(pki)
    }

    /// The environment the `nats/` templates read their TLS files and passwords from.
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
        ];
        for user in USERS {
            let var = format!("TICKMESH_NATS_{}_PASSWORD", user.to_uppercase());
            env.push((var, password(user)));
        }
        env
    }

    pub fn password_file(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.password"))
    }

    /// The password of `user` (for a client made by hand).
    pub fn password(&self, user: &str) -> String {
        password(user)
    }

    /// A service's `[nats.tls]`: verify the servers with the mesh's CA.
    pub fn tls(&self) -> NatsTls {
        NatsTls {
            ca_file: Some(self.ca.clone()),
            ..Default::default()
        }
    }

    /// A service's `[nats.auth]` as `user`.
    pub fn auth(&self, user: &str) -> NatsAuth {
        NatsAuth {
            user: Some(user.into()),
            password_file: Some(self.password_file(user)),
            creds_file: None,
        }
    }

    /// A NATS client as `user` on `urls`.
    pub async fn connect(&self, user: &str, urls: &[String]) -> anyhow::Result<async_nats::Client> {
        let urls: Vec<async_nats::ServerAddr> =
            urls.iter().map(|u| u.parse()).collect::<Result<_, _>>()?;
        tickmesh_service::nats::options(&self.tls(), &self.auth(user))
            .await?
            .name(format!("test-{user}"))
            .connect(urls)
            .await
            .with_context(|| format!("connecting as {user}"))
    }
}

fn password(user: &str) -> String {
    format!("test-{user}-secret")
}
