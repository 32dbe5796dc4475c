//! The pure policy core: an object and a read-only cluster view in, a
//! verdict out. No I/O, no async, no clock.

mod claim_use;
pub mod colocate;
mod config;
pub mod message;
mod pin;
mod rules;
mod scale;

pub use claim_use::{judge as judge_claim_use, stuck_attachment_text, ClaimFinding, ClaimUser};
pub use config::{
    Action, Mode, OnLookupError, Policy, PolicyError, Rule,
    DEFAULT_BLOCK_MULTI_WRITER_PROVISIONERS, DEFAULT_BLOCK_ONLY_PROVISIONERS,
};
pub use pin::{hostname_of, Pin};
pub use rules::is_self as is_same_pod;
pub use rules::{effective_max_surge, ALLOW_SHARED_WRITERS};
pub use scale::evaluate_scale;

use crate::cluster::{ClusterView, NamespaceMode};
use crate::objects::{Kind, Object};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Other,
}

impl Operation {
    pub fn parse(s: &str) -> Operation {
        match s {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            _ => Operation::Other,
        }
    }
}

/// What is being admitted.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub operation: Operation,
    /// The request's namespace (the object's own may be empty on CREATE).
    pub namespace: &'a str,
    pub object: &'a Object,
    pub old_object: Option<&'a Object>,
}

/// A rule that fired, before the policy decides what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFinding {
    pub rule: Rule,
    pub claim: String,
    /// Without the `[rule-id]` prefix.
    pub text: String,
}

impl RawFinding {
    pub fn new(rule: Rule, claim: &str, text: String) -> Self {
        RawFinding {
            rule,
            claim: claim.to_string(),
            text,
        }
    }
}

/// What was done about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Deny,
    Warn,
    /// Allowed silently; recorded in audit annotations, log and metrics.
    Audit,
    /// A would-be denial in audit mode: allowed with a warning that says so.
    NotEnforced,
    /// A would-be denial on an UPDATE of a workload that already had it.
    PreExisting,
}

impl Effect {
    /// The `action` label of `claimguard_violations_total`.
    pub fn metric_action(self) -> &'static str {
        match self {
            Effect::Deny => "deny",
            Effect::Warn | Effect::PreExisting => "warn",
            Effect::Audit | Effect::NotEnforced => "audit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub effect: Effect,
    pub claim: String,
    /// One line, starting with `[rule-id]`.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    pub allowed: bool,
    /// The denial message (every denying finding, `; `-joined).
    pub denial: Option<String>,
    /// Warning lines for the API server, each under 256 characters.
    pub warnings: Vec<String>,
    pub findings: Vec<Finding>,
    /// `auditAnnotations`: rule id → message. The API server prefixes each
    /// key with the webhook name (`pods.claimguard.io/rwop-exclusive`).
    pub audit_annotations: BTreeMap<String, String>,
    /// Why nothing was checked, when nothing was (exempt or `mode: off`).
    pub skipped: Option<&'static str>,
}

impl Verdict {
    /// Allowed, with nothing to say.
    pub fn allow() -> Verdict {
        Verdict {
            allowed: true,
            ..Verdict::default()
        }
    }
}

/// The raw findings for one object.
pub fn findings_for(
    policy: &Policy,
    namespace: &str,
    object: &Object,
    view: &dyn ClusterView,
) -> Vec<RawFinding> {
    let mut out = Vec::new();
    match object {
        Object::Pod(p) => rules::pod(policy, namespace, p, view, &mut out),
        Object::PersistentVolumeClaim(p) => rules::pvc(policy, namespace, p, view, &mut out),
        Object::Workload(kind, w) => rules::workload(policy, namespace, *kind, w, view, &mut out),
        _ => {}
    }
    out
}

/// Which operations each kind is judged on. Pod and PVC specs that matter
/// are immutable, so only their creation counts; workloads on both.
fn judged(kind: Kind, op: Operation) -> bool {
    match op {
        Operation::Create => {
            matches!(kind, Kind::Pod | Kind::PersistentVolumeClaim) || kind.is_workload()
        }
        Operation::Update => kind.is_workload(),
        Operation::Other => false,
    }
}

/// The verdict when what a request needs could not be read (`what` says
/// what), per `onLookupError`.
pub fn lookup_error_verdict(policy: &Policy, what: &str) -> Verdict {
    let (effect, outcome) = match policy.on_lookup_error {
        OnLookupError::Allow => (
            Effect::Warn,
            "allowed without checks (onLookupError: allow)",
        ),
        OnLookupError::Deny => (Effect::Deny, "refused (onLookupError: deny)"),
    };
    let id = Rule::LookupError.id();
    let message = message::one_line(&format!("[{id}] {what}; {outcome}"));
    let mut v = Verdict::allow();
    if effect == Effect::Deny {
        v.allowed = false;
        v.denial = Some(message.clone());
    } else {
        v.warnings.push(message::fit_warning(&message));
    }
    v.audit_annotations.insert(id.to_string(), message.clone());
    v.findings.push(Finding {
        rule: Rule::LookupError,
        effect,
        claim: String::new(),
        message,
    });
    v
}

/// Decide about one request.
pub fn evaluate(policy: &Policy, req: &Request<'_>, view: &dyn ClusterView) -> Verdict {
    evaluate_rules(policy, req, view, |_| true)
}

/// `evaluate`, reporting only the rules `keep` accepts.
fn evaluate_rules(
    policy: &Policy,
    req: &Request<'_>,
    view: &dyn ClusterView,
    keep: impl Fn(Rule) -> bool,
) -> Verdict {
    let kind = req.object.kind();
    if !judged(kind, req.operation) {
        return Verdict::allow();
    }
    // A ReplicaSet a Deployment made, or a Job a CronJob made, was judged as
    // its owner's template; judging it again doubles every warning and would
    // block the owner's rollout when the controller scales the new ReplicaSet.
    if matches!(
        (kind, req.object.controller_kind()),
        (Kind::ReplicaSet, Some("Deployment")) | (Kind::Job, Some("CronJob"))
    ) {
        return Verdict {
            skipped: Some("judged as its owner's template"),
            ..Verdict::allow()
        };
    }
    let ns = req.namespace;
    if policy.is_exempt(ns) {
        return Verdict {
            skipped: Some("exempt namespace"),
            ..Verdict::allow()
        };
    }
    let mut raw = Vec::new();
    let ns_mode = match view.namespace_mode(ns) {
        Ok(m) => m,
        Err(e) => {
            raw.push(RawFinding::new(
                Rule::LookupError,
                "",
                format!(
                    "could not read namespace {ns}: {e}; {}",
                    match policy.on_lookup_error {
                        OnLookupError::Allow => "allowed without checks (onLookupError: allow)",
                        OnLookupError::Deny => "refused (onLookupError: deny)",
                    }
                ),
            ));
            None
        }
    };
    if ns_mode == Some(NamespaceMode::Off) {
        return Verdict {
            skipped: Some("namespace label claimguard.io/mode=off"),
            ..Verdict::allow()
        };
    }
    let audit_mode = policy.mode == Mode::Audit || ns_mode == Some(NamespaceMode::Audit);
    if raw.is_empty() {
        raw = findings_for(policy, ns, req.object, view);
    } else {
        // The namespace could not be read, so neither can the rest.
        raw.truncate(1);
    }
    // On UPDATE, what the old object already had is not this change's fault:
    // blocking an image bump because of an old replica count helps nobody.
    let before: Vec<RawFinding> = match (req.operation, req.old_object) {
        (Operation::Update, Some(old)) if old.kind() == kind => findings_for(policy, ns, old, view),
        _ => Vec::new(),
    };

    let mut v = Verdict::allow();
    let mut denials = Vec::new();
    for f in raw.into_iter().filter(|f| keep(f.rule)) {
        let action = policy.action(f.rule);
        // A view that cannot be read is never "the old object's fault":
        // onLookupError: deny must deny updates too.
        let pre_existing = f.rule != Rule::LookupError
            && before
                .iter()
                .any(|b| b.rule == f.rule && b.claim == f.claim);
        let effect = match action {
            Action::Off => continue,
            Action::Audit => Effect::Audit,
            Action::Warn => Effect::Warn,
            Action::Deny if audit_mode => Effect::NotEnforced,
            Action::Deny if pre_existing => Effect::PreExisting,
            Action::Deny => Effect::Deny,
        };
        let id = f.rule.id();
        let message = message::tagged(id, &f.text);
        match effect {
            Effect::Deny => denials.push(message.clone()),
            Effect::Warn => v.warnings.push(message::fit_one_line(&message)),
            Effect::NotEnforced => v.warnings.push(message::fit_warning(&format!(
                "[{id}] not enforced (audit mode): {}",
                f.text
            ))),
            Effect::PreExisting => v.warnings.push(message::fit_warning(&format!(
                "[{id}] not blocking this update, the old object had it too: {}",
                f.text
            ))),
            Effect::Audit => {}
        }
        v.audit_annotations
            .entry(id.to_string())
            .and_modify(|m| {
                m.push_str("; ");
                m.push_str(&message);
            })
            .or_insert_with(|| message.clone());
        v.findings.push(Finding {
            rule: f.rule,
            effect,
            claim: f.claim,
            message,
        });
    }
    if !denials.is_empty() {
        v.allowed = false;
        v.denial = Some(denials.join("; "));
    }
    v
}

#[cfg(test)]
mod tests;
