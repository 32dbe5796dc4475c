//! AdmissionReviews written by other public projects (captures from real
//! clusters and their test data: `tests/fixtures/real-reviews/`, provenance
//! in its SOURCES.md), POSTed over real TLS to the real binary
//! (`claimguard serve --dev --snapshot`), each with the outcome this file
//! lists for it — not one computed from the server.
//!
//! 1. As-is: 200 with `response.uid` = the request's uid, and the
//!    `apiVersion`/`kind` of the request (`admission.k8s.io/v1`,
//!    `AdmissionReview`); or a one-line 400 for what no API server sends.
//!    `admission.k8s.io/v1beta1` envelopes get a 400 that says to set
//!    `admissionReviewVersions: [v1]`: every claimguard webhook asks for v1
//!    only, so an API server never sends v1beta1 to it.
//! 2. Every Pod CREATE, with a volume on a ReadWriteOncePod claim added that
//!    another running pod already uses: denied by `rwop-exclusive`, naming
//!    the holder and its node (v1beta1 ones sent as the API server would
//!    send them to claimguard: in a v1 envelope).
//! 3. The server still serves after all of them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SVC: &str = "claimguard.claimguard-system.svc";
const CLAIM: &str = "rwop-data";
const HOLDER: &str = "claim-holder";
const NODE: &str = "worker-7";

/// What the server answers a file as it is.
#[derive(Debug, Clone, Copy)]
enum AsIs {
    /// 200, allowed, no warning.
    Allowed,
    /// 400 whose one-line body contains this.
    BadRequest(&'static str),
}

/// What the server answers the file with the RWOP claim volume added.
#[derive(Debug, Clone, Copy)]
enum WithClaim {
    /// Not a Pod CREATE: nothing to add.
    NotAPodCreate,
    /// Denied by rwop-exclusive; the claim is in this namespace.
    Denied(&'static str),
    /// 400 whose body contains this (the object itself is not a valid Pod).
    BadRequest(&'static str),
    /// Allowed without comment: the request is of a kind claimguard does not judge.
    NotJudged,
}

use AsIs::Allowed;
use WithClaim::{Denied, NotAPodCreate};

const V1BETA1: &str = "unsupported apiVersion \"admission.k8s.io/v1beta1\": claimguard speaks admission.k8s.io/v1 (set admissionReviewVersions: [v1])";

/// Every file of the directory, its outcome as-is and with the claim.
const EXPECTED: &[(&str, AsIs, WithClaim)] = &[
    (
        "cloud-custodian__cloud-custodian__docs-captured-pod-create",
        Allowed,
        Denied("default"),
    ),
    (
        "cloud-custodian__cloud-custodian__pod-attach-connect",
        Allowed,
        NotAPodCreate,
    ),
    // `oldObject: "None"` on a CREATE: claimguard reads no oldObject on CREATE.
    (
        "cloud-custodian__cloud-custodian__pod-create-oldobject-string-none",
        Allowed,
        Denied("default"),
    ),
    // `object: "None"` on a DELETE: nothing to judge, nothing read.
    (
        "cloud-custodian__cloud-custodian__pod-delete-object-string-none",
        Allowed,
        NotAPodCreate,
    ),
    (
        "cloud-custodian__cloud-custodian__pod-exec-connect",
        Allowed,
        NotAPodCreate,
    ),
    (
        "datreeio__admission-webhook-datree__deployment-create-managedfields",
        Allowed,
        NotAPodCreate,
    ),
    // request.kind Scale with a Pod as object: a scale request without a
    // Scale; the Deployment it names is not in the cluster: allowed.
    (
        "datreeio__admission-webhook-datree__scale-header-with-pod-object",
        Allowed,
        NotAPodCreate,
    ),
    (
        "defenseunicorns__pepr__deployment-create",
        Allowed,
        NotAPodCreate,
    ),
    // request.namespace default, object.metadata.namespace helm-releasename:
    // the object's namespace is where its claims are.
    (
        "defenseunicorns__pepr__pod-create-oldobject-empty",
        Allowed,
        Denied("helm-releasename"),
    ),
    ("defenseunicorns__pepr__pod-delete", Allowed, NotAPodCreate),
    (
        "fabric8io__kubernetes-client__pod-create-v1beta1",
        AsIs::BadRequest(V1BETA1),
        Denied("myNamespace"),
    ),
    (
        "fabric8io__kubernetes-client__pod-exec-connect-v1beta1",
        AsIs::BadRequest(V1BETA1),
        NotAPodCreate,
    ),
    (
        "fabric8io__kubernetes-client__pod-patch-operation-v1beta1",
        AsIs::BadRequest(V1BETA1),
        NotAPodCreate,
    ),
    (
        "fabric8io__kubernetes-client__pod-update-oldobject-null-v1beta1",
        AsIs::BadRequest(V1BETA1),
        NotAPodCreate,
    ),
    (
        "kube-rs__kube__gke-pod-create-userinfo-extra",
        Allowed,
        Denied("colin-coder"),
    ),
    (
        "kubewarden__policies__cronjob-create-minimal",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__cronjob-create",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__daemonset-create-hostpath",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__deployment-create-image-cve",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__deployment-create-no-resource-no-userinfo",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__deployment-delete",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__deployment-update-oldobject",
        Allowed,
        NotAPodCreate,
    ),
    ("kubewarden__policies__job-create", Allowed, NotAPodCreate),
    (
        "kubewarden__policies__pod-create-ephemeralcontainers",
        Allowed,
        Denied("default"),
    ),
    // No namespace anywhere (hand-written): the pod is in `default`.
    (
        "kubewarden__policies__pod-create-flexvolume",
        Allowed,
        Denied("default"),
    ),
    (
        "kubewarden__policies__pod-create-hostnetwork-hostpid",
        Allowed,
        Denied("default"),
    ),
    (
        "kubewarden__policies__pod-create-hostpath-projected-nodename",
        Allowed,
        Denied("default"),
    ),
    (
        "kubewarden__policies__pod-create-init-ephemeral-no-typemeta",
        Allowed,
        Denied("default"),
    ),
    // request.kind.kind "pod": the API server writes "Pod"; a kind claimguard
    // does not judge is allowed without comment, with or without a claim.
    (
        "kubewarden__policies__pod-create-lowercase-kind",
        Allowed,
        WithClaim::NotJudged,
    ),
    (
        "kubewarden__policies__pod-create-no-resource",
        Allowed,
        Denied("default"),
    ),
    (
        "kubewarden__policies__pod-create-ownerrefs-generatename",
        Allowed,
        Denied("kubewarden"),
    ),
    (
        "kubewarden__policies__pod-create-placeholder-resource",
        Allowed,
        Denied("default"),
    ),
    (
        "kubewarden__policies__pod-create-runtimeclass",
        Allowed,
        Denied("default"),
    ),
    (
        "kubewarden__policies__pod-create-sysctls-unicode-escapes",
        Allowed,
        Denied("default"),
    ),
    (
        "kubewarden__policies__pod-delete-oldobject",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__pvc-create-storageclass",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__replicaset-create",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__replicationcontroller-create",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__statefulset-create-minimal",
        Allowed,
        NotAPodCreate,
    ),
    (
        "kubewarden__policies__statefulset-create-volumeclaimtemplates",
        Allowed,
        NotAPodCreate,
    ),
    // An annotation value 4000 (a number): no API server sends one (it
    // decodes the object into a Pod before any webhook). Without claims the
    // cheap path answers without reading annotations; with a claim the
    // whole pod is read and refused, naming the field.
    (
        "kubewarden__policy-server__pod-create-numeric-annotation",
        Allowed,
        WithClaim::BadRequest("request.object is not a valid Pod: metadata.annotations"),
    ),
    (
        "kubewarden__policy-server__pod-create-privileged",
        Allowed,
        Denied("default"),
    ),
    // No apiVersion and no kind: not an AdmissionReview.
    (
        "kubewarden__policy-server__scale-update-no-envelope",
        AsIs::BadRequest("request body is not an AdmissionReview: no kind"),
        NotAPodCreate,
    ),
    // A Pod CREATE without the pod: the API server always sends the object.
    (
        "kyverno__kyverno__pod-create-minimal-no-object",
        AsIs::BadRequest("AdmissionReview request for CREATE Pod has no object"),
        NotAPodCreate,
    ),
    (
        "neuvector__neuvector__deployment-update-oldobject-v1beta1",
        AsIs::BadRequest(V1BETA1),
        NotAPodCreate,
    ),
    (
        "noahsnative__voltron__scale-update-docs-example",
        Allowed,
        NotAPodCreate,
    ),
    (
        "stackrox__stackrox__pod-create-latest-tag-v1beta1",
        AsIs::BadRequest(V1BETA1),
        Denied("default"),
    ),
    (
        "stackrox__stackrox__pod-create-latest-tag",
        Allowed,
        Denied("default"),
    ),
    (
        "stackrox__stackrox__pod-exec-connect-v1beta1",
        AsIs::BadRequest(V1BETA1),
        NotAPodCreate,
    ),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-reviews")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(format!("{name}.json"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_file_has_its_outcome_listed_and_every_pod_create_its_claim_variant() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    files.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(n, ..)| n.to_string()).collect();
    listed.sort();
    let before = listed.len();
    listed.dedup();
    assert_eq!(before, listed.len(), "a file listed twice");
    assert_eq!(files, listed, "the table lists every file, and only them");
    assert!(files.len() >= 45, "{} files", files.len());
    assert!(dir().join("SOURCES.md").is_file(), "provenance kept");
    for (name, _, with_claim) in EXPECTED {
        let v: Value = serde_json::from_slice(&read(name)).unwrap();
        let r = &v["request"];
        let pod_create = r["kind"]["kind"] == "Pod" && r["operation"] == "CREATE";
        let has_object = r["object"].is_object();
        match with_claim {
            NotAPodCreate => assert!(!pod_create || !has_object, "{name} is a Pod CREATE"),
            WithClaim::NotJudged => {
                assert!(!pod_create && r["object"]["kind"] == "Pod", "{name}")
            }
            Denied(_) | WithClaim::BadRequest(_) => {
                assert!(pod_create && has_object, "{name} is not a Pod CREATE")
            }
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cluster: in each namespace a claim is denied in, an RWOP claim used
/// by a running pod on `NODE`.
fn snapshot() -> String {
    let mut namespaces: Vec<&str> = EXPECTED
        .iter()
        .filter_map(|(_, _, w)| match w {
            Denied(ns) => Some(*ns),
            _ => None,
        })
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let mut items = Vec::new();
    for ns in namespaces {
        items.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        items.push(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOncePod"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}}));
        items.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": HOLDER, "namespace": ns, "uid": format!("uid-{ns}-holder")},
            "spec": {"nodeName": NODE, "containers": [{"name": "db", "image": "postgres:16",
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}]},
            "status": {"phase": "Running"}}));
    }
    serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": items}))
        .unwrap()
}

/// The review with a volume on `CLAIM` (mounted by the first container), a
/// uid of its own, and a v1 envelope.
fn with_claim(body: &[u8]) -> (String, Value) {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["apiVersion"] = "admission.k8s.io/v1".into();
    let uid = format!("{}-with-claim", v["request"]["uid"].as_str().unwrap());
    v["request"]["uid"] = uid.clone().into();
    let spec = &mut v["request"]["object"]["spec"];
    let volume = json!({"name": "claimguard-test", "persistentVolumeClaim": {"claimName": CLAIM}});
    match spec["volumes"].as_array_mut() {
        Some(vols) => vols.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    if let Some(c) = spec["containers"].get_mut(0) {
        let mount = json!({"name": "claimguard-test", "mountPath": "/claimguard-test"});
        match c["volumeMounts"].as_array_mut() {
            Some(m) => m.push(mount),
            None => c["volumeMounts"] = json!([mount]),
        }
    }
    (uid, v)
}

async fn post(c: &reqwest::Client, addr: SocketAddr, body: Vec<u8>) -> (u16, String) {
    let resp = c
        .post(format!("https://{SVC}:{}/validate", addr.port()))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// A 200 review for `uid`, with the request's envelope; its `response`.
fn response(name: &str, status: u16, body: &str, uid: &str) -> Value {
    assert_eq!(status, 200, "{name}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}: {body}"));
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1", "{name}");
    assert_eq!(v["kind"], "AdmissionReview", "{name}");
    assert_eq!(v["response"]["uid"], uid, "{name}: uid echoed");
    v["response"].clone()
}

fn assert_one_line_400(name: &str, status: u16, body: &str, want: &str) {
    assert_eq!(status, 400, "{name}: {body}");
    assert_eq!(
        body.trim_end().lines().count(),
        1,
        "{name}: one line: {body}"
    );
    assert!(body.contains(want), "{name}: {body:?} lacks {want:?}");
}

#[tokio::test]
async fn real_reviews_over_tls_to_the_real_server() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("cluster.json"), snapshot()).unwrap();
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_claimguard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CLAIMGUARD_") {
            cmd.env_remove(k);
        }
    }
    let mut server = Killed(
        cmd.args([
            "serve",
            "--dev",
            "--snapshot",
            "cluster.json",
            "--listen",
            &addr.to_string(),
        ])
        .current_dir(work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let ca = work.path().join("certs/dev/ca.crt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ca.is_file() {
        assert!(Instant::now() < deadline, "no dev CA");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Verifies the dev CA for the Service's DNS name, as the API server does.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .resolve(SVC, addr)
        .http1_only()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let url = |path: &str| format!("https://{SVC}:{}{path}", addr.port());
    loop {
        match client.get(url("/readyz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => {
                if let Ok(Some(s)) = server.0.try_wait() {
                    panic!("serve exited: {s}");
                }
                assert!(Instant::now() < deadline, "serve never became ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    let (mut allowed, mut refused, mut denied) = (0, 0, 0);
    for (name, as_is, claim) in EXPECTED {
        let body = read(name);
        let request: Value = serde_json::from_slice(&body).unwrap();
        let (status, text) = post(&client, addr, body.clone()).await;
        match as_is {
            Allowed => {
                let uid = request["request"]["uid"].as_str().unwrap();
                let r = response(name, status, &text, uid);
                assert_eq!(r["allowed"], true, "{name}: {text}");
                assert!(
                    r.get("warnings").is_none() && r.get("status").is_none(),
                    "{name}: {text}"
                );
                allowed += 1;
            }
            AsIs::BadRequest(want) => {
                assert_one_line_400(name, status, &text, want);
                refused += 1;
            }
        }
        if let NotAPodCreate = claim {
            continue;
        }
        let (uid, review) = with_claim(&body);
        let (status, text) = post(&client, addr, serde_json::to_vec(&review).unwrap()).await;
        match claim {
            Denied(ns) => {
                let r = response(name, status, &text, &uid);
                assert_eq!(r["allowed"], false, "{name}: {text}");
                assert_eq!(r["status"]["code"], 403, "{name}");
                assert_eq!(r["status"]["reason"], "Forbidden", "{name}");
                assert_eq!(
                    r["status"]["message"],
                    format!("[rwop-exclusive] PersistentVolumeClaim \"{CLAIM}\" is ReadWriteOncePod and already used by pod {ns}/{HOLDER} on node {NODE}; delete that pod first or use another claim"),
                    "{name}"
                );
                denied += 1;
            }
            WithClaim::BadRequest(want) => assert_one_line_400(name, status, &text, want),
            WithClaim::NotJudged => {
                let r = response(name, status, &text, &uid);
                assert_eq!(r["allowed"], true, "{name}: {text}");
                assert!(r.get("warnings").is_none(), "{name}: {text}");
            }
            NotAPodCreate => unreachable!(),
        }
    }
    assert!(
        allowed >= 35 && refused >= 8 && denied >= 18,
        "{allowed} {refused} {denied}"
    );

    // Still serving, still judging.
    let ready = client.get(url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let (uid, review) = with_claim(&read("stackrox__stackrox__pod-create-latest-tag"));
    let (status, text) = post(&client, addr, serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(response("final", status, &text, &uid)["allowed"], false);
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "serve is still running"
    );
}
