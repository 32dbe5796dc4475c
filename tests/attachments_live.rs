//! Attachments and node health, live: the real binary (`claimguard serve
//! --kubeconfig`) watching a fake API server. A node dies after the server
//! is ready, with a StatefulSet's volume still attached to it; the pod the
//! StatefulSet re-creates gets `rwo-stuck-attachment` (and an Event on the
//! StatefulSet, since its controller drops warnings), the gauge counts the
//! attachment, and the out-of-service taint clears both — within seconds.

mod support;

use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

const HOST: &str = "claimguard.claimguard-system.svc";
const VOLUME: &str = "pvc-7f3a5c1e-0000-4000-8000-000000000001";
const VA: &str = "csi-3f1a6a0d2e6b4c8a9f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778";

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

/// The StatefulSet controller re-creating `db-0`, as the API server sends it.
fn statefulset_pod(uid: &str, dry_run: bool) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "db-0", "namespace": "shop", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:statefulset-controller",
                     "groups": ["system:serviceaccounts", "system:authenticated"]},
        "object": {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "db-0", "namespace": "shop", "uid": format!("uid-{uid}"),
                         "labels": {"app": "db", "apps.kubernetes.io/pod-index": "0",
                                    "statefulset.kubernetes.io/pod-name": "db-0"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                             "uid": "0c0ffee0-0000-4000-8000-0000000000db", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"hostname": "db-0", "subdomain": "db",
                     "containers": [{"name": "pg", "image": "postgres:16",
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort"}},
        "oldObject": null, "dryRun": dry_run,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}}})
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

fn warnings(resp: &Value) -> Vec<String> {
    resp["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Polls for at most 10 s: "within seconds" of the API server's change.
async fn within_seconds<F, Fut>(what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if f().await {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_after_ready_holds_its_volume_and_the_recreated_pod_is_told() {
    let api = FakeApiServer::start().await;
    api.add(Kind::Namespace, k8s::namespace("shop", &[]));
    api.add(
        Kind::Pv,
        k8s::pv(
            VOLUME,
            &["ReadWriteOnce"],
            Some(("shop", "data-db-0")),
            "gp3",
        ),
    );
    api.add(
        Kind::Pvc,
        k8s::pvc("shop", "data-db-0", &["ReadWriteOnce"], "gp3", Some(VOLUME)),
    );
    api.add(Kind::Node, k8s::node("w1", "w1"));
    api.add(Kind::Node, k8s::node("w2", "w2"));
    api.add(
        Kind::Pod,
        k8s::pod(
            "shop",
            "db-0",
            &[("data-db-0", false)],
            Some("w1"),
            "Running",
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let certs = claimguard::certs::write_bundle(&claimguard::certs::CertsOptions::new(
        dir.path().join("certs"),
    ))
    .unwrap();
    let addr = free_addr();
    let metrics_addr = free_addr();
    let _server = Killed(
        Command::new(env!("CARGO_BIN_EXE_claimguard"))
            .args(["serve", "--listen", &addr.to_string(), "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--tls-cert")
            .arg(&certs.tls_cert)
            .arg("--tls-key")
            .arg(&certs.tls_key)
            .args(["--metrics-listen", &metrics_addr.to_string()])
            .args(["--shutdown-grace", "0s"])
            .env_remove("CLAIMGUARD_SNAPSHOT")
            .env("POD_NAME", "claimguard-0")
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
    let plain = reqwest::Client::new();
    let gauge = || {
        let plain = plain.clone();
        async move {
            let text = plain
                .get(format!("http://{metrics_addr}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("claimguard_stuck_attachments "))
                .and_then(|n| n.trim().parse::<i64>().ok())
        }
    };
    within_seconds("/readyz 200 after the initial lists", || async {
        matches!(client.get(format!("https://{HOST}:{}/readyz", addr.port())).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert_eq!(gauge().await, Some(0));

    // Healthy: the volume is attached to w1 for db-0; nothing to say.
    api.add(
        Kind::VolumeAttachment,
        k8s::volume_attachment(VA, VOLUME, "w1", true),
    );
    // w1 dies. The node lifecycle controller marks it; an operator
    // force-deletes db-0 and the StatefulSet controller re-creates it.
    api.update(Kind::Node, "", "w1", |n| {
        k8s::set_node_lost(n, "2026-12-07T10:00:40Z")
    });
    api.delete(Kind::Pod, "shop", "db-0");
    let took = within_seconds("the re-created db-0 is warned", || async {
        let w = warnings(&decide(&client, addr, &statefulset_pod("probe", true)).await);
        w.iter().any(|w| w.starts_with("[rwo-stuck-attachment]"))
    })
    .await;
    let resp = decide(&client, addr, &statefulset_pod("u-1", false)).await;
    assert_eq!(resp["allowed"], true, "a warning, not a denial: {resp}");
    let w = warnings(&resp);
    assert_eq!(
        w,
        ["[rwo-stuck-attachment] PersistentVolumeClaim \"data-db-0\" is ReadWriteOnce and still attached to node w1, NotReady since 2026-12-07T10:00:40Z, so this pod hangs; if w1 is shut down, kubectl taint node w1 node.kubernetes.io/out-of-service:NoExecute"],
        "took {took:?}"
    );
    // The StatefulSet controller drops warnings: an Event on the StatefulSet.
    within_seconds("an Event on the StatefulSet", || async {
        api.event_writes().iter().any(|e| {
            e.body["regarding"]["kind"] == "StatefulSet" && e.body["reason"] == "RwoStuckAttachment"
        })
    })
    .await;
    let ev = api
        .event_writes()
        .into_iter()
        .find(|e| e.body["reason"] == "RwoStuckAttachment")
        .unwrap();
    assert_eq!(ev.body["regarding"]["name"], "db");
    assert_eq!(ev.body["type"], "Warning");
    let note = ev.body["note"].as_str().unwrap();
    assert!(
        note.starts_with("pod db-0: [rwo-stuck-attachment]"),
        "{note}"
    );
    assert!(note.contains("kubectl taint node w1"), "{note}");
    within_seconds("the gauge counts the stuck attachment", || async {
        gauge().await == Some(1)
    })
    .await;

    // Node status churn (heartbeats) changes nothing.
    for i in 0..20 {
        api.update(Kind::Node, "", "w2", |n| {
            k8s::set_node_heartbeat(n, &format!("2026-12-07T10:01:{i:02}Z"))
        });
    }
    // A pod pinned to w1 waits for w1, not for a detach: no finding.
    let mut pinned = statefulset_pod("u-pinned", true);
    pinned["request"]["object"]["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "w1"});
    assert!(warnings(&decide(&client, addr, &pinned).await).is_empty());

    // The operator declares w1 shut down: Kubernetes force-detaches; no finding.
    api.update(Kind::Node, "", "w1", |n| {
        n["spec"]["taints"].as_array_mut().unwrap().push(json!(
            {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}
        ));
    });
    within_seconds("the out-of-service taint clears the warning", || async {
        warnings(&decide(&client, addr, &statefulset_pod("probe-2", true)).await).is_empty()
    })
    .await;
    within_seconds("and the gauge", || async { gauge().await == Some(0) }).await;

    // A detach that fails on a healthy node is stuck too.
    api.update(Kind::VolumeAttachment, "", VA, |v| {
        v["metadata"]["deletionTimestamp"] = "2026-12-07T10:09:00Z".into();
        v["status"]["detachError"] =
            json!({"message": "rpc error: code = Internal desc = volume is busy", "time": "2026-12-07T10:09:30Z"});
        v["spec"]["nodeName"] = "w2".into();
    });
    within_seconds("a detach error is reported", || async {
        let w = warnings(&decide(&client, addr, &statefulset_pod("probe-3", true)).await);
        w.iter().any(|w| {
            w.contains("attached to node w2, whose detach fails: rpc error")
                && w.ends_with(&format!("kubectl describe volumeattachment {VA}"))
        })
    })
    .await;
    // Detached at last: the attachment is deleted, nothing remains.
    api.delete(Kind::VolumeAttachment, "", VA);
    within_seconds("the deleted attachment is forgotten", || async {
        warnings(&decide(&client, addr, &statefulset_pod("probe-4", true)).await).is_empty()
            && gauge().await == Some(0)
    })
    .await;
}
