//! The in-cluster periodic audit of `serve --audit-interval`: audit the live
//! index, write one PolicyReport per namespace, keep the
//! `claimguard_audit_violations{rule}` gauge.
//!
//! Reports are written with server-side apply (field manager `claimguard`),
//! so a namespace's report is updated in place and its `results` list is
//! replaced whole: results that no longer hold disappear. The report of a
//! namespace with nothing left is deleted. A report whose results did not
//! change (timestamps aside) is not rewritten, so a quiet cluster costs one
//! list per interval, not one write per namespace.

use super::render::{policy_report_objects, MANAGED_BY, MANAGED_BY_LABEL, POLICY_REPORT_NAME};
use super::{audit_state, AuditReport};
use crate::cluster::SharedCluster;
use crate::objects::{Kind, Object};
use crate::policy::{Policy, Rule};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::Client;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub const CRD_MISSING_MESSAGE: &str = "PolicyReport CRD wgpolicyk8s.io/v1alpha2 not installed: install it from the kubernetes-sigs/wg-policy-prototypes repo or with Kyverno/Policy Reporter's chart";

/// Page size of the lists made at audit time.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    #[error("{CRD_MISSING_MESSAGE}")]
    CrdMissing,
    #[error("the cluster view is not synced yet; audit skipped")]
    NotSynced,
    #[error("listing {what}: {source}")]
    List {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing PolicyReport {namespace}/{POLICY_REPORT_NAME}: {source}")]
    Write {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting PolicyReport {namespace}/{POLICY_REPORT_NAME}: {source}")]
    Delete {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("the audit task failed: {0}")]
    Task(String),
}

/// What one audit pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditOutcome {
    pub violations: usize,
    /// Reports created or changed.
    pub written: usize,
    /// Reports already up to date.
    pub unchanged: usize,
    pub deleted: usize,
}

/// The current per-rule violation counts of the last audit, shared with the
/// server's `/metrics`. Wire it ONE of these ways:
/// - `registry.register("claimguard_audit_violations", "…", gauges.family())`
///   (a `Family<Vec<(String, String)>, Gauge>`, label `rule`; what the
///   server's `Metrics::register(name, help, metric)` takes), or
/// - `registry.register_collector(Box::new(gauges.clone()))` (the collector
///   names the metric `claimguard_audit_violations` itself), or
/// - read `snapshot()`.
#[derive(Debug)]
pub struct AuditGauges {
    counts: Mutex<BTreeMap<&'static str, i64>>,
    family: Family<Vec<(String, String)>, Gauge>,
}

impl Default for AuditGauges {
    fn default() -> Self {
        let family = Family::<Vec<(String, String)>, Gauge>::default();
        for r in Rule::ALL {
            // Every rule from the start: a gauge that appears only once a
            // violation exists cannot show that there were none.
            family.get_or_create(&rule_labels(r.id())).set(0);
        }
        AuditGauges {
            counts: Mutex::new(Rule::ALL.iter().map(|r| (r.id(), 0)).collect()),
            family,
        }
    }
}

fn rule_labels(rule: &str) -> Vec<(String, String)> {
    vec![("rule".to_string(), rule.to_string())]
}

impl AuditGauges {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, report: &AuditReport) {
        let by_rule = report.by_rule();
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (rule, n) in by_rule {
            c.insert(rule, n as i64);
            self.family.get_or_create(&rule_labels(rule)).set(n as i64);
        }
    }

    /// `(rule id, violations)` for every rule, zero included, sorted by id.
    pub fn snapshot(&self) -> Vec<(&'static str, i64)> {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// The gauge family (label `rule`), for `Registry::register`. Clones
    /// share the values.
    pub fn family(&self) -> Family<Vec<(String, String)>, Gauge> {
        self.family.clone()
    }
}

impl prometheus_client::collector::Collector for AuditGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "claimguard_audit_violations",
            "Violations found by the last periodic audit, by rule",
            None,
            MetricType::Gauge,
        )?;
        for (rule, n) in self.snapshot() {
            let labels = [("rule", rule)];
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn policy_report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    )
}

/// The kinds listed at audit time (the live index watches pods, PVCs, PVs,
/// StorageClasses and Namespaces; it keeps no PVC storage class and no
/// workload).
const LISTED: [(&str, &str, &str, &str, Kind); 8] = [
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        Kind::PersistentVolumeClaim,
    ),
    ("apps", "v1", "Deployment", "deployments", Kind::Deployment),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        Kind::StatefulSet,
    ),
    ("apps", "v1", "DaemonSet", "daemonsets", Kind::DaemonSet),
    ("apps", "v1", "ReplicaSet", "replicasets", Kind::ReplicaSet),
    (
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        Kind::ReplicationController,
    ),
    ("batch", "v1", "Job", "jobs", Kind::Job),
    ("batch", "v1", "CronJob", "cronjobs", Kind::CronJob),
];

/// The kinds the index keeps, for a one-off audit of a live cluster.
const INDEXED: [(&str, &str, &str, &str, Kind); 4] = [
    ("", "v1", "Namespace", "namespaces", Kind::Namespace),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        Kind::StorageClass,
    ),
    (
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        Kind::PersistentVolume,
    ),
    ("", "v1", "Pod", "pods", Kind::Pod),
];

/// Every object of one kind, paged. `Ok(None)` when the server does not
/// serve the kind (404) or the service account may not list it (403) and
/// `optional` says that is fine.
async fn list_kind(
    client: &Client,
    (group, version, kind_name, plural, kind): (&str, &str, &str, &str, Kind),
    optional: bool,
) -> Result<Option<Vec<Object>>, ReporterError> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind_name),
        plural,
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = match api.list(&lp).await {
            Ok(p) => p,
            Err(e) if optional && matches!(crate::one_shot::code(&e), Some(403) | Some(404)) => {
                tracing::warn!(kind = kind_name, error = %e, "audit: cannot list {plural}; its rules are skipped");
                return Ok(None);
            }
            Err(source) => {
                return Err(ReporterError::List {
                    what: plural.to_string(),
                    source,
                })
            }
        };
        for item in page.items {
            // A ReplicaSet a Deployment owns, a Job a CronJob owns: the
            // owner is judged; judging the child too reports it twice.
            let owned = item.metadata.owner_references.iter().flatten().any(|o| {
                o.controller == Some(true) && matches!(o.kind.as_str(), "Deployment" | "CronJob")
            });
            if owned && kind.is_workload() {
                continue;
            }
            let Ok(value) = serde_json::to_value(&item) else {
                continue;
            };
            match Object::from_value(kind, &value) {
                Ok(mut o) => {
                    if kind.is_namespaced() && o.metadata().namespace.is_none() {
                        o.metadata_mut().namespace = Some("default".into());
                    }
                    out.push(o)
                }
                Err(e) => {
                    tracing::debug!(kind = kind_name, name = ?item.metadata.name, error = %e, "audit: unreadable object skipped")
                }
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(Some(out));
        }
    }
}

/// PVCs and workloads, paged: what `audit_state` needs beside the index. A
/// workload kind the server does not serve (404) or the service account may not
/// list (403) is skipped with a warning, the same way every interval, so
/// its rules are simply absent; any other error aborts the pass, since
/// writing reports from half the objects would delete results that still
/// hold.
pub async fn list_objects(client: &Client) -> Result<Vec<Object>, ReporterError> {
    let mut out = Vec::new();
    for k in LISTED {
        // Without PVCs every claim would look missing: they must be listable.
        let optional = k.4 != Kind::PersistentVolumeClaim;
        out.extend(list_kind(client, k, optional).await?.unwrap_or_default());
    }
    Ok(out)
}

/// A one-off audit of a live cluster (`claimguard audit` without
/// `--snapshot`): list namespaces, StorageClasses, PVs and pods into a fresh
/// index, and PVCs and workloads beside it — what `load_for_audit` returns
/// for a snapshot file. Pods, PVs, StorageClasses and Namespaces must be
/// listable; workloads may be skipped (see `list_objects`).
pub async fn load_from_cluster(
    client: &Client,
) -> Result<(crate::cluster::ClusterState, Vec<Object>), ReporterError> {
    load_from_cluster_keeping(client, |_| false).await
}

/// `load_from_cluster`, also keeping whole the objects of the indexed kinds
/// `keep` accepts (`claimguard migrate --list` keeps the PersistentVolumes:
/// their CSI driver and annotations).
pub async fn load_from_cluster_keeping(
    client: &Client,
    keep: impl Fn(Kind) -> bool,
) -> Result<(crate::cluster::ClusterState, Vec<Object>), ReporterError> {
    let mut state = crate::cluster::ClusterState::new();
    let mut kept = Vec::new();
    for k in INDEXED {
        for o in list_kind(client, k, false).await?.unwrap_or_default() {
            state.apply_object(&o);
            if keep(o.kind()) {
                kept.push(o);
            }
        }
    }
    // Nodes resolve hostname pins; without them (no permission) a hostname
    // value is compared with node names, as for a node the view does not know.
    let nodes = ("", "v1", "Node", "nodes", Kind::Node);
    for o in list_kind(client, nodes, true).await?.unwrap_or_default() {
        state.apply_object(&o);
    }
    // Attachments find volumes stuck on dead nodes; without them (no
    // permission) `stale-attachment` and `rwo-stuck-attachment` stay silent.
    let attachments = (
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        Kind::VolumeAttachment,
    );
    for o in list_kind(client, attachments, true)
        .await?
        .unwrap_or_default()
    {
        state.apply_object(&o);
    }
    let mut objects = list_objects(client).await?;
    for o in &objects {
        state.apply_object(o);
    }
    objects.extend(kept);
    Ok((state, objects))
}

/// Results without their timestamps: what decides whether a report changed.
fn comparable(report: &Value) -> (Value, Value) {
    let mut results = report.get("results").cloned().unwrap_or(Value::Null);
    if let Value::Array(rs) = &mut results {
        for r in rs {
            if let Value::Object(m) = r {
                m.remove("timestamp");
            }
        }
    }
    let summary = report.get("summary").cloned().unwrap_or(Value::Null);
    (results, summary)
}

/// One audit pass: audit the live index, then bring the PolicyReports in
/// line. The gauge is updated even when the reports cannot be written.
pub async fn run_once(
    client: &Client,
    cluster: &Arc<SharedCluster>,
    policy: Arc<Policy>,
    gauges: &AuditGauges,
) -> Result<AuditOutcome, ReporterError> {
    if !cluster.is_synced() {
        return Err(ReporterError::NotSynced);
    }
    let objects = list_objects(client).await?;
    let shared = cluster.clone();
    // Pure CPU under the read lock: off the async threads, so the server's
    // other tasks keep running while a large index is walked.
    let report = tokio::task::spawn_blocking(move || {
        let state = shared.read();
        audit_state(&state, &objects, &policy)
    })
    .await
    .map_err(|e| ReporterError::Task(e.to_string()))?;
    gauges.set(&report);
    let desired = policy_report_objects(&report, SystemTime::now());

    let ar = policy_report_resource();
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let lp = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let existing = match all.list(&lp).await {
        Ok(l) => l.items,
        Err(e) if crate::one_shot::code(&e) == Some(404) => return Err(ReporterError::CrdMissing),
        Err(source) => {
            return Err(ReporterError::List {
                what: "policyreports".into(),
                source,
            })
        }
    };
    let mut current: BTreeMap<String, Value> = BTreeMap::new();
    for r in existing {
        if r.metadata.name.as_deref() != Some(POLICY_REPORT_NAME) {
            continue;
        }
        let ns = r.metadata.namespace.clone().unwrap_or_default();
        current.insert(ns, serde_json::to_value(&r).unwrap_or(Value::Null));
    }

    let mut outcome = AuditOutcome {
        violations: report.violations.len(),
        ..AuditOutcome::default()
    };
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let params = PatchParams::apply(MANAGED_BY).force();
    for obj in &desired {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        wanted.insert(ns.clone());
        if current
            .get(&ns)
            .is_some_and(|c| comparable(c) == comparable(obj))
        {
            outcome.unchanged += 1;
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        match api
            .patch(POLICY_REPORT_NAME, &params, &Patch::Apply(obj))
            .await
        {
            Ok(_) => outcome.written += 1,
            Err(e) if crate::one_shot::code(&e) == Some(404) => {
                return Err(ReporterError::CrdMissing)
            }
            Err(source) => {
                return Err(ReporterError::Write {
                    namespace: ns,
                    source,
                })
            }
        }
    }
    for ns in current.keys().filter(|ns| !wanted.contains(*ns)) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        match api
            .delete(POLICY_REPORT_NAME, &DeleteParams::default())
            .await
        {
            Ok(_) => outcome.deleted += 1,
            // Someone deleted it already: the goal is met.
            Err(e) if crate::one_shot::code(&e) == Some(404) => {}
            Err(source) => {
                return Err(ReporterError::Delete {
                    namespace: ns.clone(),
                    source,
                })
            }
        }
    }
    Ok(outcome)
}

/// Audit every `interval`, forever (abort the task to stop it). Errors are
/// logged once per interval and never end the loop: a missing CRD says how
/// to install it and the server keeps serving. `policy` is read at every
/// pass, so a hot-reloaded policy applies from the next one.
pub async fn run_periodic(
    client: Client,
    cluster: Arc<SharedCluster>,
    policy: impl Fn() -> Arc<Policy>,
    interval: Duration,
    gauges: Arc<AuditGauges>,
) {
    // The first pass runs as soon as the view is synced, not one interval
    // after start-up: a restart should not leave the reports stale for long.
    while !cluster.is_synced() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        match run_once(&client, &cluster, policy(), &gauges).await {
            Ok(o) => tracing::info!(
                violations = o.violations,
                written = o.written,
                unchanged = o.unchanged,
                deleted = o.deleted,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "audit: PolicyReports up to date"
            ),
            Err(ReporterError::NotSynced) => {
                tracing::info!("audit: cluster view not synced yet; skipped this interval")
            }
            Err(e) => tracing::error!(error = %e, "audit: {e}"),
        }
    }
}
