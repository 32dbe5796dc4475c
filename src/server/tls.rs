//! TLS for the webhook: a rustls 0.23 server configuration whose certificate
//! is served from an [`ArcSwap`], and a reloader that swaps in a new pair when
//! the files on disk change.
//!
//! Kubernetes updates a mounted Secret by re-pointing a `..data` symlink, so
//! modification times are not trustworthy: the reloader compares contents.
//! A new pair is only taken when both files parse and the private key belongs
//! to the certificate; otherwise the last good pair keeps being served, so a
//! half-written or mismatched pair never fails a handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::metrics::Metrics;

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no PEM certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("invalid PEM certificate in {}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("no usable PEM private key in {}: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("private key {} does not belong to certificate {}: {reason}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Installs ring as the process-wide rustls provider. Other parts of the
/// process (the kube client) build their own rustls configs from the default
/// provider, so it must be set exactly once; a second call is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and PEM private key and checks that the key
/// belongs to the first (end-entity) certificate.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let signing_key =
        provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey {
                path: key_path.to_owned(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Strict: ring can always derive the public key, so "unknown" is a failure too.
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(certified)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Serves whatever pair was last swapped in; every handshake reads it anew,
/// so a reload takes effect for the next connection without a restart.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(initial: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
        }
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    pub fn store(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The certificate and key files and the last contents seen, so that a
/// refused pair is reported once rather than on every poll.
pub struct CertFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    resolver: Arc<CertResolver>,
    last_seen: (Vec<u8>, Vec<u8>),
}

impl CertFiles {
    /// Loads the pair at start-up; failure here is fatal for the caller.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert = read(cert_path)?;
        let key = read(key_path)?;
        let pair = parse_pair(&cert, &key, cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            resolver: Arc::new(CertResolver::new(pair)),
            last_seen: (cert, key),
        })
    }

    pub fn resolver(&self) -> Arc<CertResolver> {
        Arc::clone(&self.resolver)
    }

    /// Re-reads both files; swaps in the new pair if the contents changed and
    /// the pair is valid. Returns `None` when nothing changed.
    pub fn reload(&mut self) -> Option<Result<(), TlsError>> {
        let (cert, key) = match (read(&self.cert_path), read(&self.key_path)) {
            (Ok(c), Ok(k)) => (c, k),
            // Mid-rotation a file can be briefly missing; only complain once.
            (Err(e), _) | (_, Err(e)) => {
                let marker = (Vec::new(), Vec::new());
                if self.last_seen == marker {
                    return None;
                }
                self.last_seen = marker;
                return Some(Err(e));
            }
        };
        if (cert.as_slice(), key.as_slice())
            == (self.last_seen.0.as_slice(), self.last_seen.1.as_slice())
        {
            return None;
        }
        let result = parse_pair(&cert, &key, &self.cert_path, &self.key_path)
            .map(|pair| self.resolver.store(pair));
        self.last_seen = (cert, key);
        Some(result)
    }
}

/// The server configuration: TLS 1.3 and 1.2 only, certificate from the
/// resolver, and client certificates checked by `client_verifier` when one is
/// given (`--client-ca`), else not asked for. actix-web adds the ALPN
/// protocols itself (h2 and http/1.1, with its `http2` feature).
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let config = match client_verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(resolver);
    Ok(config)
}

/// Polls the files (and the client CA, when set) every `interval` until the
/// task is aborted.
pub fn spawn_reloader(
    mut files: CertFiles,
    mut client_ca: Option<super::client_auth::ClientCaFile>,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    // tokio's interval panics on zero; a configured 0 means "as often as is sane".
    let interval = interval.max(Duration::from_millis(50));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            // Reading two small files is quick, but keep blocking I/O off the runtime.
            let (back, outcome, ca_back, ca_outcome) =
                match tokio::task::spawn_blocking(move || {
                    let outcome = files.reload();
                    let ca_outcome = client_ca.as_mut().and_then(|c| c.reload());
                    (files, outcome, client_ca, ca_outcome)
                })
                .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(error = %e, "certificate reloader stopped");
                        return;
                    }
                };
            files = back;
            client_ca = ca_back;
            match ca_outcome {
                None => {}
                Some(Ok(())) => {
                    metrics.tls_reload("success");
                    tracing::info!(
                        client_ca = %client_ca.as_ref().map(|c| c.path().display().to_string()).unwrap_or_default(),
                        "reloaded the client CA"
                    );
                }
                Some(Err(e)) => {
                    metrics.tls_reload("error");
                    tracing::warn!(error = %e, "refused new client CA; still checking clients against the last good one");
                }
            }
            match outcome {
                None => {}
                Some(Ok(())) => {
                    metrics.tls_reload("success");
                    tracing::info!(
                        cert = %files.cert_path.display(),
                        key = %files.key_path.display(),
                        "reloaded TLS certificate"
                    );
                }
                Some(Err(e)) => {
                    metrics.tls_reload("error");
                    tracing::warn!(error = %e, "refused new TLS certificate; still serving the last good one");
                }
            }
        }
    })
}
