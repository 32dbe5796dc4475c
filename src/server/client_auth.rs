//! `--client-ca`: only the API server may ask for decisions.
//!
//! Once an allowed request writes a reservation, a forged AdmissionReview from
//! any pod that can reach the Service could hold claims. The API server can
//! present a client certificate to webhooks (its AdmissionConfiguration's
//! kubeConfigFile); with `--client-ca` claimguard asks every TLS client for
//! one and checks it against that CA. The certificate stays *optional* at the
//! TLS layer — kubelet probes and Prometheus present none and must still reach
//! `/healthz`, `/readyz` and `/metrics` — and the routes that decide
//! (`/validate`, `/mutate`) refuse a connection that did not present one.
//! A certificate that is presented but does not chain to the CA fails the
//! handshake itself.
//!
//! The CA file is re-read like the serving pair: the verifier sits behind an
//! [`ArcSwap`], so a rotated CA applies to the next handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use super::tls::TlsError;

/// Marks a connection whose client presented a certificate that chains to the
/// client CA (rustls verified it during the handshake). Stored per connection
/// by the server's `on_connect` hook, read by the deciding routes.
#[derive(Clone, Copy, Debug)]
pub struct VerifiedClient;

/// A client certificate verifier whose CA can be replaced while serving.
pub struct ReloadingClientVerifier {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for ReloadingClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingClientVerifier")
            .finish_non_exhaustive()
    }
}

/// Builds a verifier for `pem` (one or more CA certificates) that accepts
/// clients without a certificate: the routes decide what they require.
fn build_verifier(pem: &[u8], path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::BadCertificate {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| bad(e.to_string()))
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    // No hints: a client (Go's crypto/tls included) then sends the certificate
    // it has, which is what the API server's kubeconfig names.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// The client CA file and the last contents seen.
pub struct ClientCaFile {
    path: PathBuf,
    verifier: Arc<ReloadingClientVerifier>,
    last_seen: Vec<u8>,
}

impl ClientCaFile {
    /// Loads the CA at start-up; failure here is fatal for the caller.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let verifier = build_verifier(&pem, path)?;
        Ok(Self {
            path: path.to_owned(),
            verifier: Arc::new(ReloadingClientVerifier {
                current: ArcSwap::from_pointee(verifier),
            }),
            last_seen: pem,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn verifier(&self) -> Arc<ReloadingClientVerifier> {
        Arc::clone(&self.verifier)
    }

    /// Re-reads the file; swaps in the new CA if it changed and parses.
    /// `None` when nothing changed; on error the last good CA stays.
    pub fn reload(&mut self) -> Option<Result<(), TlsError>> {
        let pem = match std::fs::read(&self.path) {
            Ok(p) => p,
            Err(source) => {
                if self.last_seen.is_empty() {
                    return None;
                }
                self.last_seen.clear();
                return Some(Err(TlsError::Read {
                    path: self.path.clone(),
                    source,
                }));
            }
        };
        if pem == self.last_seen {
            return None;
        }
        let result =
            build_verifier(&pem, &self.path).map(|v| self.verifier.current.store(Arc::new(v)));
        self.last_seen = pem;
        Some(result)
    }
}

/// The `on_connect` hook: records whether the TLS client presented a verified
/// certificate. rustls only keeps peer certificates it verified, so their
/// presence is the proof.
pub(super) fn mark_verified_client(
    tls: &actix_tls::accept::rustls_0_23::TlsStream<super::read_ahead::ReadAhead>,
    ext: &mut actix_web::dev::Extensions,
) {
    let (_, session) = tls.get_ref();
    if session.peer_certificates().is_some_and(|c| !c.is_empty()) {
        ext.insert(VerifiedClient);
    }
}
