//! Node identity and pod pins: what the index keeps so that a
//! `kubernetes.io/hostname` pin resolves to node names.
//!
//! The hostname label is not always the node's name (hostname overrides,
//! FQDN node names): a pod with `nodeSelector: {kubernetes.io/hostname: w1}`
//! runs on the node whose label says `w1`, whatever that node is called.
//! The table keeps one entry per Node (name → label); a pod's pin keeps only
//! the hostname and `metadata.name` constraints of a pod that is not
//! scheduled yet (a scheduled pod is pinned to its `nodeName`).

use crate::objects::{self, NodeAffinity, NodeSelector, PodSpec};
use hashbrown::HashMap;

pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The taint the node lifecycle controller puts on a node it cannot reach.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The taint an operator puts on a node that is shut down for good
/// (non-graceful node shutdown): its volumes are detached at once.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// A node's `Ready` condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// `status: "False"`: the kubelet says it is not ready.
    NotReady,
    /// `status: "Unknown"`: the node controller lost contact with the kubelet.
    Unknown,
    /// No `Ready` condition (a node just registered, or a dump without
    /// status): no evidence either way, so never judged down.
    #[default]
    Missing,
}

impl Readiness {
    fn of(status: &str) -> Readiness {
        match status {
            "True" => Readiness::Ready,
            "False" => Readiness::NotReady,
            _ => Readiness::Unknown,
        }
    }
}

/// A node's health as the rules read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealth<'a> {
    pub ready: Readiness,
    /// The `Ready` condition's `lastTransitionTime`.
    pub since: Option<&'a str>,
    /// Tainted `node.kubernetes.io/unreachable`.
    pub unreachable: bool,
    /// Tainted `node.kubernetes.io/out-of-service`.
    pub out_of_service: bool,
}

impl NodeHealth<'_> {
    /// Down: its `Ready` condition is not `True`, or it is tainted unreachable.
    pub fn is_down(&self) -> bool {
        matches!(self.ready, Readiness::NotReady | Readiness::Unknown) || self.unreachable
    }

    /// "NotReady since 2026-12-07T10:00:00Z", "unreachable", "Ready".
    pub fn describe(&self) -> String {
        let state = match self.ready {
            Readiness::Ready if self.unreachable => "unreachable",
            Readiness::Ready => "Ready",
            Readiness::NotReady => "NotReady",
            // The node controller lost the kubelet: to a user, NotReady.
            Readiness::Unknown => "NotReady",
            Readiness::Missing if self.unreachable => "unreachable",
            Readiness::Missing => "of unknown readiness",
        };
        // `since` is the Ready condition's: it dates NotReady, not a taint.
        match self.since {
            Some(t) if matches!(self.ready, Readiness::NotReady | Readiness::Unknown) => {
                format!("{state} since {t}")
            }
            _ => state.to_string(),
        }
    }
}

/// What the view keeps of a Node: its hostname label and its health. A
/// status update (every ~10 s per node) replaces this one entry and
/// touches nothing else in the index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct NodeEntry {
    /// The `kubernetes.io/hostname` label (`None`: no label).
    hostname: Option<Box<str>>,
    ready: Readiness,
    since: Option<Box<str>>,
    unreachable: bool,
    out_of_service: bool,
}

/// Node name → hostname label and health.
#[derive(Debug, Default)]
pub(super) struct NodeTable {
    nodes: HashMap<Box<str>, NodeEntry>,
}

impl NodeTable {
    pub(super) fn apply(&mut self, node: &objects::Node) {
        if node.metadata.name.is_empty() {
            return;
        }
        let hostname = node
            .metadata
            .labels
            .get(HOSTNAME_LABEL)
            .map(|h| h.as_str().into());
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        let taints = node.spec.as_ref().map(|s| &s.taints[..]).unwrap_or(&[]);
        let tainted = |key: &str| taints.iter().any(|t| t.key == key);
        let entry = NodeEntry {
            hostname,
            ready: ready.map_or(Readiness::Missing, |c| Readiness::of(&c.status)),
            since: ready.and_then(|c| c.last_transition_time.as_deref().map(Into::into)),
            unreachable: tainted(UNREACHABLE_TAINT),
            out_of_service: tainted(OUT_OF_SERVICE_TAINT),
        };
        match self.nodes.get_mut(node.metadata.name.as_str()) {
            // Most status updates change only heartbeat times, which are not kept.
            Some(e) if *e == entry => {}
            Some(e) => *e = entry,
            None => {
                self.nodes.insert(node.metadata.name.as_str().into(), entry);
            }
        }
    }

    pub(super) fn delete(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.nodes.keys().map(|k| k.to_string()).collect()
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The hostname label of a known node; `None` when the node is unknown
    /// or carries no label (then pins compare with its name).
    pub(super) fn hostname(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).and_then(|h| h.hostname.as_deref())
    }

    /// The health of a known node; `None` when the view does not know it.
    pub(super) fn health(&self, node: &str) -> Option<NodeHealth<'_>> {
        self.nodes.get(node).map(|e| NodeHealth {
            ready: e.ready,
            since: e.since.as_deref(),
            unreachable: e.unreachable,
            out_of_service: e.out_of_service,
        })
    }

    pub(super) fn dump(&self, out: &mut Vec<String>) {
        for (name, e) in &self.nodes {
            out.push(format!(
                "node {name} hostname={} ready={:?} since={} unreachable={} out-of-service={}",
                e.hostname.as_deref().unwrap_or("-"),
                e.ready,
                e.since.as_deref().unwrap_or("-"),
                e.unreachable,
                e.out_of_service
            ));
        }
    }
}

/// The hostname constraints of a pod that is not scheduled yet, as a
/// trimmed spec the policy's pin logic reads like any other: its hostname
/// `nodeSelector` and the hostname / `metadata.name` requirements of its
/// required node affinity. `None` when the pod is scheduled (its node is its
/// pin) or nothing constrains its hostname.
pub fn pod_pin(spec: &PodSpec) -> Option<PodSpec> {
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
        return None;
    }
    let mut pin = PodSpec::default();
    if let Some(h) = spec.node_selector.get(HOSTNAME_LABEL) {
        pin.node_selector
            .insert(HOSTNAME_LABEL.to_string(), h.clone());
    }
    let terms = spec.required_node_terms();
    let trimmed: Vec<objects::NodeSelectorTerm> = terms
        .iter()
        .map(|t| objects::NodeSelectorTerm {
            match_expressions: t
                .match_expressions
                .iter()
                .filter(|e| e.key == HOSTNAME_LABEL)
                .cloned()
                .collect(),
            match_fields: t
                .match_fields
                .iter()
                .filter(|e| e.key == "metadata.name")
                .cloned()
                .collect(),
        })
        .collect();
    // Terms are ORed: one term without a hostname constraint lets the pod
    // run on any node as far as hostnames go.
    let constrains = !trimmed.is_empty()
        && trimmed
            .iter()
            .all(|t| !t.match_expressions.is_empty() || !t.match_fields.is_empty());
    if constrains {
        pin.affinity = Some(objects::Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: trimmed,
                }),
            }),
        });
    }
    (!pin.node_selector.is_empty() || pin.affinity.is_some()).then_some(pin)
}

/// One line per pin, for the index's canonical dump.
pub(super) fn describe_pin(pin: &PodSpec) -> String {
    serde_json::to_string(pin).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pins_keep_only_hostname_constraints() {
        // Scheduled: the node is the pin.
        assert!(pod_pin(&spec(
            json!({"nodeName": "w1", "nodeSelector": {HOSTNAME_LABEL: "w1"}})
        ))
        .is_none());
        // Nothing about hostnames.
        assert!(pod_pin(&spec(json!({"nodeSelector": {"disk": "ssd"}}))).is_none());
        let p = pod_pin(&spec(
            json!({"nodeSelector": {HOSTNAME_LABEL: "w1", "disk": "ssd"}}),
        ))
        .unwrap();
        assert_eq!(p.node_selector.len(), 1);
        // A term without a hostname constraint frees the pod.
        let free = spec(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": ["w1"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}),
        );
        assert!(pod_pin(&free).is_none());
        let pinned = spec(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": ["w1"]}, {"key": "zone", "operator": "In", "values": ["a"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["w2"]}]}]}}}}),
        );
        let p = pod_pin(&pinned).unwrap();
        let terms = &p
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0].match_expressions.len(), 1);
    }
}
