//! The live cluster view against a fake API server on 127.0.0.1: paged initial lists,
//! watch events, and every watch fault (clean drop, cut connection, outage with
//! changes, 410 Gone), each ending with the index compared line by line against one
//! built from scratch from the server's final objects.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use claimguard::cluster::live::{self, LiveHandle, LiveOptions};
use claimguard::cluster::{ClusterState, SharedCluster};
use claimguard::objects;
use serde_json::Value;
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

fn opts() -> LiveOptions {
    LiveOptions {
        page_size: 7,
        expiry_interval: Duration::from_millis(100),
        ..LiveOptions::default()
    }
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("server object deserializes into claimguard's types")
}

/// Wait until the live index equals a fresh build, line by line.
async fn converge(cluster: &SharedCluster, server: &FakeApiServer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let want = server.fresh_state().canonical_dump();
        let got = cluster.read().canonical_dump();
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
            let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
            panic!("live index differs from a fresh build\n  extra (ghosts): {extra:#?}\n  missing: {missing:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "not reached in time: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three namespaces, two storage classes, PVs, PVCs and pods: more than one page of
/// each namespaced kind at page size 7.
fn seed(server: &FakeApiServer) {
    server.add(Kind::Namespace, k8s::namespace("team-a", &[]));
    server.add(
        Kind::Namespace,
        k8s::namespace("team-b", &[("claimguard.io/mode", "audit")]),
    );
    server.add(Kind::Namespace, k8s::namespace("kube-system", &[]));
    server.add(
        Kind::StorageClass,
        k8s::storage_class("gp3", "ebs.csi.aws.com"),
    );
    server.add(
        Kind::StorageClass,
        k8s::storage_class("efs", "efs.csi.aws.com"),
    );
    for i in 0..12 {
        let ns = if i % 2 == 0 { "team-a" } else { "team-b" };
        let mode = if i % 3 == 0 {
            "ReadWriteOncePod"
        } else {
            "ReadWriteOnce"
        };
        let claim = format!("data-{i}");
        let pv = format!("pv-{i}");
        server.add(Kind::Pv, k8s::pv(&pv, &[mode], Some((ns, &claim)), "gp3"));
        server.add(Kind::Pvc, k8s::pvc(ns, &claim, &[mode], "gp3", Some(&pv)));
    }
    server.add(
        Kind::Pvc,
        k8s::pvc("team-a", "shared", &["ReadWriteMany"], "efs", None),
    );
    // Nodes named by FQDN whose hostname label is the short name.
    for i in 0..4 {
        server.add(
            Kind::Node,
            k8s::node(&format!("node-{i}.lab.local"), &format!("node-{i}")),
        );
    }
    // Where the volumes are attached; one node has died with its volumes on it.
    for i in 0..12 {
        server.add(
            Kind::VolumeAttachment,
            k8s::volume_attachment(
                &format!("csi-{:064x}", i),
                &format!("pv-{i}"),
                &format!("node-{}.lab.local", i % 4),
                true,
            ),
        );
    }
    server.update(Kind::Node, "", "node-3.lab.local", |n| {
        k8s::set_node_lost(n, "2026-12-07T10:00:40Z")
    });
    for i in 0..20 {
        let ns = if i % 2 == 0 { "team-a" } else { "team-b" };
        let claim = format!("data-{}", i % 12);
        let node = format!("node-{}", i % 4);
        let phase = if i == 7 { "Succeeded" } else { "Running" };
        server.add(
            Kind::Pod,
            k8s::pod(
                ns,
                &format!("app-{i}"),
                &[(&claim, false), ("shared", i % 5 == 0)],
                Some(&node),
                phase,
            ),
        );
    }
}

async fn start_live(server: &FakeApiServer) -> (Arc<SharedCluster>, LiveHandle) {
    let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
    let handle = live::start(server.client(), cluster.clone(), opts())
        .await
        .expect("start live view");
    (cluster, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_paged_lists_then_watch_events() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let (cluster, handle) = start_live(&server).await;
    wait_for("synced", || cluster.is_synced()).await;
    converge(&cluster, &server).await;
    // 20 pods and 13 PVCs in pages of 7.
    assert_eq!(server.list_calls(Kind::Pod), 3);
    assert_eq!(server.list_calls(Kind::Pvc), 2);
    assert_eq!(server.list_calls(Kind::Pv), 2);
    assert_eq!(server.list_calls(Kind::StorageClass), 1);
    assert_eq!(server.list_calls(Kind::Namespace), 1);
    assert_eq!(server.list_calls(Kind::Node), 1);
    assert_eq!(server.list_calls(Kind::VolumeAttachment), 2);
    {
        use claimguard::cluster::ClusterView;
        let st = cluster.read();
        assert_eq!(st.node_hostname("node-2.lab.local"), Some("node-2"));
        assert_eq!(st.node_hostname("node-2"), None);
    }
    assert_eq!(
        cluster.read().pod_count(),
        19,
        "the Succeeded pod is not a consumer"
    );

    // A pod arrives unscheduled, gets a node, runs, finishes.
    server.add(
        Kind::Pod,
        k8s::pod("team-a", "new", &[("data-0", false)], None, "Pending"),
    );
    converge(&cluster, &server).await;
    assert_eq!(cluster.read().pod_count(), 20);
    server.update(Kind::Pod, "team-a", "new", |p| k8s::set_node(p, "node-9"));
    converge(&cluster, &server).await;
    server.update(Kind::Pod, "team-a", "new", |p| k8s::set_phase(p, "Running"));
    converge(&cluster, &server).await;
    server.update(Kind::Pod, "team-a", "new", |p| {
        k8s::set_phase(p, "Succeeded")
    });
    converge(&cluster, &server).await;
    assert_eq!(cluster.read().pod_count(), 19);

    // A consumer starts terminating, then goes.
    server.update(Kind::Pod, "team-b", "app-1", k8s::set_deleting);
    converge(&cluster, &server).await;
    server.delete(Kind::Pod, "team-b", "app-1");
    converge(&cluster, &server).await;
    assert_eq!(cluster.read().pod_count(), 18);
    // A pod's claims change (not possible on a real pod, but the index must not care).
    server.update(Kind::Pod, "team-a", "app-2", |p| {
        k8s::set_claims(p, &[("data-5", true)])
    });
    converge(&cluster, &server).await;

    // Claims, volumes, classes and namespaces.
    server.add(
        Kind::Pvc,
        k8s::pvc("team-b", "fresh", &["ReadWriteOncePod"], "gp3", None),
    );
    converge(&cluster, &server).await;
    server.add(
        Kind::Pv,
        k8s::pv(
            "pv-fresh",
            &["ReadWriteOncePod"],
            Some(("team-b", "fresh")),
            "gp3",
        ),
    );
    server.update(Kind::Pvc, "team-b", "fresh", |c| {
        c["spec"]["volumeName"] = "pv-fresh".into();
    });
    converge(&cluster, &server).await;
    server.update(Kind::Namespace, "", "team-a", |n| {
        n["metadata"]["labels"]["claimguard.io/mode"] = "off".into();
    });
    converge(&cluster, &server).await;
    server.delete(Kind::StorageClass, "", "efs");
    server.delete(Kind::Pvc, "team-a", "data-0");
    server.delete(Kind::Pv, "", "pv-0");
    converge(&cluster, &server).await;
    // Nodes join, are relabelled and leave.
    server.add(Kind::Node, k8s::node("node-9.lab.local", "node-9"));
    server.update(Kind::Node, "", "node-1.lab.local", |n| {
        n["metadata"]["labels"]["kubernetes.io/hostname"] = "node-1-new".into();
    });
    server.delete(Kind::Node, "", "node-0.lab.local");
    converge(&cluster, &server).await;
    // Attachments come and go; a node dies and its volumes stay attached to it.
    server.add(
        Kind::VolumeAttachment,
        k8s::volume_attachment("csi-fresh", "pv-fresh", "node-2.lab.local", false),
    );
    server.update(Kind::VolumeAttachment, "", "csi-fresh", |v| {
        v["status"]["attached"] = true.into();
    });
    converge(&cluster, &server).await;
    let stuck_before = cluster.read().stuck_attachments().len();
    server.update(Kind::Node, "", "node-2.lab.local", |n| {
        k8s::set_node_lost(n, "2026-12-07T11:00:00Z")
    });
    converge(&cluster, &server).await;
    assert!(cluster.read().stuck_attachments().len() > stuck_before);
    server.update(
        Kind::VolumeAttachment,
        "",
        &format!("csi-{:064x}", 1),
        |v| {
            v["metadata"]["deletionTimestamp"] = "2026-12-07T11:01:00Z".into();
            v["status"]["detachError"] = serde_json::json!({"message": "rpc error: busy"});
        },
    );
    server.delete(Kind::VolumeAttachment, "", &format!("csi-{:064x}", 2));
    converge(&cluster, &server).await;
    {
        use claimguard::cluster::ClusterView;
        let st = cluster.read();
        assert_eq!(st.node_hostname("node-1.lab.local"), Some("node-1-new"));
        assert_eq!(st.node_hostname("node-0.lab.local"), None);
        assert_eq!(st.node_hostname("node-9.lab.local"), Some("node-9"));
    }

    assert_eq!(handle.watch_restarts(), 0);
    assert_eq!(
        server.total_list_calls(),
        12,
        "no re-list on the happy path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_all_five_initial_lists() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.fail_next_lists_of(Kind::StorageClass, 2);
    let (cluster, handle) = start_live(&server).await;
    // The four other kinds list at once; storage classes fail twice (backoff 0.8 s, 1.6 s).
    wait_for("pods listed", || cluster.read().pod_count() == 19).await;
    wait_for("namespaces listed", || {
        server.list_calls(Kind::Namespace) >= 1
    })
    .await;
    wait_for("first storageclass list failed", || {
        server.list_calls(Kind::StorageClass) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !cluster.is_synced(),
        "synced before the storage classes were listed"
    );
    wait_for("synced", || cluster.is_synced()).await;
    assert_eq!(server.list_calls(Kind::StorageClass), 3);
    assert_eq!(handle.watch_restarts(), 2, "each failed list counts");
    converge(&cluster, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_api_server_is_unreachable() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.partition();
    let (cluster, handle) = start_live(&server).await;
    wait_for("lists attempted", || server.total_list_calls() >= 6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!cluster.is_synced());
    assert!(handle.watch_restarts() >= 5);
    server.heal();
    wait_for("synced after heal", || cluster.is_synced()).await;
    converge(&cluster, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_cut_watches_resume_without_relisting() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let (cluster, _handle) = start_live(&server).await;
    wait_for("synced", || cluster.is_synced()).await;
    converge(&cluster, &server).await;
    let lists = server.total_list_calls();

    wait_for("seven watches open", || server.open_watches() == 7).await;
    assert_eq!(server.drop_watches(), 7);
    // Changes while the client reconnects: replayed from the history on resume.
    server.delete(Kind::Pod, "team-a", "app-0");
    server.update(Kind::Pod, "team-a", "app-2", |p| k8s::set_node(p, "node-7"));
    server.delete(Kind::Pvc, "team-a", "shared");
    server.update(Kind::Namespace, "", "team-b", |n| {
        n["metadata"]["labels"] = serde_json::json!({});
    });
    converge(&cluster, &server).await;

    wait_for("watches reopened", || server.open_watches() == 7).await;
    server.abort_watches();
    server.delete(Kind::Pod, "team-b", "app-3");
    server.add(
        Kind::Pod,
        k8s::pod(
            "team-b",
            "late",
            &[("data-3", false)],
            Some("node-1"),
            "Running",
        ),
    );
    server.delete(Kind::Pv, "", "pv-4");
    converge(&cluster, &server).await;
    wait_for("watches reopened after cut", || server.open_watches() == 7).await;
    assert_eq!(
        server.total_list_calls(),
        lists,
        "a resumed watch needs no re-list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_410_relists_and_removes_ghosts() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let (cluster, handle) = start_live(&server).await;
    wait_for("synced", || cluster.is_synced()).await;
    converge(&cluster, &server).await;
    wait_for("seven watches open", || server.open_watches() == 7).await;
    let lists = server.total_list_calls();

    // The API server becomes unreachable; meanwhile objects of every kind are deleted,
    // changed and created, and the history is compacted past the client's position:
    // the client never sees these deletions as events.
    server.partition();
    for i in [0, 4, 6, 10] {
        server.delete(Kind::Pod, "team-a", &format!("app-{i}"));
    }
    server.delete(Kind::Pod, "team-b", "app-9");
    server.update(Kind::Pod, "team-b", "app-5", k8s::set_deleting);
    server.update(Kind::Pod, "team-a", "app-8", |p| {
        k8s::set_phase(p, "Failed")
    });
    server.update(Kind::Pod, "team-b", "app-11", |p| {
        k8s::set_node(p, "node-3")
    });
    server.add(
        Kind::Pod,
        k8s::pod(
            "team-b",
            "during-outage",
            &[("data-1", false)],
            None,
            "Pending",
        ),
    );
    server.delete(Kind::Pvc, "team-a", "data-2");
    server.delete(Kind::Pv, "", "pv-2");
    // Attachments: one detached (gone), one moved on, a dead node comes back.
    server.delete(Kind::VolumeAttachment, "", &format!("csi-{:064x}", 2));
    server.update(
        Kind::VolumeAttachment,
        "",
        &format!("csi-{:064x}", 5),
        |v| {
            v["metadata"]["deletionTimestamp"] = "2026-12-07T11:01:00Z".into();
        },
    );
    server.add(
        Kind::VolumeAttachment,
        k8s::volume_attachment("during-outage", "pv-during", "node-1.lab.local", true),
    );
    server.update(Kind::Node, "", "node-3.lab.local", |n| {
        n["spec"]["taints"] = serde_json::json!([]);
        for c in n["status"]["conditions"].as_array_mut().unwrap() {
            c["status"] = "True".into();
        }
    });
    server.delete(Kind::StorageClass, "", "efs");
    server.delete(Kind::Namespace, "", "kube-system");
    server.update(Kind::Namespace, "", "team-a", |n| {
        n["metadata"]["labels"]["claimguard.io/mode"] = "audit".into();
    });
    server.expire_history();
    assert!(cluster.is_synced(), "an outage does not flip readiness");
    server.heal();

    converge(&cluster, &server).await;
    assert!(
        server.gone_sent() >= 1,
        "the resumed watches were answered 410"
    );
    assert!(server.total_list_calls() > lists, "the watchers re-listed");
    assert!(handle.watch_restarts() >= 5, "every kind's 410 counts");
    assert!(cluster.is_synced());

    // And the view keeps following events after the re-list.
    wait_for("watches reopened", || server.open_watches() == 7).await;
    server.delete(Kind::Pod, "team-b", "during-outage");
    server.add(
        Kind::Pvc,
        k8s::pvc("team-a", "data-2", &["ReadWriteOncePod"], "gp3", None),
    );
    converge(&cluster, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_410_on_resume_relists() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let (cluster, handle) = start_live(&server).await;
    wait_for("synced", || cluster.is_synced()).await;
    wait_for("seven watches open", || server.open_watches() == 7).await;
    let lists = server.total_list_calls();
    server.gone_next_watches(7);
    server.drop_watches();
    server.delete(Kind::Pod, "team-a", "app-12");
    server.add(Kind::Namespace, k8s::namespace("team-c", &[]));
    converge(&cluster, &server).await;
    wait_for("seven 410s", || server.gone_sent() == 7).await;
    wait_for("re-lists", || server.total_list_calls() >= lists + 7).await;
    converge(&cluster, &server).await;
    assert_eq!(handle.watch_restarts(), 7);
}

/// A list interrupted between pages (continue token expired) starts over; the objects
/// of the aborted pages and of the new list end exactly as a fresh build, including a
/// re-list after deletions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_interrupted_between_pages_starts_over() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.gone_next_continues(2);
    let (cluster, handle) = start_live(&server).await;
    wait_for("synced", || cluster.is_synced()).await;
    converge(&cluster, &server).await;
    assert_eq!(server.gone_sent(), 2);
    assert_eq!(handle.watch_restarts(), 2);

    // A later re-list interrupted mid-way, after deletions the watch never delivered.
    wait_for("seven watches open", || server.open_watches() == 7).await;
    server.partition();
    for i in [1, 3, 5, 13, 15] {
        server.delete(Kind::Pod, "team-b", &format!("app-{i}"));
    }
    server.expire_history();
    server.gone_next_continues(1);
    server.heal();
    converge(&cluster, &server).await;
    assert!(server.gone_sent() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_reach_the_prometheus_counter() {
    let server = FakeApiServer::start().await;
    seed(&server);
    server.fail_next_lists_of(Kind::Pv, 1);
    let metric = prometheus_client::metrics::counter::Counter::<u64>::default();
    let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
    let handle = live::start(
        server.client(),
        cluster.clone(),
        LiveOptions {
            restarts_metric: Some(metric.clone()),
            ..opts()
        },
    )
    .await
    .expect("start");
    wait_for("synced", || cluster.is_synced()).await;
    assert_eq!(handle.watch_restarts(), 1);
    assert_eq!(metric.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_end_by_timeout_or_when_the_watch_shows_the_pod() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let (cluster, _handle) = start_live(&server).await;
    wait_for("synced", || cluster.is_synced()).await;
    converge(&cluster, &server).await;
    let before = cluster.read().canonical_dump();

    // Admitted but never created (refused later in admission): the reservation expires.
    let ghost: objects::Pod = from(k8s::pod(
        "team-a",
        "never-created",
        &[("data-4", false)],
        None,
        "Pending",
    ));
    cluster
        .write()
        .reserve_pod(&ghost, Instant::now() + Duration::from_millis(400));
    assert_ne!(
        cluster.read().canonical_dump(),
        before,
        "the reservation is visible in the index"
    );
    wait_for("reservation expired", || {
        cluster.read().canonical_dump() == before
    })
    .await;

    // Admitted and created: the watch event replaces the reservation.
    let real = k8s::pod("team-a", "created", &[("data-4", false)], None, "Pending");
    cluster.write().reserve_pod(
        &from(real.clone()),
        Instant::now() + Duration::from_secs(3600),
    );
    server.add(Kind::Pod, real);
    converge(&cluster, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetcher_gets_caches_and_times_out() {
    use claimguard::cluster::ClaimFetcher;
    let server = FakeApiServer::start().await;
    server.add(
        Kind::Pvc,
        k8s::pvc("team-a", "data", &["ReadWriteOncePod"], "gp3", None),
    );
    let fetcher = live::LiveFetcher::new(
        server.client(),
        Duration::from_millis(500),
        Duration::from_secs(5),
    );

    let got = fetcher.fetch("team-a", "data").await.expect("fetch");
    assert_eq!(got.expect("claim exists").metadata.name, "data");
    assert!(fetcher
        .fetch("team-a", "nope")
        .await
        .expect("fetch missing")
        .is_none());
    assert_eq!(server.get_calls(), 2);
    // Both answers are cached, the absence included.
    assert!(fetcher
        .fetch("team-a", "data")
        .await
        .expect("cached")
        .is_some());
    assert!(fetcher
        .fetch("team-a", "nope")
        .await
        .expect("cached")
        .is_none());
    assert_eq!(server.get_calls(), 2);

    // A slow API server: the fetch gives up at its timeout and says so.
    // The answer would come after 20 s; the fetch (1 s timeout) must give up
    // long before, with room for a loaded machine.
    server.set_get_delay(Duration::from_secs(20));
    let t = Instant::now();
    let err = fetcher.fetch("team-b", "slow").await.expect_err("timeout");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("timed out"), "{err}");
}

/// An AdmissionReview for pod `name` on claim `data` in `default`, in the API server's
/// shape (the shared fixture, renamed).
fn pod_review(uid: &str, name: &str) -> Vec<u8> {
    let mut review: Value =
        serde_json::from_str(include_str!("fixtures/pod-create.json")).expect("fixture parses");
    review["request"]["uid"] = uid.into();
    review["request"]["name"] = name.into();
    review["request"]["object"]["metadata"]["name"] = name.into();
    review["request"]["object"]["metadata"]["uid"] = format!("uid-of-{name}").into();
    serde_json::to_vec(&review).expect("serialize review")
}

async fn decide(engine: &claimguard::admission::Engine, uid: &str, name: &str) -> Value {
    let reviewed = engine.review(&pod_review(uid, name)).await.expect("review");
    let out: Value = serde_json::from_slice(&reviewed.body).expect("response JSON");
    assert_eq!(out["response"]["uid"], uid, "{out}");
    out["response"].clone()
}

/// The live view end to end, without HTTP: a pod on an RWOP claim arrives by watch,
/// a second pod is denied; the first is deleted (watch), the second is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwop_holder_seen_by_watch_denies_then_frees_the_claim() {
    let server = FakeApiServer::start().await;
    server.add(Kind::Namespace, k8s::namespace("default", &[]));
    server.add(
        Kind::StorageClass,
        k8s::storage_class("gp3", "ebs.csi.aws.com"),
    );
    server.add(
        Kind::Pv,
        k8s::pv(
            "pv-data",
            &["ReadWriteOncePod"],
            Some(("default", "data")),
            "gp3",
        ),
    );
    server.add(
        Kind::Pvc,
        k8s::pvc(
            "default",
            "data",
            &["ReadWriteOncePod"],
            "gp3",
            Some("pv-data"),
        ),
    );
    let (cluster, _handle) = start_live(&server).await;
    let engine =
        claimguard::admission::Engine::new(claimguard::policy::Policy::default(), cluster.clone());
    wait_for("synced", || cluster.is_synced()).await;

    server.add(
        Kind::Pod,
        k8s::pod(
            "default",
            "pod-a",
            &[("data", false)],
            Some("worker-1"),
            "Running",
        ),
    );
    wait_for("pod-a in the index", || {
        cluster.read().pod("default", "pod-a").is_some()
    })
    .await;

    let resp = decide(&engine, "uid-b-1", "pod-b").await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 403, "{resp}");
    let msg = resp["status"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("[rwop-exclusive]"), "{msg}");
    assert!(msg.contains("default/pod-a"), "{msg}");
    assert!(msg.contains("worker-1"), "{msg}");

    server.delete(Kind::Pod, "default", "pod-a");
    wait_for("pod-a gone from the index", || {
        cluster.read().pod("default", "pod-a").is_none()
    })
    .await;
    let resp = decide(&engine, "uid-b-2", "pod-b").await;
    assert_eq!(resp["allowed"], true, "{resp}");

    // pod-b now holds a reservation: a third pod is denied before the watch shows pod-b,
    // and still after (the reservation became the real pod).
    let resp = decide(&engine, "uid-c-1", "pod-c").await;
    assert_eq!(resp["allowed"], false, "{resp}");
    server.add(
        Kind::Pod,
        k8s::pod(
            "default",
            "pod-b",
            &[("data", false)],
            Some("worker-2"),
            "Pending",
        ),
    );
    wait_for("pod-b shown by the watch", || {
        cluster
            .read()
            .pod("default", "pod-b")
            .is_some_and(|p| !p.reserved)
    })
    .await;
    let resp = decide(&engine, "uid-c-2", "pod-c").await;
    assert_eq!(resp["allowed"], false, "{resp}");
    converge(&cluster, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_from_an_explicit_kubeconfig_reaches_the_server() {
    let server = FakeApiServer::start().await;
    seed(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters:\n- name: fake\n  cluster:\n    server: {}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n    namespace: team-a\n\
         users:\n- name: nobody\n  user: {{}}\n",
        server.url()
    );
    std::fs::write(&path, kubeconfig).expect("write kubeconfig");
    let client = live::client_from(Some(&path), None)
        .await
        .expect("client from kubeconfig");
    assert_eq!(client.default_namespace(), "team-a");
    let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
    let _handle = live::start(client, cluster.clone(), opts())
        .await
        .expect("start");
    wait_for("synced", || cluster.is_synced()).await;
    converge(&cluster, &server).await;

    let missing = dir.path().join("absent");
    match live::client_from(Some(&missing), None).await {
        Err(e @ live::LiveError::Kubeconfig { .. }) => {
            assert!(e.to_string().contains("absent"), "{e}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a missing kubeconfig must fail"),
    }
}
