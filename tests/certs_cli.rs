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
            .args(["--workers", "1"])
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

fn certs_into(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("certs")
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn certs_never_overwrites_without_force_and_prints_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let first = certs_into(&out, &["--namespace", "storage-guard"]);
    assert!(first.status.success());
    let steps = String::from_utf8_lossy(&first.stdout);
    // The Secret's namespace must exist before the Secret is applied.
    let ns = steps
        .find(
            "kubectl create namespace storage-guard --dry-run=client -o yaml | kubectl apply -f -",
        )
        .expect("namespace step");
    let secret = steps.find("kubectl apply -f ").expect("secret step");
    assert!(ns < secret, "{steps}");
    let ca = std::fs::read(out.join("ca.crt")).unwrap();

    let again = certs_into(&out, &[]);
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("ca.crt")).unwrap(),
        ca,
        "CA untouched"
    );

    let forced = certs_into(&out, &["--force"]);
    assert!(forced.status.success());
    assert_ne!(
        std::fs::read(out.join("ca.crt")).unwrap(),
        ca,
        "CA replaced"
    );
}

#[test]
fn serve_refuses_zero_workers_before_binding() {
    let out = Command::new(BIN)
        .args(["serve", "--dev", "--workers", "0"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: invalid value '0' for '--workers <WORKERS>'"),
        "{err}"
    );
}

#[test]
fn an_out_path_that_is_a_file_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = certs_into(&file, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cannot create directory "), "{err}");
    assert_eq!(
        err.matches("os error").count(),
        1,
        "a cause repeated: {err}"
    );
}

#[tokio::test]
async fn serve_dev_works_from_any_directory_and_keeps_its_own_certificates() {
    // A directory that is not the repository, holding a cluster's certs/.
    let cwd = tempfile::tempdir().unwrap();
    let cluster_certs = cwd.path().join("certs");
    assert!(certs_into(&cluster_certs, &[]).status.success());
    let cluster_ca = std::fs::read(cluster_certs.join("ca.crt")).unwrap();

    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // stderr to a file, as a log collector would: not a terminal.
    let log_path = cwd.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _server = Killed(
        Command::new(BIN)
            .args(["serve", "--dev", "--listen", &addr.to_string()])
            .current_dir(cwd.path())
            .env_remove("CLAIMGUARD_SNAPSHOT")
            .env_remove("CLAIMGUARD_TLS_CERT")
            .env_remove("CLAIMGUARD_TLS_KEY")
            .env_remove("CLAIMGUARD_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // The dev server prints its curl line once its files are in place.
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines: Vec<String> = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("curl ") {
            break text.lines().map(str::to_string).collect();
        }
        assert!(Instant::now() < deadline, "no curl line: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = lines.join("\n");
    assert!(
        !text.contains('\x1b'),
        "colour codes in piped logs: {text:?}"
    );
    let dev = cwd.path().join("certs/dev");
    let review = dev.join("pg-debug-denied.json");
    assert!(
        text.contains(&review.file_name().unwrap().to_string_lossy().to_string()),
        "{text}"
    );
    assert!(
        review.is_file() && dev.join("cluster.yaml").is_file(),
        "{text}"
    );
    assert_eq!(
        std::fs::read(cluster_certs.join("ca.crt")).unwrap(),
        cluster_ca,
        "serve --dev must not touch certs/"
    );

    // The curl line's request, made with reqwest: a denial from the built-in cluster.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dev.join("ca.crt")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve(SVC, addr)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        match client
            .post(format!("https://{SVC}:{port}/validate"))
            .header("Content-Type", "application/json")
            .body(std::fs::read(&review).unwrap())
            .send()
            .await
        {
            Ok(resp) => break resp.text().await.unwrap(),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("serve --dev did not answer: {e:?}"),
        }
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["allowed"], false, "{body}");
    assert!(v["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .starts_with("[rwop-exclusive] "));
}
