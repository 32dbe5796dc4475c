//! The real binary end to end: `claimguard serve --kubeconfig` watching a fake
//! API server, answering AdmissionReviews over verified TLS.

mod support;

use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

const HOST: &str = "claimguard.claimguard-system.svc";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn review(uid: &str, name: &str, dry_run: bool) -> Value {
    let mut r: Value = serde_json::from_str(include_str!("fixtures/pod-create.json")).unwrap();
    r["request"]["uid"] = uid.into();
    r["request"]["name"] = name.into();
    r["request"]["dryRun"] = dry_run.into();
    r["request"]["object"]["metadata"]["name"] = name.into();
    r["request"]["object"]["metadata"]["uid"] = format!("uid-of-{name}").into();
    r
}

async fn decide(client: &reqwest::Client, addr: SocketAddr, r: &Value) -> Value {
    let resp = client
        .post(format!("https://{HOST}:{}/validate", addr.port()))
        .json(r)
        .send()
        .await
        .expect("POST /validate");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["response"].clone()
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_the_live_view_denies_then_allows() {
    let api = FakeApiServer::start().await;
    api.add(Kind::Namespace, k8s::namespace("default", &[]));
    api.add(
        Kind::Pvc,
        k8s::pvc("default", "data", &["ReadWriteOncePod"], "gp3", None),
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let certs = claimguard::certs::write_bundle(&claimguard::certs::CertsOptions::new(
        dir.path().join("certs"),
    ))
    .unwrap();
    let addr = free_addr();
    let _server = Killed(
        Command::new(env!("CARGO_BIN_EXE_claimguard"))
            .args(["serve", "--listen", &addr.to_string(), "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--tls-cert")
            .arg(&certs.tls_cert)
            .arg("--tls-key")
            .arg(&certs.tls_key)
            .args(["--shutdown-grace", "0s"])
            .env_remove("CLAIMGUARD_SNAPSHOT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca = std::fs::read(&certs.ca_cert).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .resolve(HOST, addr)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let url = |p: &str| format!("https://{HOST}:{}{p}", addr.port());

    wait_for("/readyz 200 after the initial lists", || async {
        matches!(client.get(url("/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;

    // Pod A takes the RWOP claim: the watch brings it, pod B is denied.
    api.add(
        Kind::Pod,
        k8s::pod(
            "default",
            "pod-a",
            &[("data", false)],
            Some("node-1"),
            "Running",
        ),
    );
    wait_for("pod B denied once pod A arrives by watch", || async {
        decide(&client, addr, &review("probe-1", "pod-b", true)).await["allowed"] == false
    })
    .await;
    let denied = decide(&client, addr, &review("u-b1", "pod-b", false)).await;
    assert_eq!(denied["uid"], "u-b1");
    assert_eq!(denied["status"]["code"], 403);
    assert_eq!(denied["status"]["reason"], "Forbidden");
    let msg = denied["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("[rwop-exclusive] PersistentVolumeClaim \"data\" is ReadWriteOncePod and already used by pod default/pod-a on node node-1"),
        "{msg}"
    );

    // Pod A deleted: the claim is free again.
    api.delete(Kind::Pod, "default", "pod-a");
    wait_for("pod B allowed once pod A's deletion arrives", || async {
        decide(&client, addr, &review("probe-2", "pod-b", true)).await["allowed"] == true
    })
    .await;
    let allowed = decide(&client, addr, &review("u-b2", "pod-b", false)).await;
    assert_eq!(allowed["allowed"], true);
    // B reserved the claim: C is denied before any watch event shows B.
    let c = decide(&client, addr, &review("u-c", "pod-c", false)).await;
    assert_eq!(c["allowed"], false);
    assert!(c["status"]["message"]
        .as_str()
        .unwrap()
        .contains("default/pod-b (not scheduled yet)"));

    // A dropped watch is counted and survived.
    api.drop_watches();
    api.add(
        Kind::Pod,
        k8s::pod("other", "x", &[("data", false)], Some("node-2"), "Running"),
    );
    let metrics = client
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "claimguard_admission_requests_total",
        "claimguard_admission_duration_seconds",
        "claimguard_violations_total",
        "claimguard_watch_restarts_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let c2 = decide(&client, addr, &review("u-c2", "pod-c", true)).await;
    assert_eq!(c2["allowed"], false, "still served after the dropped watch");
}
