//! Certificates for clusters without cert-manager, and for `serve --dev`.
//!
//! `claimguard certs` writes a throw-away CA, a serving certificate for the
//! webhook Service's DNS names, a `kubernetes.io/tls` Secret manifest and an
//! RFC 6902 JSON Patch that puts the CA into every webhook's `caBundle`.
//! The CA private key is never written: rotating means running the command
//! again, which keeps the blast radius of a leaked directory to one
//! certificate.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::RootCertStore;

/// Name of the Secret the Deployment mounts at /certs.
pub const SECRET_NAME: &str = "claimguard-tls";
/// Namespace and Service of the kustomize base.
pub const DEFAULT_NAMESPACE: &str = "claimguard-system";
pub const DEFAULT_SERVICE: &str = "claimguard";
/// The base's ValidatingWebhookConfiguration has three webhooks: pods, pvcs, workloads.
pub const DEFAULT_WEBHOOK_COUNT: usize = 3;
pub const DEFAULT_DAYS: u32 = 365;

pub const CA_CERT_FILE: &str = "ca.crt";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";
pub const SECRET_FILE: &str = "secret.yaml";
pub const PATCH_FILE: &str = "cabundle-patch.json";
/// The caBundle patch for the co-location overlay's MutatingWebhookConfiguration.
pub const COLOCATE_PATCH_FILE: &str = "cabundle-patch-colocate.json";
/// `manifests/colocate/` has two mutating webhooks (labelled namespaces, the rest).
pub const COLOCATE_WEBHOOK_COUNT: usize = 2;

/// Dev certificates are replaced when they would expire within this margin, so
/// a long-lived checkout does not start failing TLS in the middle of a session.
const DEV_RENEW_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// Backdating absorbs clock skew between the machine that made the
/// certificate and the API server that checks it.
const BACKDATE: Duration = Duration::from_secs(3600);
const DEV_DAYS: u32 = 365;
/// A hundred years: past this the date arithmetic could overflow, and no
/// webhook certificate should live that long anyway.
pub const MAX_DAYS: u32 = 36_500;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid {what} {value:?}: must be a DNS label (lowercase letters, digits, '-', at most 63 characters)")]
    InvalidName { what: &'static str, value: String },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot serialize {what}: {reason}")]
    Serialize { what: &'static str, reason: String },
    #[error("{} already exists and may hold the CA your cluster trusts; pass --force to replace the files, or choose another --out directory", path.display())]
    Exists { path: PathBuf },
}

/// Options of `claimguard certs`.
#[derive(Debug, Clone)]
pub struct CertsOptions {
    pub namespace: String,
    pub service: String,
    pub out: PathBuf,
    /// Validity of the CA and the serving certificate.
    pub days: u32,
    /// How many webhooks the configuration has; the patch sets `caBundle` on each.
    pub webhook_count: usize,
    /// Replace files already in `out`. Off by default: they may be the CA a
    /// cluster trusts, and a new CA there breaks the webhook until re-patched.
    pub force: bool,
}

impl CertsOptions {
    /// The defaults that match `manifests/`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        CertsOptions {
            namespace: DEFAULT_NAMESPACE.to_string(),
            service: DEFAULT_SERVICE.to_string(),
            out: out.into(),
            days: DEFAULT_DAYS,
            webhook_count: DEFAULT_WEBHOOK_COUNT,
            force: false,
        }
    }
}

/// A CA and a serving certificate signed by it, all PEM.
#[derive(Clone)]
pub struct GeneratedCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for GeneratedCerts {
    // Keeps the private key out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Paths written by [`write_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub ca_cert: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub secret: PathBuf,
    pub cabundle_patch: PathBuf,
    /// The same CA for `mutatingwebhookconfiguration claimguard-colocate`.
    pub cabundle_patch_colocate: PathBuf,
}

/// Paths of the dev certificates, and whether they were made just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub created: bool,
}

/// The names the API server may use for the Service: it dials
/// `S.N.svc`, the others cover in-cluster clients and tooling.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Makes a fresh CA and a serving certificate for `dns_names` and `ips`,
/// valid from one hour ago for `days` days. Nothing touches the disk.
pub fn generate(
    dns_names: &[String],
    ips: &[IpAddr],
    days: u32,
) -> Result<GeneratedCerts, CertsError> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(CertsError::InvalidOption(format!(
            "days must be between 1 and {MAX_DAYS}, not {days}"
        )));
    }
    if dns_names.is_empty() && ips.is_empty() {
        return Err(CertsError::InvalidOption(
            "a serving certificate needs at least one DNS name or IP address".to_string(),
        ));
    }
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "claimguard webhook CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "claimguard");
    // Path length 0: this CA signs serving certificates only, never another CA.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params, days);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let common_name = dns_names
        .iter()
        .find(|n| n.ends_with(".svc"))
        .or_else(|| dns_names.first())
        .cloned()
        .unwrap_or_else(|| "claimguard".to_string());
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
    for name in dns_names {
        sans.push(SanType::DnsName(name.clone().try_into()?));
    }
    sans.extend(ips.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    // ECDSA keys only sign; key encipherment would be meaningless here.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;

    Ok(GeneratedCerts {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The JSON Patch that sets `/webhooks/<i>/clientConfig/caBundle` to the
/// base64 of `ca_pem` for each of the `webhook_count` webhooks. `add` on an
/// existing member replaces it (RFC 6902 §4.1), so the patch also rotates.
pub fn cabundle_patch(ca_pem: &str, webhook_count: usize) -> Patch {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    Patch(
        (0..webhook_count)
            .map(|i| {
                PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens([
                        "webhooks".to_string(),
                        i.to_string(),
                        "clientConfig".to_string(),
                        "caBundle".to_string(),
                    ]),
                    value: serde_json::Value::String(bundle.clone()),
                })
            })
            .collect(),
    )
}

/// A `kubernetes.io/tls` Secret manifest holding the serving pair and the CA.
pub fn secret_manifest(namespace: &str, certs: &GeneratedCerts) -> Result<String, CertsError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "claimguard"},
        },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": b64(&certs.cert_pem),
            "tls.key": b64(&certs.key_pem),
            "ca.crt": b64(&certs.ca_pem),
        },
    });
    let yaml = serde_yaml_ng::to_string(&secret).map_err(|e| CertsError::Serialize {
        what: "secret manifest",
        reason: e.to_string(),
    })?;
    Ok(format!(
        "# Generated by `claimguard certs`; contains a private key, do not commit.\n{yaml}"
    ))
}

/// Writes the bundle of `claimguard certs` into `opts.out`.
pub fn write_bundle(opts: &CertsOptions) -> Result<Written, CertsError> {
    check_label("namespace", &opts.namespace)?;
    check_label("service", &opts.service)?;
    if opts.webhook_count == 0 {
        return Err(CertsError::InvalidOption(
            "webhook count must be at least 1".to_string(),
        ));
    }
    let certs = generate(
        &service_dns_names(&opts.service, &opts.namespace),
        &[],
        opts.days,
    )?;
    let secret = secret_manifest(&opts.namespace, &certs)?;
    let patch_text = |count: usize| {
        serde_json::to_string_pretty(&cabundle_patch(&certs.ca_pem, count))
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|e| CertsError::Serialize {
                what: "caBundle patch",
                reason: e.to_string(),
            })
    };
    let patch_json = patch_text(opts.webhook_count)?;
    let colocate_json = patch_text(COLOCATE_WEBHOOK_COUNT)?;

    fs::create_dir_all(&opts.out).map_err(|source| CertsError::CreateDir {
        path: opts.out.clone(),
        source,
    })?;
    let written = Written {
        ca_cert: opts.out.join(CA_CERT_FILE),
        tls_cert: opts.out.join(TLS_CERT_FILE),
        tls_key: opts.out.join(TLS_KEY_FILE),
        secret: opts.out.join(SECRET_FILE),
        cabundle_patch: opts.out.join(PATCH_FILE),
        cabundle_patch_colocate: opts.out.join(COLOCATE_PATCH_FILE),
    };
    if !opts.force {
        let existing = [
            &written.ca_cert,
            &written.tls_cert,
            &written.tls_key,
            &written.secret,
            &written.cabundle_patch,
            &written.cabundle_patch_colocate,
        ]
        .into_iter()
        .find(|p| p.symlink_metadata().is_ok());
        if let Some(p) = existing {
            return Err(CertsError::Exists { path: p.clone() });
        }
    }
    // Key first and certificate last: a server polling the directory never
    // sees a new certificate next to an old key for long, and it checks the
    // pair before switching anyway.
    write_file(&written.tls_key, certs.key_pem.as_bytes(), true)?;
    write_file(&written.secret, secret.as_bytes(), true)?;
    write_file(&written.ca_cert, certs.ca_pem.as_bytes(), false)?;
    write_file(&written.cabundle_patch, patch_json.as_bytes(), false)?;
    write_file(
        &written.cabundle_patch_colocate,
        colocate_json.as_bytes(),
        false,
    )?;
    write_file(&written.tls_cert, certs.cert_pem.as_bytes(), false)?;
    Ok(written)
}

/// For `serve --dev`: keeps the certificates in `dir` when they are present,
/// match each other and stay valid for at least a day; otherwise makes new
/// ones for the in-cluster names and `localhost` / `127.0.0.1`.
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCerts, CertsError> {
    let mut certs = DevCerts {
        ca_cert: dir.join(CA_CERT_FILE),
        tls_cert: dir.join(TLS_CERT_FILE),
        tls_key: dir.join(TLS_KEY_FILE),
        created: false,
    };
    if certs.ca_cert.is_file() && certs.tls_cert.is_file() && certs.tls_key.is_file() {
        let still_good = read_to_string(&certs.ca_cert).and_then(|ca| {
            let cert = read_to_string(&certs.tls_cert)?;
            let key = read_to_string(&certs.tls_key)?;
            let at = SystemTime::now() + DEV_RENEW_MARGIN;
            for name in dev_names_to_check() {
                verify_pair_at(&ca, &cert, &key, name, at)
                    .map_err(|reason| invalid(&certs.tls_cert, reason))?;
            }
            Ok(())
        });
        match still_good {
            Ok(()) => return Ok(certs),
            Err(e) => tracing::info!(reason = %e, "replacing dev certificates"),
        }
    }

    let mut names = service_dns_names(DEFAULT_SERVICE, DEFAULT_NAMESPACE);
    // `S.N.svc.cluster.local` is not needed on a laptop, but keeping the same
    // names as `claimguard certs` lets one test cover both.
    names.push("localhost".to_string());
    let generated = generate(&names, &[IpAddr::V4(Ipv4Addr::LOCALHOST)], DEV_DAYS)?;
    fs::create_dir_all(dir).map_err(|source| CertsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(&certs.tls_key, generated.key_pem.as_bytes(), true)?;
    write_file(&certs.ca_cert, generated.ca_pem.as_bytes(), false)?;
    write_file(&certs.tls_cert, generated.cert_pem.as_bytes(), false)?;
    certs.created = true;
    Ok(certs)
}

fn dev_names_to_check() -> [&'static str; 3] {
    ["claimguard.claimguard-system.svc", "localhost", "127.0.0.1"]
}

/// Checks that `cert_pem` is signed by `ca_pem`, is valid now for
/// `server_name` (a DNS name or IP address) as a TLS server, and that
/// `key_pem` is its private key. This is what the API server and the TLS
/// stack will check, so it is done with the same verifier rustls clients use.
pub fn verify_pair(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    server_name: &str,
) -> Result<(), String> {
    verify_pair_at(ca_pem, cert_pem, key_pem, server_name, SystemTime::now())
}

fn verify_pair_at(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    server_name: &str,
    at: SystemTime,
) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| format!("bad CA PEM: {e}"))?;
        roots
            .add(ca)
            .map_err(|e| format!("bad CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CA certificate".to_string());
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))?;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err("no certificate".to_string());
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("bad key PEM: {e}"))?;

    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot build verifier: {e}"))?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("bad server name {server_name:?}: {e}"))?;
    let since_epoch = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "clock before 1970".to_string())?;
    verifier
        .verify_server_cert(
            end_entity,
            intermediates,
            &name,
            &[],
            UnixTime::since_unix_epoch(since_epoch),
        )
        .map_err(|e| format!("certificate not valid for {server_name}: {e}"))?;

    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    rustls::sign::CertifiedKey::new(chain, signing_key)
        .keys_match()
        .map_err(|e| format!("private key does not match the certificate: {e}"))
}

/// Sets the validity window: from `BACKDATE` ago for `days` days.
fn set_validity(params: &mut CertificateParams, days: u32) {
    // rcgen re-exports no clock; anchoring at the epoch and adding the
    // elapsed time avoids a direct dependency on the `time` crate.
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::from_secs(u64::from(days) * 24 * 3600);
}

fn check_label(what: &'static str, value: &str) -> Result<(), CertsError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CertsError::InvalidName {
            what,
            value: value.to_string(),
        })
    }
}

fn read_to_string(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: String) -> CertsError {
    CertsError::Invalid {
        path: path.to_path_buf(),
        reason,
    }
}

/// Writes through a temporary file in the same directory and renames it, so
/// a reader (the server's reload loop, a kubelet) never sees half a file.
/// Private files are created 0600 before any byte lands in them.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        {
            // `mode` only applies to new files; a stale temp file keeps its bits.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(if private {
                0o600
            } else {
                0o644
            }))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn serving_cert_is_valid_for_every_service_name_and_no_other() {
        let names = service_dns_names("hook", "ns1");
        let certs = generate(&names, &[], 30).unwrap();
        for name in &names {
            verify_pair(&certs.ca_pem, &certs.cert_pem, &certs.key_pem, name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for other in [
            "hook.ns2.svc",
            "claimguard.claimguard-system.svc",
            "localhost",
        ] {
            let err = verify_pair(&certs.ca_pem, &certs.cert_pem, &certs.key_pem, other)
                .expect_err(other);
            assert!(err.contains("not valid for"), "{err}");
        }
    }

    #[test]
    fn foreign_ca_and_foreign_key_are_rejected() {
        let names = service_dns_names("claimguard", "claimguard-system");
        let a = generate(&names, &[], 30).unwrap();
        let b = generate(&names, &[], 30).unwrap();
        let svc = "claimguard.claimguard-system.svc";
        assert!(verify_pair(&a.ca_pem, &a.cert_pem, &a.key_pem, svc).is_ok());
        let err = verify_pair(&b.ca_pem, &a.cert_pem, &a.key_pem, svc).unwrap_err();
        assert!(err.contains("not valid"), "{err}");
        let err = verify_pair(&a.ca_pem, &a.cert_pem, &b.key_pem, svc).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn validity_is_the_requested_number_of_days() {
        let names = vec!["x.y.svc".to_string()];
        let certs = generate(&names, &[], 2).unwrap();
        let day = Duration::from_secs(24 * 3600);
        let now = SystemTime::now();
        let ok = |at| {
            verify_pair_at(
                &certs.ca_pem,
                &certs.cert_pem,
                &certs.key_pem,
                "x.y.svc",
                at,
            )
        };
        ok(now + day).unwrap();
        assert!(ok(now + 3 * day).unwrap_err().contains("expired"));
        assert!(ok(now - 2 * BACKDATE).is_err());
    }

    #[test]
    fn generate_refuses_empty_input() {
        assert!(generate(&["a".to_string()], &[], 0).is_err());
        let err = generate(&["a".to_string()], &[], u32::MAX).unwrap_err();
        assert!(err.to_string().contains("between 1 and"), "{err}");
        generate(&["a".to_string()], &[], MAX_DAYS).unwrap();
        assert!(generate(&[], &[], 10).is_err());
    }

    #[test]
    fn cabundle_patch_adds_the_ca_to_each_webhook() {
        let patch = cabundle_patch("-----BEGIN CERTIFICATE-----\nAA==\n", 3);
        let json = serde_json::to_value(&patch).unwrap();
        let want =
            base64::engine::general_purpose::STANDARD.encode("-----BEGIN CERTIFICATE-----\nAA==\n");
        assert_eq!(
            json,
            serde_json::json!([
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": want},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": want},
                {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": want},
            ])
        );
    }

    #[test]
    fn write_bundle_writes_consistent_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = CertsOptions::new(dir.path().join("out"));
        opts.namespace = "guard".to_string();
        opts.service = "hook".to_string();
        opts.webhook_count = 2;
        let w = write_bundle(&opts).unwrap();
        assert_eq!(w.tls_key, dir.path().join("out/tls.key"));

        let (ca, cert, key) = (read(&w.ca_cert), read(&w.tls_cert), read(&w.tls_key));
        for name in service_dns_names("hook", "guard") {
            verify_pair(&ca, &cert, &key, &name).unwrap();
        }
        #[cfg(unix)]
        {
            assert_eq!(mode(&w.tls_key), 0o600);
            assert_eq!(mode(&w.secret), 0o600);
            assert_eq!(mode(&w.tls_cert), 0o644);
        }

        let secret: serde_json::Value = serde_yaml_ng::from_str(&read(&w.secret)).unwrap();
        assert_eq!(secret["kind"], "Secret");
        assert_eq!(secret["type"], "kubernetes.io/tls");
        assert_eq!(secret["metadata"]["name"], SECRET_NAME);
        assert_eq!(secret["metadata"]["namespace"], "guard");
        let decode = |k: &str| {
            let b = secret["data"][k].as_str().unwrap();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
        };
        assert_eq!(decode("tls.crt"), cert);
        assert_eq!(decode("tls.key"), key);
        assert_eq!(decode("ca.crt"), ca);

        let patch: Patch = serde_json::from_str(&read(&w.cabundle_patch)).unwrap();
        assert_eq!(patch, cabundle_patch(&ca, 2));

        // No temporary files are left behind.
        let mut names: Vec<_> = fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ca.crt",
                "cabundle-patch-colocate.json",
                "cabundle-patch.json",
                "secret.yaml",
                "tls.crt",
                "tls.key"
            ]
        );
    }

    #[test]
    fn write_bundle_rejects_bad_options_with_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = CertsOptions::new(dir.path());
        opts.namespace = "Bad_NS".to_string();
        let err = write_bundle(&opts).unwrap_err().to_string();
        assert!(err.contains("namespace \"Bad_NS\""), "{err}");
        opts.namespace = "ok".to_string();
        opts.webhook_count = 0;
        assert!(write_bundle(&opts).is_err());

        let file = dir.path().join("a-file");
        fs::write(&file, "x").unwrap();
        let opts = CertsOptions::new(file.join("sub"));
        let err = write_bundle(&opts).unwrap_err().to_string();
        assert!(
            err.contains(&file.join("sub").display().to_string()),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn dev_certs_are_made_once_then_kept_and_replaced_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("certs");
        let first = ensure_dev_certs(&dev).unwrap();
        assert!(first.created);
        let (ca, cert, key) = (
            read(&first.ca_cert),
            read(&first.tls_cert),
            read(&first.tls_key),
        );
        for name in [
            "claimguard",
            "claimguard.claimguard-system",
            "claimguard.claimguard-system.svc",
            "localhost",
            "127.0.0.1",
        ] {
            verify_pair(&ca, &cert, &key, name).unwrap();
        }
        #[cfg(unix)]
        assert_eq!(mode(&first.tls_key), 0o600);

        let second = ensure_dev_certs(&dev).unwrap();
        assert!(!second.created);
        assert_eq!(read(&second.tls_cert), cert);

        // A key from another pair must not be kept.
        let other = generate(&["x".to_string()], &[], 1).unwrap();
        fs::write(&first.tls_key, other.key_pem).unwrap();
        let third = ensure_dev_certs(&dev).unwrap();
        assert!(third.created);
        assert_ne!(read(&third.tls_cert), cert);
        verify_pair(
            &read(&third.ca_cert),
            &read(&third.tls_cert),
            &read(&third.tls_key),
            "localhost",
        )
        .unwrap();

        fs::write(&third.tls_cert, "garbage").unwrap();
        assert!(ensure_dev_certs(&dev).unwrap().created);
    }
}
