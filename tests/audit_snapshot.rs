//! `audit` on snapshot files: every existing-violation state, compared
//! exactly with the expected text and JSON, and the PolicyReports parsed back.
//!
//! `CLAIMGUARD_BLESS=1 cargo test --test audit_snapshot` rewrites the
//! expected files; review the diff before committing it.

use claimguard::audit::{self, AuditReport, Severity};
use claimguard::policy::{Policy, Rule};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit")
}

fn audit_file(name: &str, policy: &Policy) -> AuditReport {
    let (state, objects) = audit::load_for_audit(&[fixtures().join(name)]).expect("snapshot");
    audit::audit_state(&state, &objects, policy)
}

fn compare(actual: &str, expected: &Path) {
    if std::env::var_os("CLAIMGUARD_BLESS").is_some() {
        std::fs::write(expected, actual).unwrap();
        return;
    }
    let want =
        std::fs::read_to_string(expected).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    assert_eq!(actual, want, "{} differs", expected.display());
}

#[test]
fn every_existing_violation_state_text_and_json() {
    let report = audit_file("cluster.yaml", &Policy::default());
    compare(
        &audit::render_text(&report),
        &fixtures().join("cluster.expected.txt"),
    );
    compare(
        &audit::render_json(&report),
        &fixtures().join("cluster.expected.json"),
    );
}

fn found(report: &AuditReport, rule: Rule, name: &str) -> bool {
    report
        .violations
        .iter()
        .any(|v| v.rule == rule && v.name == name)
}

#[test]
fn each_state_is_found_once_and_look_alikes_are_not() {
    let r = audit_file("cluster.yaml", &Policy::default());
    // The states the issue names.
    assert!(found(&r, Rule::RwopExclusive, "pg-data"));
    assert!(found(&r, Rule::RwoCrossNode, "shared-data"));
    assert!(found(&r, Rule::RwoSharedWriter, "uploads"));
    assert!(found(&r, Rule::WorkloadRwopReplicas, "api"));
    assert!(found(&r, Rule::RolloutDeadlock, "blog"));
    assert!(found(&r, Rule::PvcModeUnsupported, "media"));
    assert!(found(&r, Rule::RwopTerminatingHolder, "queue-data"));
    assert!(found(&r, Rule::ClaimNotFound, "ghost"));
    // One violation per claim and rule, however many pods are involved.
    let api = r
        .violations
        .iter()
        .filter(|v| v.rule == Rule::RwopExclusive && v.claim == "api-data")
        .collect::<Vec<_>>();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].pods.len(), 3);
    // The Multi-Attach hang says which pods on which nodes.
    let cross = r
        .violations
        .iter()
        .find(|v| v.rule == Rule::RwoCrossNode && v.claim == "shared-data")
        .unwrap();
    let placed: Vec<(&str, Option<&str>)> = cross
        .pods
        .iter()
        .map(|p| (p.name.as_str(), p.node.as_deref()))
        .collect();
    assert_eq!(
        placed,
        vec![("web-1", Some("worker-1")), ("web-2", Some("worker-3"))]
    );
    assert!(cross.message.contains("worker-1") && cross.message.contains("worker-3"));
    // Read-only pods are not writers; annotated writers are allowed to share.
    let writers = r
        .violations
        .iter()
        .find(|v| v.rule == Rule::RwoSharedWriter)
        .unwrap();
    assert!(writers.pods.iter().all(|p| p.name != "upload-reader"));
    assert!(!r.violations.iter().any(|v| v.claim == "scratch"));
    // Node identity: a pending pod pinned by affinity to another node can never
    // attach; one pinned by nodeSelector to the holder's hostname label (not its
    // name) is on the same machine and fine.
    let reports: Vec<_> = r
        .violations
        .iter()
        .filter(|v| v.claim == "reports")
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].rule, Rule::RwoCrossNode);
    let names: Vec<&str> = reports[0].pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["report-gen", "report-late"]);
    assert!(
        reports[0].message.contains("worker-5.lab.local"),
        "{}",
        reports[0].message
    );
    // A read-only pod pinned nowhere is told where to run; a raw block device user
    // is a writer.
    let ledger: Vec<_> = r
        .violations
        .iter()
        .filter(|v| v.claim == "ledger")
        .collect();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].rule, Rule::RwoReadOnlyPlacement);
    assert!(ledger[0].message.contains("attached to node worker-2"));
    // A finished pod does not hold its claim.
    assert!(!r.violations.iter().any(|v| v.claim == "report-data"));
    // StatefulSet templates, Recreate, an RWX claim on EFS, an owned ReplicaSet: clean.
    for clean in ["kafka", "wiki", "assets", "api-7d9f8", "log-kafka-0"] {
        assert!(!r.violations.iter().any(|v| v.name == clean), "{clean}");
    }
    // Exempt and mode-off namespaces never appear; audit-mode ones do, with their severity.
    assert!(!r
        .violations
        .iter()
        .any(|v| v.namespace == "kube-system" || v.namespace == "legacy"));
    let staging = r
        .violations
        .iter()
        .find(|v| v.namespace == "staging")
        .unwrap();
    assert_eq!(staging.severity, Severity::Fail);
    // Severity follows the rule's action.
    for v in &r.violations {
        let want = if matches!(
            v.rule,
            Rule::RwopExclusive | Rule::RwoCrossNode | Rule::WorkloadRwopReplicas
        ) {
            Severity::Fail
        } else {
            Severity::Warn
        };
        assert_eq!(v.severity, want, "{:?}", v.rule);
    }
}

#[test]
fn policy_actions_apply() {
    let policy = Policy::parse(
        "rules: {rwo-shared-writer: off, rollout-deadlock: deny, claim-not-found: audit}\nexemptNamespaces: [staging]\n",
    )
    .unwrap();
    let r = audit_file("cluster.yaml", &policy);
    assert!(!r.violations.iter().any(|v| v.rule == Rule::RwoSharedWriter));
    assert!(r
        .violations
        .iter()
        .filter(|v| v.rule == Rule::RolloutDeadlock)
        .all(|v| v.severity == Severity::Fail));
    let ghost = r
        .violations
        .iter()
        .find(|v| v.rule == Rule::ClaimNotFound)
        .unwrap();
    assert_eq!(ghost.severity, Severity::Warn);
    assert!(!r.violations.iter().any(|v| v.namespace == "staging"));
    // Overriding exemptions drops kube-system from them: it is audited now.
    assert!(r.violations.iter().any(|v| v.namespace == "kube-system"));
}

#[test]
fn a_clean_cluster_reports_nothing() {
    let r = audit_file("clean.yaml", &Policy::default());
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(audit::render_text(&r), "No violations found.\n");
    let json: serde_json::Value = serde_json::from_str(&audit::render_json(&r)).unwrap();
    assert_eq!(json["summary"]["violations"], 0);
    assert_eq!(json["violations"], serde_json::json!([]));
    assert_eq!(
        audit::render_policy_reports(&r, UNIX_EPOCH + Duration::from_secs(1)),
        ""
    );
}

#[test]
fn bad_snapshot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n").unwrap();
    let e = audit::load_for_audit(&[p]).unwrap_err().to_string();
    assert!(e.contains("bad.yaml") && e.contains("has no spec"), "{e}");
    assert!(audit::load_for_audit(&[dir.path().join("missing.yaml")]).is_err());
}

#[test]
fn policy_reports_parse_back() {
    let report = audit_file("cluster.yaml", &Policy::default());
    let now = UNIX_EPOCH + Duration::new(1_795_000_000, 123_000_000);
    let text = audit::render_policy_reports(&report, now);
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    // One report per namespace with violations, nothing for exempt/off ones.
    let namespaces: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, vec!["shop", "staging"]);
    let mut results = 0;
    for d in &docs {
        assert_eq!(d["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(d["kind"], "PolicyReport");
        assert_eq!(d["metadata"]["name"], "claimguard");
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "claimguard"
        );
        let rs = d["results"].as_array().unwrap();
        let fail = rs.iter().filter(|r| r["result"] == "fail").count();
        let warn = rs.iter().filter(|r| r["result"] == "warn").count();
        assert_eq!(d["summary"]["fail"], fail);
        assert_eq!(d["summary"]["warn"], warn);
        for k in ["pass", "error", "skip"] {
            assert_eq!(d["summary"][k], 0);
        }
        for r in rs {
            assert_eq!(r["policy"], "claimguard");
            assert_eq!(r["source"], "claimguard");
            assert_eq!(r["scored"], true);
            assert!(Rule::from_id(r["rule"].as_str().unwrap()).is_some());
            let sev = if r["result"] == "fail" {
                "high"
            } else {
                "medium"
            };
            assert_eq!(r["severity"], sev);
            assert_eq!(r["timestamp"]["seconds"], 1_795_000_000u64);
            assert_eq!(r["timestamp"]["nanos"], 123_000_000u64);
            assert!(!r["message"].as_str().unwrap().is_empty());
            let res = r["resources"].as_array().unwrap();
            assert!(!res.is_empty());
            for o in res {
                for k in ["apiVersion", "kind", "namespace", "name"] {
                    assert!(o[k].is_string(), "{k} in {o}");
                }
                assert_eq!(o["namespace"], d["metadata"]["namespace"]);
            }
            results += 1;
        }
    }
    assert_eq!(results, report.violations.len());
    // The RWOP conflict names its claim and both pods, with their uids.
    let shop = &docs[0]["results"];
    let pg = shop
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "rwop-exclusive" && r["properties"]["claim"] == "pg-data")
        .unwrap();
    let res = pg["resources"].as_array().unwrap();
    assert_eq!(res[0]["kind"], "PersistentVolumeClaim");
    assert_eq!(res[1]["kind"], "Pod");
    assert_eq!(res[1]["name"], "pg-a");
    assert_eq!(res[1]["uid"], "0c1d0000-0000-4000-8000-00000000000a");
    assert_eq!(res[2]["name"], "pg-b");
    // The Deployment result points at the Deployment with its uid.
    let dep = shop
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "workload-rwop-replicas")
        .unwrap();
    assert_eq!(dep["resources"][0]["apiVersion"], "apps/v1");
    assert_eq!(dep["resources"][0]["kind"], "Deployment");
    assert_eq!(
        dep["resources"][0]["uid"],
        "0c1d0000-0000-4000-8000-000000000041"
    );
    // Fail results come first.
    let order: Vec<&str> = shop
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    let first_warn = order.iter().position(|r| *r == "warn").unwrap();
    assert!(order[first_warn..].iter().all(|r| *r == "warn"));
}

#[test]
fn a_json_dump_reads_exactly_like_the_yaml_one() {
    // `kubectl get -o json` output takes the fast path; YAML the reader's.
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(fixtures().join("cluster.yaml")).unwrap();
    let value: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let json_path = dir.path().join("cluster.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    let (js, jo) = audit::load_for_audit(std::slice::from_ref(&json_path)).unwrap();
    let (ys, yo) = audit::load_for_audit(&[fixtures().join("cluster.yaml")]).unwrap();
    assert_eq!(js.canonical_dump(), ys.canonical_dump());
    assert_eq!(jo, yo);
    // A JSON file read fast, then a YAML one: everything is read again by
    // the reader, nothing twice.
    let (ms, mo) =
        audit::load_for_audit(&[json_path.clone(), fixtures().join("clean.yaml")]).unwrap();
    let (rs, ro) = audit::load_for_audit(&[
        fixtures().join("cluster.yaml"),
        fixtures().join("clean.yaml"),
    ])
    .unwrap();
    assert_eq!(ms.canonical_dump(), rs.canonical_dump());
    assert_eq!(mo, ro);
    let policy = Policy::default();
    assert_eq!(
        audit::render_json(&audit::audit_state(&js, &jo, &policy)),
        std::fs::read_to_string(fixtures().join("cluster.expected.json")).unwrap()
    );
}

#[test]
fn json_the_fast_path_refuses_gets_the_readers_error() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        (
            r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[]}}]}"#,
            "no containers",
        ),
        (
            r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"}}]}"#,
            "has no spec",
        ),
        (
            r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","metadata":{"name":"x"}}]}"#,
            "has no kind",
        ),
        (
            r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c"}],"volumes":3}}]}"#,
            "items[0].spec.volumes: invalid type: integer `3`, expected a sequence",
        ),
    ] {
        let p = dir.path().join("bad.json");
        std::fs::write(&p, body).unwrap();
        let e = audit::load_for_audit(std::slice::from_ref(&p))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want) && e.contains("bad.json"),
            "{e:?} should contain {want:?}"
        );
    }
    // Kinds the audit does not use are skipped, as the reader skips them.
    let p = dir.path().join("other.json");
    std::fs::write(
        &p,
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}]}"#,
    )
    .unwrap();
    let (s, o) = audit::load_for_audit(&[p]).unwrap();
    assert!(s.canonical_dump().is_empty() && o.is_empty());
}
