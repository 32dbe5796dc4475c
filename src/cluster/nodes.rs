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

/// Node name → its `kubernetes.io/hostname` label (`None`: no label).
#[derive(Debug, Default)]
pub(super) struct NodeTable {
    hostnames: HashMap<Box<str>, Option<Box<str>>>,
}

impl NodeTable {
    pub(super) fn apply(&mut self, node: &objects::Node) {
        if node.metadata.name.is_empty() {
            return;
        }
        let label = node
            .metadata
            .labels
            .get(HOSTNAME_LABEL)
            .map(|h| h.as_str().into());
        self.hostnames
            .insert(node.metadata.name.as_str().into(), label);
    }

    pub(super) fn delete(&mut self, name: &str) {
        self.hostnames.remove(name);
    }

    pub(super) fn names(&self) -> Vec<String> {
        self.hostnames.keys().map(|k| k.to_string()).collect()
    }

    /// The hostname label of a known node; `None` when the node is unknown
    /// or carries no label (then pins compare with its name).
    pub(super) fn hostname(&self, node: &str) -> Option<&str> {
        self.hostnames.get(node).and_then(|h| h.as_deref())
    }

    pub(super) fn dump(&self, out: &mut Vec<String>) {
        for (name, h) in &self.hostnames {
            out.push(format!(
                "node {name} hostname={}",
                h.as_deref().unwrap_or("-")
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
