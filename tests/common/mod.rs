//! Helpers for the server integration tests: certificates made in the test,
//! an in-process server on 127.0.0.1:0, and clients that trust only the test CA.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use claimguard::server::{self, RunningServer, ServeConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// The name the API server verifies: `<service>.<namespace>.svc`.
pub const HOST: &str = "claimguard.claimguard-system.svc";

pub use claimguard::admission::Engine;

/// An engine with the default policy over an empty cluster view.
pub fn engine(synced: bool) -> Arc<Engine> {
    Arc::new(Engine::new(
        claimguard::policy::Policy::default(),
        Arc::new(claimguard::cluster::SharedCluster::new(
            claimguard::cluster::ClusterState::new(),
            synced,
        )),
    ))
}

pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate and its key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pair {
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .expect("test cert")
            .to_vec()
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Any certificate this CA signs (client certificates, for instance), PEM.
    pub fn sign(&self, params: CertificateParams, key: &KeyPair) -> String {
        params.signed_by(key, &self.issuer).expect("sign").pem()
    }

    /// A serving certificate for the service DNS name.
    pub fn issue(&self, cn: &str) -> Pair {
        let mut params = CertificateParams::new(vec![
            "claimguard".to_owned(),
            "claimguard.claimguard-system".to_owned(),
            HOST.to_owned(),
        ])
        .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

pub fn write_pair(dir: &Path, pair: &Pair) -> (PathBuf, PathBuf) {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, &pair.cert_pem).expect("write cert");
    std::fs::write(&key, &pair.key_pem).expect("write key");
    (cert, key)
}

pub fn rustls_client_config(ca_pems: &[&str]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.expect("ca pem")).expect("add root");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The API server speaks HTTP/1.1 to webhooks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// A reqwest client that trusts only the given CAs and reaches `HOST` at `addr`.
pub fn client(ca_pems: &[&str], addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(rustls_client_config(ca_pems))
        .resolve(HOST, addr)
        .tls_info(true)
        .http1_only()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(engine: Arc<Engine>) -> Self {
        Self::start_with(engine, |_| {}).await
    }

    pub async fn start_with(engine: Arc<Engine>, tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("claimguard test CA");
        let pair = ca.issue("pair-a");
        let (cert_path, key_path) = write_pair(dir.path(), &pair);
        let mut config = ServeConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            cert_path.clone(),
            key_path.clone(),
        );
        config.workers = Some(2);
        config.shutdown_grace = Duration::from_millis(200);
        config.drain_timeout = Duration::from_secs(2);
        // Long enough for a loaded CI machine, short enough for the stall tests.
        config.request_timeout = Duration::from_secs(5);
        config.reload_interval = Duration::from_millis(100);
        tweak(&mut config);
        let server = server::start(config, engine).await.expect("server starts");
        let addr = server.local_addr();
        let client = client(&[&ca.pem()], addr);
        Self {
            dir,
            ca,
            cert_path,
            key_path,
            server: Some(server),
            addr,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        url(self.addr, path)
    }

    /// POSTs a JSON body to /validate; returns status and body text.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        self.post_to("/validate", body).await
    }

    /// POSTs a JSON body to `path`; returns status and body text.
    pub async fn post_to(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }

    /// POSTs an AdmissionReview that must be answered with 200; returns the response review.
    pub async fn review(&self, review: &serde_json::Value) -> serde_json::Value {
        let (status, body) = self.post_raw(review.to_string()).await;
        assert_eq!(status, 200, "body: {body}");
        serde_json::from_str(&body).expect("response is JSON")
    }

    pub async fn get(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, ct, resp.text().await.expect("body"))
    }

    pub async fn shutdown(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }
}

pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://{HOST}:{}{path}", addr.port())
}

/// The peer certificate a fresh connection sees.
pub async fn served_cert(ca_pems: &[&str], addr: SocketAddr) -> Vec<u8> {
    let resp = client(ca_pems, addr)
        .get(url(addr, "/healthz"))
        .send()
        .await
        .expect("healthz over a new connection");
    assert_eq!(resp.status().as_u16(), 200);
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("tls info")
        .to_vec()
}

/// A blocking raw TLS connection, for sending bytes no HTTP client would send.
pub fn raw_tls(
    ca_pem: &str,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    raw_tls_with(rustls_client_config(&[ca_pem]), addr)
}

pub fn raw_tls_with(
    config: rustls::ClientConfig,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = Arc::new(config);
    let conn = rustls::ClientConnection::new(config, ServerName::try_from(HOST).expect("name"))
        .expect("client connection");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake now so a failure is reported here.
    stream.flush().expect("handshake");
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("handshake");
    }
    stream
}

/// Reads until the server closes the connection; returns what arrived.
pub fn read_to_close(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A close without close_notify is still a close.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// The pod fixture with a new uid, pod name and claim.
pub fn pod_review(uid: &str, name: &str, claim: &str) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/pod-create.json")).expect("fixture");
    v["request"]["uid"] = uid.into();
    v["request"]["name"] = name.into();
    v["request"]["object"]["metadata"]["name"] = name.into();
    v["request"]["object"]["metadata"]["uid"] = format!("pod-uid-{name}").into();
    v["request"]["object"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] =
        claim.into();
    v
}

/// Polls `/metrics` until it contains `needle` (the reloader works on its own clock).
pub async fn wait_for_metric(client: &reqwest::Client, addr: SocketAddr, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = client
            .get(url(addr, "/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body");
        if text.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle} never appeared in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
