//! Audit output: a table for people, stable JSON for scripts, PolicyReports
//! for Policy Reporter and friends.

use super::{AuditReport, Severity, Violation};
use crate::objects::Kind;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// `apiVersion` of the PolicyReport CRD (kubernetes-sigs/wg-policy-prototypes).
pub const POLICY_REPORT_API: &str = "wgpolicyk8s.io/v1alpha2";
/// Every namespace gets one report of this name: written in place, never duplicated.
pub const POLICY_REPORT_NAME: &str = "claimguard";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "claimguard";

/// A table a person reads: RULE, SEVERITY, NAMESPACE, OBJECT (kind/name),
/// CLAIM, MESSAGE, columns aligned with spaces, then a one-line summary.
pub fn render_text(report: &AuditReport) -> String {
    if report.violations.is_empty() {
        return "No violations found.\n".to_string();
    }
    let header = [
        "RULE",
        "SEVERITY",
        "NAMESPACE",
        "OBJECT",
        "CLAIM",
        "MESSAGE",
    ];
    let rows: Vec<[String; 6]> = report
        .violations
        .iter()
        .map(|v| {
            [
                v.rule.id().to_string(),
                v.severity.as_str().to_string(),
                v.namespace.clone(),
                format!("{}/{}", v.kind.as_str(), v.name),
                v.claim.clone(),
                v.message.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == cells.len() - 1 {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
    let fail = count(report, Severity::Fail);
    let warn = count(report, Severity::Warn);
    let n = report.violations.len();
    out.push_str(&format!(
        "\n{n} violation{} ({fail} fail, {warn} warn)\n",
        if n == 1 { "" } else { "s" }
    ));
    out
}

fn count(report: &AuditReport, s: Severity) -> usize {
    report.violations.iter().filter(|v| v.severity == s).count()
}

/// Stable JSON (pretty-printed, keys in the order shown, a newline at the end):
///
/// ```json
/// {
///   "summary": {
///     "violations": 2,
///     "byRule": {"claim-not-found": 0, "pvc-mode-unsupported": 0, "rollout-deadlock": 0,
///                "rwo-cross-node": 1, "rwo-shared-writer": 0, "rwop-exclusive": 1,
///                "rwop-terminating-holder": 0, "workload-rwo-replicas": 0,
///                "workload-rwop-replicas": 0}
///   },
///   "violations": [
///     {"rule": "rwop-exclusive", "severity": "fail", "namespace": "shop",
///      "kind": "PersistentVolumeClaim", "name": "pg-data", "claim": "pg-data",
///      "message": "PersistentVolumeClaim \"pg-data\" is ReadWriteOncePod but …",
///      "pods": [{"namespace": "shop", "name": "pg-0", "node": "worker-1"},
///               {"namespace": "shop", "name": "pg-1", "node": null}]}
///   ]
/// }
/// ```
///
/// `byRule` lists every rule id, zero included. `severity` is `fail` (the
/// rule's action is `deny`) or `warn`. Pod rules are one violation per claim
/// (`kind: PersistentVolumeClaim`, `pods` = every pod involved, `node` null
/// when unscheduled); PVC and workload rules name their object and have
/// `pods: []`. Violations are sorted by namespace, kind, name, rule, claim.
/// Fields may be added; none will be renamed or removed.
pub fn render_json(report: &AuditReport) -> String {
    let out = JsonReport {
        summary: JsonSummary {
            violations: report.violations.len(),
            by_rule: report.by_rule(),
        },
        violations: report
            .violations
            .iter()
            .map(|v| JsonViolation {
                rule: v.rule.id(),
                severity: v.severity.as_str(),
                namespace: &v.namespace,
                kind: v.kind.as_str(),
                name: &v.name,
                claim: &v.claim,
                message: &v.message,
                pods: v
                    .pods
                    .iter()
                    .map(|p| JsonPod {
                        namespace: &p.namespace,
                        name: &p.name,
                        node: p.node.as_deref(),
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&out).unwrap_or_default() + "\n"
}

// The JSON shape, declared field by field so the key order is part of the
// contract rather than an accident of a map.
#[derive(Serialize)]
struct JsonReport<'a> {
    summary: JsonSummary,
    violations: Vec<JsonViolation<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSummary {
    violations: usize,
    by_rule: BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct JsonViolation<'a> {
    rule: &'static str,
    severity: &'static str,
    namespace: &'a str,
    kind: &'static str,
    name: &'a str,
    claim: &'a str,
    message: &'a str,
    pods: Vec<JsonPod<'a>>,
}

#[derive(Serialize)]
struct JsonPod<'a> {
    namespace: &'a str,
    name: &'a str,
    node: Option<&'a str>,
}

fn api_version(kind: Kind) -> &'static str {
    match kind {
        Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet | Kind::DaemonSet => "apps/v1",
        Kind::Job | Kind::CronJob => "batch/v1",
        Kind::StorageClass => "storage.k8s.io/v1",
        _ => "v1",
    }
}

fn object_ref(api_version: &str, kind: &str, ns: &str, name: &str, uid: Option<&str>) -> Value {
    let mut r = json!({
        "apiVersion": api_version,
        "kind": kind,
        "namespace": ns,
        "name": name,
    });
    if let Some(uid) = uid {
        r["uid"] = json!(uid);
    }
    r
}

/// The objects a result is about: the object itself (for claim-level
/// results the claim, unless it is the missing one), then the pods.
fn resources(v: &Violation) -> Vec<Value> {
    let mut out = Vec::new();
    if !(v.kind == Kind::PersistentVolumeClaim && v.rule == crate::policy::Rule::ClaimNotFound) {
        out.push(object_ref(
            api_version(v.kind),
            v.kind.as_str(),
            &v.namespace,
            &v.name,
            v.uid.as_deref(),
        ));
    }
    for p in &v.pods {
        out.push(object_ref(
            "v1",
            "Pod",
            &p.namespace,
            &p.name,
            p.uid.as_deref(),
        ));
    }
    out
}

fn timestamp(now: SystemTime) -> Value {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    json!({"seconds": d.as_secs(), "nanos": d.subsec_nanos()})
}

/// Most results one report holds. An object in etcd is capped at about
/// 1.5 MB; at a few hundred bytes a result this stays well below it.
pub const MAX_RESULTS_PER_REPORT: usize = 2000;

/// One `wgpolicyk8s.io/v1alpha2` PolicyReport per namespace with
/// violations, named `claimguard`, sorted by namespace. Each violation is
/// one result: `policy: claimguard`, `rule`, `result: fail|warn`,
/// `severity: high|medium`, `source: claimguard`, `scored: true`,
/// `timestamp`, `resources` and `properties.claim`. A namespace with more
/// than `MAX_RESULTS_PER_REPORT` violations keeps the first ones (fail
/// first) and says so in `properties` of the last result.
pub fn policy_report_objects(report: &AuditReport, now: SystemTime) -> Vec<Value> {
    let mut per_ns: BTreeMap<&str, Vec<&Violation>> = BTreeMap::new();
    for v in &report.violations {
        // A stale attachment of a volume no claim is bound to has no
        // namespace: it belongs in a ClusterPolicyReport, which claimguard
        // does not write; `claimguard audit` still lists it.
        if v.namespace.is_empty() {
            continue;
        }
        per_ns.entry(&v.namespace).or_default().push(v);
    }
    let ts = timestamp(now);
    per_ns
        .into_iter()
        .map(|(ns, mut vs)| {
            let total = vs.len();
            // Stable sort: fail before warn, otherwise the report's order.
            vs.sort_by_key(|v| v.severity);
            vs.truncate(MAX_RESULTS_PER_REPORT);
            let fail = vs.iter().filter(|v| v.severity == Severity::Fail).count();
            let warn = vs.len() - fail;
            let mut results: Vec<Value> = vs
                .iter()
                .map(|v| {
                    json!({
                        "policy": POLICY_REPORT_NAME,
                        "rule": v.rule.id(),
                        "result": v.severity.as_str(),
                        "severity": match v.severity { Severity::Fail => "high", Severity::Warn => "medium" },
                        "message": v.message,
                        "source": MANAGED_BY,
                        "scored": true,
                        "timestamp": ts,
                        "resources": resources(v),
                        "properties": {"claim": v.claim},
                    })
                })
                .collect();
            if total > vs.len() {
                if let Some(last) = results.last_mut() {
                    last["properties"]["truncated"] =
                        json!(format!("{} more violations not listed", total - vs.len()));
                }
            }
            json!({
                "apiVersion": POLICY_REPORT_API,
                "kind": "PolicyReport",
                "metadata": {
                    "name": POLICY_REPORT_NAME,
                    "namespace": ns,
                    "labels": {MANAGED_BY_LABEL: MANAGED_BY},
                },
                "summary": {"pass": 0, "fail": fail, "warn": warn, "error": 0, "skip": 0},
                "results": results,
            })
        })
        .collect()
}

/// `--output policyreport`: the reports as a YAML stream (`---` between
/// documents), ready for `kubectl apply -f -`. Empty when nothing was found.
pub fn render_policy_reports(report: &AuditReport, now: SystemTime) -> String {
    policy_report_objects(report, now)
        .iter()
        .filter_map(|o| serde_yaml_ng::to_string(o).ok())
        .map(|y| format!("---\n{y}"))
        .collect()
}
