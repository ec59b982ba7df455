//! Certificates for development and tests (feature `dev-pki`): a CA and one server
//! certificate it signs, as PEM text. Pure: the callers write the files. The demo
//! (`cargo xtask demo`) and the test kit's mesh use it, and every TLS test verifies the
//! server against this CA; a deployment brings its own.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};

/// A CA and a server certificate for `127.0.0.1` and `localhost`, in PEM.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A fresh CA named `"{name} CA"` and a server certificate named `"{name} server"`.
/// The names differ: a certificate whose issuer equals its subject is taken for
/// self-signed by OpenSSL-based clients (browsers, curl, Node).
pub fn generate(name: &str) -> Result<DevPki, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = common_name(&format!("{name} CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?;
    params.distinguished_name = common_name(&format!("{name} server"));
    let cert = params.signed_by(&key, &ca)?;
    Ok(DevPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}
