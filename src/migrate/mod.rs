//! `claimguard migrate`: move a ReadWriteOnce claim to ReadWriteOncePod
//! without ever losing its volume (DESIGN.md, *From RWO to RWOP*).
//!
//! - `--list [-n NS | -A]`: the candidates, from the same cluster view as
//!   `audit` (live, or `--snapshot`), and with `-v` or `-o json` why the
//!   other claims are not.
//! - `pvc/NAME`: the plan as kubectl commands; nothing is written.
//! - `pvc/NAME --apply`: the plan carried out through the API, each step
//!   checked, resumable from wherever it stopped ([`apply`]).
//!
//! [`plan`] is the pure core (verdicts, stages, the objects each write
//! sends, the kubectl commands); `live` talks to the API server; `apply`
//! drives a migration step by step; `render` prints.

mod apply;
mod live;
pub mod plan;
mod render;

pub use apply::{Applied, ApplyOptions};
pub use render::{render_list_json, render_list_text, render_plan_json, render_plan_text};

use crate::cluster::{snapshot, ClusterState, ClusterView, SnapshotError};
use crate::explain::ExplainError;
use crate::objects::{self, Kind, Object, Workload};
use plan::{Claim, Reason, Record, Stage, Step, User, Verdict, Volume};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything that ends `migrate` with exit status 2, each one line.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Usage(String),
    #[error("persistentvolumeclaims \"{name}\" not found in namespace {namespace}")]
    NotFound { namespace: String, name: String },
    #[error("cannot read {what}: {reason}")]
    Unreadable { what: String, reason: String },
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{0}")]
    Connect(#[from] ExplainError),
    #[error("forbidden: cannot {verb} {what} ({reason}); migrate needs get/list on persistentvolumeclaims, persistentvolumes and pods, list on workloads, and update on persistentvolumes, delete/create on persistentvolumeclaims")]
    Forbidden {
        verb: &'static str,
        what: String,
        reason: String,
    },
    #[error("cannot reach the API server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the API server refused to {verb} {what}: {reason}")]
    Api {
        verb: &'static str,
        what: String,
        reason: String,
    },
    /// A state no run of claimguard leaves: someone else changed something.
    #[error("{0}")]
    Inconsistent(String),
    #[error("step {step}/6 stopped: {what} was changed by someone else since claimguard read it ({reason}); nothing was overwritten; {safety}: look at it (kubectl get {get}), then run `{resume}` again")]
    Conflict {
        step: u8,
        what: String,
        get: String,
        reason: String,
        safety: String,
        resume: String,
    },
    #[error("step {step}/6 ({doing}) failed: {reason}; {safety}; run `{resume}` to resume")]
    StepFailed {
        step: u8,
        doing: String,
        reason: String,
        safety: String,
        resume: String,
    },
    #[error("step {step}/6: {what} after {waited}; {safety}; {hint}, then run `{resume}` again")]
    Timeout {
        step: u8,
        what: String,
        waited: String,
        safety: String,
        hint: String,
        resume: String,
    },
    /// An error while reading, once a migration is under way.
    #[error("{error}; {safety}; run `{resume}` to resume")]
    Interrupted {
        error: Box<MigrateError>,
        safety: String,
        resume: String,
    },
}

/// Parse `pvc/NAME`, `persistentvolumeclaim/NAME` or the two words `pvc NAME`.
pub fn parse_target(words: &[String]) -> Result<String, MigrateError> {
    let usage = || {
        MigrateError::Usage(
            "expected the claim to migrate as pvc/NAME (or `pvc NAME`), or --list".to_string(),
        )
    };
    let (resource, name) = crate::one_shot::split_target(words).ok_or_else(usage)?;
    let claim = matches!(
        resource.to_ascii_lowercase().as_str(),
        "pvc" | "pvcs" | "persistentvolumeclaim" | "persistentvolumeclaims"
    );
    if !claim {
        return Err(MigrateError::Usage(format!(
            "migrate takes a persistentvolumeclaim, not \"{resource}\" (pvc/NAME)"
        )));
    }
    if name.is_empty() || name.contains('/') {
        return Err(usage());
    }
    Ok(name.to_string())
}

/// Where the cluster comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Dump files (`kubectl get pods,pvc,pv,… -A -o yaml`): read only.
    Snapshot(Vec<PathBuf>),
    /// The API server, through a kubeconfig (`None`: kube's inference) and context.
    Live {
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    },
}

/// Which namespaces `--list` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `-n NS`; `None`: the kubeconfig context's namespace (live), else `default`.
    Namespace(Option<String>),
    /// `-A`.
    All,
}

// ---- --list -------------------------------------------------------------------

/// One claim judged by `--list`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub claim: Claim,
    pub volume: Option<Volume>,
    pub users: Vec<User>,
    pub verdict: Verdict,
}

/// What `--list` found.
#[derive(Debug, Clone)]
pub struct Listing {
    /// `None` with `-A`.
    pub namespace: Option<String>,
    /// Sorted by namespace, then name.
    pub entries: Vec<Entry>,
}

/// The cluster as `--list` reads it: the index `audit` builds (pods and
/// their claims), plus the claims, volumes and workloads kept whole.
#[derive(Default)]
struct ListView {
    state: ClusterState,
    objects: Vec<Object>,
}

/// List the candidates in `scope`.
pub async fn list(source: &Source, scope: &Scope) -> Result<Listing, MigrateError> {
    let (view, default_ns) = match source {
        Source::Snapshot(paths) => {
            let view = snapshot::load_into(paths, |v: &mut ListView, o| {
                v.state.apply_object(&o);
                let k = o.kind();
                if matches!(k, Kind::PersistentVolumeClaim | Kind::PersistentVolume)
                    || k.is_workload()
                {
                    v.objects.push(o);
                }
            })?;
            (view, "default".to_string())
        }
        Source::Live {
            kubeconfig,
            context,
        } => {
            let (conn, ns) =
                crate::explain::fetch::client(kubeconfig.as_deref(), context.as_deref()).await?;
            let (state, objects) =
                crate::audit::reporter::load_from_cluster_keeping(&conn.client, |k| {
                    k == Kind::PersistentVolume
                })
                .await
                .map_err(|e| live::reporter_error(&conn.url, e))?;
            (ListView { state, objects }, ns)
        }
    };
    let namespace = match scope {
        Scope::All => None,
        Scope::Namespace(ns) => Some(ns.clone().unwrap_or(default_ns)),
    };
    Ok(judge_all(&view, namespace))
}

fn judge_all(view: &ListView, namespace: Option<String>) -> Listing {
    let in_scope = |ns: &str| namespace.as_deref().is_none_or(|n| n == ns);
    let mut volumes: BTreeMap<&str, Volume> = BTreeMap::new();
    let mut workloads: BTreeMap<&str, Vec<(Kind, &Workload)>> = BTreeMap::new();
    let mut claims = Vec::new();
    for o in &view.objects {
        match o {
            Object::PersistentVolume(pv) => {
                volumes.insert(pv.metadata.name.as_str(), Volume::of(pv, None));
            }
            Object::PersistentVolumeClaim(pvc) => claims.push(Claim::of(pvc, None)),
            Object::Workload(k, w) => workloads
                .entry(w.metadata.namespace.as_deref().unwrap_or("default"))
                .or_default()
                .push((*k, w)),
            _ => {}
        }
    }
    let mut entries = Vec::new();
    for claim in claims.iter().filter(|c| in_scope(&c.namespace)) {
        let volume = claim
            .volume_name
            .as_deref()
            .and_then(|v| volumes.get(v))
            .cloned();
        let users: Vec<User> = view
            .state
            .consumers(&claim.namespace, &claim.name)
            .unwrap_or_default()
            .iter()
            .map(User::of)
            .collect();
        let runners = plan::runners(
            &claim.namespace,
            &claim.name,
            workloads
                .get(claim.namespace.as_str())
                .into_iter()
                .flatten()
                .copied(),
        );
        let verdict = plan::judge(claim, volume.as_ref(), &users, &runners);
        entries.push(Entry {
            claim: claim.clone(),
            volume,
            users,
            verdict,
        });
    }
    // Migrations under way whose claim is gone (between steps 3 and 5).
    for v in volumes.values() {
        let Some(Ok(r)) = &v.record else { continue };
        let (ns, name) = (&r.claim.namespace, &r.claim.name);
        if !in_scope(ns) || claims.iter().any(|c| &c.namespace == ns && &c.name == name) {
            continue;
        }
        let claim = Claim {
            namespace: ns.clone(),
            name: name.clone(),
            volume_name: Some(v.name.clone()),
            ..Claim::default()
        };
        entries.push(Entry {
            claim,
            volume: Some(v.clone()),
            users: Vec::new(),
            verdict: Verdict::NotCandidate(Reason::MigrationUnderWay(v.name.clone())),
        });
    }
    entries.sort_by(|a, b| {
        (&a.claim.namespace, &a.claim.name).cmp(&(&b.claim.namespace, &b.claim.name))
    });
    Listing { namespace, entries }
}

// ---- one claim: where it stands -------------------------------------------------

/// What the API server (or a dump) shows of the claim and its volume: the
/// objects whole, as JSON, for the writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    pub(crate) pvc: Option<Value>,
    pub(crate) pv: Option<Value>,
}

/// The pods and workloads of the claim's namespace.
#[derive(Debug, Clone, Default)]
pub(crate) struct Neighbours {
    pub(crate) pods: Vec<objects::Pod>,
    pub(crate) workloads: Vec<(Kind, Workload)>,
    /// What could not be read (a workload kind that is forbidden).
    pub(crate) notes: Vec<String>,
}

/// Where the migration of one claim stands.
#[derive(Debug, Clone)]
pub(crate) struct Assessed {
    pub(crate) claim: Option<Claim>,
    pub(crate) volume: Volume,
    pub(crate) stage: Stage,
    /// From the volume's annotation once step 2 is done; made from the claim before.
    pub(crate) record: Option<Record>,
}

pub(crate) enum Assessment {
    /// The claim is not bound to a volume: nothing to migrate.
    Unbound(Claim, Reason),
    Staged(Box<Assessed>),
}

fn parse<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T, MigrateError> {
    serde_json::from_value(v.clone()).map_err(|e| MigrateError::Unreadable {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn phase(v: &Value) -> Option<&str> {
    v.pointer("/status/phase").and_then(Value::as_str)
}

pub(crate) fn claim_of(pvc: &Value) -> Result<Claim, MigrateError> {
    let narrow: objects::PersistentVolumeClaim = parse(pvc, "the PersistentVolumeClaim")?;
    Ok(Claim::of(&narrow, phase(pvc)))
}

pub(crate) fn volume_of(pv: &Value) -> Result<Volume, MigrateError> {
    let narrow: objects::PersistentVolume = parse(pv, "the PersistentVolume")?;
    Ok(Volume::of(&narrow, phase(pv)))
}

pub(crate) fn assess(
    namespace: &str,
    name: &str,
    obs: &Observed,
) -> Result<Assessment, MigrateError> {
    let claim = obs.pvc.as_ref().map(claim_of).transpose()?;
    let Some(pv) = &obs.pv else {
        let Some(c) = claim else {
            return Err(MigrateError::NotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        };
        let reason = match plan::judge(&c, None, &[], &[]) {
            Verdict::NotCandidate(r) => r,
            Verdict::Candidate(_) => Reason::NotBound,
        };
        return Ok(Assessment::Unbound(c, reason));
    };
    let volume = volume_of(pv)?;
    let stage = plan::stage(namespace, name, claim.as_ref(), &volume)
        .map_err(MigrateError::Inconsistent)?;
    let record = match &volume.record {
        Some(Ok(r)) => Some(r.clone()),
        _ => obs
            .pvc
            .as_ref()
            .map(|p| Record::of(p, &volume))
            .transpose()
            .map_err(|reason| MigrateError::Unreadable {
                what: format!("PersistentVolumeClaim {namespace}/{name}"),
                reason,
            })?,
    };
    Ok(Assessment::Staged(Box::new(Assessed {
        claim,
        volume,
        stage,
        record,
    })))
}

// ---- pvc/NAME: the plan -----------------------------------------------------------

/// The plan for one claim (nothing written).
#[derive(Debug, Clone)]
pub struct Plan {
    pub namespace: String,
    pub name: String,
    pub volume: Option<Volume>,
    pub stage: Option<Stage>,
    pub users: Vec<User>,
    /// Why the claim cannot be migrated (exit 1).
    pub refused: Option<Refusal>,
    /// The steps left; empty when refused or done.
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

/// A refusal: its reason id and one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub message: String,
}

impl Refusal {
    fn of(reason: &Reason, claim: &Claim) -> Refusal {
        Refusal {
            reason: reason.id().to_string(),
            message: format!(
                "PersistentVolumeClaim {}/{}: {}",
                claim.namespace,
                claim.name,
                reason.message(claim)
            ),
        }
    }
}

/// The plan for claim `name`. `namespace` is `-n`; when absent the kubeconfig
/// context's (live), else `default`.
pub async fn plan(
    source: &Source,
    name: &str,
    namespace: Option<&str>,
) -> Result<Plan, MigrateError> {
    let (ns, obs, neighbours) = match source {
        Source::Snapshot(paths) => {
            let ns = namespace.unwrap_or("default").to_string();
            let values = crate::explain::read_bundle(paths)
                .map_err(MigrateError::Connect)?
                .objects;
            let (obs, neighbours) = from_values(&values, &ns, name)?;
            (ns, obs, neighbours)
        }
        Source::Live {
            kubeconfig,
            context,
        } => {
            let (kube, ns) = live::Kube::connect(kubeconfig, context, namespace).await?;
            let obs = kube.observe(name, None).await?;
            let neighbours = kube.neighbours().await?;
            (ns, obs, neighbours)
        }
    };
    plan_of(&ns, name, &obs, &neighbours)
}

fn plan_of(
    ns: &str,
    name: &str,
    obs: &Observed,
    neighbours: &Neighbours,
) -> Result<Plan, MigrateError> {
    let users = plan::users_of(ns, name, &neighbours.pods, &neighbours.workloads);
    let mut p = Plan {
        namespace: ns.to_string(),
        name: name.to_string(),
        volume: None,
        stage: None,
        users: users.clone(),
        refused: None,
        steps: Vec::new(),
        notes: neighbours.notes.clone(),
    };
    let a = match assess(ns, name, obs)? {
        Assessment::Unbound(c, reason) => {
            p.refused = Some(Refusal::of(&reason, &c));
            return Ok(p);
        }
        Assessment::Staged(a) => *a,
    };
    p.volume = Some(a.volume.clone());
    p.stage = Some(a.stage);
    if a.stage == Stage::Start {
        let claim = a.claim.as_ref().expect("a claim not yet migrated exists");
        let runners = plan::runners(ns, name, neighbours.workloads.iter().map(|(k, w)| (*k, w)));
        if let Verdict::NotCandidate(r) = plan::judge(claim, Some(&a.volume), &users, &runners) {
            p.refused = Some(Refusal::of(&r, claim));
            return Ok(p);
        }
    }
    if let Some(record) = &a.record {
        // Step 1 only stops pods while the old claim exists.
        let stop: &[User] = if a.stage <= Stage::DeleteClaim {
            &users
        } else {
            &[]
        };
        p.steps = plan::steps(a.stage, record, &a.volume, stop);
    }
    Ok(p)
}

/// The claim, its volume (bound, or recording the claim's migration), and
/// the pods and workloads of its namespace, from a dump's objects.
fn from_values(
    values: &[Value],
    ns: &str,
    name: &str,
) -> Result<(Observed, Neighbours), MigrateError> {
    let of_kind = |v: &&Value, kind: &str| v["kind"].as_str() == Some(kind);
    let in_ns = |v: &&Value| {
        v.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            == ns
    };
    let named =
        |v: &&Value, n: &str| v.pointer("/metadata/name").and_then(Value::as_str) == Some(n);
    let pvc = values
        .iter()
        .find(|v| of_kind(v, "PersistentVolumeClaim") && in_ns(v) && named(v, name))
        .cloned();
    let volume_name = pvc
        .as_ref()
        .and_then(|p| p.pointer("/spec/volumeName"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let pvs: Vec<&Value> = values
        .iter()
        .filter(|v| of_kind(v, "PersistentVolume"))
        .collect();
    let pv = volume_name
        .and_then(|vn| pvs.iter().find(|v| named(v, vn)))
        .or_else(|| pvs.iter().find(|v| live::records(v, ns, name)))
        .map(|v| (*v).clone());
    let mut n = Neighbours::default();
    for v in values.iter().filter(|v| in_ns(v)) {
        let kind = v["kind"].as_str().unwrap_or_default();
        let api = v["apiVersion"].as_str().unwrap_or("v1");
        match Kind::from_api_version(api, kind) {
            Some(Kind::Pod) => n.pods.push(parse(v, "a pod")?),
            Some(k) if k.is_workload() => n.workloads.push((k, parse(v, kind)?)),
            _ => {}
        }
    }
    Ok((Observed { pvc, pv }, n))
}

// ---- pvc/NAME --apply -------------------------------------------------------------

/// Carry out the migration of claim `name` through the API server, printing
/// each step to `out` as it is done.
pub async fn apply(
    kubeconfig: &Option<PathBuf>,
    context: &Option<String>,
    name: &str,
    namespace: Option<&str>,
    opts: &ApplyOptions,
    out: &mut (dyn std::io::Write + Send),
) -> Result<Applied, MigrateError> {
    let (kube, ns) = live::Kube::connect(kubeconfig, context, namespace).await?;
    apply::run(&kube, &ns, name, opts, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn targets() {
        for w in [
            &["pvc/data"][..],
            &["persistentvolumeclaim/data"][..],
            &["PVC", "data"][..],
        ] {
            assert_eq!(parse_target(&words(w)).unwrap(), "data", "{w:?}");
        }
        let e = parse_target(&words(&["deployment/web"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "migrate takes a persistentvolumeclaim, not \"deployment\" (pvc/NAME)"
        );
        for bad in [&["data"][..], &["pvc/"][..], &["pvc/a/b"][..], &[][..]] {
            assert!(parse_target(&words(bad)).is_err(), "{bad:?}");
        }
    }
}
