//! TLS for `wss://`: rustls (ring), TLS 1.2 and 1.3, with the certificate and key re-read
//! when their files change, so a renewed certificate needs no restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The current certificate, and the file times it was read at.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, [Option<SystemTime>; 2])>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading {}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in it",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("{}: not a PEM private key", key_file.display()))?;
    let signing = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("{}: unusable private key", key_file.display()))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

impl ReloadingCert {
    pub fn new(cfg: &TlsConfig) -> anyhow::Result<Arc<Self>> {
        let stamps = [mtime(&cfg.cert_file), mtime(&cfg.key_file)];
        let key = load(&cfg.cert_file, &cfg.key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
            current: RwLock::new((key, stamps)),
        }))
    }

    /// Re-reads the files if either changed. A broken new pair keeps the old one.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let stamps = [mtime(&self.cert_file), mtime(&self.key_file)];
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == stamps {
            return Ok(false);
        }
        let key = load(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (key, stamps);
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

/// An acceptor serving the (reloading) certificate, offering HTTP/1.1.
pub fn acceptor(resolver: Arc<ReloadingCert>) -> anyhow::Result<TlsAcceptor> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::ServerName;
    use tickmesh_core::dev_pki::{self, DevPki};
    use tokio_rustls::TlsConnector;

    use super::*;

    fn write_pair(dir: &Path, pki: &DevPki) -> TlsConfig {
        let (cert_file, key_file) = (dir.join("edge.crt"), dir.join("edge.key"));
        std::fs::write(&cert_file, &pki.cert_pem).unwrap();
        std::fs::write(&key_file, &pki.key_pem).unwrap();
        TlsConfig {
            cert_file,
            key_file,
            reload_ms: 1000,
        }
    }

    /// A client that trusts `pki`'s CA and speaks only `version`, offering ALPN
    /// `http/1.1`.
    fn client(pki: &DevPki, version: &'static rustls::SupportedProtocolVersion) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    /// Connects `connector` to `acceptor` in memory: the negotiated version and ALPN
    /// protocol, or the client's error.
    async fn handshake(
        acceptor: &TlsAcceptor,
        connector: &TlsConnector,
    ) -> Result<(rustls::ProtocolVersion, Option<Vec<u8>>), std::io::Error> {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        let (client, _server) = tokio::join!(connector.connect(name, c), acceptor.accept(s));
        let client = client?;
        let (_, conn) = client.get_ref();
        Ok((
            conn.protocol_version().unwrap(),
            conn.alpn_protocol().map(<[u8]>::to_vec),
        ))
    }

    #[tokio::test]
    async fn tls_1_2_and_1_3_are_served_with_alpn_http_1_1() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dev_pki::generate("TickMesh test").unwrap();
        let acceptor =
            acceptor(ReloadingCert::new(&write_pair(dir.path(), &pki)).unwrap()).unwrap();
        for (version, want) in [
            (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        ] {
            let (got, alpn) = handshake(&acceptor, &client(&pki, version)).await.unwrap();
            assert_eq!(got, want);
            assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "{want:?}");
        }
    }

    /// A renewed certificate (new files) is served from the next handshake on; a broken
    /// pair written over it keeps the one before.
    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (
            dev_pki::generate("TickMesh old").unwrap(),
            dev_pki::generate("TickMesh new").unwrap(),
        );
        let cfg = write_pair(dir.path(), &old);
        let cert = ReloadingCert::new(&cfg).unwrap();
        let acceptor = acceptor(cert.clone()).unwrap();
        let tls13 = &rustls::version::TLS13;
        assert!(handshake(&acceptor, &client(&old, tls13)).await.is_ok());
        assert!(!cert.reload_if_changed().unwrap(), "nothing changed yet");

        // The renewal: a certificate from another CA. Clients that trust only the old CA
        // now fail, clients that trust the new one succeed.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_pair(dir.path(), &new);
        assert!(
            cert.reload_if_changed().unwrap(),
            "the new files were not read"
        );
        assert!(handshake(&acceptor, &client(&new, tls13)).await.is_ok());
        assert!(handshake(&acceptor, &client(&old, tls13)).await.is_err());

        // A broken pair: an error, and the last good certificate is still served.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&cfg.key_file, "not a key").unwrap();
        assert!(cert.reload_if_changed().is_err());
        assert!(handshake(&acceptor, &client(&new, tls13)).await.is_ok());
    }
}
