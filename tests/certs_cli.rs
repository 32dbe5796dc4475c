//!
//! The README's no-cert-manager path end to end: `claimguard certs` writes the
//! files, `claimguard serve` loads them, and a client that trusts only the
//! written CA completes a TLS handshake for `claimguard.claimguard-system.svc`.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_claimguard");
const SVC: &str = "claimguard.claimguard-system.svc";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn certs_then_serve_completes_a_verified_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let status = Command::new(BIN)
        .args([
            "certs",
            "--namespace",
            "claimguard-system",
            "--service",
            "claimguard",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "claimguard certs: {status}");
    for f in [
        "ca.crt",
        "tls.crt",
        "tls.key",
        "secret.yaml",
        "cabundle-patch.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    let snapshot = dir.path().join("empty.yaml");
    std::fs::write(&snapshot, "apiVersion: v1\nkind: List\nitems: []\n").unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let _server = Killed(
        Command::new(BIN)
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--tls-cert")
            .arg(out.join("tls.crt"))
            .arg("--tls-key")
            .arg(out.join("tls.key"))
            .arg("--snapshot")
            .arg(&snapshot)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let ca = reqwest::Certificate::from_pem(&std::fs::read(out.join("ca.crt")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve(SVC, addr)
        .build()
        .unwrap();
    let url = format!("https://{SVC}:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.get(&url).send().await {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no verified TLS answer from serve: {e:?}"),
        }
    }

    // The same server, named as another service, must fail verification.
    let wrong = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(out.join("ca.crt")).unwrap()).unwrap(),
        )
        .resolve("claimguard.default.svc", addr)
        .build()
        .unwrap();
    let err = wrong
        .get(format!("https://claimguard.default.svc:{port}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.is_connect() && format!("{err:?}").contains("InvalidCertificate"),
        "{err:?}"
    );
}
