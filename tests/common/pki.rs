//! A test certificate authority (rcgen): a CA and leaf certificates for localhost / 127.0.0.1 signed by it.

use std::path::{Path, PathBuf};

/// A test CA and a certificate for localhost / 127.0.0.1 signed by it, as PEM.
pub struct TestPki {
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sora-shim test CA");
        let ca_pem = params.self_signed(&key).unwrap().pem();
        TestPki {
            ca_pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM, certificate DER)
    pub fn leaf(&self, name: &str) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A leaf for `name` and the CA, as files in `dir`: (`cert.pem`, `key.pem`, `ca.pem`).
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let (cert, key, _) = self.leaf(name);
        let paths = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
        std::fs::write(&paths.0, cert).unwrap();
        std::fs::write(&paths.1, key).unwrap();
        std::fs::write(&paths.2, &self.ca_pem).unwrap();
        paths
    }
}

/// The tests' usual shim config (`TEST_CONFIG`), serving HTTPS with this certificate and key.
pub fn tls_config(cert: &Path, key: &Path) -> String {
    super::TEST_CONFIG.replace(
        "[server]\n",
        &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
}
