//! Where a pod may run, as far as node identity goes: `spec.nodeName`, a
//! `kubernetes.io/hostname` nodeSelector and the hostname / `metadata.name`
//! requirements of its required node affinity.
//!
//! `nodeName` and `matchFields metadata.name` name nodes exactly. A hostname
//! value names the node whose `kubernetes.io/hostname` label it is: where the
//! view knows the node (`ClusterView::node_hostname`), its label is compared;
//! where it does not, the node's name is (the label equals the name on most
//! clusters).

use crate::cluster::{ClusterView, HOSTNAME_LABEL};
use crate::objects::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

/// A pod's placement constraints, read against the cluster's nodes.
#[derive(Clone, Copy)]
pub struct Pin<'a> {
    spec: &'a PodSpec,
    view: &'a dyn ClusterView,
}

impl<'a> Pin<'a> {
    pub fn new(spec: &'a PodSpec, view: &'a dyn ClusterView) -> Self {
        Pin { spec, view }
    }

    fn node_name(&self) -> Option<&'a str> {
        self.spec.node_name.as_deref().filter(|n| !n.is_empty())
    }

    fn hostname_selector(&self) -> Option<&'a str> {
        self.spec
            .node_selector
            .get(HOSTNAME_LABEL)
            .map(String::as_str)
    }

    fn terms(&self) -> &'a [NodeSelectorTerm] {
        self.spec.required_node_terms()
    }

    /// Does the value of a hostname requirement name this node?
    fn is_hostname(&self, node: &str, value: &str) -> bool {
        self.view.node_hostname(node).unwrap_or(node) == value
    }

    /// May the pod run on `node`?
    pub fn allows(&self, node: &str) -> bool {
        if self.node_name().is_some_and(|n| n != node) {
            return false;
        }
        if self
            .hostname_selector()
            .is_some_and(|h| !self.is_hostname(node, h))
        {
            return false;
        }
        // Terms are ORed; expressions within a term are ANDed. Expressions on
        // other keys may or may not match this node, so they never exclude it.
        let terms = self.terms();
        terms.is_empty() || terms.iter().any(|t| self.term_allows(t, node))
    }

    fn term_allows(&self, t: &NodeSelectorTerm, node: &str) -> bool {
        let hostname = t
            .match_expressions
            .iter()
            .filter(|e| e.key == HOSTNAME_LABEL)
            .all(|e| self.requirement_allows(e, |v| self.is_hostname(node, v)));
        let name = t
            .match_fields
            .iter()
            .filter(|e| e.key == "metadata.name")
            .all(|e| self.requirement_allows(e, |v| v == node));
        hostname && name
    }

    fn requirement_allows(&self, e: &NodeSelectorRequirement, is: impl Fn(&str) -> bool) -> bool {
        match e.operator.as_str() {
            "In" => e.values.iter().any(|v| is(v)),
            "NotIn" => !e.values.iter().any(|v| is(v)),
            "DoesNotExist" => false, // every node has a hostname label
            _ => true,
        }
    }

    /// Is the pod held to `node` and no other (so it can only run where the
    /// claim is attached)?
    pub fn only(&self, node: &str) -> bool {
        if let Some(n) = self.node_name() {
            return n == node;
        }
        if let Some(h) = self.hostname_selector() {
            if self.is_hostname(node, h) {
                return true;
            }
        }
        // Every term must name only this node through an `In` requirement.
        let terms = self.terms();
        !terms.is_empty()
            && terms.iter().all(|t| {
                let hostname = t
                    .match_expressions
                    .iter()
                    .filter(|e| e.key == HOSTNAME_LABEL && e.operator == "In")
                    .any(|e| e.values.iter().all(|v| self.is_hostname(node, v)));
                let name = t
                    .match_fields
                    .iter()
                    .filter(|e| e.key == "metadata.name" && e.operator == "In")
                    .any(|e| e.values.iter().all(|v| v == node));
                (hostname || name) && self.term_allows(t, node)
            })
    }

    /// How the pod is kept off a node, for a message.
    pub fn describe(&self) -> String {
        if let Some(n) = self.node_name() {
            format!("pinned to node {n}")
        } else if let Some(h) = self.hostname_selector() {
            format!("pinned to node {h} by its nodeSelector")
        } else {
            "kept off that node by its required node affinity".to_string()
        }
    }
}

/// The value a `kubernetes.io/hostname` nodeSelector needs to pin a pod to
/// `node`: its label when known, else its name.
pub fn hostname_of<'a>(view: &'a dyn ClusterView, node: &'a str) -> &'a str {
    view.node_hostname(node).unwrap_or(node)
}
