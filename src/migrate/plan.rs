//! The pure core of `claimguard migrate`: which claims can move from
//! ReadWriteOnce to ReadWriteOncePod ([`judge`]), where a migration stands
//! from what the API server shows ([`stage`]), the objects each write sends
//! ([`retain_and_record`], [`rebind`], [`new_claim`], [`restore`]) and the
//! steps left as kubectl commands ([`steps`]). No I/O, no clock.
//!
//! The safety argument lives in the order: the volume's reclaim policy is
//! `Retain` (step 2) before the claim is deleted (step 3), and goes back to
//! what it was (step 6) only once the new claim is Bound to the same volume.
//! While the annotation [`ANNOTATION`] is on the volume, [`stage`] refuses to
//! go on unless the policy is still `Retain`.

use crate::cluster::{pod_claims, StorageClassFacts};
use crate::cluster::{AccessModes, ClaimFacts, ClusterView, Consumer, LookupError, NamespaceMode};
use crate::objects::{self, Kind, Object, Workload};
use crate::policy::{self, Policy, Rule};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The volume annotation that marks a migration under way and holds what a
/// re-run needs (a [`Record`], as JSON).
pub const ANNOTATION: &str = "claimguard.io/migrate-from";

/// How many steps a migration has.
pub const STEPS: u8 = 6;

/// Claim annotations the PV controller writes; never copied to the new claim.
const CONTROLLER_ANNOTATIONS: &str = "pv.kubernetes.io/";

// ---- what the planner knows -------------------------------------------------

/// A PersistentVolumeClaim, as far as the migration goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub modes: AccessModes,
    pub volume_name: Option<String>,
    pub deleting: bool,
    /// `status.phase` when the source has it (a dump may not).
    pub phase: Option<String>,
}

impl Claim {
    pub fn of(pvc: &objects::PersistentVolumeClaim, phase: Option<&str>) -> Claim {
        let spec = pvc.spec.clone().unwrap_or_default();
        Claim {
            namespace: pvc
                .metadata
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into()),
            name: pvc.metadata.name.clone(),
            uid: pvc.metadata.uid.clone().filter(|u| !u.is_empty()),
            modes: AccessModes::from_names(&spec.access_modes),
            volume_name: spec.volume_name.filter(|v| !v.is_empty()),
            deleting: pvc.metadata.deletion_timestamp.is_some(),
            phase: phase.map(str::to_string),
        }
    }
}

/// `spec.claimRef` of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

/// A PersistentVolume, as far as the migration goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Volume {
    pub name: String,
    pub modes: AccessModes,
    /// The CSI driver; `None` for an in-tree or local volume.
    pub csi_driver: Option<String>,
    pub reclaim_policy: Option<String>,
    pub claim_ref: Option<ClaimRef>,
    /// `status.phase` when the source has it.
    pub phase: Option<String>,
    pub capacity: Option<String>,
    pub storage_class: Option<String>,
    /// The annotation [`ANNOTATION`]: `None` when absent, `Some(Err)` when
    /// it cannot be read.
    pub record: Option<Result<Record, String>>,
}

impl Volume {
    pub fn of(pv: &objects::PersistentVolume, phase: Option<&str>) -> Volume {
        let spec = pv.spec.clone().unwrap_or_default();
        Volume {
            name: pv.metadata.name.clone(),
            modes: AccessModes::from_names(&spec.access_modes),
            csi_driver: spec.csi.map(|c| c.driver),
            reclaim_policy: spec.persistent_volume_reclaim_policy,
            claim_ref: spec.claim_ref.map(|r| ClaimRef {
                namespace: r.namespace.unwrap_or_default(),
                name: r.name,
                uid: r.uid.filter(|u| !u.is_empty()),
            }),
            phase: phase.map(str::to_string),
            capacity: spec.capacity.get("storage").cloned(),
            storage_class: spec.storage_class_name,
            record: pv
                .metadata
                .annotations
                .get(ANNOTATION)
                .map(|s| Record::parse(s)),
        }
    }

    /// The claim (namespace, name) this volume is reserved for or bound to.
    fn reserved_for(&self, namespace: &str, name: &str) -> bool {
        self.claim_ref
            .as_ref()
            .is_some_and(|r| r.namespace == namespace && r.name == name)
    }

    fn policy(&self) -> &str {
        self.reclaim_policy.as_deref().unwrap_or("Retain")
    }
}

/// A pod that uses the claim (not Succeeded or Failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub terminating: bool,
    /// The top controller (a Deployment rather than its ReplicaSet), when known.
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

impl User {
    pub fn of(c: &Consumer<'_>) -> User {
        User {
            namespace: c.namespace.to_string(),
            name: c.name.to_string(),
            node: c.node.map(str::to_string),
            terminating: c.terminating,
            owner: None,
        }
    }

    /// `pod shop/db-0 on w1 (Deployment db)`.
    pub fn describe(&self) -> String {
        let mut s = format!("pod {}/{}", self.namespace, self.name);
        if let Some(n) = &self.node {
            s.push_str(" on ");
            s.push_str(n);
        }
        if self.terminating {
            s.push_str(" (terminating)");
        } else if let Some(o) = &self.owner {
            s.push_str(&format!(" ({} {})", o.kind, o.name));
        }
        s
    }

    /// What stops this pod: scale its workload to zero, or delete a bare pod.
    pub fn stop_command(&self) -> String {
        match &self.owner {
            Some(o) if scalable(&o.kind) => format!(
                "kubectl scale {}/{} -n {} --replicas=0",
                o.kind.to_ascii_lowercase(),
                o.name,
                self.namespace
            ),
            Some(o) if o.kind == "CronJob" => format!(
                "kubectl patch cronjob/{} -n {} -p '{{\"spec\":{{\"suspend\":true}}}}' && kubectl delete pod {} -n {}",
                o.name, self.namespace, self.name, self.namespace
            ),
            _ => format!("kubectl delete pod {} -n {}", self.name, self.namespace),
        }
    }
}

fn scalable(kind: &str) -> bool {
    matches!(
        kind,
        "Deployment" | "StatefulSet" | "ReplicaSet" | "ReplicationController"
    )
}

/// The non-finished pods of `pods` that use claim `namespace/claim`, each
/// with its top controller resolved through `workloads` (a ReplicaSet's
/// Deployment, a Job's CronJob).
pub fn users_of(
    namespace: &str,
    claim: &str,
    pods: &[objects::Pod],
    workloads: &[(Kind, Workload)],
) -> Vec<User> {
    let mut out: Vec<User> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or("default") == namespace)
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        })
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| pod_claims(s).iter().any(|(c, _)| *c == claim))
        })
        .map(|p| User {
            namespace: namespace.to_string(),
            name: p.metadata.name.clone(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            terminating: p.metadata.deletion_timestamp.is_some(),
            owner: top_owner(&p.metadata, namespace, workloads),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn controller_of(meta: &objects::ObjectMeta) -> Option<&objects::OwnerReference> {
    meta.owner_references
        .iter()
        .find(|o| o.controller == Some(true))
}

fn top_owner(
    meta: &objects::ObjectMeta,
    namespace: &str,
    workloads: &[(Kind, Workload)],
) -> Option<Owner> {
    let direct = controller_of(meta)?;
    let parent = match direct.kind.as_str() {
        "ReplicaSet" => Some((Kind::ReplicaSet, "Deployment")),
        "Job" => Some((Kind::Job, "CronJob")),
        _ => None,
    };
    if let Some((kind, parent)) = parent {
        let up = workloads
            .iter()
            .find(|(k, w)| {
                *k == kind
                    && w.metadata.name == direct.name
                    && w.metadata.namespace.as_deref().unwrap_or("default") == namespace
            })
            .and_then(|(_, w)| controller_of(&w.metadata))
            .filter(|o| o.kind == parent);
        if let Some(o) = up {
            return Some(Owner {
                kind: o.kind.clone(),
                name: o.name.clone(),
            });
        }
    }
    Some(Owner {
        kind: direct.kind.clone(),
        name: direct.name.clone(),
    })
}

/// A workload whose template uses the claim and can run two pods at once:
/// with ReadWriteOncePod only one of them could ever use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub kind: Kind,
    pub name: String,
    pub rule: Rule,
    /// The rule's message as if the claim were already ReadWriteOncePod.
    pub text: String,
}

/// A view where claim `namespace/claim` is ReadWriteOncePod and nothing else
/// exists: the workload rules judged against the claim after migration.
struct AfterMigration<'a> {
    namespace: &'a str,
    claim: &'a str,
}

impl ClusterView for AfterMigration<'_> {
    fn claim(&self, namespace: &str, name: &str) -> Result<Option<ClaimFacts>, LookupError> {
        Ok(
            (namespace == self.namespace && name == self.claim).then_some(ClaimFacts {
                effective: AccessModes::RWOP,
            }),
        )
    }
    fn consumers(&self, _: &str, _: &str) -> Result<Vec<Consumer<'_>>, LookupError> {
        Ok(Vec::new())
    }
    fn namespace_mode(&self, _: &str) -> Result<Option<NamespaceMode>, LookupError> {
        Ok(None)
    }
    fn storage_class(&self, _: &str) -> Option<StorageClassFacts<'_>> {
        None
    }
    fn default_storage_class(&self) -> Option<StorageClassFacts<'_>> {
        None
    }
}

/// A ReplicaSet a Deployment runs or a Job a CronJob started: its owner is
/// judged instead (the same marks the audit reads).
fn judged_through_owner(kind: Kind, meta: &objects::ObjectMeta) -> bool {
    let owned_by = |k: &str| controller_of(meta).is_some_and(|o| o.kind == k);
    match kind {
        Kind::ReplicaSet => owned_by("Deployment") || meta.labels.contains_key("pod-template-hash"),
        Kind::Job => {
            owned_by("CronJob")
                || meta
                    .annotations
                    .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp")
        }
        _ => false,
    }
}

/// The workloads of `namespace` whose template would break the claim once
/// it is ReadWriteOncePod: the admission rules `workload-rwop-replicas`
/// (replicas > 1, a DaemonSet, parallel Jobs, overlapping CronJobs) and
/// `rollout-deadlock` (a RollingUpdate that surges a second pod), judged by
/// the policy core itself.
pub fn runners<'a>(
    namespace: &str,
    claim: &str,
    workloads: impl IntoIterator<Item = (Kind, &'a Workload)>,
) -> Vec<Runner> {
    let view = AfterMigration { namespace, claim };
    let policy = Policy::default();
    let mut out = Vec::new();
    for (kind, w) in workloads {
        if w.metadata.namespace.as_deref().unwrap_or("default") != namespace
            || judged_through_owner(kind, &w.metadata)
        {
            continue;
        }
        let object = Object::Workload(kind, Box::new(w.clone()));
        for f in policy::findings_for(&policy, namespace, &object, &view) {
            if f.claim == claim
                && matches!(f.rule, Rule::WorkloadRwopReplicas | Rule::RolloutDeadlock)
            {
                out.push(Runner {
                    kind,
                    name: w.metadata.name.clone(),
                    rule: f.rule,
                    text: policy::message::one_line(&f.text),
                });
            }
        }
    }
    out.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
    out
}

// ---- candidates -------------------------------------------------------------

/// Why a claim is not a candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    NotBound,
    VolumeNotFound(String),
    Terminating,
    MigrationUnderWay(String),
    AlreadyRwop,
    /// The volume is ReadWriteMany or ReadOnlyMany: shared across nodes on purpose.
    MultiNode(AccessModes),
    /// The volume's modes are not exactly `[ReadWriteOnce]` (none, say).
    NotReadWriteOnce(AccessModes),
    InTree,
    UsedByPods(Vec<User>),
    WorkloadRunsTwo(Vec<Runner>),
}

impl Reason {
    /// A stable id, for `-o json` and scripts.
    pub fn id(&self) -> &'static str {
        match self {
            Reason::NotBound => "not-bound",
            Reason::VolumeNotFound(_) => "volume-not-found",
            Reason::Terminating => "terminating",
            Reason::MigrationUnderWay(_) => "migration-under-way",
            Reason::AlreadyRwop => "already-rwop",
            Reason::MultiNode(_) => "multi-node",
            Reason::NotReadWriteOnce(_) => "not-read-write-once",
            Reason::InTree => "in-tree",
            Reason::UsedByPods(_) => "used-by-pods",
            Reason::WorkloadRunsTwo(_) => "workload-runs-two",
        }
    }

    /// One line, for a person.
    pub fn message(&self, claim: &Claim) -> String {
        match self {
            Reason::NotBound => "not bound to a volume yet (Pending): nothing to migrate".into(),
            Reason::VolumeNotFound(v) => {
                format!("bound to PersistentVolume {v}, which does not exist or cannot be read")
            }
            Reason::Terminating => "being deleted".into(),
            Reason::MigrationUnderWay(v) => format!(
                "a migration is under way (annotation {ANNOTATION} on PersistentVolume {v}): finish it with claimguard migrate pvc/{} -n {} --apply",
                claim.name, claim.namespace
            ),
            Reason::AlreadyRwop => "already ReadWriteOncePod".into(),
            Reason::MultiNode(m) => format!(
                "its volume is {m}: shared across nodes on purpose, ReadWriteOncePod would allow one pod"
            ),
            Reason::NotReadWriteOnce(m) => {
                format!("its volume's access modes are [{m}], not exactly [ReadWriteOnce]")
            }
            Reason::InTree => {
                "not a CSI volume (in-tree or local): ReadWriteOncePod needs a CSI driver".into()
            }
            Reason::UsedByPods(users) => format!(
                "used by {} pods: {}; ReadWriteOncePod would let only one run",
                users.len(),
                users
                    .iter()
                    .map(User::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Reason::WorkloadRunsTwo(rs) => format!(
                "once ReadWriteOncePod: {}",
                rs.iter()
                    .map(|r| format!("[{}] {}", r.rule.id(), r.text))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Why it qualifies, one line.
    Candidate(String),
    NotCandidate(Reason),
}

/// Is the claim a candidate: bound to a CSI volume whose access modes are
/// exactly `[ReadWriteOnce]`, used by at most one non-finished pod, and used
/// by no workload template that can run two pods. `volume` is the PV it is
/// bound to (`None` when unknown); `users` its non-finished pods; `runners`
/// from [`runners`].
pub fn judge(
    claim: &Claim,
    volume: Option<&Volume>,
    users: &[User],
    runners: &[Runner],
) -> Verdict {
    let no = Verdict::NotCandidate;
    let Some(vname) = &claim.volume_name else {
        return no(Reason::NotBound);
    };
    let Some(v) = volume else {
        return no(Reason::VolumeNotFound(vname.clone()));
    };
    if claim.deleting {
        return no(Reason::Terminating);
    }
    if v.record.is_some() {
        return no(Reason::MigrationUnderWay(v.name.clone()));
    }
    if !v.reserved_for(&claim.namespace, &claim.name)
        || claim.phase.as_deref().is_some_and(|p| p != "Bound")
    {
        return no(Reason::NotBound);
    }
    if v.modes.is_rwop() {
        return no(Reason::AlreadyRwop);
    }
    if !v.modes.multi_node().is_empty() {
        return no(Reason::MultiNode(v.modes));
    }
    if v.modes != AccessModes::RWO {
        return no(Reason::NotReadWriteOnce(v.modes));
    }
    let Some(driver) = &v.csi_driver else {
        return no(Reason::InTree);
    };
    if users.len() > 1 {
        return no(Reason::UsedByPods(users.to_vec()));
    }
    if !runners.is_empty() {
        return no(Reason::WorkloadRunsTwo(runners.to_vec()));
    }
    let used = match users.first() {
        Some(u) => format!("used by {} alone", u.describe()),
        None => "used by no pod".to_string(),
    };
    Verdict::Candidate(format!(
        "CSI volume ({driver}), ReadWriteOnce only, {used}, no workload runs two pods with it"
    ))
}

// ---- where a migration stands -------------------------------------------------

/// Where a migration stands, from what the API server shows. Ordered: a run
/// only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Nothing written yet: steps 1 to 6 ahead.
    Start,
    /// The volume is kept (`Retain`) and the migration recorded: delete the claim.
    DeleteClaim,
    /// The old claim is terminating (a pod still holds it, or its finalizer runs).
    WaitGone,
    /// The old claim is gone; the PV controller has not released the volume yet.
    WaitReleased,
    /// Released: make the volume ReadWriteOncePod and free its claimRef.
    Rebind,
    /// The volume waits for its claim: create it.
    Create,
    /// The new claim exists and is not Bound yet.
    WaitBound,
    /// The new claim is Bound: restore the reclaim policy, drop the annotation.
    Restore,
    /// Both are ReadWriteOncePod and nothing is recorded: nothing to do.
    Done,
}

impl Stage {
    /// The step this stage carries out or waits in (7 for Done).
    pub fn step(self) -> u8 {
        match self {
            Stage::Start => 1,
            Stage::DeleteClaim | Stage::WaitGone | Stage::WaitReleased => 3,
            Stage::Rebind => 4,
            Stage::Create | Stage::WaitBound => 5,
            Stage::Restore => 6,
            Stage::Done => 7,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Start => "start",
            Stage::DeleteClaim => "delete-claim",
            Stage::WaitGone => "wait-claim-gone",
            Stage::WaitReleased => "wait-volume-released",
            Stage::Rebind => "rebind-volume",
            Stage::Create => "create-claim",
            Stage::WaitBound => "wait-claim-bound",
            Stage::Restore => "restore-policy",
            Stage::Done => "done",
        }
    }
}

/// Where the migration of claim `namespace/name` stands. `claim` is the
/// claim of that name now (`None`: it does not exist), `volume` the volume
/// it is bound to or that records its migration. `Err` is a state no run of
/// claimguard leaves: someone else changed something, and going on could
/// lose the volume; the text says what and what to do.
pub fn stage(
    namespace: &str,
    name: &str,
    claim: Option<&Claim>,
    volume: &Volume,
) -> Result<Stage, String> {
    let pv = &volume.name;
    let record = match &volume.record {
        None => {
            let Some(c) = claim else {
                return Err(format!(
                    "PersistentVolumeClaim {namespace}/{name} does not exist and PersistentVolume {pv} records no migration of it"
                ));
            };
            return Ok(if c.modes == AccessModes::RWOP && volume.modes == AccessModes::RWOP {
                Stage::Done
            } else {
                Stage::Start
            });
        }
        Some(Err(e)) => {
            return Err(format!(
                "PersistentVolume {pv} carries annotation {ANNOTATION} that cannot be read ({e}); it marks a migration under way: fix or remove it by hand"
            ))
        }
        Some(Ok(r)) => r,
    };
    if record.claim.namespace != namespace || record.claim.name != name {
        return Err(format!(
            "PersistentVolume {pv} records a migration of PersistentVolumeClaim {}/{}, not {namespace}/{name}",
            record.claim.namespace, record.claim.name
        ));
    }
    if volume.policy() != "Retain" {
        return Err(format!(
            "PersistentVolume {pv} records a migration under way (annotation {ANNOTATION}) but its reclaim policy is {}, not Retain: someone changed it and deleting the claim could delete the volume; set it back (kubectl patch pv {pv} -p '{{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"Retain\"}}}}') and run again",
            volume.policy()
        ));
    }
    let Some(c) = claim else {
        let free = volume
            .claim_ref
            .as_ref()
            .is_some_and(|r| r.namespace == namespace && r.name == name && r.uid.is_none());
        if free && volume.modes == AccessModes::RWOP {
            return Ok(Stage::Create);
        }
        let held = volume.claim_ref.as_ref().is_some_and(|r| r.uid.is_some());
        if held && volume.phase.as_deref() == Some("Bound") {
            return Ok(Stage::WaitReleased);
        }
        return Ok(Stage::Rebind);
    };
    if c.uid.as_deref() == Some(record.claim.uid.as_str()) {
        return Ok(if c.deleting {
            Stage::WaitGone
        } else {
            Stage::DeleteClaim
        });
    }
    // A claim of that name with another uid: the one step 5 created, or
    // someone else's.
    let ours = c.volume_name.as_deref() == Some(pv.as_str()) && c.modes == AccessModes::RWOP;
    if !ours {
        return Err(format!(
            "PersistentVolumeClaim {namespace}/{name} was re-created by someone else (uid {}, {}) while its migration was under way; the volume {pv} is kept (reclaim policy Retain): delete that claim and run again, or bind it to {pv} by hand",
            c.uid.as_deref().unwrap_or("-"),
            match &c.volume_name {
                Some(v) => format!("volume {v}"),
                None => "no volume".to_string(),
            }
        ));
    }
    if c.deleting {
        return Err(format!(
            "the new PersistentVolumeClaim {namespace}/{name} is being deleted while its migration was under way; the volume {pv} is kept (reclaim policy Retain): once it is gone, run again"
        ));
    }
    let bound = c.phase.as_deref() == Some("Bound")
        && volume.claim_ref.as_ref().and_then(|r| r.uid.as_deref()) == c.uid.as_deref()
        && volume.reserved_for(namespace, name);
    Ok(if bound {
        Stage::Restore
    } else {
        Stage::WaitBound
    })
}

// ---- the record and the objects each write sends -------------------------------

/// What a re-run needs, kept in the volume's annotation [`ANNOTATION`] from
/// step 2 to step 6: the old claim (its uid tells it from the new one), its
/// labels, annotations and spec (the new claim is made from them once the
/// old one is gone), and the volume's old reclaim policy and access modes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub claim: RecordedClaim,
    pub reclaim_policy: String,
    pub volume_access_modes: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub spec: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedClaim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Record {
    /// The record of the live claim `pvc` (the API server's JSON) and its volume.
    pub fn of(pvc: &Value, volume: &Volume) -> Result<Record, String> {
        let meta = &pvc["metadata"];
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let name = text(&meta["name"]).ok_or("the claim has no name")?;
        let uid = text(&meta["uid"]).ok_or("the claim has no uid")?;
        let namespace = text(&meta["namespace"]).unwrap_or_else(|| "default".into());
        let map = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut modes: Vec<String> = Vec::new();
        for (m, n) in [
            (AccessModes::RWO, "ReadWriteOnce"),
            (AccessModes::ROX, "ReadOnlyMany"),
            (AccessModes::RWX, "ReadWriteMany"),
            (AccessModes::RWOP, "ReadWriteOncePod"),
        ] {
            if volume.modes.contains(m) {
                modes.push(n.to_string());
            }
        }
        Ok(Record {
            claim: RecordedClaim {
                namespace,
                name,
                uid,
            },
            reclaim_policy: volume.policy().to_string(),
            volume_access_modes: modes,
            labels: map(&meta["labels"]),
            annotations: map(&meta["annotations"]),
            spec: pvc.get("spec").cloned().unwrap_or_else(|| json!({})),
        })
    }

    pub fn parse(s: &str) -> Result<Record, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Step 2: the volume with reclaim policy `Retain` and the record in its
/// annotation. Everything else, `metadata.resourceVersion` included, is
/// sent back as read: a volume changed meanwhile makes the write fail (409).
pub fn retain_and_record(pv: &Value, record: &Record) -> Value {
    let mut out = pv.clone();
    out["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
    annotations_mut(&mut out).insert(ANNOTATION.into(), json!(record.to_json()));
    out
}

/// Step 4: the volume ReadWriteOncePod, its claimRef still naming the claim
/// (so no other claim can take it) without the old claim's uid and
/// resourceVersion (so the new claim can bind).
pub fn rebind(pv: &Value, record: &Record) -> Value {
    let mut out = pv.clone();
    out["spec"]["accessModes"] = json!(["ReadWriteOncePod"]);
    let mut claim_ref = out["spec"]["claimRef"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    claim_ref.remove("uid");
    claim_ref.remove("resourceVersion");
    claim_ref.insert("kind".into(), json!("PersistentVolumeClaim"));
    claim_ref.insert("apiVersion".into(), json!("v1"));
    claim_ref.insert("namespace".into(), json!(record.claim.namespace));
    claim_ref.insert("name".into(), json!(record.claim.name));
    out["spec"]["claimRef"] = Value::Object(claim_ref);
    out
}

/// Step 5: the new claim. Same name, namespace, labels and annotations (but
/// the PV controller's `pv.kubernetes.io/*`), storage class, volume mode and
/// storage request; `accessModes: [ReadWriteOncePod]`; `volumeName` the
/// volume. The storage class is written even when the old claim had none
/// (then the volume's, else `""`): left out, the API server would fill in
/// the default class and the claim could not bind.
pub fn new_claim(record: &Record, volume: &Volume) -> Value {
    let spec = &record.spec;
    let annotations: BTreeMap<&String, &String> = record
        .annotations
        .iter()
        .filter(|(k, _)| !k.starts_with(CONTROLLER_ANNOTATIONS))
        .collect();
    let mut metadata = json!({"name": record.claim.name, "namespace": record.claim.namespace});
    if !record.labels.is_empty() {
        metadata["labels"] = json!(record.labels);
    }
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    let class = spec["storageClassName"]
        .as_str()
        .map(str::to_string)
        .or_else(|| volume.storage_class.clone())
        .unwrap_or_default();
    let mut new_spec = json!({
        "accessModes": ["ReadWriteOncePod"],
        "storageClassName": class,
        "volumeName": volume.name,
    });
    if let Some(mode) = spec["volumeMode"].as_str() {
        new_spec["volumeMode"] = json!(mode);
    }
    let request = spec
        .pointer("/resources/requests/storage")
        .cloned()
        .or_else(|| volume.capacity.clone().map(Value::from));
    if let Some(r) = request {
        new_spec["resources"] = json!({"requests": {"storage": r}});
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": new_spec,
    })
}

/// Step 6: the old reclaim policy back, the annotation gone.
pub fn restore(pv: &Value, record: &Record) -> Value {
    let mut out = pv.clone();
    out["spec"]["persistentVolumeReclaimPolicy"] = json!(record.reclaim_policy);
    annotations_mut(&mut out).remove(ANNOTATION);
    if out["metadata"]["annotations"]
        .as_object()
        .is_some_and(|m| m.is_empty())
    {
        if let Some(m) = out["metadata"].as_object_mut() {
            m.remove("annotations");
        }
    }
    out
}

fn annotations_mut(o: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !o["metadata"]["annotations"].is_object() {
        o["metadata"]["annotations"] = json!({});
    }
    o["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations were just made an object")
}

// ---- the plan as kubectl commands ------------------------------------------------

/// One step of the plan: what it does and the commands that do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub step: u8,
    pub title: String,
    pub commands: Vec<String>,
}

/// Quote for a POSIX shell: the text between single quotes, each `'` as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The steps left from `from`, as commands a person can paste. `users` are
/// the pods that use the claim now (step 1 stops them).
pub fn steps(from: Stage, record: &Record, volume: &Volume, users: &[User]) -> Vec<Step> {
    let ns = &record.claim.namespace;
    let name = &record.claim.name;
    let pv = &volume.name;
    let mut out = Vec::new();
    let first = from.step();
    let mut push = |step: u8, title: String, commands: Vec<String>| {
        if step >= first {
            out.push(Step {
                step,
                title,
                commands,
            });
        }
    };
    let mut stop: Vec<String> = users.iter().map(User::stop_command).collect();
    stop.dedup();
    stop.push(format!(
        "kubectl describe pvc {name} -n {ns}   # Used By: <none>"
    ));
    push(
        1,
        if users.is_empty() {
            "No pod may use the claim while it is re-created (none does now).".to_string()
        } else {
            format!(
                "No pod may use the claim while it is re-created: stop {}.",
                users
                    .iter()
                    .map(User::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        stop,
    );
    push(
        2,
        format!(
            "Keep the volume whatever happens to the claim: reclaim policy Retain (now {}), and remember the claim in annotation {ANNOTATION}.",
            record.reclaim_policy
        ),
        vec![
            format!(
                "kubectl patch pv {pv} -p '{{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"Retain\"}}}}'"
            ),
            format!(
                "kubectl annotate pv {pv} {ANNOTATION}={}",
                shell_quote(&record.to_json())
            ),
        ],
    );
    push(
        3,
        "Delete the claim and wait until it is gone; the volume stays, Released.".to_string(),
        vec![
            format!("kubectl delete pvc {name} -n {ns} --ignore-not-found --wait=true"),
            format!(
                "kubectl wait pv/{pv} --for=jsonpath='{{.status.phase}}'=Released --timeout=5m"
            ),
        ],
    );
    push(
        4,
        format!("Make the volume ReadWriteOncePod; its claimRef keeps {ns}/{name} and drops the old uid."),
        vec![format!(
            "kubectl patch pv {pv} -p '{{\"spec\":{{\"accessModes\":[\"ReadWriteOncePod\"],\"claimRef\":{{\"uid\":null,\"resourceVersion\":null}}}}}}'"
        )],
    );
    let manifest = serde_yaml_ng::to_string(&new_claim(record, volume)).unwrap_or_default();
    push(
        5,
        format!("Create the claim again, ReadWriteOncePod and bound to {pv}; wait until it is Bound."),
        vec![
            format!("kubectl create -f - <<'EOF'\n{}EOF", manifest),
            format!(
                "kubectl wait pvc/{name} -n {ns} --for=jsonpath='{{.status.phase}}'=Bound --timeout=5m"
            ),
        ],
    );
    push(
        6,
        format!(
            "Give the volume its reclaim policy back ({}) and remove the annotation.",
            record.reclaim_policy
        ),
        vec![format!(
            "kubectl patch pv {pv} -p '{{\"spec\":{{\"persistentVolumeReclaimPolicy\":\"{}\"}},\"metadata\":{{\"annotations\":{{\"{ANNOTATION}\":null}}}}}}'",
            record.reclaim_policy
        )],
    );
    out
}

#[cfg(test)]
mod tests;
