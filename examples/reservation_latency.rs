//! What a claim reservation in the API server adds per guarded pod: the
//! engine's decision time for a pod CREATE with an RWOP claim, with the
//! Lease write (against the tests' fake API server on 127.0.0.1, plain HTTP)
//! and without (the in-memory reservation of one process), plus the paths
//! that write nothing (a second pod denied from the cache, an RWX pod).
//!
//! `cargo run --example reservation_latency -- [PODS]` (default 500).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use claimguard::admission::Engine;
use claimguard::cluster::reservations::{self, ReservationBook};
use claimguard::cluster::{live, ClusterState, SharedCluster};
use claimguard::policy::Policy;
use serde_json::{json, Value};
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

fn review(name: &str, claim: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("req-{name}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default", "name": name, "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {
                    "containers": [{"name": "app", "image": "busybox",
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
                }
            }
        }
    }))
    .expect("review JSON")
}

struct Stats(Vec<Duration>);

impl Stats {
    fn line(&mut self, what: &str) -> String {
        self.0.sort();
        let n = self.0.len();
        let mean = self.0.iter().sum::<Duration>() / n as u32;
        let pct = |p: f64| self.0[((n as f64 * p) as usize).min(n - 1)];
        format!(
            "{what:<44} n={n:<5} mean {:>8.1} µs  p50 {:>8.1} µs  p99 {:>8.1} µs",
            mean.as_secs_f64() * 1e6,
            pct(0.5).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6
        )
    }
}

async fn run(engine: &Engine, bodies: &[Vec<u8>], want_allowed: bool) -> Stats {
    let mut out = Vec::with_capacity(bodies.len());
    for b in bodies {
        let t = Instant::now();
        let r = engine.review(b).await.expect("review");
        out.push(t.elapsed());
        assert_eq!(r.summary.allowed, want_allowed, "{}", r.summary.name);
        assert!(r.summary.findings.len() <= 1);
    }
    Stats(out)
}

async fn engine(api: &FakeApiServer, with_leases: bool) -> (Engine, Vec<Box<dyn std::any::Any>>) {
    let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let handle = live::start(api.client(), cluster.clone(), Default::default())
        .await
        .expect("live view");
    keep.push(Box::new(handle));
    if with_leases {
        let book = Arc::new(ReservationBook::new(
            api.client(),
            "claimguard-system",
            "bench",
        ));
        keep.push(Box::new(reservations::start(
            cluster.clone(),
            book,
            Default::default(),
        )));
    }
    let t = Instant::now();
    while !cluster.is_synced() {
        assert!(t.elapsed() < Duration::from_secs(60), "view not synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Engine::new(Policy::default(), cluster), keep)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let api = FakeApiServer::start().await;
    api.add(Kind::Namespace, k8s::namespace("default", &[]));
    api.add(
        Kind::Pvc,
        k8s::pvc("default", "shared", &["ReadWriteMany"], "nfs", None),
    );
    for i in 0..n {
        for set in ["mem", "lease"] {
            api.add(
                Kind::Pvc,
                k8s::pvc(
                    "default",
                    &format!("{set}-{i}"),
                    &["ReadWriteOncePod"],
                    "gp3",
                    None,
                ),
            );
        }
    }
    let (mem, _k1) = engine(&api, false).await;
    let (lease, _k2) = engine(&api, true).await;

    let first = |set: &str| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| review(&format!("{set}-a-{i}"), &format!("{set}-{i}")))
            .collect()
    };
    let second = |set: &str| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| review(&format!("{set}-b-{i}"), &format!("{set}-{i}")))
            .collect()
    };
    let rwx: Vec<Vec<u8>> = (0..n)
        .map(|i| review(&format!("x-{i}"), "shared"))
        .collect();
    // Warm up connections and caches.
    run(&lease, &[review("warm", "lease-0")], true).await;
    let warm_entries: Vec<Value> = api.leases().all();
    assert_eq!(warm_entries.len(), 1);

    let mut lines = Vec::new();
    lines.push(
        run(&mem, &first("mem"), true)
            .await
            .line("allowed RWOP pod, in-memory reservation"),
    );
    let bodies: Vec<Vec<u8>> = first("lease").into_iter().skip(1).collect();
    lines.push(
        run(&lease, &bodies, true)
            .await
            .line("allowed RWOP pod, Lease create"),
    );
    lines.push(
        run(&mem, &second("mem"), false)
            .await
            .line("denied second pod, in memory"),
    );
    lines.push(
        run(&lease, &second("lease"), false)
            .await
            .line("denied second pod, from the Lease cache"),
    );
    lines.push(
        run(&lease, &rwx, true)
            .await
            .line("RWX pod (writes nothing), Lease mode"),
    );
    println!("reservation latency, {n} pods each, fake API server on 127.0.0.1 (debug/release as built):");
    for l in lines {
        println!("  {l}");
    }
    println!(
        "  Leases written: {} (creates {}, conflicts {})",
        api.leases().count(),
        api.leases().counters().creates,
        api.leases().counters().conflicts
    );
}
