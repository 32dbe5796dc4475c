//! Co-location: instead of refusing a second user of a ReadWriteOnce claim
//! that would land on another node, pin it to the node the claim is attached
//! to. Pure: the pod and the cluster view in, a decision (with its JSON Patch)
//! out. `POST /mutate` is the driver.
//!
//! The pin is `matchFields: [{key: metadata.name, operator: In, values: [N]}]`
//! in every term of the pod's required node affinity. Terms are ORed, so the
//! pin must hold in each; it is ANDed with what a term already asks. Nothing
//! else changes: preferred terms, pod (anti-)affinity, tolerations and the
//! nodeSelector stay as they were.

use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{json, Value};

use super::message::fit_warning;
use super::rules::{is_self, Pin, HOSTNAME_LABEL};
use super::{Operation, Policy, Request};
use crate::cluster::{pod_claims, ClusterView, Consumer, NamespaceMode, COLOCATE_LABEL};
use crate::objects::{self, Object, PodSpec};

/// The `[id]` that starts the warning of a pinned pod.
pub const COLOCATE_ID: &str = "colocate";

/// The field selector key of a node's name.
const NAME_FIELD: &str = "metadata.name";

/// Who turned co-location on for this pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptIn {
    /// `colocate: true` in the policy file.
    Policy,
    /// The namespace label `claimguard.io/colocate: "true"`.
    Namespace,
    /// The pod annotation `claimguard.io/colocate: "true"`.
    Annotation,
}

impl OptIn {
    pub fn as_str(self) -> &'static str {
        match self {
            OptIn::Policy => "policy",
            OptIn::Namespace => "namespace-label",
            OptIn::Annotation => "pod-annotation",
        }
    }
}

/// A pod to pin, with the patch that pins it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pinned {
    pub node: String,
    /// The single-node claims whose users run on `node`.
    pub claims: Vec<String>,
    /// Those users, as `namespace/name`.
    pub holders: Vec<String>,
    pub opt_in: OptIn,
    /// RFC 6902 operations against the pod as the API server sent it.
    pub patch: Patch,
    /// One line, `[colocate]` first, under 256 bytes.
    pub warning: String,
}

/// Why a pod is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unchanged {
    /// Not a Pod CREATE (UPDATE, other kinds, no object).
    NotAPodCreate,
    /// An exempt namespace, or one labelled `claimguard.io/mode: off`.
    Skipped(&'static str),
    /// Neither the policy, the namespace label nor the pod annotation asks for it
    /// (or the pod annotation says "false").
    NotOptedIn,
    /// The pod uses no ReadWriteOnce claim (RWX, ROX and RWOP do not count).
    NoSingleNodeClaim,
    /// Its ReadWriteOnce claims have no other non-terminating user.
    NoUsers,
    /// A claim's users run on several nodes already.
    SeveralNodes { claim: String, nodes: Vec<String> },
    /// A claim's user is not scheduled yet: there is no node to pin to.
    HolderNotScheduled { claim: String, pod: String },
    /// Two claims are attached to different nodes.
    ClaimsDisagree {
        first: (String, String),
        second: (String, String),
    },
    /// The pod cannot run on the node at all: the validating rules speak.
    PinnedElsewhere { node: String },
    /// `nodeName`, the hostname nodeSelector or every affinity term already
    /// restricts the pod to the node (also: a pod patched before).
    AlreadyOnNode { node: String },
    /// The cluster view could not be read.
    Lookup(String),
}

impl Unchanged {
    /// A short, fixed reason for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Unchanged::NotAPodCreate => "not-a-pod-create",
            Unchanged::Skipped(_) => "skipped-namespace",
            Unchanged::NotOptedIn => "not-opted-in",
            Unchanged::NoSingleNodeClaim => "no-rwo-claim",
            Unchanged::NoUsers => "no-users",
            Unchanged::SeveralNodes { .. } => "users-on-several-nodes",
            Unchanged::HolderNotScheduled { .. } => "holder-not-scheduled",
            Unchanged::ClaimsDisagree { .. } => "claims-on-different-nodes",
            Unchanged::PinnedElsewhere { .. } => "pinned-elsewhere",
            Unchanged::AlreadyOnNode { .. } => "already-on-node",
            Unchanged::Lookup(_) => "lookup-error",
        }
    }
}

impl fmt::Display for Unchanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unchanged::NotAPodCreate => f.write_str("not a pod creation"),
            Unchanged::Skipped(why) => f.write_str(why),
            Unchanged::NotOptedIn => f.write_str("co-location not enabled for this pod"),
            Unchanged::NoSingleNodeClaim => f.write_str("no ReadWriteOnce claim"),
            Unchanged::NoUsers => f.write_str("no other pod uses its ReadWriteOnce claims"),
            Unchanged::SeveralNodes { claim, nodes } => write!(
                f,
                "claim {claim:?} is used on several nodes ({})",
                nodes.join(", ")
            ),
            Unchanged::HolderNotScheduled { claim, pod } => {
                write!(f, "claim {claim:?} is used by {pod}, not scheduled yet")
            }
            Unchanged::ClaimsDisagree { first, second } => write!(
                f,
                "claim {:?} is on node {} but claim {:?} on node {}",
                first.0, first.1, second.0, second.1
            ),
            Unchanged::PinnedElsewhere { node } => {
                write!(f, "the pod cannot run on node {node}")
            }
            Unchanged::AlreadyOnNode { node } => {
                write!(f, "the pod is already restricted to node {node}")
            }
            Unchanged::Lookup(e) => write!(f, "cluster view unreadable: {e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Pin(Pinned),
    Unchanged(Unchanged),
}

/// Who opted this pod in, if anyone. The pod annotation "false" opts a pod
/// out of a namespace or policy that opted in.
fn opt_in(
    policy: &Policy,
    ns: &str,
    pod: &objects::Pod,
    view: &dyn ClusterView,
) -> Result<Option<OptIn>, Unchanged> {
    match pod
        .metadata
        .annotations
        .get(COLOCATE_LABEL)
        .map(String::as_str)
    {
        Some("true") => return Ok(Some(OptIn::Annotation)),
        Some("false") => return Ok(None),
        _ => {}
    }
    if view
        .namespace_colocates(ns)
        .map_err(|e| Unchanged::Lookup(e.to_string()))?
    {
        return Ok(Some(OptIn::Namespace));
    }
    Ok(policy.colocate.then_some(OptIn::Policy))
}

/// Decide whether to pin the pod of a request, and how.
pub fn decide(policy: &Policy, req: &Request<'_>, view: &dyn ClusterView) -> Decision {
    match decide_inner(policy, req, view) {
        Ok(p) => Decision::Pin(p),
        Err(u) => Decision::Unchanged(u),
    }
}

/// Whether the request is a pod creation that co-location applies to at all
/// (opted in, namespace not skipped), before any claim is looked at. The
/// driver uses it to skip live claim look-ups for the pods of other namespaces.
pub fn applies(policy: &Policy, req: &Request<'_>, view: &dyn ClusterView) -> bool {
    precheck(policy, req, view).is_ok()
}

fn precheck<'r>(
    policy: &Policy,
    req: &Request<'r>,
    view: &dyn ClusterView,
) -> Result<(&'r objects::Pod, OptIn), Unchanged> {
    let Object::Pod(pod) = req.object else {
        return Err(Unchanged::NotAPodCreate);
    };
    if req.operation != Operation::Create {
        return Err(Unchanged::NotAPodCreate);
    }
    let ns = req.namespace;
    if policy.is_exempt(ns) {
        return Err(Unchanged::Skipped("exempt namespace"));
    }
    match view.namespace_mode(ns) {
        Ok(Some(NamespaceMode::Off)) => {
            return Err(Unchanged::Skipped("namespace label claimguard.io/mode=off"))
        }
        Ok(_) => {}
        Err(e) => return Err(Unchanged::Lookup(e.to_string())),
    }
    let opt_in = opt_in(policy, ns, pod, view)?.ok_or(Unchanged::NotOptedIn)?;
    Ok((pod, opt_in))
}

fn decide_inner(
    policy: &Policy,
    req: &Request<'_>,
    view: &dyn ClusterView,
) -> Result<Pinned, Unchanged> {
    let (pod, opt_in) = precheck(policy, req, view)?;
    let ns = req.namespace;
    let Some(spec) = &pod.spec else {
        return Err(Unchanged::NoSingleNodeClaim);
    };

    // The node every single-node claim's users run on.
    let mut target: Option<(String, String)> = None; // (node, first claim)
    let mut claims = Vec::new();
    let mut holders: Vec<String> = Vec::new();
    let mut saw_single_node = false;
    for (claim, _read_only) in pod_claims(spec) {
        let modes = match view.claim(ns, claim) {
            Ok(Some(f)) => f.effective,
            // A missing claim: claim-not-found speaks in /validate.
            Ok(None) => continue,
            Err(e) => return Err(Unchanged::Lookup(e.to_string())),
        };
        if !modes.is_single_node() || modes.is_rwop() {
            continue;
        }
        saw_single_node = true;
        let consumers = view
            .consumers(ns, claim)
            .map_err(|e| Unchanged::Lookup(e.to_string()))?;
        let active: Vec<Consumer<'_>> = consumers
            .into_iter()
            .filter(|c| !c.terminating && !is_self(c, &pod.metadata))
            .collect();
        if active.is_empty() {
            continue;
        }
        if let Some(c) = active.iter().find(|c| c.node.is_none()) {
            return Err(Unchanged::HolderNotScheduled {
                claim: claim.to_string(),
                pod: format!("{}/{}", c.namespace, c.name),
            });
        }
        let mut nodes: Vec<String> = active
            .iter()
            .filter_map(|c| c.node.map(str::to_string))
            .collect();
        nodes.sort();
        nodes.dedup();
        if nodes.len() > 1 {
            return Err(Unchanged::SeveralNodes {
                claim: claim.to_string(),
                nodes,
            });
        }
        let node = nodes.remove(0);
        match &target {
            None => target = Some((node, claim.to_string())),
            Some((n, first)) if *n != node => {
                return Err(Unchanged::ClaimsDisagree {
                    first: (first.clone(), n.clone()),
                    second: (claim.to_string(), node),
                })
            }
            Some(_) => {}
        }
        claims.push(claim.to_string());
        for c in &active {
            let name = format!("{}/{}", c.namespace, c.name);
            if !holders.contains(&name) {
                holders.push(name);
            }
        }
    }
    let Some((node, _)) = target else {
        return Err(if saw_single_node {
            Unchanged::NoUsers
        } else {
            Unchanged::NoSingleNodeClaim
        });
    };
    if !Pin::new(spec, view).allows(&node) {
        return Err(Unchanged::PinnedElsewhere { node });
    }
    if restricted_to(spec, &node) {
        return Err(Unchanged::AlreadyOnNode { node });
    }
    let ops = pin_operations(spec, &node);
    if ops.is_empty() {
        return Err(Unchanged::AlreadyOnNode { node });
    }
    let warning = warning(&node, &claims, &holders);
    Ok(Pinned {
        node,
        claims,
        holders,
        opt_in,
        patch: Patch(ops),
        warning,
    })
}

fn warning(node: &str, claims: &[String], holders: &[String]) -> String {
    let claims_text = match claims {
        [one] => format!("PersistentVolumeClaim \"{one}\" is"),
        many => format!(
            "PersistentVolumeClaims {} are",
            many.iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let listed: Vec<&str> = holders.iter().take(2).map(String::as_str).collect();
    let more = holders.len().saturating_sub(2);
    let noun = if holders.len() == 1 { "pod" } else { "pods" };
    let pods = if more > 0 {
        format!("{noun} {} and {more} more", listed.join(", "))
    } else {
        format!("{noun} {}", listed.join(", "))
    };
    fit_warning(&format!(
        "[{COLOCATE_ID}] pinned to node {node}: ReadWriteOnce {claims_text} attached there for {pods}, and on another node it would hang (Multi-Attach error); annotate {COLOCATE_LABEL}=false to opt out"
    ))
}

/// Does the term name no node but `node`, by name or hostname?
fn term_restricted_to(t: &objects::NodeSelectorTerm, node: &str) -> bool {
    let only = |e: &objects::NodeSelectorRequirement| {
        e.operator == "In" && !e.values.is_empty() && e.values.iter().all(|v| v == node)
    };
    t.match_fields
        .iter()
        .any(|e| e.key == NAME_FIELD && only(e))
        || t.match_expressions
            .iter()
            .any(|e| e.key == HOSTNAME_LABEL && only(e))
}

/// An empty term matches no node; the pin is not added to it (that would
/// make it match the node).
fn term_is_empty(t: &objects::NodeSelectorTerm) -> bool {
    t.match_fields.is_empty() && t.match_expressions.is_empty()
}

/// Is the pod already restricted to `node` alone?
fn restricted_to(spec: &PodSpec, node: &str) -> bool {
    if spec.node_name.as_deref() == Some(node) {
        return true;
    }
    if spec.node_selector.get(HOSTNAME_LABEL).map(String::as_str) == Some(node) {
        return true;
    }
    let terms = spec.required_node_terms();
    terms.iter().any(|t| !term_is_empty(t))
        && terms
            .iter()
            .all(|t| term_is_empty(t) || term_restricted_to(t, node))
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// The operations that put the pin into every term, creating the path where
/// it is absent (or null). A narrow view of the pod is enough: each step
/// either adds a whole missing level or appends to a list known to exist.
fn pin_operations(spec: &PodSpec, node: &str) -> Vec<PatchOperation> {
    let requirement = json!({"key": NAME_FIELD, "operator": "In", "values": [node]});
    let terms = json!([{"matchFields": [requirement.clone()]}]);
    let required = json!({"nodeSelectorTerms": terms.clone()});
    const REQUIRED: &str = "requiredDuringSchedulingIgnoredDuringExecution";
    let Some(affinity) = &spec.affinity else {
        return vec![add(
            &["spec", "affinity"],
            json!({"nodeAffinity": {REQUIRED: required}}),
        )];
    };
    let Some(node_affinity) = &affinity.node_affinity else {
        return vec![add(
            &["spec", "affinity", "nodeAffinity"],
            json!({REQUIRED: required}),
        )];
    };
    let Some(selector) = &node_affinity.required_during_scheduling_ignored_during_execution else {
        return vec![add(
            &["spec", "affinity", "nodeAffinity", REQUIRED],
            required,
        )];
    };
    if selector.node_selector_terms.is_empty() {
        return vec![add(
            &[
                "spec",
                "affinity",
                "nodeAffinity",
                REQUIRED,
                "nodeSelectorTerms",
            ],
            terms,
        )];
    }
    let mut ops = Vec::new();
    for (i, term) in selector.node_selector_terms.iter().enumerate() {
        if term_is_empty(term) || term_restricted_to(term, node) {
            continue;
        }
        let index = i.to_string();
        let base = [
            "spec",
            "affinity",
            "nodeAffinity",
            REQUIRED,
            "nodeSelectorTerms",
            index.as_str(),
            "matchFields",
        ];
        if term.match_fields.is_empty() {
            ops.push(add(&base, json!([requirement.clone()])));
        } else {
            let mut append = base.to_vec();
            append.push("-");
            ops.push(add(&append, requirement.clone()));
        }
    }
    ops
}

#[cfg(test)]
#[path = "colocate_tests.rs"]
mod tests;
