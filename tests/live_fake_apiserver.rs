//! The fake API server speaks what kube's client and kube-runtime's watcher expect:
//! checked here with k8s-openapi types, independent of claimguard's index.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_list_returns_every_object_once_with_a_resource_version() {
    let server = FakeApiServer::start().await;
    for i in 0..23 {
        server.add(
            Kind::Pod,
            k8s::pod(
                "ns1",
                &format!("p{i:02}"),
                &[("data", false)],
                None,
                "Pending",
            ),
        );
    }
    server.add(Kind::Pod, k8s::pod("ns2", "other", &[], None, "Pending"));
    let api: Api<Pod> = Api::namespaced(server.client(), "ns1");
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    let mut rvs = Vec::new();
    loop {
        let mut lp = ListParams::default().limit(5);
        lp.continue_token = token.clone();
        let page = api.list(&lp).await.expect("list page");
        pages += 1;
        assert!(page.items.len() <= 5);
        rvs.push(
            page.metadata
                .resource_version
                .clone()
                .expect("list resourceVersion"),
        );
        names.extend(
            page.items
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default()),
        );
        token = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 5);
    let expected: Vec<String> = (0..23).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, expected);
    // Every page of one list answers at the first page's resourceVersion.
    assert!(rvs.windows(2).all(|w| w[0] == w[1]), "{rvs:?}");
    assert_eq!(server.list_calls(Kind::Pod), 5);

    let all: Api<Pod> = Api::all(server.client());
    assert_eq!(
        all.list(&ListParams::default())
            .await
            .expect("list all")
            .items
            .len(),
        24
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_served_on_its_real_path() {
    let server = FakeApiServer::start().await;
    server.add(
        Kind::Pvc,
        k8s::pvc("ns1", "data", &["ReadWriteOncePod"], "gp3", Some("pv-1")),
    );
    server.add(
        Kind::Pv,
        k8s::pv("pv-1", &["ReadWriteOncePod"], Some(("ns1", "data")), "gp3"),
    );
    server.add(
        Kind::StorageClass,
        k8s::storage_class("gp3", "ebs.csi.aws.com"),
    );
    server.add(
        Kind::Namespace,
        k8s::namespace("ns1", &[("claimguard.io/mode", "audit")]),
    );
    let c = server.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::all(c.clone());
    let got = pvcs.list(&ListParams::default()).await.expect("pvc list");
    assert_eq!(
        got.items[0]
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .as_deref(),
        Some("pv-1")
    );
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(c.clone());
    assert_eq!(
        pvs.list(&ListParams::default())
            .await
            .expect("pv list")
            .items
            .len(),
        1
    );
    let scs: Api<StorageClass> = Api::all(c.clone());
    assert_eq!(
        scs.list(&ListParams::default())
            .await
            .expect("sc list")
            .items[0]
            .provisioner,
        "ebs.csi.aws.com"
    );
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns = nss.get("ns1").await.expect("namespace get");
    assert_eq!(
        ns.metadata.labels.unwrap_or_default()["claimguard.io/mode"],
        "audit"
    );
    let one: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "ns1");
    assert!(one.get_opt("data").await.expect("get pvc").is_some());
    assert!(one
        .get_opt("nope")
        .await
        .expect("get missing pvc")
        .is_none());
    assert_eq!(server.get_calls(), 3);
}

/// Drives a watcher and mirrors it into a name -> (resourceVersion, phase) map, the
/// way an index would, clearing buffered state on Init/InitDone.
#[derive(Default)]
struct Mirror {
    objects: BTreeMap<String, String>,
    buffer: Option<BTreeMap<String, String>>,
    errors: u64,
    inits: u64,
}

impl Mirror {
    fn feed(&mut self, ev: Result<Event<Pod>, watcher::Error>) {
        let entry = |p: &Pod| {
            let name = format!(
                "{}/{}",
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default()
            );
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            (name, phase)
        };
        match ev {
            Err(_) => self.errors += 1,
            Ok(Event::Init) => {
                self.inits += 1;
                self.buffer = Some(BTreeMap::new());
            }
            Ok(Event::InitApply(p)) => {
                let (k, v) = entry(&p);
                self.buffer.get_or_insert_with(BTreeMap::new).insert(k, v);
            }
            Ok(Event::InitDone) => self.objects = self.buffer.take().unwrap_or_default(),
            Ok(Event::Apply(p)) => {
                let (k, v) = entry(&p);
                self.objects.insert(k, v);
            }
            Ok(Event::Delete(p)) => {
                self.objects.remove(&entry(&p).0);
            }
        }
    }
}

fn server_view(server: &FakeApiServer) -> BTreeMap<String, String> {
    server
        .objects(Kind::Pod)
        .iter()
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap_or(""),
                    p["metadata"]["name"].as_str().unwrap_or("")
                ),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

type SharedMirror = std::sync::Arc<std::sync::Mutex<Mirror>>;

/// Poll the watcher in the background, as the live view does: a watcher only issues
/// its next request when polled.
fn drive(
    stream: impl futures::Stream<Item = Result<Event<Pod>, watcher::Error>> + Send + 'static,
) -> SharedMirror {
    let m: SharedMirror = Default::default();
    let m2 = m.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            m2.lock().unwrap().feed(ev);
        }
    });
    m
}

async fn settle(m: &SharedMirror, server: &FakeApiServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        {
            let g = m.lock().unwrap();
            if g.objects == server_view(server) && g.buffer.is_none() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mirror did not converge: mirror={:?} server={:?}",
                g.objects,
                server_view(server)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_survives_drops_aborts_partitions_and_gone() {
    let server = FakeApiServer::start().await;
    for i in 0..7 {
        server.add(
            Kind::Pod,
            k8s::pod("ns1", &format!("p{i}"), &[("data", false)], None, "Pending"),
        );
    }
    let api: Api<Pod> = Api::all(server.client());
    let m = drive(watcher::watcher(api, watcher::Config::default().page_size(3)).default_backoff());
    settle(&m, &server).await;
    assert_eq!(server.list_calls(Kind::Pod), 3, "7 pods in pages of 3");

    // Live events.
    server.update(Kind::Pod, "ns1", "p0", |p| k8s::set_phase(p, "Running"));
    server.delete(Kind::Pod, "ns1", "p1");
    server.add(Kind::Pod, k8s::pod("ns1", "new", &[], None, "Pending"));
    settle(&m, &server).await;

    // Clean end of the stream: resumed from the last resourceVersion, no re-list.
    let lists = server.total_list_calls();
    wait_for("first watch open", || server.open_watches() == 1).await;
    assert_eq!(server.drop_watches(), 1);
    server.update(Kind::Pod, "ns1", "p2", |p| k8s::set_phase(p, "Succeeded"));
    settle(&m, &server).await;
    assert_eq!(server.total_list_calls(), lists);

    // Connection cut mid-stream.
    wait_for("watch reopened after drop", || server.open_watches() == 1).await;
    server.abort_watches();
    server.delete(Kind::Pod, "ns1", "p3");
    settle(&m, &server).await;
    assert_eq!(server.total_list_calls(), lists);

    // Partition with changes (a deletion the client never sees as an event), then
    // compaction: the resumed watch gets 410, the watcher re-lists, the ghost goes.
    wait_for("watch reopened after abort", || server.open_watches() == 1).await;
    server.partition();
    server.delete(Kind::Pod, "ns1", "p4");
    server.update(Kind::Pod, "ns1", "p5", |p| k8s::set_node(p, "node-b"));
    server.expire_history();
    server.heal();
    settle(&m, &server).await;
    assert!(server.gone_sent() >= 1, "a 410 was answered");
    {
        let g = m.lock().unwrap();
        assert!(g.inits >= 2, "the watcher re-listed");
        assert!(g.errors >= 1);
        assert!(!g.objects.contains_key("ns1/p4"));
    }

    // Forced 410 on the next watch.
    wait_for("watch reopened after re-list", || {
        server.open_watches() == 1
    })
    .await;
    let inits = m.lock().unwrap().inits;
    server.gone_next_watches(1);
    server.drop_watches();
    server.add(
        Kind::Pod,
        k8s::pod("ns1", "after-gone", &[], None, "Pending"),
    );
    wait_for("re-list after forced 410", || {
        m.lock().unwrap().inits > inits
    })
    .await;
    settle(&m, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_continue_token_restarts_the_list() {
    let server = FakeApiServer::start().await;
    for i in 0..4 {
        server.add(
            Kind::Pod,
            k8s::pod("ns1", &format!("p{i}"), &[], None, "Pending"),
        );
    }
    let api: Api<Pod> = Api::all(server.client());
    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("first page");
    let token = first.metadata.continue_.expect("continue token");
    // A change after the first page, then compaction past the token's revision.
    server.add(Kind::Pod, k8s::pod("ns1", "late", &[], None, "Pending"));
    server.expire_history();
    let mut lp = ListParams::default().limit(2);
    lp.continue_token = Some(token);
    match api.list(&lp).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_honours_timeout_and_bookmarks() {
    let server = FakeApiServer::start().await;
    server.add(Kind::Pod, k8s::pod("ns1", "a", &[], None, "Pending"));
    let api: Api<Pod> = Api::all(server.client());
    let rv = server.resource_version().to_string();
    let wp = kube::api::WatchParams::default().timeout(1);
    let mut s = api.watch(&wp, &rv).await.expect("watch").boxed();
    wait_for("|| server.open_watches() == 1 @240", || {
        server.open_watches() == 1
    })
    .await;
    server.bookmark();
    match tokio::time::timeout(Duration::from_secs(15), s.next()).await {
        Ok(Some(Ok(kube::api::WatchEvent::Bookmark(b)))) => {
            assert_eq!(b.metadata.resource_version, rv)
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // timeoutSeconds=1: the server ends the stream by itself.
    match tokio::time::timeout(Duration::from_secs(15), s.next()).await {
        Ok(None) => {}
        other => panic!("expected the stream to end, got {other:?}"),
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached in time: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
