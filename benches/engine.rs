//! The hot path, piece by piece: the decision against indexes of growing
//! size, AdmissionReview parsing and response encoding, the whole
//! `Engine::review`, and index updates per watch event.
//!
//! `cargo bench --bench engine` (see bench/run.sh for the short settings).

mod common;

use claimguard::admission::{parse_request, response_body, Engine};
use claimguard::cluster::{ClusterState, SharedCluster};
use claimguard::objects::{Object, Pod};
use claimguard::policy::{self, Operation, Policy, Request};
use common::Rng;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use std::collections::BTreeMap;
use std::sync::Arc;

const SIZES: &[usize] = &[1_000, 10_000, 100_000];

/// Adds the three claims the benchmarked pod uses, in namespace `payments-prod`:
/// an RWO claim held read-only by a pod on node 7, an RWX claim shared by
/// three writers, and a free RWOP claim. The new pod mounts the RWO claim
/// read-only on node 7 too, so every rule runs and nothing fires: the
/// common, allowed path.
fn add_bench_claims(s: &mut ClusterState) {
    let mut rng = Rng::new(99);
    let ns = common::namespace_name(0);
    for (claim, modes) in [
        ("shared-config", "ReadWriteOnce"),
        ("uploads", "ReadWriteMany"),
        ("ledger-wal", "ReadWriteOncePod"),
        ("exclusive-held", "ReadWriteOncePod"),
    ] {
        s.apply_pvc(&common::pvc(&mut rng, &ns, claim, &[modes]));
    }
    let holders: [(&str, &str, bool); 5] = [
        ("config-reader-0", "shared-config", true),
        ("uploader-0", "uploads", false),
        ("uploader-1", "uploads", false),
        ("uploader-2", "uploads", false),
        ("ledger-0", "exclusive-held", false),
    ];
    for (name, claim, ro) in holders {
        s.apply_pod(&bench_pod(
            name,
            &[(claim, ro)],
            Some(&common::node_name(7)),
        ));
    }
}

fn bench_pod(name: &str, claims: &[(&str, bool)], node: Option<&str>) -> Pod {
    // Each pod its own uid: a shared one would make every holder "the same pod".
    let seed = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let json = common::pod_review_json(
        "u",
        &common::namespace_name(0),
        name,
        &Rng::new(seed).uuid(),
        claims,
        node,
        false,
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("template is JSON");
    serde_json::from_value(v["request"]["object"].clone()).expect("template is a pod")
}

fn state_of(pods: usize) -> ClusterState {
    let mut s = common::build_state(pods, pods, 0.4);
    add_bench_claims(&mut s);
    s
}

const CLAIMS3: &[(&str, bool)] = &[
    ("shared-config", true),
    ("uploads", false),
    ("ledger-wal", false),
];

fn decision(c: &mut Criterion) {
    let policy = Policy::default();
    let ns = common::namespace_name(0);
    let node = common::node_name(7);
    let allowed = Object::Pod(bench_pod(
        "orders-service-7d4b9c8f6d-x2x9k",
        CLAIMS3,
        Some(&node),
    ));
    let denied = Object::Pod(bench_pod(
        "ledger-7d4b9c8f6d-q8w2z",
        &[("exclusive-held", false)],
        None,
    ));
    let mut g = c.benchmark_group("decision_3_claims");
    for &n in SIZES {
        let state = state_of(n);
        let req = Request {
            operation: Operation::Create,
            namespace: &ns,
            object: &allowed,
            old_object: None,
        };
        assert!(policy::evaluate(&policy, &req, &state).allowed);
        g.bench_with_input(BenchmarkId::new("allowed", n), &state, |b, s| {
            b.iter(|| policy::evaluate(&policy, black_box(&req), s))
        });
        if n == 100_000 {
            let req = Request {
                object: &denied,
                ..req
            };
            assert!(!policy::evaluate(&policy, &req, &state).allowed);
            g.bench_with_input(BenchmarkId::new("denied_rwop", n), &state, |b, s| {
                b.iter(|| policy::evaluate(&policy, black_box(&req), s))
            });
        }
    }
    g.finish();
}

fn wire(c: &mut Criterion) {
    let node = common::node_name(7);
    let body = common::pod_review_json(
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        &common::namespace_name(0),
        "orders-service-7d4b9c8f6d-x2x9k",
        "0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f",
        CLAIMS3,
        Some(&node),
        false,
    );
    let mut g = c.benchmark_group("wire");
    g.throughput(criterion::Throughput::Bytes(body.len() as u64));
    g.bench_function(format!("parse_request_{}B", body.len()), |b| {
        b.iter(|| parse_request(black_box(body.as_bytes())).expect("valid review"))
    });
    // The floor for any serde_json parse: validating and skipping every byte.
    g.bench_function("serde_json_skip_whole_review", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body.as_bytes()))
                .expect("valid JSON")
        })
    });
    g.finish();
    let mut g = c.benchmark_group("wire");
    let empty = BTreeMap::new();
    g.bench_function("response_allowed", |b| {
        b.iter(|| {
            response_body(
                black_box("705ab4f5-6393-11e8-b7cc-42010a800002"),
                true,
                None,
                &[],
                &empty,
            )
        })
    });
    let warnings = vec!["[rwo-shared-writer] PersistentVolumeClaim \"data\" is ReadWriteOnce and written by pod payments-prod/web-0 on node ip-10-0-7-93.eu-west-1.compute.internal; this pod must share it".to_string()];
    let msg = "[rwop-exclusive] PersistentVolumeClaim \"data\" is ReadWriteOncePod and already used by pod payments-prod/ledger-0 on node ip-10-0-7-93.eu-west-1.compute.internal; delete that pod first or use another claim";
    let mut ann = BTreeMap::new();
    ann.insert("rwop-exclusive".to_string(), msg.to_string());
    g.bench_function("response_denied_with_warning", |b| {
        b.iter(|| {
            response_body(
                black_box("705ab4f5-6393-11e8-b7cc-42010a800002"),
                false,
                Some(msg),
                &warnings,
                &ann,
            )
        })
    });
    g.finish();
}

fn engine(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let node = common::node_name(7);
    let ns = common::namespace_name(0);
    let mut g = c.benchmark_group("engine_review_100k");
    // Dry-run: decision under the read lock, nothing stored, so every
    // iteration sees the same index.
    let cluster = Arc::new(SharedCluster::stored(state_of(100_000)));
    let engine = Engine::new(Policy::default(), cluster);
    let dry = common::pod_review_json(
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        &ns,
        "orders-service-7d4b9c8f6d-x2x9k",
        "0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f",
        CLAIMS3,
        Some(&node),
        true,
    );
    g.bench_function("dry_run_allowed", |b| {
        b.iter(|| {
            rt.block_on(engine.review(black_box(dry.as_bytes())))
                .expect("review")
        })
    });
    // Not dry-run: decision and reservation under the write lock, as the
    // API server's real requests. A live view (reservation TTL) so the pod
    // is a reservation, replaced by the next iteration's same-named pod.
    let cluster = Arc::new(SharedCluster::new(state_of(100_000), true));
    let engine = Engine::new(Policy::default(), cluster);
    let real = dry.replace("\"dryRun\":true", "\"dryRun\":false");
    g.bench_function("create_allowed_reserves", |b| {
        b.iter(|| {
            rt.block_on(engine.review(black_box(real.as_bytes())))
                .expect("review")
        })
    });
    let denied = common::pod_review_json(
        "705ab4f5-6393-11e8-b7cc-42010a800003",
        &ns,
        "ledger-7d4b9c8f6d-q8w2z",
        "1b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f",
        &[("exclusive-held", false)],
        None,
        false,
    );
    // The cheap path (src/admission/fast.rs): a claimless pod CREATE is
    // answered from a validating scan, without the typed parse.
    let claimless = common::pod_review_json(
        "705ab4f5-6393-11e8-b7cc-42010a800004",
        &ns,
        "web-7d4b9c8f6d-z9x8c",
        "2b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f",
        &[],
        None,
        false,
    );
    g.bench_function("create_claimless_cheap_path", |b| {
        b.iter(|| {
            rt.block_on(engine.review(black_box(claimless.as_bytes())))
                .expect("review")
        })
    });
    g.bench_function("create_claimless_full_path", |b| {
        b.iter(|| {
            rt.block_on(engine.review_full(black_box(claimless.as_bytes())))
                .expect("review")
        })
    });
    g.bench_function("create_denied_rwop", |b| {
        b.iter(|| {
            rt.block_on(engine.review(black_box(denied.as_bytes())))
                .expect("review")
        })
    });
    g.finish();
}

fn index_updates(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_update_100k");
    let mut state = common::build_state(100_000, 100_000, 0.4);
    let mut rng = Rng::new(3);
    // A pod the index holds, as a watch MODIFIED event brings it again
    // (status change, same claims).
    let plan = (0..)
        .map(|i| common::plan_pod(&mut rng, i, 1.0))
        .next()
        .expect("a plan");
    let pod = common::pod_from_plan(&plan);
    state.apply_pod(&pod);
    let ns = plan.namespace.clone();
    g.bench_function("apply_pod_modified", |b| {
        b.iter(|| state.apply_pod(black_box(&pod)))
    });
    g.bench_function("delete_then_apply_pod", |b| {
        b.iter(|| {
            state.delete_pod(&ns, &plan.name);
            state.apply_pod(black_box(&pod));
        })
    });
    // A pod without claims: what most watch events are.
    let mut plain = common::plan_pod(&mut rng, 1, 0.0);
    plain.claim = None;
    let plain = common::pod_from_plan(&plain);
    g.bench_function("apply_pod_without_claims", |b| {
        b.iter(|| state.apply_pod(black_box(&plain)))
    });
    let pvc = common::pvc(&mut rng, &ns, "data-web-bench", &["ReadWriteOnce"]);
    g.bench_function("apply_pvc", |b| b.iter(|| state.apply_pvc(black_box(&pvc))));
    // Build cost, for the record: a watch's initial list of 10k pods.
    g.sample_size(10);
    g.bench_function("build_10k_pods_10k_pvcs", |b| {
        b.iter_batched(
            || (),
            |_| common::build_state(10_000, 10_000, 0.4),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, decision, wire, engine, index_updates);
criterion_main!(benches);
