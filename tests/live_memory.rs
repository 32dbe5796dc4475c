//! Memory of the live view at scale: 100,000 pods and 100,000 PVCs listed through the
//! fake API server. Run on demand (it takes a while and wants a quiet machine):
//!
//! ```text
//! cargo test --release --test live_memory -- --ignored --nocapture memory_100k
//! CLAIMGUARD_MEMORY_PODS=5000 cargo test ...   # a quick run
//! CLAIMGUARD_MEMORY_PAGE_SIZE=100 cargo test ...   # another list page size
//! CLAIMGUARD_MEMORY_ATTACHMENTS=0 cargo test ...   # without VolumeAttachments and Nodes
//! ```
//!
//! By default the cluster also holds one VolumeAttachment per PVC and 5,000 Nodes
//! whose status the fake API server updates 500 times a second (a heartbeat every
//! 10 s per node, as kubelets post them) for the whole run.
//!
//! The fake API server runs in a child process (this same test binary, re-executed), so
//! its copy of the objects does not count against this process. A counting global
//! allocator gives exact heap bytes; VmRSS comes from /proc/self/status.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use claimguard::cluster::live::{self, LiveOptions};
use claimguard::cluster::{ClusterState, SharedCluster};
use claimguard::objects;
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const DEFAULT_PODS: usize = 100_000;
const NAMESPACES: usize = 100;
const NODES: usize = 5_000;
/// Node status updates a second: every node every 10 s.
const NODE_UPDATES_PER_SECOND: u64 = 500;
const CHILD_ENV: &str = "CLAIMGUARD_FAKE_APISERVER_CHILD";

/// `CLAIMGUARD_MEMORY_PODS` overrides the 100,000 (for a quick debug-build run).
fn pods() -> usize {
    std::env::var("CLAIMGUARD_MEMORY_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_PODS)
}

/// `CLAIMGUARD_MEMORY_PAGE_SIZE` overrides the live view's default page size (500).
fn page_size() -> u32 {
    std::env::var("CLAIMGUARD_MEMORY_PAGE_SIZE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(LiveOptions::default().page_size)
}

/// `CLAIMGUARD_MEMORY_ATTACHMENTS=0`: no VolumeAttachments, no Nodes (the figure before).
fn attachments() -> bool {
    std::env::var("CLAIMGUARD_MEMORY_ATTACHMENTS").map_or(true, |v| v != "0")
}

fn node_name(i: usize) -> String {
    format!("ip-10-0-{}-{}.ec2.internal", (i % NODES) / 250, i % 250)
}

fn node(i: usize) -> serde_json::Value {
    k8s::node(&node_name(i), &node_name(i))
}

/// The attachment of pod i's volume to pod i's node, as the CSI attacher names it.
fn attachment(i: usize) -> serde_json::Value {
    k8s::volume_attachment(
        &format!("csi-{:064x}", i * 7919 + 1),
        &format!("pvc-{i:06}"),
        &node_name(i),
        true,
    )
}

fn heap() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Pod i: namespace ns-(i % 100), claim data-i (one PVC per pod, as a StatefulSet
/// gives), scheduled on one of 5,000 nodes, Running.
fn pod(i: usize) -> serde_json::Value {
    let ns = format!("ns-{:03}", i % NAMESPACES);
    let claim = format!("data-{i:06}");
    let node = node_name(i);
    let mut p = k8s::pod(
        &ns,
        &format!("app-{i:06}"),
        &[(&claim, false)],
        Some(&node),
        "Running",
    );
    // The API server's uid: the in-process build must store what the live view stores.
    p["metadata"]["uid"] = format!("6f1d2c3b-4a59-4e6f-8a7b-{i:012x}").into();
    p
}

fn pvc(i: usize) -> serde_json::Value {
    let ns = format!("ns-{:03}", i % NAMESPACES);
    let mode = if i.is_multiple_of(2) {
        "ReadWriteOnce"
    } else {
        "ReadWriteOncePod"
    };
    k8s::pvc(
        &ns,
        &format!("data-{i:06}"),
        &[mode],
        "gp3",
        Some(&format!("pvc-{i:06}")),
    )
}

/// The fake API server half: only runs when re-executed by `memory_100k`.
#[test]
#[ignore]
fn fake_apiserver_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let server = Arc::new(FakeApiServer::start().await);
        for i in 0..NAMESPACES {
            server.seed_many(
                Kind::Namespace,
                [k8s::namespace(&format!("ns-{i:03}"), &[])],
            );
        }
        server.seed_many(
            Kind::StorageClass,
            [k8s::storage_class("gp3", "ebs.csi.aws.com")],
        );
        server.seed_many(Kind::Pvc, (0..pods()).map(pvc));
        server.seed_many(Kind::Pod, (0..pods()).map(pod));
        if attachments() {
            server.seed_many(Kind::Node, (0..NODES).map(node));
            server.seed_many(Kind::VolumeAttachment, (0..pods()).map(attachment));
            // Node status churn for the whole run, from the first list on.
            let churn = server.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut n = 0usize;
                loop {
                    tick.tick().await;
                    for _ in 0..NODE_UPDATES_PER_SECOND / 100 {
                        let at = format!("2026-12-07T10:{:02}:{:02}Z", (n / 60) % 60, n % 60);
                        churn.update(Kind::Node, "", &node_name(n % NODES), |v| {
                            k8s::set_node_heartbeat(v, &at)
                        });
                        n += 1;
                    }
                }
            });
        }
        println!("FAKE_APISERVER_URL={}", server.url());
        // Serve until the parent closes our stdin (or dies).
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .expect("stdin reader");
    });
}

#[test]
#[ignore]
fn memory_100k() {
    let pods_n = pods();
    // 1. The whole live view, fed through the fake API server in pages. First, so the
    //    RSS figure is not inflated by the heap churn of step 2.
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "fake_apiserver_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn fake API server child");
    let mut lines = BufReader::new(child.stdout.take().expect("child stdout")).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("child ended before printing its URL")
            .expect("read child stdout");
        // libtest prints "test fake_apiserver_child ... " before the test's own output.
        if let Some(at) = line.find("FAKE_APISERVER_URL=") {
            break line[at + "FAKE_APISERVER_URL=".len()..].trim().to_string();
        }
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rss_before = rss_kib();
    let (live_bytes, rss_after, elapsed, restarts) = rt.block_on(async {
        let client =
            kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
        let heap_before = heap();
        let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
        let t = Instant::now();
        let handle = live::start(
            client,
            cluster.clone(),
            LiveOptions {
                page_size: page_size(),
                ..LiveOptions::default()
            },
        )
        .await
        .expect("start");
        let deadline = Instant::now() + Duration::from_secs(600);
        while !cluster.is_synced() {
            assert!(Instant::now() < deadline, "not synced in 10 minutes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = t.elapsed();
        assert_eq!(cluster.read().pod_count(), pods_n);
        // Let in-flight page buffers drain before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let live_bytes = heap() - heap_before;
        (live_bytes, rss_kib(), elapsed, handle.watch_restarts())
    });
    // Shut the runtime down so the live view's tasks (and their Arc of the index) are
    // gone before step 2 counts allocations.
    drop(rt);
    drop(child.stdin.take());
    let _ = child.wait();

    // 2. The index alone: build it in-process from the same objects, one at a time.
    let before = heap();
    let mut st = ClusterState::new();
    for i in 0..pods_n {
        st.apply_pvc(
            &serde_json::from_value::<objects::PersistentVolumeClaim>(pvc(i)).expect("pvc"),
        );
        st.apply_pod(&serde_json::from_value::<objects::Pod>(pod(i)).expect("pod"));
    }
    let index_bytes = heap() - before;
    eprintln!("index built in-process ({pods_n} pods)");
    assert_eq!(st.pod_count(), pods_n);
    // Attachments and nodes on top of the same index.
    let before = heap();
    if attachments() {
        for i in 0..NODES {
            st.apply_node(&serde_json::from_value::<objects::Node>(node(i)).expect("node"));
        }
    }
    let nodes_bytes = heap() - before;
    let before = heap();
    if attachments() {
        for i in 0..pods_n {
            st.apply_volume_attachment(
                &serde_json::from_value::<objects::VolumeAttachment>(attachment(i))
                    .expect("attachment"),
            );
        }
        assert_eq!(st.volume_attachment_count(), pods_n);
    }
    let attachment_bytes = heap() - before;
    // A node status update (a heartbeat) rebuilds nothing: the heap does not move.
    let churn_bytes = if attachments() {
        let updates: Vec<objects::Node> = (0..NODES)
            .map(|i| {
                let mut n = node(i);
                k8s::set_node_heartbeat(&mut n, "2026-12-07T11:00:00Z");
                serde_json::from_value(n).expect("node")
            })
            .collect();
        let before = heap();
        let t = Instant::now();
        for n in &updates {
            st.apply_node(n);
        }
        let took = t.elapsed();
        println!(
            "{NODES} node status updates applied in {took:.1?} ({:.2} us each)",
            took.as_secs_f64() * 1e6 / NODES as f64
        );
        heap() - before
    } else {
        0
    };
    drop(st);

    let per_pod = index_bytes as f64 / pods_n as f64;
    let live_per_pod = live_bytes as f64 / pods_n as f64;
    println!("index: {pods_n} pods + {pods_n} PVCs = {index_bytes} bytes = {per_pod:.0} bytes per pod (PVC included)");
    if attachments() {
        let per_attachment = attachment_bytes as f64 / pods_n as f64;
        println!(
            "index: + {NODES} nodes = {nodes_bytes} bytes ({:.0} per node); + {pods_n} VolumeAttachments = {attachment_bytes} bytes = {per_attachment:.0} bytes per attachment; {NODES} heartbeats moved the heap by {churn_bytes} bytes",
            nodes_bytes as f64 / NODES as f64
        );
        assert!(
            per_attachment <= 100.0,
            "{per_attachment:.0} bytes per attachment, budget 100"
        );
        assert_eq!(churn_bytes, 0, "a heartbeat must not allocate in the index");
    }
    println!("live view heap after sync: {live_bytes} bytes = {live_per_pod:.0} bytes per pod (index + watch bookkeeping + client)");
    println!(
        "process VmRSS: {} MiB before the live view, {} MiB after sync (page size {}, initial lists took {:.1?}, {restarts} watch restarts)",
        rss_before / 1024,
        rss_after / 1024,
        page_size(),
        elapsed
    );
    assert!(
        per_pod <= 300.0,
        "index costs {per_pod:.0} bytes per pod, target 300"
    );
    // 100 MiB for pods and claims alone; 150 MiB with 100k attachments and 5,000 nodes.
    let budget_mib = if attachments() { 150 } else { 100 };
    assert!(
        rss_after < budget_mib * 1024,
        "RSS {} MiB, target < {budget_mib} MiB",
        rss_after / 1024
    );
    assert!(
        elapsed < Duration::from_secs(60),
        "ready after {elapsed:?}, budget 60 s"
    );
}

/// What the index's bytes per pod are made of (for whoever tunes its layout):
/// `cargo test --test live_memory -- --ignored --nocapture index_breakdown`
#[test]
#[ignore]
fn index_breakdown() {
    let n = pods();
    let measure = |f: &dyn Fn(&mut ClusterState)| {
        let before = heap();
        let mut st = ClusterState::new();
        f(&mut st);
        let bytes = heap() - before;
        drop(st);
        bytes as f64 / n as f64
    };
    let pvc_of = |i| serde_json::from_value::<objects::PersistentVolumeClaim>(pvc(i)).expect("pvc");
    let pod_of = |i| serde_json::from_value::<objects::Pod>(pod(i)).expect("pod");
    let pvcs = measure(&|st| (0..n).for_each(|i| st.apply_pvc(&pvc_of(i))));
    let pods = measure(&|st| (0..n).for_each(|i| st.apply_pod(&pod_of(i))));
    let pods_no_uid = measure(&|st| {
        (0..n).for_each(|i| {
            let mut p = pod_of(i);
            p.metadata.uid = None;
            st.apply_pod(&p)
        })
    });
    let both = measure(&|st| {
        (0..n).for_each(|i| {
            st.apply_pvc(&pvc_of(i));
            st.apply_pod(&pod_of(i));
        })
    });
    println!("{n} objects each, bytes per object:");
    println!("  PVCs only (bound, own PV name):        {pvcs:.0}");
    println!("  pods only (1 claim, node, uid):        {pods:.0}");
    println!("  pods only, without uid:                {pods_no_uid:.0}");
    println!("  pod + its PVC (what memory_100k sees): {both:.0}");
}
