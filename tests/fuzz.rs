//! Structure-aware fuzzing with proptest (no nightly toolchain here, so no
//! cargo-fuzz): valid inputs in the exact shape the API server and kubectl
//! produce, mutated — truncated, bytes flipped or inserted, a value swapped
//! for one of another type, deep nesting, huge strings and arrays, duplicate
//! keys, invalid UTF-8 — and fed to the request parser + engine, the
//! `/mutate` patch builder, the snapshot loader and the policy parser. Every input must give an answer or a
//! one-line error; a panic fails the case (proptest catches it and shrinks).
//!
//! CI runs 300 cases per target (`CLAIMGUARD_FUZZ_CASES`, ~30 s). The long run:
//!
//! ```sh
//! CLAIMGUARD_FUZZ_CASES=250000 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! (250,000 cases for each of the four in-process request and snapshot
//! targets, 1M in all, plus 25,000 policy files and 83,333 reviews through
//! the TLS server; figures in docs/performance.md).

mod common;

use std::sync::Arc;

use claimguard::admission::Engine;
use claimguard::cluster::{snapshot, ClusterState, SharedCluster};
use claimguard::policy::Policy;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

fn cases() -> u32 {
    std::env::var("CLAIMGUARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        // Failures are reported by the assertion; no files in the tree.
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    })
}

const REVIEWS: [&str; 3] = [
    include_str!("fixtures/pod-create.json"),
    include_str!("fixtures/pvc-create.json"),
    include_str!("fixtures/configmap-create.json"),
];

/// One way to damage a valid document.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    FlipByte(prop::sample::Index, u8),
    InsertBytes(prop::sample::Index, Vec<u8>),
    /// Replace the value at the n-th node (depth-first) with another of a random type.
    SwapValue(prop::sample::Index, Replacement),
    /// Wrap the n-th node in `depth` arrays.
    Nest(prop::sample::Index, usize),
    /// Duplicate a key of the n-th object, with a value of another type.
    DuplicateKey(prop::sample::Index, Replacement),
}

#[derive(Debug, Clone)]
enum Replacement {
    Null,
    Bool(bool),
    Number(i64),
    Float(f64),
    Text(String),
    HugeText(usize),
    HugeArray(usize),
    EmptyObject,
}

impl Replacement {
    fn value(&self) -> Value {
        match self {
            Replacement::Null => Value::Null,
            Replacement::Bool(b) => Value::Bool(*b),
            Replacement::Number(n) => Value::from(*n),
            Replacement::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Replacement::Text(s) => Value::String(s.clone()),
            Replacement::HugeText(n) => Value::String("x".repeat(*n)),
            Replacement::HugeArray(n) => Value::Array(vec![Value::from(1); *n]),
            Replacement::EmptyObject => Value::Object(Default::default()),
        }
    }
}

fn replacement() -> impl Strategy<Value = Replacement> {
    prop_oneof![
        Just(Replacement::Null),
        any::<bool>().prop_map(Replacement::Bool),
        any::<i64>().prop_map(Replacement::Number),
        any::<f64>().prop_map(Replacement::Float),
        ".{0,40}".prop_map(Replacement::Text),
        (100_000usize..1_000_000).prop_map(Replacement::HugeText),
        (1_000usize..100_000).prop_map(Replacement::HugeArray),
        Just(Replacement::EmptyObject),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipByte(i, b)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(i, b)| Mutation::InsertBytes(i, b)),
        (any::<prop::sample::Index>(), replacement()).prop_map(|(i, r)| Mutation::SwapValue(i, r)),
        (any::<prop::sample::Index>(), 1usize..5000).prop_map(|(i, d)| Mutation::Nest(i, d)),
        (any::<prop::sample::Index>(), replacement())
            .prop_map(|(i, r)| Mutation::DuplicateKey(i, r)),
    ]
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Calls `f` on the `n`-th node, depth-first; `true` once it was called.
fn apply_nth(v: &mut Value, n: &mut usize, f: &mut Option<impl FnOnce(&mut Value)>) -> bool {
    if *n == 0 {
        if let Some(f) = f.take() {
            f(v);
        }
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| apply_nth(c, n, f)),
        Value::Object(o) => o.values_mut().any(|c| apply_nth(c, n, f)),
        _ => false,
    }
}

fn with_node(doc: &mut Value, idx: &prop::sample::Index, f: impl FnOnce(&mut Value)) {
    let mut n = idx.index(count_nodes(doc));
    apply_nth(doc, &mut n, &mut Some(f));
}

const NEST_MARKER: &str = "__claimguard_fuzz_nest__";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Applies the mutations to a valid JSON document and returns the bytes sent.
fn mutate(valid: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut doc: Value = serde_json::from_str(valid).expect("fixture is JSON");
    let mut text_edits = Vec::new();
    for m in mutations {
        match m {
            Mutation::SwapValue(i, r) => with_node(&mut doc, i, |v| *v = r.value()),
            // Nesting is spliced in as text: a deep `Value` would overflow
            // the harness's own stack (serde_json writes and drops it
            // recursively) before the code under test ever saw it.
            Mutation::Nest(i, _) => with_node(&mut doc, i, |v| {
                *v = Value::String(NEST_MARKER.into());
            }),
            other => text_edits.push(other.clone()),
        }
    }
    // serde_json's own writer recurses too: nest beyond its limit in text.
    let mut bytes = serde_json::to_vec(&doc).unwrap_or_else(|_| valid.as_bytes().to_vec());
    for m in mutations {
        if let Mutation::Nest(_, depth) = m {
            let marker = format!("\"{NEST_MARKER}\"");
            if let Some(at) = find(&bytes, marker.as_bytes()) {
                let nested = format!("{}1{}", "[".repeat(*depth), "]".repeat(*depth));
                bytes.splice(at..at + marker.len(), nested.into_bytes());
            }
        }
    }
    for m in text_edits {
        match m {
            Mutation::Truncate(i) => {
                let at = i.index(bytes.len().max(1));
                bytes.truncate(at);
            }
            Mutation::FlipByte(i, b) => {
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] ^= b.max(1);
                }
            }
            Mutation::InsertBytes(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.splice(at..at, b);
            }
            Mutation::DuplicateKey(i, r) => {
                // `{"k": v` -> `{"k": <other>, "k": v`: duplicate keys are
                // legal JSON text that serde_json's derive rejects.
                let starts: Vec<usize> = bytes
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| w == b"{\"")
                    .map(|(p, _)| p)
                    .collect();
                if starts.is_empty() {
                    continue;
                }
                let at = starts[i.index(starts.len())] + 1;
                let key_end = bytes[at + 1..]
                    .iter()
                    .position(|&c| c == b'"')
                    .map(|p| at + 1 + p);
                if let Some(end) = key_end {
                    let key = bytes[at..=end].to_vec();
                    let mut insert = key;
                    insert.push(b':');
                    insert.extend(serde_json::to_vec(&r.value()).unwrap());
                    insert.push(b',');
                    bytes.splice(at..at, insert);
                }
            }
            Mutation::SwapValue(..) | Mutation::Nest(..) => unreachable!(),
        }
    }
    bytes
}

fn engine() -> Arc<Engine> {
    let state = snapshot::load_snapshot(&[std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cluster.yaml"
    ))])
    .unwrap_or_else(|_| ClusterState::new());
    Arc::new(Engine::new(
        Policy::default(),
        Arc::new(SharedCluster::stored(state)),
    ))
}

fn assert_one_line(what: &str, e: &str) -> Result<(), TestCaseError> {
    prop_assert!(!e.contains('\n'), "{what}: error spans lines: {e:?}");
    prop_assert!(!e.is_empty(), "{what}: empty error");
    Ok(())
}

#[test]
fn admission_reviews_always_get_an_answer_or_a_one_line_error() {
    let engine = engine();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let strategy = (0..REVIEWS.len(), prop::collection::vec(mutation(), 1..4));
    let answered = std::cell::Cell::new(0u64);
    let refused = std::cell::Cell::new(0u64);
    runner()
        .run(&strategy, |(which, mutations)| {
            let body = mutate(REVIEWS[which], &mutations);
            match rt.block_on(engine.review(&body)) {
                Ok(reviewed) => {
                    // A real AdmissionReview response, for the request's uid.
                    let v: Value = serde_json::from_slice(&reviewed.body)
                        .map_err(|e| TestCaseError::fail(format!("response not JSON: {e}")))?;
                    prop_assert_eq!(&v["apiVersion"], "admission.k8s.io/v1");
                    prop_assert!(v["response"]["allowed"].is_boolean());
                    answered.set(answered.get() + 1);
                }
                Err(e) => {
                    assert_one_line("review", &e.to_string())?;
                    refused.set(refused.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    let (answered, refused) = (answered.get(), refused.get());
    eprintln!("admission reviews: {answered} answered, {refused} refused with one line");
    assert!(
        answered > 0 && refused > 0,
        "the mutations reach both outcomes"
    );
}

#[test]
fn invalid_utf8_and_garbage_never_panic_the_parser() {
    let engine = engine();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..4096), |bytes| {
            if let Err(e) = rt.block_on(engine.review(&bytes)) {
                assert_one_line("garbage", &e.to_string())?;
            }
            Ok(())
        })
        .unwrap();
}

const MANIFESTS: [&str; 3] = [
    include_str!("../examples/cluster.yaml"),
    include_str!("../examples/audit-dump.json"),
    include_str!("../examples/scenarios/05-rolling-update.yaml"),
];

#[test]
fn snapshot_and_manifest_files_load_or_fail_in_one_line() {
    let strategy = (
        0..MANIFESTS.len(),
        prop::collection::vec(mutation(), 1..4),
        any::<bool>(),
    );
    runner()
        .run(&strategy, |(which, mutations, as_yaml)| {
            // The YAML files go through the JSON mutator as their JSON form,
            // then are written back as YAML half of the time.
            let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(MANIFESTS[which])
                .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
                .collect();
            let as_json = serde_json::to_string(&Value::Array(docs)).unwrap();
            let bytes = mutate(&as_json, &mutations);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let text = match (as_yaml, serde_json::from_str::<Value>(&text)) {
                (true, Ok(v)) => serde_yaml_ng::to_string(&v).unwrap_or(text),
                _ => text,
            };
            match snapshot::parse_documents("fuzz.yaml", &text) {
                Ok(docs) => {
                    let mut state = ClusterState::new();
                    for d in docs.iter().filter_map(|d| d.object.as_ref()) {
                        state.apply_object(d);
                    }
                }
                Err(e) => assert_one_line("snapshot", &e.to_string())?,
            }
            Ok(())
        })
        .unwrap();
}

const POLICY: &str = r#"{"mode":"enforce","rules":{"rwo-shared-writer":"deny","claim-not-found":"off"},"exemptNamespaces":["kube-system"],"blockOnlyProvisioners":["ebs.csi.aws.com"],"onLookupError":"allow"}"#;

/// A tenth of the cases (at least 300): each costs ~10 ms, most of it the
/// YAML round trip of megabyte strings and 100k-element arrays, and a policy
/// file comes from the operator, not from whoever can reach the Service.
#[test]
fn policy_files_load_or_fail_in_one_line() {
    let strategy = (prop::collection::vec(mutation(), 1..4), any::<bool>());
    TestRunner::new(Config {
        cases: (cases() / 10).max(300),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    })
    .run(&strategy, |(mutations, as_yaml)| {
        let bytes = mutate(POLICY, &mutations);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let text = match (as_yaml, serde_json::from_str::<Value>(&text)) {
            (true, Ok(v)) => serde_yaml_ng::to_string(&v).unwrap_or(text),
            _ => text,
        };
        if let Err(e) = Policy::parse(&text) {
            assert_one_line("policy", &e)?;
        }
        Ok(())
    })
    .unwrap();
}

/// The same mutated reviews through the real server over TLS, to `/validate`
/// and to `/mutate` (co-location on): every answer is a 200 or a 4xx with one
/// line, never a 5xx or a dropped connection, and the server keeps serving.
#[test]
fn the_server_answers_every_mutated_review_with_200_or_a_4xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(common::TestServer::start(colocating_engine()));
    let seeds: Vec<String> = REVIEWS
        .iter()
        .map(|s| s.to_string())
        .chain([colocated_pod_review()])
        .collect();
    let strategy = (
        0..seeds.len(),
        prop::collection::vec(mutation(), 1..4),
        prop::sample::select(vec!["/validate", "/mutate"]),
    );
    let mut config_runner = TestRunner::new(Config {
        cases: (cases() / 3).max(50),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    config_runner
        .run(&strategy, |(which, mutations, path)| {
            let body = mutate(&seeds[which], &mutations);
            let (status, text) = rt.block_on(t.post_to(path, body));
            prop_assert!(
                status == 200 || (400..500).contains(&status),
                "status {status}: {text}"
            );
            if status != 200 {
                prop_assert_eq!(text.trim_end().lines().count(), 1, "{}", text);
            }
            Ok(())
        })
        .unwrap();
    let (status, _, _) = rt.block_on(t.get("/healthz"));
    assert_eq!(status, 200);
}

/// A pod review that co-location pins: the ReadWriteOnce `shop/shared-data`
/// is held by `writer-a` on `worker-1` in examples/cluster.yaml.
fn colocated_pod_review() -> String {
    REVIEWS[0]
        .replace("\"namespace\": \"default\"", "\"namespace\": \"shop\"")
        .replace("\"claimName\": \"data\"", "\"claimName\": \"shared-data\"")
}

fn colocating_engine() -> Arc<Engine> {
    let engine = engine();
    let mut policy = Policy::default();
    policy.colocate = true;
    engine.set_policy(policy);
    engine
}

/// Checks one `/mutate` answer the way the API server reads it: a v1
/// AdmissionReview response, always allowed, and a patch (when there is one)
/// that is base64 of a JSON Patch which applies to the request's object and
/// leaves a pod whose node affinity is still well-formed.
fn check_mutation(body: &[u8], response: &[u8]) -> Result<bool, TestCaseError> {
    use base64::Engine as _;
    let v: Value = serde_json::from_slice(response)
        .map_err(|e| TestCaseError::fail(format!("response not JSON: {e}")))?;
    prop_assert_eq!(&v["apiVersion"], "admission.k8s.io/v1");
    prop_assert_eq!(&v["response"]["allowed"], true);
    let Some(patch) = v["response"]["patch"].as_str() else {
        prop_assert!(v["response"]["patchType"].is_null());
        return Ok(false);
    };
    prop_assert_eq!(&v["response"]["patchType"], "JSONPatch");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| TestCaseError::fail(format!("patch not base64: {e}")))?;
    let patch: json_patch::Patch = serde_json::from_slice(&raw)
        .map_err(|e| TestCaseError::fail(format!("patch not a JSON Patch: {e}")))?;
    // The engine answered, so the body was a review: its object is what the
    // API server would apply the patch to. serde_json does not check UTF-8
    // inside strings it skips, so a flipped byte there still gets an answer.
    let review: Value = match serde_json::from_str(&String::from_utf8_lossy(body)) {
        Ok(v) => v,
        // Deep nesting in a field the engine skips: the harness's own tree
        // stops at 128 levels, so only the patch itself was checked.
        Err(e) if e.to_string().contains("recursion limit") => return Ok(true),
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "a patched review is not JSON: {e}"
            )))
        }
    };
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch)
        .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
    let terms = &object["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let terms = terms.as_array().ok_or_else(|| {
        TestCaseError::fail(format!("no nodeSelectorTerms after the patch: {object}"))
    })?;
    prop_assert!(!terms.is_empty());
    for term in terms {
        let pinned = term["matchFields"].as_array().is_some_and(|fields| {
            fields
                .iter()
                .any(|f| f["key"] == "metadata.name" && f["operator"] == "In")
        });
        prop_assert!(pinned, "a term without the pin: {}", term);
    }
    Ok(true)
}

#[test]
fn mutate_patches_apply_to_the_object_or_the_review_fails_in_one_line() {
    let engine = colocating_engine();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let valid = colocated_pod_review();
    // The target is only worth running if the unmutated review is pinned.
    let unmutated = rt.block_on(engine.mutate(valid.as_bytes())).unwrap();
    assert!(
        check_mutation(valid.as_bytes(), &unmutated.body).unwrap(),
        "the seed review must be pinned: {}",
        String::from_utf8_lossy(&unmutated.body)
    );
    let patched = std::cell::Cell::new(0u64);
    let refused = std::cell::Cell::new(0u64);
    runner()
        .run(&prop::collection::vec(mutation(), 1..4), |mutations| {
            let body = mutate(&valid, &mutations);
            match rt.block_on(engine.mutate(&body)) {
                Ok(m) => {
                    if check_mutation(&body, &m.body)? {
                        patched.set(patched.get() + 1);
                    }
                }
                Err(e) => {
                    assert_one_line("mutate", &e.to_string())?;
                    refused.set(refused.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    let (patched, refused) = (patched.get(), refused.get());
    eprintln!("mutate: {patched} patched, {refused} refused with one line");
    assert!(
        patched > 0 && refused > 0,
        "the mutations reach both outcomes"
    );
}
