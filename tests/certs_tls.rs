//! The files `claimguard certs` and `serve --dev` write must carry a real TLS
//! handshake: a rustls server on 127.0.0.1 loads them from disk, a client
//! trusts only the written CA and checks the name the API server uses.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use claimguard::certs;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves one TLS connection with the pair from disk and echoes one line.
fn serve_once(cert: &Path, key: &Path) -> (u16, thread::JoinHandle<Result<(), String>>) {
    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        let conn = ServerConnection::new(Arc::new(config)).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        tls.write_all(&buf).map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())
    });
    (port, handle)
}

/// Connects trusting only `ca`, verifying `name`; returns the echoed bytes.
fn connect(port: u16, ca: &Path, name: &str) -> Result<Vec<u8>, String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"hello").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf.to_vec())
}

#[test]
fn certs_bundle_completes_a_handshake_for_the_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let w = certs::write_bundle(&certs::CertsOptions::new(dir.path())).unwrap();
    let (port, server) = serve_once(&w.tls_cert, &w.tls_key);
    let echoed = connect(port, &w.ca_cert, "claimguard.claimguard-system.svc").unwrap();
    assert_eq!(echoed, b"hello");
    server.join().unwrap().unwrap();
}

#[test]
fn handshake_fails_for_another_name_or_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let a = certs::write_bundle(&certs::CertsOptions::new(dir.path().join("a"))).unwrap();
    let b = certs::write_bundle(&certs::CertsOptions::new(dir.path().join("b"))).unwrap();

    let (port, server) = serve_once(&a.tls_cert, &a.tls_key);
    let err = connect(port, &a.ca_cert, "claimguard.default.svc").unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    assert!(server.join().unwrap().is_err());

    let (port, server) = serve_once(&a.tls_cert, &a.tls_key);
    let err = connect(port, &b.ca_cert, "claimguard.claimguard-system.svc").unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    assert!(server.join().unwrap().is_err());
}

#[test]
fn dev_certs_serve_localhost_loopback_and_the_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let dev = certs::ensure_dev_certs(&dir.path().join("certs")).unwrap();
    for name in ["localhost", "127.0.0.1", "claimguard.claimguard-system.svc"] {
        let (port, server) = serve_once(&dev.tls_cert, &dev.tls_key);
        assert_eq!(
            connect(port, &dev.ca_cert, name).unwrap(),
            b"hello",
            "{name}"
        );
        server.join().unwrap().unwrap();
    }
}
