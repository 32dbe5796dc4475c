//! `claimguard audit`: the violations that already exist in a cluster.
//!
//! Admission judges one new object against the cluster; an audit judges every
//! existing pod against the others, every PVC against its StorageClass and
//! every workload against the claims it uses.
//!
//! Pod rules are judged by the same function as admission
//! (`policy::judge_claim_use`): every non-terminating pod that uses a claim,
//! with its pin (its node, or the hostname pin of a pod not scheduled yet)
//! and its read-only and allow-shared-writers flags, against the other pods
//! that use the claim. The findings are then reported **per claim**: one
//! violation per claim and rule, listing every pod judged and every pod the
//! findings named. The walk costs O(consumers²) per claim, and nearly every
//! claim has one to three. Terminating pods are never judged (they are
//! leaving), only counted as holders, as admission counts them.
//! `tests/audit_rules.rs` checks on generated clusters that a claim gets a
//! violation exactly when some pod judged by `policy::findings_for` does.
//!
//! PVCs and workloads go through `policy::findings_for` unchanged.

mod render;
pub mod reporter;

pub use render::{
    policy_report_objects, render_json, render_policy_reports, render_text, POLICY_REPORT_API,
    POLICY_REPORT_NAME,
};

use crate::cluster::{snapshot, ClusterState, ClusterView, Consumer, NamespaceMode, SnapshotError};
use crate::objects::{Kind, Object, PodSpec};
use crate::policy::{self, message, Action, ClaimUser, Pin, Policy, Rule};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// How bad a violation is: `fail` when the rule's action is `deny`, `warn`
/// for `warn` and `audit`. Rules whose action is `off` are not reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Fail,
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fail => "fail",
            Severity::Warn => "warn",
        }
    }

    fn of(action: Action) -> Option<Severity> {
        match action {
            Action::Off => None,
            Action::Deny => Some(Severity::Fail),
            Action::Warn | Action::Audit => Some(Severity::Warn),
        }
    }
}

/// A pod named by a violation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub uid: Option<String>,
}

impl PodRef {
    fn of(c: &Consumer<'_>) -> PodRef {
        PodRef {
            namespace: c.namespace.to_string(),
            name: c.name.to_string(),
            node: c.node.map(str::to_string),
            uid: c.uid.map(|u| u.to_string()),
        }
    }
}

/// One violation. Pod rules are reported once per claim: `kind` is
/// `PersistentVolumeClaim`, `name` the claim, `pods` every pod involved.
/// PVC and workload rules name the object itself and list no pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub severity: Severity,
    pub namespace: String,
    pub kind: Kind,
    pub name: String,
    /// The object's uid when known (PVCs and workloads from the API or a dump).
    pub uid: Option<String>,
    pub claim: String,
    /// One line, without the `[rule-id]` prefix (the rule is its own field).
    pub message: String,
    /// Sorted by namespace, then name.
    pub pods: Vec<PodRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Sorted by namespace, kind, name, rule, claim: stable output.
    pub violations: Vec<Violation>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Violations per rule id, every rule listed (zero when none): what the
    /// JSON summary and the `claimguard_audit_violations` gauge show.
    pub fn by_rule(&self) -> BTreeMap<&'static str, usize> {
        let mut m: BTreeMap<&'static str, usize> = Rule::ALL.iter().map(|r| (r.id(), 0)).collect();
        for v in &self.violations {
            *m.entry(v.rule.id()).or_default() += 1;
        }
        m
    }
}

/// Is a namespace outside the audit: exempt by policy or labelled
/// `claimguard.io/mode: off`.
fn skipped(policy: &Policy, state: &ClusterState, ns: &str) -> bool {
    policy.is_exempt(ns) || matches!(state.namespace_mode(ns), Ok(Some(NamespaceMode::Off)))
}

/// Audit the cluster. `objects` are the objects the index does not keep
/// whole: PersistentVolumeClaims (for `pvc-mode-unsupported`) and workloads
/// (Deployment, StatefulSet, …); any other kind in it is ignored (the index
/// already has pods, PVs, StorageClasses and Namespaces). Pure: no I/O.
pub fn audit_state(state: &ClusterState, objects: &[Object], policy: &Policy) -> AuditReport {
    let mut out = Vec::new();
    let mut skip_cache: HashMap<&str, bool> = HashMap::new();
    for (ns, claim) in state.used_claims() {
        let skip = *skip_cache
            .entry(ns)
            .or_insert_with(|| skipped(policy, state, ns));
        if !skip {
            audit_claim(state, policy, ns, claim, &mut out);
        }
    }
    audit_attachments(state, policy, &mut out);
    for o in objects {
        let kind = o.kind();
        if kind != Kind::PersistentVolumeClaim && !kind.is_workload() {
            continue;
        }
        let meta = o.metadata();
        if owned_by_controller(kind, meta) {
            continue;
        }
        let ns = meta.namespace.as_deref().unwrap_or("default");
        if skipped(policy, state, ns) {
            continue;
        }
        for f in policy::findings_for(policy, ns, o, state) {
            // A PVC's own rwop-exclusive is the claim-level one above, seen
            // from the claim: report it once. The local view never fails a
            // lookup, so lookup-error cannot come up.
            let keep = match kind {
                Kind::PersistentVolumeClaim => f.rule == Rule::PvcModeUnsupported,
                _ => f.rule != Rule::LookupError,
            };
            if !keep {
                continue;
            }
            let Some(severity) = Severity::of(policy.action(f.rule)) else {
                continue;
            };
            out.push(Violation {
                rule: f.rule,
                severity,
                namespace: ns.to_string(),
                kind,
                name: meta.name.clone(),
                uid: meta.uid.clone().filter(|u| !u.is_empty()),
                claim: f.claim,
                message: message::one_line(&f.text),
                pods: Vec::new(),
            });
        }
    }
    out.sort_by(|a, b| {
        (
            &a.namespace,
            a.kind.as_str(),
            &a.name,
            a.rule.id(),
            &a.claim,
        )
            .cmp(&(
                &b.namespace,
                b.kind.as_str(),
                &b.name,
                b.rule.id(),
                &b.claim,
            ))
    });
    AuditReport { violations: out }
}

/// A ReplicaSet of a Deployment (its controller labels it
/// `pod-template-hash`) or a Job a CronJob started (annotated with the
/// scheduled time): the owner is judged, and judging the child as well
/// would report one problem twice. A dump keeps no owner references in the
/// narrow metadata, so the controllers' own marks decide.
fn owned_by_controller(kind: Kind, meta: &crate::objects::ObjectMeta) -> bool {
    match kind {
        Kind::ReplicaSet => meta.labels.contains_key("pod-template-hash"),
        Kind::Job => meta
            .annotations
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp"),
        _ => false,
    }
}

/// The pod rules for one claim, each reported at most once.
fn audit_claim(
    state: &ClusterState,
    policy: &Policy,
    ns: &str,
    claim: &str,
    out: &mut Vec<Violation>,
) {
    let Ok(consumers) = state.consumers(ns, claim) else {
        return;
    };
    let (terminating, active): (Vec<Consumer<'_>>, Vec<Consumer<'_>>) =
        consumers.iter().partition(|c| c.terminating);
    if active.is_empty() {
        return;
    }
    let mut emit = |rule: Rule, pods: &[Consumer<'_>], text: String| {
        let Some(severity) = Severity::of(policy.action(rule)) else {
            return;
        };
        let mut pods: Vec<PodRef> = pods.iter().map(PodRef::of).collect();
        pods.sort();
        out.push(Violation {
            rule,
            severity,
            namespace: ns.to_string(),
            kind: Kind::PersistentVolumeClaim,
            name: claim.to_string(),
            uid: None,
            claim: claim.to_string(),
            message: message::one_line(&text),
            pods,
        });
    };
    let modes = match state.claim(ns, claim) {
        Ok(Some(f)) => f.effective,
        Ok(None) => {
            emit(
                Rule::ClaimNotFound,
                &active,
                format!(
                    "PersistentVolumeClaim \"{claim}\" does not exist in namespace {ns}; {} cannot start until it is created: fix the claimName or create the claim",
                    message::pods_at(&sorted(&active))
                ),
            );
            return;
        }
        Err(_) => return,
    };
    if !modes.is_rwop() && !modes.is_single_node() {
        return;
    }
    // Every non-terminating pod, judged by the admission rules against the
    // others: the one rule set. Per rule: the pods judged (`subjects`) and
    // the pods their findings name.
    let empty = PodSpec::default();
    let mut fired: BTreeMap<Rule, (Vec<Consumer<'_>>, Vec<Consumer<'_>>)> = BTreeMap::new();
    for (i, c) in consumers.iter().enumerate() {
        if c.terminating {
            continue;
        }
        let others: Vec<Consumer<'_>> = consumers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| *o)
            .collect();
        let scheduled;
        let spec = match c.node {
            Some(n) => {
                scheduled = PodSpec {
                    node_name: Some(n.to_string()),
                    ..PodSpec::default()
                };
                &scheduled
            }
            None => state.pod_pin(c.namespace, c.name).unwrap_or(&empty),
        };
        let user = ClaimUser {
            pin: Pin::new(spec, state),
            read_only: c.read_only,
            allow_shared_writers: state.allows_shared_writers(c.namespace, c.name),
        };
        if let Some(f) = policy::judge_claim_use(ns, claim, modes, &user, &others, state) {
            let entry = fired.entry(f.rule).or_default();
            entry.0.push(*c);
            entry.1.extend(f.pods);
        }
    }
    for (rule, (subjects, named)) in fired {
        let mut pods: Vec<Consumer<'_>> = subjects.iter().chain(&named).copied().collect();
        pods.sort_by(|a, b| a.name.cmp(b.name));
        pods.dedup_by(|a, b| a.name == b.name);
        let text = match rule {
            Rule::RwopExclusive => format!(
                "PersistentVolumeClaim \"{claim}\" is ReadWriteOncePod but {} non-terminating pods use it: {}; only one can mount it, the others stay Pending or fail to mount: keep one and delete the rest, or give each its own claim",
                active.len(),
                message::pods_at(&sorted(&pods))
            ),
            Rule::RwopTerminatingHolder => format!(
                "PersistentVolumeClaim \"{claim}\" is ReadWriteOncePod and still held by terminating {}; {} waits until it is gone",
                message::pods_at(&sorted(&terminating)),
                message::pod_at(&active[0])
            ),
            Rule::RwoCrossNode => cross_node_text(state, claim, &pods),
            Rule::RwoReadOnlyPlacement => {
                let holders = dedup(named.clone());
                let node = holders.iter().find_map(|c| c.node).unwrap_or_default();
                let (is, they, them) = verbs(subjects.len());
                format!(
                    "PersistentVolumeClaim \"{claim}\" is ReadWriteOnce and attached to node {node} for {}; read-only {} {is} not pinned there: scheduled elsewhere {they} would hang with a Multi-Attach error; pin {them} with nodeSelector kubernetes.io/hostname: {}",
                    message::pods_at(&sorted(&holders)),
                    message::pods_at(&sorted(&subjects)),
                    policy::hostname_of(state, node)
                )
            }
            Rule::RwoSharedWriter => format!(
                "PersistentVolumeClaim \"{claim}\" is ReadWriteOnce and written by {} read-write pods at once: {}; they can overwrite each other and must all run on the node it is attached to: mount it readOnly in all but one or annotate {}",
                pods.len(),
                message::pods_at(&sorted(&pods)),
                policy::ALLOW_SHARED_WRITERS
            ),
            // Reported once per attachment, with every pod that waits for
            // it, as `stale-attachment` (`audit_attachments`).
            Rule::RwoStuckAttachment => continue,
            _ => continue,
        };
        emit(rule, &pods, text);
    }
}

/// `stale-attachment`: every stuck attachment of a ReadWriteOncePod or
/// single-node volume, on the claim bound to it (on the PersistentVolume when
/// no claim is), naming the pods that wait for it: the claim's users that
/// are not on the attachment's node.
fn audit_attachments(state: &ClusterState, policy: &Policy, out: &mut Vec<Violation>) {
    let Some(severity) = Severity::of(policy.action(Rule::StaleAttachment)) else {
        return;
    };
    for (a, modes, claim) in state.stuck_attachments() {
        let (namespace, kind, name, claim_name, waiting) = match claim {
            Some((ns, c)) => {
                if skipped(policy, state, ns) {
                    continue;
                }
                let users = state.consumers(ns, c).unwrap_or_default();
                let waiting: Vec<Consumer<'_>> = users
                    .into_iter()
                    .filter(|u| !u.terminating && u.node != Some(a.node))
                    .collect();
                (ns, Kind::PersistentVolumeClaim, c, c, waiting)
            }
            None => (
                "",
                Kind::PersistentVolume,
                a.volume.as_str(),
                "",
                Vec::new(),
            ),
        };
        let text = stale_attachment_text(&a, modes, claim.map(|c| c.1), &waiting);
        let mut pods: Vec<PodRef> = waiting.iter().map(PodRef::of).collect();
        pods.sort();
        out.push(Violation {
            rule: Rule::StaleAttachment,
            severity,
            namespace: namespace.to_string(),
            kind,
            name: name.to_string(),
            uid: None,
            claim: claim_name.to_string(),
            message: message::one_line(&text),
            pods,
        });
    }
}

fn stale_attachment_text(
    a: &crate::cluster::Attachment<'_>,
    modes: crate::cluster::AccessModes,
    claim: Option<&str>,
    waiting: &[Consumer<'_>],
) -> String {
    let mode = if modes.is_rwop() {
        "ReadWriteOncePod"
    } else {
        "ReadWriteOnce"
    };
    let of = match claim {
        Some(c) => format!(" of PersistentVolumeClaim \"{c}\""),
        None => String::new(),
    };
    let node = a.node;
    let state = match (a.detach_error, a.node_health) {
        (Some(e), _) => format!("whose detach fails: {}", message::one_line(e)),
        (None, Some(h)) => h.describe(),
        (None, None) => "down".to_string(),
    };
    let waits = if waiting.is_empty() {
        "no pod waits for it yet, but any pod that uses it elsewhere will hang".to_string()
    } else {
        format!(
            "{} wait{} for it (Multi-Attach error)",
            message::pods_at(&sorted(waiting)),
            if waiting.len() == 1 { "s" } else { "" }
        )
    };
    let fix = if a.detach_error.is_some() {
        format!("kubectl describe volumeattachment {}", a.name)
    } else {
        format!(
            "if {node} is shut down, kubectl taint node {node} {}:NoExecute",
            crate::cluster::OUT_OF_SERVICE_TAINT
        )
    };
    format!(
        "{mode} volume {}{of} is still attached to node {node}, {state}; {waits}: {fix}",
        a.volume
    )
}

fn dedup<'a>(mut cs: Vec<Consumer<'a>>) -> Vec<Consumer<'a>> {
    cs.sort_by(|a, b| a.name.cmp(b.name));
    cs.dedup_by(|a, b| a.name == b.name);
    cs
}

/// A single-node claim some pods can never attach: scheduled pods on two or
/// more nodes (the Multi-Attach hang), or pending pods pinned away from it.
fn cross_node_text(state: &ClusterState, claim: &str, pods: &[Consumer<'_>]) -> String {
    let mut nodes: Vec<&str> = pods.iter().filter_map(|c| c.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let placed: Vec<Consumer<'_>> = pods.iter().filter(|c| c.node.is_some()).copied().collect();
    let pending: Vec<Consumer<'_>> = pods.iter().filter(|c| c.node.is_none()).copied().collect();
    match nodes[..] {
        [node] if !pending.is_empty() => {
            let (is, they, them) = verbs(pending.len());
            format!(
                "PersistentVolumeClaim \"{claim}\" is ReadWriteOnce and attached to node {node} for {}, but {} {is} pinned to other nodes: {they} can never attach (Multi-Attach error); pin {them} with nodeSelector kubernetes.io/hostname: {} or use a ReadWriteMany claim",
                message::pods_at(&sorted(&placed)),
                message::pods_at(&sorted(&pending)),
                policy::hostname_of(state, node)
            )
        }
        _ => format!(
            "PersistentVolumeClaim \"{claim}\" is ReadWriteOnce but its pods sit on {} nodes ({}): {}; it attaches to one node only, so the pods on the other nodes hang in ContainerCreating with a Multi-Attach error: run them on one node or use a ReadWriteMany claim",
            nodes.len(),
            list_nodes(&nodes),
            message::pods_at(&sorted(pods))
        ),
    }
}

/// ("is", "it", "it") for one pod, ("are", "they", "them") for more.
fn verbs(n: usize) -> (&'static str, &'static str, &'static str) {
    if n == 1 {
        ("is", "it", "it")
    } else {
        ("are", "they", "them")
    }
}

fn sorted<'a>(cs: &[Consumer<'a>]) -> Vec<Consumer<'a>> {
    let mut v = cs.to_vec();
    // Scheduled pods first, by node: the order a person checks them in.
    v.sort_by(|a, b| (a.node.is_none(), a.node, a.name).cmp(&(b.node.is_none(), b.node, b.name)));
    v
}

fn list_nodes(nodes: &[&str]) -> String {
    const SHOWN: usize = 3;
    let mut s = nodes
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if nodes.len() > SHOWN {
        s.push_str(&format!(" and {} more", nodes.len() - SHOWN));
    }
    s
}

/// Read snapshot files (what `kubectl get … -A -o yaml|json` prints): pods,
/// PVs, StorageClasses, Namespaces and PVCs go into the index; PVCs and
/// workloads are also kept whole for `audit_state`.
///
/// Snapshot files as an audit needs them: the index, plus the PVCs and
/// workloads it judges. Reading is `snapshot::load_into` (a fast path for
/// JSON `List` dumps, the reader's errors word for word).
pub fn load_for_audit(paths: &[PathBuf]) -> Result<(ClusterState, Vec<Object>), SnapshotError> {
    snapshot::load_into(
        paths,
        |(state, objects): &mut (ClusterState, Vec<Object>), o| {
            state.apply_object(&o);
            if o.kind() == Kind::PersistentVolumeClaim || o.kind().is_workload() {
                objects.push(o);
            }
        },
    )
}
