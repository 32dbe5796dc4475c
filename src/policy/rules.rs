//! The rules. Each looks at one object and the cluster view and reports raw
//! findings; turning them into deny/warn/audit is `evaluate`'s job.

use super::claim_use::{self, ClaimUser};
use super::message::pods_at;
use super::{Policy, RawFinding, Rule};
use crate::cluster::{pod_claims, AccessModes, ClusterView, Consumer, LookupError};
use crate::objects::{self, IntOrString, Kind, ObjectMeta, Workload};

pub const ALLOW_SHARED_WRITERS: &str = "claimguard.io/allow-shared-writers";
pub(super) use super::pin::Pin;
pub(super) use crate::cluster::HOSTNAME_LABEL;

fn lookup_finding(claim: &str, e: &LookupError, policy: &Policy) -> RawFinding {
    let deny = matches!(policy.action(Rule::LookupError), super::Action::Deny);
    if let LookupError::Unrecorded { reason } = e {
        // Checked, but no other replica will know: it could admit a second pod.
        let outcome = if deny {
            "refused (onLookupError: deny)"
        } else {
            "allowed unreserved (onLookupError: allow)"
        };
        return RawFinding::new(
            Rule::LookupError,
            claim,
            format!("PersistentVolumeClaim \"{claim}\": the reservation could not be recorded ({reason}); {outcome}"),
        );
    }
    let outcome = if deny {
        "refused (onLookupError: deny)"
    } else {
        "allowed without checks (onLookupError: allow)"
    };
    RawFinding::new(
        Rule::LookupError,
        claim,
        format!("could not check PersistentVolumeClaim \"{claim}\": {e}; {outcome}"),
    )
}

/// A claim's effective access modes, or `None` after reporting why there
/// are none to judge (the claim is missing, or the view cannot be read).
fn claim_modes(
    policy: &Policy,
    view: &dyn ClusterView,
    ns: &str,
    claim: &str,
    out: &mut Vec<RawFinding>,
    not_found: impl FnOnce() -> String,
) -> Option<AccessModes> {
    match view.claim(ns, claim) {
        Ok(Some(f)) => Some(f.effective),
        Ok(None) => {
            out.push(RawFinding::new(Rule::ClaimNotFound, claim, not_found()));
            None
        }
        Err(e) => {
            out.push(lookup_finding(claim, &e, policy));
            None
        }
    }
}

/// Does this pod conflict with itself? Same uid, or same namespace/name.
pub fn is_self(c: &Consumer<'_>, meta: &ObjectMeta) -> bool {
    if let (Some(a), Some(b)) = (c.uid, meta.uid.as_deref()) {
        if !b.is_empty() && a.matches(b) {
            return true;
        }
    }
    !meta.name.is_empty() && c.name == meta.name
}

// ---- Pod CREATE -------------------------------------------------------------

pub fn pod(
    policy: &Policy,
    ns: &str,
    pod: &objects::Pod,
    view: &dyn ClusterView,
    out: &mut Vec<RawFinding>,
) {
    let Some(spec) = &pod.spec else { return };
    let allow_shared = pod
        .metadata
        .annotations
        .get(ALLOW_SHARED_WRITERS)
        .map(String::as_str)
        == Some("true");
    let user_pin = Pin::new(spec, view);
    for (claim, read_only) in pod_claims(spec) {
        let Some(modes) = claim_modes(policy, view, ns, claim, out, || {
            format!(
                "PersistentVolumeClaim \"{claim}\" does not exist in namespace {ns}; the pod will stay Pending until it is created: check the claimName or create the claim first"
            )
        }) else {
            continue;
        };
        if !modes.is_rwop() && !modes.is_single_node() {
            continue;
        }
        let consumers = match view.consumers(ns, claim) {
            Ok(c) => c,
            Err(e) => {
                out.push(lookup_finding(claim, &e, policy));
                continue;
            }
        };
        let others: Vec<Consumer<'_>> = consumers
            .into_iter()
            .filter(|c| !is_self(c, &pod.metadata))
            .collect();
        let user = ClaimUser {
            pin: user_pin,
            read_only,
            allow_shared_writers: allow_shared,
        };
        if let Some(f) = claim_use::judge(ns, claim, modes, &user, &others, view) {
            out.push(RawFinding::new(f.rule, claim, f.text));
        }
    }
}

// ---- PersistentVolumeClaim CREATE ------------------------------------------

pub fn pvc(
    policy: &Policy,
    ns: &str,
    pvc: &objects::PersistentVolumeClaim,
    view: &dyn ClusterView,
    out: &mut Vec<RawFinding>,
) {
    let name = pvc.metadata.name.as_str();
    let spec = pvc.spec.clone().unwrap_or_default();
    let modes = AccessModes::from_names(&spec.access_modes);
    if modes.is_rwop() {
        match view.consumers(ns, name) {
            Err(e) => out.push(lookup_finding(name, &e, policy)),
            Ok(cs) => {
                let active: Vec<Consumer<'_>> = cs.into_iter().filter(|c| !c.terminating).collect();
                if active.len() >= 2 {
                    out.push(RawFinding::new(
                        Rule::RwopExclusive,
                        name,
                        format!(
                            "PersistentVolumeClaim \"{name}\" is ReadWriteOncePod but {} already reference it and only one can ever start; remove all but one or use ReadWriteMany",
                            pods_at(&active)
                        ),
                    ));
                }
            }
        }
    }
    let class = match spec.storage_class_name.as_deref() {
        Some("") => None, // explicitly no class: static binding
        Some(c) => view.storage_class(c),
        None => view.default_storage_class(),
    };
    let Some(class) = class else { return };
    let mut multi = modes.multi_node();
    // Raw block ReadWriteMany is what EBS io2 Multi-Attach, Azure shared
    // disks and GCE multi-writer disks serve.
    let block = spec.volume_mode.as_deref() == Some("Block");
    if block && policy.serves_block_multi_writer(class.provisioner) {
        multi = multi.without(AccessModes::RWX);
    }
    if !multi.is_empty() && policy.is_block_only(class.provisioner) {
        let text = if multi == AccessModes::RWX
            && policy.serves_block_multi_writer(class.provisioner)
        {
            format!(
                "PersistentVolumeClaim \"{name}\" asks for ReadWriteMany but StorageClass \"{}\" uses provisioner {}, which serves it only as a raw block device; it stays Pending: set volumeMode: Block or use a shared-filesystem class",
                class.name, class.provisioner
            )
        } else {
            format!(
                "PersistentVolumeClaim \"{name}\" asks for {multi} but StorageClass \"{}\" uses provisioner {}, which only serves single-node block volumes; it will stay Pending: use ReadWriteOnce or a shared-filesystem class",
                class.name, class.provisioner
            )
        };
        out.push(RawFinding::new(Rule::PvcModeUnsupported, name, text));
    }
    if modes.is_rwop() && class.provisioner.starts_with("kubernetes.io/") {
        out.push(RawFinding::new(
            Rule::PvcModeUnsupported,
            name,
            format!(
                "PersistentVolumeClaim \"{name}\" asks for ReadWriteOncePod but StorageClass \"{}\" uses in-tree provisioner {}; ReadWriteOncePod needs a CSI driver: use a CSI StorageClass",
                class.name, class.provisioner
            ),
        ));
    }
}

// ---- Workloads ----------------------------------------------------------------

/// How many pods of the template can run at once, when more than one can.
fn concurrent_pods(kind: Kind, spec: &objects::WorkloadSpec) -> Option<String> {
    match kind {
        Kind::Deployment | Kind::ReplicaSet | Kind::ReplicationController | Kind::StatefulSet => {
            let r = spec.replicas.unwrap_or(1);
            (r > 1).then(|| format!("runs {r} replicas"))
        }
        Kind::DaemonSet => Some("runs a pod on every node it selects".into()),
        Kind::Job => {
            let p = job_concurrency(spec);
            (p > 1).then(|| format!("runs {p} pods at once (parallelism)"))
        }
        Kind::CronJob => {
            let job = spec.job_template.as_ref().and_then(|j| j.spec.as_ref());
            let p = job.map(job_concurrency).unwrap_or(1);
            if p > 1 {
                Some(format!("runs {p} pods at once (parallelism)"))
            } else if spec.concurrency_policy.as_deref().unwrap_or("Allow") == "Allow" {
                Some("lets runs overlap (concurrencyPolicy: Allow)".into())
            } else {
                None
            }
        }
        _ => None,
    }
}

/// How many pods of a Job run at once: never more than the completions left.
fn job_concurrency(spec: &objects::WorkloadSpec) -> i64 {
    let p = spec.parallelism.unwrap_or(1);
    match spec.completions {
        Some(c) => p.min(c),
        None => p,
    }
}

fn single_pod_remedy(kind: Kind) -> &'static str {
    match kind {
        Kind::DaemonSet => "use a Deployment with replicas: 1, or a ReadWriteMany claim",
        Kind::Job => "set parallelism: 1, or give each pod its own claim",
        Kind::CronJob => "set concurrencyPolicy: Forbid and parallelism: 1",
        Kind::StatefulSet => "set replicas: 1, or move the claim into volumeClaimTemplates",
        _ => "set replicas: 1, or use a StatefulSet with volumeClaimTemplates",
    }
}

/// maxSurge as the Deployment controller resolves it: percentages of the
/// desired replicas round up; the default is 25%.
pub fn effective_max_surge(spec: &objects::WorkloadSpec) -> i64 {
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let surge = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.clone())
        .unwrap_or(IntOrString::String("25%".into()));
    match surge {
        IntOrString::Int(n) => n,
        IntOrString::String(s) => match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<i64>()
                .map(|p| (replicas * p + 99) / 100)
                .unwrap_or(1),
            None => s.trim().parse::<i64>().unwrap_or(1),
        },
    }
}

pub fn workload(
    policy: &Policy,
    ns: &str,
    kind: Kind,
    w: &Workload,
    view: &dyn ClusterView,
    out: &mut Vec<RawFinding>,
) {
    let Some(spec) = &w.spec else { return };
    let template_spec = if kind == Kind::CronJob {
        spec.job_template
            .as_ref()
            .and_then(|j| j.spec.as_ref())
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
    } else {
        spec.template.as_ref().and_then(|t| t.spec.as_ref())
    };
    let Some(pod_spec) = template_spec else {
        return;
    };
    // volumeClaimTemplates give each replica its own claim: a template volume
    // of the same name is replaced per pod and never shared.
    let own: Vec<&str> = spec
        .volume_claim_templates
        .iter()
        .map(|t| t.metadata.name.as_str())
        .collect();
    let mut shared = pod_spec.clone();
    shared.volumes.retain(|v| !own.contains(&v.name.as_str()));
    let name = w.metadata.display_name();
    let kname = kind.as_str();
    let many = concurrent_pods(kind, spec);
    let rolling = kind == Kind::Deployment
        && spec
            .strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
    for (claim, _) in pod_claims(&shared) {
        let Some(modes) = claim_modes(policy, view, ns, claim, out, || {
            format!(
                "PersistentVolumeClaim \"{claim}\" used by {kname} \"{name}\" does not exist in namespace {ns}; its pods will stay Pending until it is created"
            )
        }) else {
            continue;
        };
        if let Some(many) = &many {
            if modes.is_rwop() {
                out.push(RawFinding::new(
                    Rule::WorkloadRwopReplicas,
                    claim,
                    format!(
                        "{kname} \"{name}\" {many} but PersistentVolumeClaim \"{claim}\" is ReadWriteOncePod: only one pod can ever use it and the rest stay Pending; {}",
                        single_pod_remedy(kind)
                    ),
                ));
            } else if modes.is_single_node() {
                out.push(RawFinding::new(
                    Rule::WorkloadRwoReplicas,
                    claim,
                    format!(
                        "{kname} \"{name}\" {many} but PersistentVolumeClaim \"{claim}\" is ReadWriteOnce: pods on other nodes hang with Multi-Attach errors; {}",
                        single_pod_remedy(kind)
                    ),
                ));
            }
        }
        if rolling && (modes.is_rwop() || modes.is_single_node()) {
            let surge = effective_max_surge(spec);
            if surge >= 1 {
                out.push(RawFinding::new(
                    Rule::RolloutDeadlock,
                    claim,
                    format!(
                        "Deployment \"{name}\" uses {} PersistentVolumeClaim \"{claim}\" with RollingUpdate maxSurge {surge}: its next rollout can hang (the new pod waits for the old one); set strategy.type: Recreate or rollingUpdate.maxSurge: 0",
                        modes.headline()
                    ),
                ));
            }
        }
    }
}
