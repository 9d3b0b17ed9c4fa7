//! TLS with rustls (ring provider), both ways.
//!
//! Inbound: an optional HTTPS listener from a PEM certificate chain and key. The pair is re-read when either
//! file changes (checked every 2 s), so a rotated certificate is served to new connections without a restart;
//! a pair that does not load (half-written, key not matching) is reported and the previous one stays. ALPN
//! offers h2 and http/1.1.
//!
//! Outbound: the platform's trusted roots (webpki's bundled roots when the platform has none, as in a bare
//! container), plus an optional PEM bundle of extra CAs per backend for self-hosted providers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// How often the certificate files' modification times are checked.
const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{cert} / {key}: the key does not fit the certificate, or is of an unsupported type: {reason}")]
    KeyMismatch { cert: String, key: String, reason: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |reason: String| TlsError::Read {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(cert)?;
    // The key's bytes never reach an error message: only the file name does.
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
        path: key.display().to_string(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key found".to_owned(),
            other => other.to_string(),
        },
    })?;
    CertifiedKey::from_der(certs, private, &provider()).map_err(|e| TlsError::KeyMismatch {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason: e.to_string(),
    })
}

/// Serves whichever certificate was loaded last.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Certificates {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificates>, TlsError> {
        Ok(Arc::new(Certificates {
            current: ArcSwap::from_pointee(load_pair(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// Re-reads the pair when either file's modification time changes, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let stamp = |c: &Certificates| (modified(&c.cert), modified(&c.key));
        let mut last = stamp(&self);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&self);
            if now == last {
                continue;
            }
            let (cert, key) = (self.cert.clone(), self.key.clone());
            // File reads: on the blocking pool, not on a runtime thread serving requests.
            let loaded = tokio::task::spawn_blocking(move || load_pair(&cert, &key))
                .await
                .unwrap_or_else(|e| Err(TlsError::Setup(format!("reading the certificate: {e}"))));
            match loaded {
                Ok(pair) => {
                    last = now;
                    self.current.store(Arc::new(pair));
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                // Perhaps caught between writing the certificate and the key: try again at the next tick, keep
                // serving the previous pair meanwhile.
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but does not load; keeping the previous one")
                }
            }
        }
    }

    /// A TLS acceptor offering h2 and http/1.1.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The platform's roots, read once; webpki's bundled roots where the platform offers none.
static PLATFORM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "a platform root certificate could not be read");
    }
    if found.certs.is_empty() {
        tracing::warn!("no platform root certificates found; using the bundled webpki roots");
    }
    found.certs
});

/// A client config trusting the platform's roots and, if given, the CAs in `extra_ca` (PEM).
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(PLATFORM_ROOTS.iter().cloned());
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Read {
                path: path.display().to_string(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
