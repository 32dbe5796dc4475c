//! `claimguard migrate` end to end: the real binary against the fake API
//! server, which grows the PV controller's part that a migration meets
//! (`tests/support/fake_storage.rs`): writes with resourceVersion conflicts,
//! binding, release, and a volume **deleted** when its claim goes while its
//! reclaim policy is `Delete` — so every test can check that no volume was lost.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

const PV_DATA: &str = "pvc-0d6e3b1a-0000-4000-8000-00000000000d";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_claimguard"));
    c.args(args)
        .env("HOME", "/nonexistent")
        .env_remove("KUBECONFIG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CLAIMGUARD_") {
            c.env_remove(k);
        }
    }
    c
}

/// Run the binary off the async threads (the fake PV controller runs there).
async fn claimguard(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = command(&a).output().unwrap();
        Run {
            code: o.status.code(),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

fn deployment(ns: &str, name: &str, replicas: i64, strategy: &str, claim: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "uid": format!("d-{name}"), "generation": 3},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": strategy},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.example.com/app:1.2.3",
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
                }
            }
        },
        "status": {"replicas": replicas, "readyReplicas": replicas}
    })
}

fn replica_set(ns: &str, name: &str, deployment: &str, claim: &str) -> Value {
    let mut rs = deployment_like(ns, name, claim);
    rs["apiVersion"] = json!("apps/v1");
    rs["kind"] = json!("ReplicaSet");
    rs["metadata"]["labels"] = json!({"pod-template-hash": "7d9f8c6b5"});
    rs["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": deployment, "uid": format!("d-{deployment}"), "controller": true, "blockOwnerDeletion": true}]);
    rs
}

fn deployment_like(ns: &str, name: &str, claim: &str) -> Value {
    let mut d = deployment(ns, name, 1, "Recreate", claim);
    if let Some(s) = d["spec"].as_object_mut() {
        s.remove("strategy");
    }
    d
}

/// A claim bound to a volume, as the PV controller leaves them: the volume's
/// claimRef carries the claim's uid.
fn bound(api: &FakeApiServer, ns: &str, name: &str, pv: Value, claim_modes: &[&str]) {
    let volume = pv["metadata"]["name"].as_str().unwrap().to_string();
    let class = pv["spec"]["storageClassName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    api.add(Kind::Pv, pv);
    api.add(
        Kind::Pvc,
        k8s::pvc(ns, name, claim_modes, &class, Some(&volume)),
    );
    let uid = api.get(Kind::Pvc, ns, name).unwrap()["metadata"]["uid"].clone();
    let rv = api.get(Kind::Pvc, ns, name).unwrap()["metadata"]["resourceVersion"].clone();
    api.update(Kind::Pv, "", &volume, |v| {
        v["spec"]["claimRef"]["uid"] = uid;
        v["spec"]["claimRef"]["resourceVersion"] = rv;
    });
}

fn pv_name(i: u32) -> String {
    format!("pvc-0d6e3b1a-0000-4000-8000-{i:012x}")
}

/// The shop namespace: two candidates (`data`, unused; `db`, used by one
/// pod of Deployment db) and one claim for each reason a claim is not.
fn seed(api: &FakeApiServer) {
    api.add(Kind::Namespace, k8s::namespace("shop", &[]));
    api.add(Kind::Namespace, k8s::namespace("lab", &[]));
    api.add(
        Kind::StorageClass,
        k8s::storage_class("gp3", "ebs.csi.aws.com"),
    );
    for n in ["w1", "w2"] {
        api.add(Kind::Node, k8s::node(n, n));
    }
    // data: the claim the apply tests migrate; labels and annotations to keep.
    bound(
        api,
        "shop",
        "data",
        k8s::pv(PV_DATA, &["ReadWriteOnce"], Some(("shop", "data")), "gp3"),
        &["ReadWriteOnce"],
    );
    api.update(Kind::Pvc, "shop", "data", |c| {
        c["metadata"]["labels"] = json!({"app": "reports", "team": "payments"});
        c["metadata"]["annotations"]["backup.example.com/schedule"] = json!("daily");
        c["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        c["spec"]["resources"]["requests"]["storage"] = json!("8Gi");
    });
    // db: used by one pod of Deployment db (Recreate, one replica).
    bound(
        api,
        "shop",
        "db",
        k8s::pv(&pv_name(1), &["ReadWriteOnce"], Some(("shop", "db")), "gp3"),
        &["ReadWriteOnce"],
    );
    api.add(
        Kind::Deployment,
        deployment("shop", "db", 1, "Recreate", "db"),
    );
    api.add(
        Kind::ReplicaSet,
        replica_set("shop", "app-7d9f8c6b5", "db", "db"),
    );
    api.add(
        Kind::Pod,
        k8s::pod(
            "shop",
            "db-7d9f8c6b5-x2x9k",
            &[("db", false)],
            Some("w1"),
            "Running",
        ),
    );
    // logs: two pods.
    bound(
        api,
        "shop",
        "logs",
        k8s::pv(
            &pv_name(2),
            &["ReadWriteOnce"],
            Some(("shop", "logs")),
            "gp3",
        ),
        &["ReadWriteOnce"],
    );
    let mut a = k8s::pod(
        "shop",
        "shipper-a",
        &[("logs", false)],
        Some("w1"),
        "Running",
    );
    a["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let mut b = k8s::pod(
        "shop",
        "shipper-b",
        &[("logs", true)],
        Some("w1"),
        "Running",
    );
    b["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    api.add(Kind::Pod, a);
    api.add(Kind::Pod, b);
    // shared: ReadWriteMany.
    bound(
        api,
        "shop",
        "shared",
        k8s::pv(
            &pv_name(3),
            &["ReadWriteMany"],
            Some(("shop", "shared")),
            "gp3",
        ),
        &["ReadWriteMany"],
    );
    // legacy: an in-tree EBS volume.
    let mut legacy = k8s::pv(
        &pv_name(4),
        &["ReadWriteOnce"],
        Some(("shop", "legacy")),
        "gp3",
    );
    legacy["spec"].as_object_mut().unwrap().remove("csi");
    legacy["spec"]["awsElasticBlockStore"] = json!({"volumeID": "vol-0abc", "fsType": "ext4"});
    bound(api, "shop", "legacy", legacy, &["ReadWriteOnce"]);
    // web-data: a Deployment of three replicas.
    bound(
        api,
        "shop",
        "web-data",
        k8s::pv(
            &pv_name(5),
            &["ReadWriteOnce"],
            Some(("shop", "web-data")),
            "gp3",
        ),
        &["ReadWriteOnce"],
    );
    api.add(
        Kind::Deployment,
        deployment("shop", "web", 3, "Recreate", "web-data"),
    );
    // cache: one replica, but RollingUpdate surges a second pod at every rollout.
    bound(
        api,
        "shop",
        "cache",
        k8s::pv(
            &pv_name(6),
            &["ReadWriteOnce"],
            Some(("shop", "cache")),
            "gp3",
        ),
        &["ReadWriteOnce"],
    );
    api.add(
        Kind::Deployment,
        deployment("shop", "cache", 1, "RollingUpdate", "cache"),
    );
    // fast: already ReadWriteOncePod.
    bound(
        api,
        "shop",
        "fast",
        k8s::pv(
            &pv_name(7),
            &["ReadWriteOncePod"],
            Some(("shop", "fast")),
            "gp3",
        ),
        &["ReadWriteOncePod"],
    );
    // pending: not bound.
    api.add(
        Kind::Pvc,
        k8s::pvc("shop", "pending", &["ReadWriteOnce"], "gp3", None),
    );
    // lab/scratch: a candidate in another namespace.
    bound(
        api,
        "lab",
        "scratch",
        k8s::pv(
            &pv_name(8),
            &["ReadWriteOnce"],
            Some(("lab", "scratch")),
            "gp3",
        ),
        &["ReadWriteOnce"],
    );
}

struct Live {
    api: FakeApiServer,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn live() -> Live {
    let l = idle().await;
    l.api.start_storage_controller();
    l
}

/// The seeded cluster without its PV controller: nothing binds, releases or
/// finishes a deletion until `start_storage_controller`.
async fn idle() -> Live {
    let api = FakeApiServer::start().await;
    seed(&api);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    Live {
        api,
        dir,
        kubeconfig,
    }
}

impl Live {
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["migrate"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--kubeconfig", self.kubeconfig.to_str().unwrap()]);
        all
    }

    async fn migrate(&self, args: &[&str]) -> Run {
        claimguard(&self.args(args)).await
    }

    /// `migrate ARGS`, killed by the fake API server when it sees its n-th write.
    async fn migrate_killed_at(&self, args: &[&str], n: u64) -> Run {
        self.api.kill_on_nth_write(n);
        let all: Vec<String> = self.args(args).iter().map(|s| s.to_string()).collect();
        let child = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = all.iter().map(String::as_str).collect();
            command(&a)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .await
        .unwrap();
        self.api.set_victim(child.id());
        let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        Run {
            code: o.status.code(),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Every object, as `kubectl get … -A -o yaml` would dump them.
    fn dump(&self, path: &Path) {
        let mut items = Vec::new();
        for k in Kind::ALL {
            items.extend(self.api.objects(k));
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        std::fs::write(path, serde_yaml_ng::to_string(&list).unwrap()).unwrap();
    }

    fn pv(&self, name: &str) -> Value {
        self.api.get(Kind::Pv, "", name).unwrap_or(Value::Null)
    }

    fn pvc(&self, name: &str) -> Option<Value> {
        self.api.get(Kind::Pvc, "shop", name)
    }
}

fn json_of(r: &Run) -> Value {
    serde_json::from_str(&r.out).unwrap_or_else(|e| panic!("{e}: {} / {}", r.out, r.err))
}

fn one_line(r: &Run, code: i32, want: &str) {
    assert_eq!(r.code, Some(code), "{want}: {} {}", r.out, r.err);
    assert_eq!(r.err.lines().count(), 1, "one line: {}", r.err);
    assert!(r.err.contains(want), "{want:?} not in {}", r.err);
    assert!(
        !r.err.contains("panicked") && !r.err.contains("backtrace"),
        "{}",
        r.err
    );
}

/// The end state of a migration of shop/data: the same volume, both
/// ReadWriteOncePod, bound, the claim's metadata and spec kept, the reclaim
/// policy back, the annotation gone, no volume deleted or provisioned.
fn assert_migrated(l: &Live) {
    let pvc = l.pvc("data").expect("the claim exists");
    let pv = l.pv(PV_DATA);
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    assert_eq!(pvc["spec"]["volumeName"], PV_DATA);
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
    assert_eq!(pvc["spec"]["storageClassName"], "gp3");
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "8Gi");
    assert_eq!(
        pvc["metadata"]["labels"],
        json!({"app": "reports", "team": "payments"})
    );
    assert_eq!(
        pvc["metadata"]["annotations"]["backup.example.com/schedule"],
        "daily"
    );
    assert!(pvc["metadata"]["annotations"]
        .get("pv.kubernetes.io/bound-by-controller")
        .is_none());
    assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
    assert_eq!(pv["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"]);
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(
        pv["spec"]["persistentVolumeReclaimPolicy"], "Delete",
        "policy restored"
    );
    assert!(
        pv["metadata"]["annotations"]
            .get("claimguard.io/migrate-from")
            .is_none(),
        "{pv}"
    );
    assert_eq!(
        pv["spec"]["csi"]["volumeHandle"],
        format!("vol-{PV_DATA}"),
        "the same disk"
    );
    assert_eq!(
        l.api.lost_volumes(),
        Vec::<String>::new(),
        "no volume deleted"
    );
    assert_eq!(
        l.api.provisioned_volumes(),
        Vec::<String>::new(),
        "no new volume"
    );
}

/// Whenever the claim is missing, the volume must be Retain.
fn assert_safe(l: &Live, when: &str) {
    assert_eq!(
        l.api.lost_volumes(),
        Vec::<String>::new(),
        "{when}: a volume was lost"
    );
    let pv = l.pv(PV_DATA);
    assert!(pv.is_object(), "{when}: the volume is gone");
    if l.pvc("data").is_none() {
        assert_eq!(
            pv["spec"]["persistentVolumeReclaimPolicy"], "Retain",
            "{when}: {pv}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_pv_controller_loses_a_volume_as_a_cluster_would() {
    // The harness must be able to see a loss: delete a claim whose volume is
    // Delete, and the volume goes.
    let l = live().await;
    let client = l.api.client();
    let pvcs: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client,
        "shop",
        &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(&()),
    );
    pvcs.delete("web-data", &Default::default()).await.unwrap();
    for _ in 0..200 {
        if !l.api.lost_volumes().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(l.api.lost_volumes(), vec![pv_name(5)]);
    assert!(l.api.get(Kind::Pv, "", &pv_name(5)).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_candidates_and_why_the_others_are_not() {
    let l = live().await;
    let r = l.migrate(&["--list", "-n", "shop"]).await;
    assert_eq!(r.code, Some(0), "{} {}", r.out, r.err);
    assert!(r.err.is_empty(), "{}", r.err);
    println!("{}", r.out);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(
        lines[0],
        "Claims that can move from ReadWriteOnce to ReadWriteOncePod in namespace shop:"
    );
    assert!(
        lines[1].starts_with("NAMESPACE  CLAIM  VOLUME"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains(&format!("shop       data   {PV_DATA}  10Gi      <none>")),
        "{}",
        r.out
    );
    assert!(r.out.contains("shop/db-7d9f8c6b5-x2x9k (w1)  CSI volume (ebs.csi.aws.com), ReadWriteOnce only, used by pod shop/db-7d9f8c6b5-x2x9k on w1 alone, no workload runs two pods with it"), "{}", r.out);
    assert!(
        r.out.contains("7 other claims cannot (-v says why).\n"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("scratch"), "another namespace: {}", r.out);

    let v = l.migrate(&["--list", "-n", "shop", "-v"]).await;
    println!("{}", v.out);
    for (claim, reason, why) in [
        (
            "logs",
            "used-by-pods",
            "used by 2 pods: pod shop/shipper-a on w1, pod shop/shipper-b on w1",
        ),
        ("shared", "multi-node", "its volume is ReadWriteMany"),
        ("legacy", "in-tree", "not a CSI volume"),
        (
            "web-data",
            "workload-runs-two",
            "Deployment \"web\" runs 3 replicas",
        ),
        (
            "cache",
            "workload-runs-two",
            "[rollout-deadlock] Deployment \"cache\"",
        ),
        ("fast", "already-rwop", "already ReadWriteOncePod"),
        ("pending", "not-bound", "not bound to a volume yet"),
    ] {
        let line = v
            .out
            .lines()
            .find(|l| l.starts_with(&format!("shop       {claim} ")))
            .unwrap_or_else(|| panic!("{claim} missing in\n{}", v.out));
        assert!(
            line.contains(reason) && line.contains(why),
            "{claim}: {line}"
        );
    }

    let j = json_of(&l.migrate(&["--list", "-n", "shop", "-o", "json"]).await);
    assert_eq!(j["kind"], "MigrationCandidates");
    let names = |k: &str| -> Vec<String> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("candidates"), ["data", "db"]);
    assert_eq!(
        names("notCandidates"),
        ["cache", "fast", "legacy", "logs", "pending", "shared", "web-data"]
    );
    assert_eq!(j["candidates"][0]["volume"]["driver"], "ebs.csi.aws.com");
    assert_eq!(j["notCandidates"][3]["reason"], "used-by-pods");

    // -A: every namespace.
    let all = json_of(&l.migrate(&["--list", "-A", "-o", "json"]).await);
    assert!(all["namespace"].is_null());
    let cands: Vec<&str> = all["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cands, ["scratch", "data", "db"]);

    // The same from a dump, offline, and no write either way.
    let dump = l.dir.path().join("dump.yaml");
    l.dump(&dump);
    let off = claimguard(&[
        "migrate",
        "--list",
        "-n",
        "shop",
        "-o",
        "json",
        "--snapshot",
        dump.to_str().unwrap(),
    ])
    .await;
    assert_eq!(off.code, Some(0), "{}", off.err);
    assert_eq!(json_of(&off)["candidates"], j["candidates"]);
    assert_eq!(json_of(&off)["notCandidates"], j["notCandidates"]);
    assert_eq!(l.api.write_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_is_kubectl_commands_and_writes_nothing() {
    let l = live().await;
    let r = l.migrate(&["pvc/data", "-n", "shop"]).await;
    assert_eq!(r.code, Some(0), "{} {}", r.out, r.err);
    println!("{}", r.out);
    for want in [
        "Claim:      shop/data (ReadWriteOnce -> ReadWriteOncePod)\n",
        &format!("Volume:     {PV_DATA} (CSI ebs.csi.aws.com, access modes ReadWriteOnce, 10Gi, storage class gp3, reclaim policy Delete)\n"),
        "Used by:    <none>\n",
        "Migration:  not started\n",
        "Nothing was written.",
        &format!("kubectl patch pv {PV_DATA} -p '{{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"Retain\"}}}}'\n"),
        "kubectl delete pvc data -n shop --ignore-not-found --wait=true\n",
        "kubectl create -f - <<'EOF'\n",
        "kubectl wait pvc/data -n shop --for=jsonpath='{.status.phase}'=Bound --timeout=5m\n",
    ] {
        assert!(r.out.contains(want), "missing {want:?} in\n{}", r.out);
    }
    // Step 2 before step 3: Retain before anything is deleted.
    assert!(r.out.find("# 2/6").unwrap() < r.out.find("kubectl delete pvc").unwrap());
    let j = json_of(&l.migrate(&["pvc/data", "-n", "shop", "-o", "json"]).await);
    assert_eq!(j["kind"], "MigrationPlan");
    assert_eq!(j["stage"], "start");
    assert_eq!(j["steps"].as_array().unwrap().len(), 6);
    assert!(j["refused"].is_null());

    // A claim in use: the plan says how to stop its pod (the Deployment behind its ReplicaSet).
    let r = l.migrate(&["pvc", "db", "-n", "shop"]).await;
    assert_eq!(r.code, Some(0), "{} {}", r.out, r.err);
    assert!(
        r.out
            .contains("Used by:    pod shop/db-7d9f8c6b5-x2x9k on w1 (Deployment db)\n"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("\nkubectl scale deployment/db -n shop --replicas=0\n"),
        "{}",
        r.out
    );

    // Nothing was written by any of it.
    assert_eq!(l.api.write_count(), 0);
    assert!(l.api.requests().iter().all(|q| !q.is_write()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_while_a_pod_uses_the_claim_and_for_every_non_candidate() {
    let l = live().await;
    let r = l.migrate(&["pvc/db", "-n", "shop", "--apply"]).await;
    one_line(&r, 1, "refused: PersistentVolumeClaim shop/db is used by pod shop/db-7d9f8c6b5-x2x9k on w1 (Deployment db); stop it first: kubectl scale deployment/db -n shop --replicas=0");
    for (claim, want) in [
        ("logs", "used by 2 pods"),
        ("shared", "ReadWriteMany"),
        ("legacy", "not a CSI volume"),
        ("web-data", "runs 3 replicas"),
        ("cache", "rollout-deadlock"),
        ("pending", "not bound"),
    ] {
        let target = format!("pvc/{claim}");
        let r = l.migrate(&[&target, "-n", "shop", "--apply"]).await;
        one_line(
            &r,
            1,
            &format!("refused: PersistentVolumeClaim shop/{claim}: "),
        );
        assert!(r.err.contains(want), "{claim}: {}", r.err);
        let p = l.migrate(&[&target, "-n", "shop"]).await;
        assert_eq!(p.code, Some(1), "the plan is refused too: {}", p.err);
        assert_eq!(p.err, r.err);
    }
    assert_eq!(l.api.write_count(), 0, "a refusal writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_moves_the_claim_to_rwop_on_the_same_volume() {
    let l = live().await;
    let pv_uid = l.pv(PV_DATA)["metadata"]["uid"].clone();
    let old_uid = l.pvc("data").unwrap()["metadata"]["uid"].clone();
    let before = l.api.requests().len();
    let r = l
        .migrate(&["pvc/data", "-n", "shop", "--apply", "--timeout", "20s"])
        .await;
    assert_eq!(r.code, Some(0), "{} {}", r.out, r.err);
    assert!(r.err.is_empty(), "{}", r.err);
    println!("{}", r.out);
    let steps: Vec<&str> = r.out.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(steps.len(), 6, "{}", r.out);
    for (i, s) in steps.iter().enumerate() {
        assert!(s.starts_with(&format!("step {}/6  ", i + 1)), "{s}");
    }
    assert!(r
        .out
        .lines()
        .last()
        .unwrap()
        .starts_with("done: PersistentVolumeClaim shop/data is ReadWriteOncePod"));
    assert_migrated(&l);
    assert_eq!(
        l.pv(PV_DATA)["metadata"]["uid"],
        pv_uid,
        "the same PersistentVolume object"
    );
    assert_ne!(
        l.pvc("data").unwrap()["metadata"]["uid"],
        old_uid,
        "a new claim"
    );

    // The writes, in order: Retain first, and nothing else.
    let reqs: Vec<_> = l.api.requests()[before..].to_vec();
    let writes: Vec<String> = reqs
        .iter()
        .filter(|q| q.is_write())
        .map(|q| format!("{} {}", q.method, q.path))
        .collect();
    assert_eq!(
        writes,
        [
            format!("PUT /api/v1/persistentvolumes/{PV_DATA}"),
            "DELETE /api/v1/namespaces/shop/persistentvolumeclaims/data".to_string(),
            format!("PUT /api/v1/persistentvolumes/{PV_DATA}"),
            "POST /api/v1/namespaces/shop/persistentvolumeclaims".to_string(),
            format!("PUT /api/v1/persistentvolumes/{PV_DATA}"),
        ]
    );
    let lists = reqs
        .iter()
        .filter(|q| !q.is_write() && !q.path.ends_with(PV_DATA) && !q.path.ends_with("/data"))
        .count();
    let gets = reqs.len() - writes.len() - lists;
    println!(
        "one apply: {} requests: {} writes, {lists} lists, {gets} gets",
        reqs.len(),
        writes.len()
    );
    // LIST pods + 7 workload kinds before writing, LIST pods before the delete.
    assert_eq!(lists, 9, "{reqs:#?}");

    // Again: already done, nothing written.
    let writes_before = l.api.write_count();
    let again = l.migrate(&["pvc/data", "-n", "shop", "--apply"]).await;
    assert_eq!(again.code, Some(0), "{} {}", again.out, again.err);
    assert_eq!(
        again.out,
        format!("PersistentVolumeClaim shop/data is already ReadWriteOncePod, bound to PersistentVolume {PV_DATA}: nothing to do\n")
    );
    assert_eq!(l.api.write_count(), writes_before);
    // A claim that was ReadWriteOncePod from the start: the same.
    let fast = l.migrate(&["pvc/fast", "-n", "shop", "--apply"]).await;
    assert_eq!(fast.code, Some(0), "{}", fast.err);
    assert!(
        fast.out.contains("already ReadWriteOncePod"),
        "{}",
        fast.out
    );
    assert_eq!(l.api.write_count(), writes_before);
    assert_migrated(&l);
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The API server answers 500 and does not apply the write.
    ServerError,
    /// The write lands, then the process is killed before it hears the answer.
    Killed,
}

/// A fault at each of the five writes in turn, then a plain re-run: it
/// finishes, and no volume is ever lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_at_every_write_then_a_rerun_finishes() {
    let apply = ["pvc/data", "-n", "shop", "--apply", "--timeout", "20s"];
    for fault in [Fault::ServerError, Fault::Killed] {
        for n in 1..=5u64 {
            let when = format!("{fault:?} at write {n}");
            let l = live().await;
            let first = match fault {
                Fault::ServerError => {
                    l.api.fail_nth_write(n);
                    l.migrate(&apply).await
                }
                Fault::Killed => l.migrate_killed_at(&apply, n).await,
            };
            match fault {
                Fault::ServerError => {
                    one_line(&first, 2, &format!("step {}/6 (", n + 1));
                    assert!(
                        first.err.contains("the API server answered 500"),
                        "{when}: {}",
                        first.err
                    );
                    assert!(
                        first.err.contains(
                            "run `claimguard migrate pvc/data -n shop --apply` to resume"
                        ),
                        "{when}: {}",
                        first.err
                    );
                    let safe = if n == 1 {
                        "nothing was deleted"
                    } else {
                        "is kept whatever happens to the claim (reclaim policy Retain)"
                    };
                    assert!(first.err.contains(safe), "{when}: {}", first.err);
                }
                Fault::Killed => {
                    assert_eq!(
                        first.code, None,
                        "{when}: killed: {} {}",
                        first.out, first.err
                    );
                    assert_eq!(l.api.killed().len(), 1, "{when}");
                }
            }
            assert_eq!(l.api.write_count(), n, "{when}: no write after the fault");
            // Let the PV controller act on whatever landed, as a cluster would.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert_safe(&l, &when);
            let again = l.migrate(&apply).await;
            assert_eq!(again.code, Some(0), "{when}: {} {}", again.out, again.err);
            if matches!(fault, Fault::Killed) && n == 5 {
                // The last write landed before the kill: nothing left.
                assert!(
                    again.out.contains("already ReadWriteOncePod"),
                    "{when}: {}",
                    again.out
                );
            } else if n > 1 || matches!(fault, Fault::Killed) {
                assert!(
                    again.out.starts_with(
                        "resuming: a migration of PersistentVolumeClaim shop/data is under way"
                    ),
                    "{when}: {}",
                    again.out
                );
            }
            assert_migrated(&l);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_edit_stops_it_and_nothing_is_overwritten() {
    let l = live().await;
    let apply = ["pvc/data", "-n", "shop", "--apply", "--timeout", "20s"];
    // Someone labels the volume between claimguard's read and its first write.
    l.api.edit_before_nth_write(1, Kind::Pv, "", PV_DATA, |v| {
        v["metadata"]["labels"] = json!({"owner": "someone-else"});
    });
    let r = l.migrate(&apply).await;
    one_line(&r, 2, &format!("error: step 2/6 stopped: PersistentVolume {PV_DATA} was changed by someone else since claimguard read it (409 Conflict: "));
    assert!(r.err.contains("nothing was overwritten"), "{}", r.err);
    let pv = l.pv(PV_DATA);
    assert_eq!(
        pv["metadata"]["labels"],
        json!({"owner": "someone-else"}),
        "their change stays"
    );
    assert_eq!(
        pv["spec"]["persistentVolumeReclaimPolicy"], "Delete",
        "nothing of ours landed"
    );
    assert!(pv["metadata"]["annotations"]
        .get("claimguard.io/migrate-from")
        .is_none());

    // Someone changes the claim between the Retain and the delete.
    l.api
        .edit_before_nth_write(2, Kind::Pvc, "shop", "data", |c| {
            c["metadata"]["labels"]["edited"] = json!("yes");
        });
    let r = l.migrate(&apply).await;
    one_line(&r, 2, "error: step 3/6 stopped: PersistentVolumeClaim shop/data was changed by someone else since claimguard read it (409 Conflict: ");
    assert!(l.pvc("data").is_some(), "not deleted");
    assert_eq!(
        l.pv(PV_DATA)["spec"]["persistentVolumeReclaimPolicy"],
        "Retain"
    );
    // The same command again finishes (with their label kept).
    let r = l.migrate(&apply).await;
    assert_eq!(r.code, Some(0), "{} {}", r.out, r.err);
    assert_eq!(
        l.pvc("data").unwrap()["metadata"]["labels"]["edited"],
        "yes"
    );
    assert_eq!(
        l.pv(PV_DATA)["metadata"]["labels"],
        json!({"owner": "someone-else"})
    );
    assert_eq!(l.api.lost_volumes(), Vec::<String>::new());

    // Mid-way, someone sets the policy back to Delete: claimguard will not delete the claim.
    let l = live().await;
    l.api.fail_nth_write(2);
    let r = l.migrate(&apply).await;
    assert_eq!(r.code, Some(2), "{}", r.err);
    l.api.update(Kind::Pv, "", PV_DATA, |v| {
        v["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
    });
    let writes = l.api.write_count();
    let r = l.migrate(&apply).await;
    one_line(
        &r,
        2,
        "its reclaim policy is Delete, not Retain: someone changed it",
    );
    assert_eq!(l.api.write_count(), writes);
    assert!(l.pvc("data").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_2() {
    let l = live().await;
    one_line(
        &l.migrate(&["deployment/web", "-n", "shop"]).await,
        2,
        "error: migrate takes a persistentvolumeclaim, not \"deployment\" (pvc/NAME)",
    );
    one_line(
        &l.migrate(&["pvc/nope", "-n", "shop", "--apply"]).await,
        2,
        "error: persistentvolumeclaims \"nope\" not found in namespace shop",
    );
    one_line(
        &l.migrate(&["pvc/nope", "-n", "shop"]).await,
        2,
        "persistentvolumeclaims \"nope\" not found",
    );
    // A dump is a copy: nothing can be applied to it.
    let dump = l.dir.path().join("dump.yaml");
    l.dump(&dump);
    one_line(
        &claimguard(&["migrate", "pvc/data", "-n", "shop", "--apply", "--snapshot", dump.to_str().unwrap()]).await,
        2,
        "error: --apply needs the API server: a --snapshot is a copy of the cluster and cannot be written to",
    );
    // The plan from the dump is the live one.
    let off = claimguard(&[
        "migrate",
        "pvc/data",
        "-n",
        "shop",
        "--snapshot",
        dump.to_str().unwrap(),
    ])
    .await;
    assert_eq!(off.code, Some(0), "{}", off.err);
    assert_eq!(off.out, l.migrate(&["pvc/data", "-n", "shop"]).await.out);
    one_line(
        &l.migrate(&["pvc/data", "-n", "shop", "--apply", "-o", "json"])
            .await,
        2,
        "--apply prints its steps as text",
    );
    // RBAC: claims may not be read.
    l.api.forbid(Kind::Pvc);
    one_line(
        &l.migrate(&["pvc/data", "-n", "shop", "--apply"]).await,
        2,
        "error: forbidden: cannot get persistentvolumeclaims \"data\" in namespace shop",
    );
    // Nothing listens there.
    let dead = {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        t.local_addr().unwrap()
    };
    let kc = l.dir.path().join("dead");
    std::fs::write(&kc, format!("apiVersion: v1\nkind: Config\nclusters: [{{name: x, cluster: {{server: \"http://{dead}\"}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: x, user: u}}}}]\ncurrent-context: c\n")).unwrap();
    for args in [&["pvc/data", "--apply"][..], &["--list"][..]] {
        let mut a = vec!["migrate"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--kubeconfig", kc.to_str().unwrap()]);
        one_line(
            &claimguard(&a).await,
            2,
            &format!("cannot reach the API server at http://{dead}/"),
        );
    }
    assert_eq!(l.api.write_count(), 0);
}

const TRANSCRIPT_MARKER: &str = "<!-- Everything below is written by tests/migrate.rs: CLAIMGUARD_BLESS=1 cargo test --test migrate transcript_is_current -->\n";

/// `docs/migrate.md` ends with a transcript of these runs against the fake
/// API server: the test fails when it is stale, `CLAIMGUARD_BLESS=1`
/// rewrites it (the prose above the marker is kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_is_current() {
    let l = live().await;
    let mut t = String::from(
        "\n## Transcript\n\nA run against the fake API server of `tests/migrate.rs` (its PV controller\nbinds, releases, and deletes a volume whose claim goes while its policy is\n`Delete`). Namespace `shop`: `data` is unused, `db` is used by a pod of\nDeployment `db`, and one claim stands for each reason a claim is not a\ncandidate.\n",
    );
    let show = |t: &mut String, title: &str, args: &[&str], r: &Run| {
        t.push_str(&format!(
            "\n### {title}\n\n```console\n$ claimguard migrate {}\n{}{}{}$ echo $?\n{}\n```\n",
            args.join(" "),
            r.out,
            r.err,
            if r.code.is_none() { "Killed\n" } else { "" },
            r.code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "137".into())
        ));
    };
    let cases: [(&str, &[&str]); 5] = [
        (
            "The candidates, and why the others are not",
            &["--list", "-n", "shop", "-v"],
        ),
        (
            "The plan: kubectl commands, nothing written",
            &["pvc/data", "-n", "shop"],
        ),
        (
            "Refused while a pod uses the claim (exit 1, nothing written)",
            &["pvc/db", "-n", "shop", "--apply"],
        ),
        ("Carried out", &["pvc/data", "-n", "shop", "--apply"]),
        (
            "Run again: nothing to do",
            &["pvc/data", "-n", "shop", "--apply"],
        ),
    ];
    for (title, args) in cases {
        let r = l.migrate(args).await;
        show(&mut t, title, args, &r);
    }
    // Interrupted: killed right after the API server took its delete.
    let k = live().await;
    let args = ["pvc/data", "-n", "shop", "--apply"];
    let r = k.migrate_killed_at(&args, 2).await;
    show(
        &mut t,
        "Killed right after the claim's deletion was accepted",
        &args,
        &r,
    );
    // The cluster goes on meanwhile: the claim goes, the volume is Released (and kept).
    for _ in 0..500 {
        if k.pv(PV_DATA)["status"]["phase"] == "Released" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_safe(&k, "killed at the delete");
    let r = k.migrate(&args).await;
    show(&mut t, "The same command again resumes", &args, &r);
    assert_migrated(&k);

    let path = repo().join("docs/migrate.md");
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    let head = have.split(TRANSCRIPT_MARKER).next().unwrap_or_default();
    let doc = format!("{head}{TRANSCRIPT_MARKER}{t}");
    if std::env::var_os("CLAIMGUARD_BLESS").is_some() {
        std::fs::write(&path, &doc).unwrap();
        return;
    }
    assert!(
        have == doc,
        "docs/migrate.md is stale: CLAIMGUARD_BLESS=1 cargo test --test migrate transcript_is_current"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_times_out_says_so_and_a_rerun_finishes() {
    // No PV controller: the claim's finalizer is never done, it stays terminating.
    let l = idle().await;
    let r = l
        .migrate(&["pvc/data", "-n", "shop", "--apply", "--timeout", "1s"])
        .await;
    one_line(
        &r,
        2,
        "error: step 3/6: PersistentVolumeClaim shop/data is still terminating after 1s; ",
    );
    for want in [
        format!("PersistentVolume {PV_DATA} is kept whatever happens to the claim (reclaim policy Retain)"),
        "kubectl describe pvc data -n shop".to_string(),
        "then run `claimguard migrate pvc/data -n shop --apply` again".to_string(),
    ] {
        let want = want.as_str();
        assert!(r.err.contains(want), "{want:?} not in {}", r.err);
    }
    assert_eq!(
        l.pv(PV_DATA)["spec"]["persistentVolumeReclaimPolicy"],
        "Retain"
    );
    // The cluster catches up; the flags come from the environment this time.
    l.api.start_storage_controller();
    let o = tokio::task::spawn_blocking({
        let kc = l.kubeconfig.clone();
        move || {
            command(&["migrate", "pvc/data", "--apply"])
                .env("CLAIMGUARD_KUBECONFIG", kc)
                .env("CLAIMGUARD_NAMESPACE", "shop")
                .env("CLAIMGUARD_TIMEOUT", "20s")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.starts_with("resuming: "), "{out}");
    assert_migrated(&l);
}
