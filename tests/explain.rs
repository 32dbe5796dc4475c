//! `claimguard explain` end to end: the real binary, with a kubeconfig, against
//! the fake API server (get/list only), offline from a support bundle, and as a
//! kubectl plugin found by the real `kubectl` on `PATH`.
//!
//! `docs/explain.md` is this file's transcript: `transcript_is_current` fails
//! when it is stale; `CLAIMGUARD_BLESS=1 cargo test --test explain` rewrites it.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

const VOLUME: &str = "pvc-0d6e3b1a-0000-4000-8000-000000000001";
const VOLUME_LOGS: &str = "pvc-0d6e3b1a-0000-4000-8000-000000000002";
const VOLUME_CACHE: &str = "pvc-0d6e3b1a-0000-4000-8000-000000000003";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn claimguard(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_claimguard"));
    c.args(args)
        .env_remove("CLAIMGUARD_SNAPSHOT")
        .env_remove("CLAIMGUARD_KUBECONFIG")
        .env_remove("CLAIMGUARD_NAMESPACE")
        .env_remove("CLAIMGUARD_OUTPUT")
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn pending(mut pod: Value, reason: &str, message: &str) -> Value {
    pod["status"] = json!({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": reason, "message": message,
         "lastTransitionTime": "2026-12-07T10:02:00Z"}]});
    pod
}

fn container_creating(mut pod: Value) -> Value {
    pod["status"] = json!({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-07T10:02:00Z"}],
        "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "busybox",
            "imageID": "", "started": false, "state": {"waiting": {"reason": "ContainerCreating"}}}]});
    pod
}

fn event(
    ns: &str,
    kind: &str,
    name: &str,
    reason: &str,
    message: &str,
    at: &str,
    count: u64,
) -> Value {
    json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{reason}").to_lowercase(), "namespace": ns},
        "involvedObject": {"kind": kind, "namespace": ns, "name": name, "apiVersion": "v1"},
        "reason": reason, "message": message, "type": "Warning", "count": count,
        "firstTimestamp": "2026-12-07T10:02:00Z", "lastTimestamp": at,
        "source": {"component": "default-scheduler"}})
}

/// The shop namespace: every situation the explain tests need.
fn seed(api: &FakeApiServer) {
    api.add(Kind::Namespace, k8s::namespace("shop", &[]));
    api.add(
        Kind::StorageClass,
        k8s::storage_class("gp3", "ebs.csi.aws.com"),
    );
    for n in ["w1", "w2", "w3"] {
        api.add(Kind::Node, k8s::node(n, n));
    }
    // 1. An RWOP claim held by a running pod; a second pod waits Pending.
    api.add(
        Kind::Pv,
        k8s::pv(VOLUME, &["ReadWriteOncePod"], Some(("shop", "data")), "gp3"),
    );
    api.add(
        Kind::Pvc,
        k8s::pvc("shop", "data", &["ReadWriteOncePod"], "gp3", Some(VOLUME)),
    );
    api.add(
        Kind::VolumeAttachment,
        k8s::volume_attachment("csi-aaaa", VOLUME, "w1", true),
    );
    api.add(
        Kind::Pod,
        k8s::pod("shop", "db-0", &[("data", false)], Some("w1"), "Running"),
    );
    api.add(
        Kind::Pod,
        pending(
            k8s::pod("shop", "db-1", &[("data", false)], None, "Pending"),
            "Unschedulable",
            "0/3 nodes are available: 1 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode, 2 node(s) didn't match pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        ),
    );
    api.add(Kind::Event, event("shop", "Pod", "db-1", "FailedScheduling", "0/3 nodes are available: 1 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.", "2026-12-07T10:07:00Z", 6));
    // 2. A Multi-Attach across nodes: an RWO claim used on w1, a second pod on w2.
    api.add(
        Kind::Pv,
        k8s::pv(
            VOLUME_LOGS,
            &["ReadWriteOnce"],
            Some(("shop", "logs")),
            "gp3",
        ),
    );
    api.add(
        Kind::Pvc,
        k8s::pvc("shop", "logs", &["ReadWriteOnce"], "gp3", Some(VOLUME_LOGS)),
    );
    api.add(
        Kind::VolumeAttachment,
        k8s::volume_attachment("csi-bbbb", VOLUME_LOGS, "w1", true),
    );
    api.add(
        Kind::Pod,
        k8s::pod(
            "shop",
            "shipper-a",
            &[("logs", false)],
            Some("w1"),
            "Running",
        ),
    );
    api.add(
        Kind::Pod,
        container_creating(k8s::pod(
            "shop",
            "shipper-b",
            &[("logs", false)],
            Some("w2"),
            "Pending",
        )),
    );
    api.add(Kind::Event, event("shop", "Pod", "shipper-b", "FailedAttachVolume", &format!("Multi-Attach error for volume \"{VOLUME_LOGS}\" Volume is already used by pod(s) shipper-a"), "2026-12-07T10:05:00Z", 1));
    // 3. A volume still attached to a dead node: its pod was re-created on w2.
    api.add(
        Kind::Pv,
        k8s::pv(
            VOLUME_CACHE,
            &["ReadWriteOnce"],
            Some(("shop", "cache")),
            "gp3",
        ),
    );
    api.add(
        Kind::Pvc,
        k8s::pvc(
            "shop",
            "cache",
            &["ReadWriteOnce"],
            "gp3",
            Some(VOLUME_CACHE),
        ),
    );
    api.add(
        Kind::VolumeAttachment,
        k8s::volume_attachment("csi-cccc", VOLUME_CACHE, "w3", true),
    );
    api.update(Kind::Node, "", "w3", |n| {
        k8s::set_node_lost(n, "2026-12-07T10:00:40Z")
    });
    api.add(
        Kind::Pod,
        container_creating(k8s::pod(
            "shop",
            "cache-0",
            &[("cache", false)],
            Some("w2"),
            "Pending",
        )),
    );
    api.add(Kind::Event, event("shop", "Pod", "cache-0", "FailedAttachVolume", &format!("Multi-Attach error for volume \"{VOLUME_CACHE}\" Volume is already exclusively attached to one node and can't be attached to another"), "2026-12-07T10:09:00Z", 4));
    // 4. A healthy pod.
    api.add(
        Kind::Pod,
        k8s::pod("shop", "web", &[], Some("w2"), "Running"),
    );
}

struct Live {
    api: FakeApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn live() -> Live {
    let api = FakeApiServer::start().await;
    seed(&api);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    Live {
        api,
        _dir: dir,
        kubeconfig,
    }
}

impl Live {
    fn explain(&self, args: &[&str]) -> Run {
        let kc = self.kubeconfig.to_str().unwrap();
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--kubeconfig", kc]);
        claimguard(&all, &[])
    }
}

fn json_of(r: &Run) -> Value {
    serde_json::from_str(&r.out).unwrap_or_else(|e| panic!("{e}: {} / {}", r.out, r.err))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_pod_behind_an_rwop_claim_names_its_holder() {
    let l = live().await;
    let r = l.explain(&["pod/db-1", "-n", "shop"]);
    assert_eq!(r.code, 1, "{} {}", r.out, r.err);
    assert!(r.err.is_empty(), "{}", r.err);
    for want in [
        "Pod:        shop/db-1\n",
        "Phase:      Pending\n",
        "Node:       <none>\n",
        "Waiting:    Unschedulable: 0/3 nodes are available: 1 node has pod using PersistentVolumeClaim",
        "    Access Modes: ReadWriteOncePod\n",
        "      w1     true       Ready        <none>\n",
        "      shop/db-0   w1     Running   false         false\n",
        "  [rwop-exclusive] PersistentVolumeClaim \"data\" is ReadWriteOncePod and already used by pod shop/db-0 on node w1; delete that pod first or use another claim\n",
        "  Warning   FailedScheduling   (x6) 0/3 nodes are available",
        "Next:       kubectl delete pod -n shop db-0\n",
    ] {
        assert!(r.out.contains(want), "missing {want:?} in\n{}", r.out);
    }
    let j = json_of(&l.explain(&["pod/db-1", "-n", "shop", "-o", "json"]));
    assert_eq!(j["apiVersion"], "claimguard.io/v1");
    assert_eq!(j["kind"], "Explanation");
    assert_eq!(
        j["target"],
        json!({"kind": "Pod", "namespace": "shop", "name": "db-1"})
    );
    assert_eq!(
        j["pod"],
        json!({"phase": "Pending", "node": null, "waiting": "Unschedulable"})
    );
    assert_eq!(
        j["claims"],
        json!([{"name": "data", "accessModes": ["ReadWriteOncePod"], "volume": VOLUME,
            "attachments": [{"node": "w1", "attached": true, "nodeDown": false, "detachError": null}],
            "users": [{"namespace": "shop", "name": "db-0", "node": "w1", "phase": "Running",
                       "terminating": false, "readOnly": false}]}])
    );
    assert_eq!(j["findings"][0]["rule"], "rwop-exclusive");
    assert_eq!(j["findings"][0]["claim"], "data");
    assert_eq!(j["events"][0]["type"], "Warning");
    assert_eq!(j["events"][0]["reason"], "FailedScheduling");
    assert_eq!(j["next"], "kubectl delete pod -n shop db-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_attach_across_nodes_and_a_dead_node() {
    let l = live().await;
    let r = l.explain(&["pod/shipper-b", "-n", "shop"]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("Waiting:    ContainerCreating\n"),
        "{}",
        r.out
    );
    assert!(r.out.contains("[rwo-cross-node] PersistentVolumeClaim \"logs\" is ReadWriteOnce and already used by pod shop/shipper-a on node w1"), "{}", r.out);
    assert!(
        r.out
            .contains("FailedAttachVolume   Multi-Attach error for volume"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("Next:       kubectl delete pod -n shop shipper-a\n"),
        "{}",
        r.out
    );

    let r = l.explain(&["pod", "cache-0", "-n", "shop"]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(
        r.out
            .contains("      w3     true       NotReady since 2026-12-07T10:00:40Z   <none>\n"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("[rwo-stuck-attachment] PersistentVolumeClaim \"cache\" is ReadWriteOnce"),
        "{}",
        r.out
    );
    assert!(r.out.contains("Next:       kubectl taint node w3 node.kubernetes.io/out-of-service:NoExecute   # only once w3 is really shut down\n"), "{}", r.out);
    let j = json_of(&l.explain(&["pod/cache-0", "-n", "shop", "-o", "json"]));
    assert_eq!(j["claims"][0]["attachments"][0]["nodeDown"], true);
    assert_eq!(j["claims"][0]["users"], json!([]));
    assert_eq!(
        j["next"],
        "kubectl taint node w3 node.kubernetes.io/out-of-service:NoExecute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_pod_a_claim_and_the_context_namespace() {
    let l = live().await;
    let r = l.explain(&["pod/web", "-n", "shop"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("Claims:\n  <none>\n"), "{}", r.out);
    assert!(r.out.contains("Findings:\n  <none>"), "{}", r.out);
    assert!(!r.out.contains("Next:"), "{}", r.out);
    // The running holder is judged as the audit judges it: a second pod
    // waits for its claim, and the way out is that pod.
    let r = l.explain(&["pod/db-0", "-n", "shop"]);
    assert_eq!(r.code, 1, "{}", r.out);
    assert!(
        r.out
            .contains("Next:       kubectl delete pod -n shop db-1\n"),
        "{}",
        r.out
    );

    // A claim: every user, every attachment, every finding among its users.
    let r = l.explain(&["pvc/data", "-n", "shop"]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(r.out.starts_with("Claim:      shop/data\n"), "{}", r.out);
    assert!(
        r.out.contains("shop/db-0") && r.out.contains("shop/db-1"),
        "{}",
        r.out
    );
    assert!(r.out.contains("[rwop-exclusive]"), "{}", r.out);
    let j = json_of(&l.explain(&["persistentvolumeclaim/data", "-n", "shop", "-o", "json"]));
    assert!(j.get("pod").is_none(), "{j}");
    assert_eq!(j["target"]["kind"], "PersistentVolumeClaim");
    assert_eq!(j["claims"][0]["users"].as_array().unwrap().len(), 2);

    // Without -n: the kubeconfig context's namespace.
    let kc = std::fs::read_to_string(&l.kubeconfig)
        .unwrap()
        .replace("namespace: default", "namespace: shop");
    std::fs::write(&l.kubeconfig, kc).unwrap();
    let r = l.explain(&["pod/db-1"]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(r.out.starts_with("Pod:        shop/db-1\n"), "{}", r.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_2() {
    let l = live().await;
    let one_line = |r: &Run, want: &str| {
        assert_eq!(r.code, 2, "{want}: {} {}", r.out, r.err);
        assert!(r.out.is_empty(), "{}", r.out);
        assert_eq!(r.err.lines().count(), 1, "{}", r.err);
        assert!(r.err.contains(want), "{want:?} not in {}", r.err);
    };
    one_line(
        &l.explain(&["pod/nope", "-n", "shop"]),
        "error: pods \"nope\" not found in namespace shop",
    );
    one_line(
        &l.explain(&["deployment/web", "-n", "shop"]),
        "explain takes a pod or a persistentvolumeclaim, not \"deployment\"",
    );
    one_line(
        &l.explain(&["pvc/nope", "-n", "shop"]),
        "persistentvolumeclaims \"nope\" not found",
    );
    // RBAC: pods may not be read.
    l.api.forbid(Kind::Pod);
    one_line(
        &l.explain(&["pod/db-1", "-n", "shop"]),
        "forbidden: cannot get pods \"db-1\" in namespace shop",
    );
    // Nothing listens there any more.
    let dead = {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        t.local_addr().unwrap()
    };
    let kc = l._dir.path().join("dead");
    std::fs::write(&kc, format!("apiVersion: v1\nkind: Config\nclusters: [{{name: x, cluster: {{server: \"http://{dead}\"}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: x, user: u}}}}]\ncurrent-context: c\n")).unwrap();
    one_line(
        &claimguard(
            &["explain", "pod/db-1", "--kubeconfig", kc.to_str().unwrap()],
            &[],
        ),
        &format!("cannot reach the API server at http://{dead}/"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_reads_that_are_forbidden_leave_a_note() {
    let l = live().await;
    l.api.forbid(Kind::VolumeAttachment);
    l.api.forbid(Kind::Node);
    let r = l.explain(&["pod/db-1", "-n", "shop"]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(
        r.out
            .contains("Note:       cannot list volumeattachments (forbidden): not shown\n"),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("Note:       cannot get nodes (forbidden): not shown\n"),
        "{}",
        r.out
    );
    assert!(r.out.contains("[rwop-exclusive]"), "{}", r.out);
}

/// A namespace of 5,000 pods: the calls explain makes stay few, and none
/// reads another namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_pods_cost_a_handful_of_calls() {
    let l = live().await;
    l.api.seed_many(
        Kind::Pod,
        (0..5000).map(|i| k8s::pod("shop", &format!("batch-{i:04}"), &[], Some("w2"), "Running")),
    );
    l.api.seed_many(
        Kind::Pod,
        (0..3000).map(|i| {
            k8s::pod(
                "other",
                &format!("x-{i:04}"),
                &[("data", false)],
                Some("w2"),
                "Running",
            )
        }),
    );
    let (lists, gets) = (l.api.total_list_calls(), l.api.get_calls());
    let t = std::time::Instant::now();
    let r = l.explain(&["pod/db-1", "-n", "shop"]);
    let took = t.elapsed();
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(
        !r.out.contains("other/"),
        "another namespace's pods: {}",
        r.out
    );
    let lists = l.api.total_list_calls() - lists;
    let gets = l.api.get_calls() - gets;
    // GET pod, claim, PV, node w1; LIST pods (5,008 in pages of 500),
    // volumeattachments, events.
    assert_eq!((gets, lists), (4, 11 + 1 + 1), "gets, lists");
    println!("5,008 pods in the namespace: {gets} GETs + {lists} LISTs, {took:?} (debug build)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_from_a_support_bundle_and_as_a_kubectl_plugin() {
    let l = live().await;
    // The support bundle, as kubectl prints it.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.yaml");
    let mut items = Vec::new();
    for k in [
        Kind::Pod,
        Kind::Pvc,
        Kind::Pv,
        Kind::StorageClass,
        Kind::VolumeAttachment,
        Kind::Node,
        Kind::Event,
    ] {
        for mut o in l.api.objects(k) {
            o["kind"] = k.kind().into();
            o["apiVersion"] = k.api_version().into();
            items.push(o);
        }
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&bundle, serde_yaml_ng::to_string(&list).unwrap()).unwrap();
    for target in [
        "pod/db-1",
        "pod/shipper-b",
        "pod/cache-0",
        "pod/web",
        "pvc/data",
    ] {
        let live = l.explain(&[target, "-n", "shop", "-o", "json"]);
        let offline = claimguard(
            &[
                "explain",
                target,
                "-n",
                "shop",
                "-o",
                "json",
                "--snapshot",
                bundle.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(offline.code, live.code, "{target}: {}", offline.err);
        assert_eq!(offline.out, live.out, "{target}: offline and live differ");
    }

    // The real kubectl finds the plugin on PATH and passes its arguments.
    let Ok(kubectl) = which("kubectl") else {
        assert!(
            std::env::var_os("CLAIMGUARD_REQUIRE_KUBECTL").is_none(),
            "kubectl is required here"
        );
        eprintln!("kubectl not on PATH: the plugin half is skipped");
        return;
    };
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_claimguard"),
        bin.join("kubectl-claimguard"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(&kubectl)
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kubectl-claimguard"),
        "{out:?}"
    );
    let out = Command::new(&kubectl)
        .args(["claimguard", "explain", "pod/db-1", "-n", "shop"])
        .env("PATH", &path)
        .env("KUBECONFIG", &l.kubeconfig)
        .env_remove("CLAIMGUARD_KUBECONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Next:       kubectl delete pod -n shop db-0"),
        "{text}"
    );
}

fn which(cmd: &str) -> Result<PathBuf, ()> {
    std::env::split_paths(&std::env::var_os("PATH").ok_or(())?)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .ok_or(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_is_current() {
    let l = live().await;
    let mut doc = String::from(
        "# `claimguard explain` — transcripts\n\n\
         Written by `tests/explain.rs` from a run against its fake API server\n\
         (`CLAIMGUARD_BLESS=1 cargo test --test explain transcript_is_current`\n\
         rewrites this file; the test fails when it is stale). The cluster: nodes\n\
         w1, w2 and w3 (w3 has stopped posting status), namespace `shop`.\n\
         \n\
         ## What it reads\n\
         \n\
         Live, with your kubeconfig, get and list only (no watch, no claimguard\n\
         server): GET the pod (or claim), each of its claims, their volumes and the\n\
         nodes involved; LIST the pods of the namespace and the VolumeAttachments\n\
         (both in pages of 500: neither can be filtered by claim on the server),\n\
         and the target's Events (a `fieldSelector` on the involved object). A\n\
         namespace of 5,008 pods costs 4 GETs and 13 LISTs, about 1.5 s in a debug\n\
         build against the fake API server\n\
         (`cargo test --test explain five_thousand -- --nocapture` prints both).\n\
         Volumes, VolumeAttachments and Nodes are cluster-scoped: without the right\n\
         to read them, that part is left out and the answer says so in a note.\n\
         Offline, `--snapshot` reads the README's dump command's output instead.\n",
    );
    let cases = [
        (
            "An RWOP claim held by a running pod: the second pod is Pending",
            vec!["pod/db-1", "-n", "shop"],
        ),
        (
            "A Multi-Attach across nodes: the pod on w2 is stuck in ContainerCreating",
            vec!["pod/shipper-b", "-n", "shop"],
        ),
        (
            "A volume still attached to a dead node",
            vec!["pod/cache-0", "-n", "shop"],
        ),
        ("A healthy pod (exit 0)", vec!["pod/web", "-n", "shop"]),
        (
            "A claim: every user and attachment",
            vec!["pvc/data", "-n", "shop"],
        ),
        (
            "The same as JSON, for scripts",
            vec!["pod/db-1", "-n", "shop", "-o", "json"],
        ),
        (
            "A pod that does not exist (exit 2)",
            vec!["pod/nope", "-n", "shop"],
        ),
    ];
    for (title, args) in cases {
        let r = l.explain(&args);
        doc.push_str(&format!(
            "\n## {title}\n\n```console\n$ kubectl claimguard explain {}\n{}{}$ echo $?\n{}\n```\n",
            args.join(" "),
            r.out,
            r.err,
            r.code
        ));
    }
    let path = repo().join("docs/explain.md");
    if std::env::var_os("CLAIMGUARD_BLESS").is_some() {
        std::fs::write(&path, &doc).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == doc,
        "docs/explain.md is stale: CLAIMGUARD_BLESS=1 cargo test --test explain transcript_is_current"
    );
}
