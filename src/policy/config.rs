//! The policy file: rule actions, mode, exemptions. Every key is optional.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Every rule claimguard knows, plus the pseudo-rule for unreadable clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    RwopExclusive,
    RwopTerminatingHolder,
    RwoCrossNode,
    RwoSharedWriter,
    RwoReadOnlyPlacement,
    /// A new pod would wait for a volume stuck on a dead node (or failing to detach).
    RwoStuckAttachment,
    /// Audit only: a stuck attachment of a single-node or RWOP volume.
    StaleAttachment,
    WorkloadRwopReplicas,
    WorkloadRwoReplicas,
    RolloutDeadlock,
    PvcModeUnsupported,
    ClaimNotFound,
    /// Not a rule of the policy file: the cluster view could not be read;
    /// its action comes from `onLookupError`.
    LookupError,
}

impl Rule {
    pub const ALL: [Rule; 12] = [
        Rule::RwopExclusive,
        Rule::RwopTerminatingHolder,
        Rule::RwoCrossNode,
        Rule::RwoSharedWriter,
        Rule::RwoReadOnlyPlacement,
        Rule::RwoStuckAttachment,
        Rule::StaleAttachment,
        Rule::WorkloadRwopReplicas,
        Rule::WorkloadRwoReplicas,
        Rule::RolloutDeadlock,
        Rule::PvcModeUnsupported,
        Rule::ClaimNotFound,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::RwopExclusive => "rwop-exclusive",
            Rule::RwopTerminatingHolder => "rwop-terminating-holder",
            Rule::RwoCrossNode => "rwo-cross-node",
            Rule::RwoSharedWriter => "rwo-shared-writer",
            Rule::RwoReadOnlyPlacement => "rwo-readonly-placement",
            Rule::RwoStuckAttachment => "rwo-stuck-attachment",
            Rule::StaleAttachment => "stale-attachment",
            Rule::WorkloadRwopReplicas => "workload-rwop-replicas",
            Rule::WorkloadRwoReplicas => "workload-rwo-replicas",
            Rule::RolloutDeadlock => "rollout-deadlock",
            Rule::PvcModeUnsupported => "pvc-mode-unsupported",
            Rule::ClaimNotFound => "claim-not-found",
            Rule::LookupError => "lookup-error",
        }
    }

    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.id() == id)
    }

    pub fn default_action(self) -> Action {
        match self {
            Rule::RwopExclusive | Rule::RwoCrossNode | Rule::WorkloadRwopReplicas => Action::Deny,
            _ => Action::Warn,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deny,
    Warn,
    Audit,
    Off,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Warn => "warn",
            Action::Audit => "audit",
            Action::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnLookupError {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    mode: Option<Mode>,
    rules: Option<BTreeMap<String, Action>>,
    exempt_namespaces: Option<Vec<String>>,
    block_only_provisioners: Option<Vec<String>>,
    block_multi_writer_provisioners: Option<Vec<String>>,
    on_lookup_error: Option<OnLookupError>,
    colocate: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("policy {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A loaded policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    actions: [Action; Rule::ALL.len()],
    pub exempt_namespaces: Vec<String>,
    pub block_only_provisioners: Vec<String>,
    /// Block-only provisioners that serve ReadWriteMany raw block volumes
    /// (`volumeMode: Block`): EBS io2 Multi-Attach, Azure shared disks, GCE
    /// multi-writer disks.
    pub block_multi_writer_provisioners: Vec<String>,
    pub on_lookup_error: OnLookupError,
    /// `colocate: true`: co-location (`POST /mutate`) in every namespace that
    /// is not exempt, without the namespace label or pod annotation.
    pub colocate: bool,
}

pub const DEFAULT_BLOCK_ONLY_PROVISIONERS: [&str; 6] = [
    "ebs.csi.aws.com",
    "pd.csi.storage.gke.io",
    "disk.csi.azure.com",
    "kubernetes.io/aws-ebs",
    "kubernetes.io/gce-pd",
    "kubernetes.io/azure-disk",
];

pub const DEFAULT_BLOCK_MULTI_WRITER_PROVISIONERS: [&str; 3] = [
    "ebs.csi.aws.com",
    "pd.csi.storage.gke.io",
    "disk.csi.azure.com",
];

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Enforce,
            actions: Rule::ALL.map(Rule::default_action),
            exempt_namespaces: vec!["kube-system".into()],
            block_only_provisioners: DEFAULT_BLOCK_ONLY_PROVISIONERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            block_multi_writer_provisioners: DEFAULT_BLOCK_MULTI_WRITER_PROVISIONERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            on_lookup_error: OnLookupError::Allow,
            colocate: false,
        }
    }
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Policy::parse(&text).map_err(|reason| PolicyError::Invalid {
            path: shown,
            reason,
        })
    }

    /// Parse policy YAML (JSON is YAML too). The error is one line.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = if text.trim().is_empty() {
            PolicyFile::default()
        } else {
            serde_yaml_ng::from_str::<Option<PolicyFile>>(text)
                .map_err(|e| {
                    e.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })?
                .unwrap_or_default()
        };
        let mut p = Policy::default();
        if let Some(m) = file.mode {
            p.mode = m;
        }
        for (id, action) in file.rules.unwrap_or_default() {
            let rule = Rule::from_id(&id).ok_or_else(|| {
                format!(
                    "unknown rule id {id:?} in rules (known: {})",
                    Rule::ALL.map(Rule::id).join(", ")
                )
            })?;
            p.actions[rule.index()] = action;
        }
        if let Some(ns) = file.exempt_namespaces {
            p.exempt_namespaces = ns;
        }
        if let Some(b) = file.block_only_provisioners {
            p.block_only_provisioners = b;
        }
        if let Some(b) = file.block_multi_writer_provisioners {
            p.block_multi_writer_provisioners = b;
        }
        if let Some(o) = file.on_lookup_error {
            p.on_lookup_error = o;
        }
        if let Some(c) = file.colocate {
            p.colocate = c;
        }
        Ok(p)
    }

    pub fn action(&self, rule: Rule) -> Action {
        match rule {
            Rule::LookupError => match self.on_lookup_error {
                OnLookupError::Allow => Action::Warn,
                OnLookupError::Deny => Action::Deny,
            },
            r => self.actions[r.index()],
        }
    }

    pub fn set_action(&mut self, rule: Rule, action: Action) {
        if rule != Rule::LookupError {
            self.actions[rule.index()] = action;
        }
    }

    pub fn is_exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.iter().any(|n| n == namespace)
    }

    /// Does this provisioner serve ReadWriteMany as raw block?
    pub fn serves_block_multi_writer(&self, provisioner: &str) -> bool {
        self.block_multi_writer_provisioners
            .iter()
            .any(|p| p == provisioner)
    }

    pub fn is_block_only(&self, provisioner: &str) -> bool {
        self.block_only_provisioners
            .iter()
            .any(|p| p == provisioner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let p = Policy::default();
        assert_eq!(p.action(Rule::RwopExclusive), Action::Deny);
        assert_eq!(p.action(Rule::RwoCrossNode), Action::Deny);
        assert_eq!(p.action(Rule::WorkloadRwopReplicas), Action::Deny);
        for r in [
            Rule::RwopTerminatingHolder,
            Rule::RwoSharedWriter,
            Rule::RwoReadOnlyPlacement,
            Rule::RwoStuckAttachment,
            Rule::StaleAttachment,
            Rule::WorkloadRwoReplicas,
            Rule::RolloutDeadlock,
            Rule::PvcModeUnsupported,
            Rule::ClaimNotFound,
            Rule::LookupError,
        ] {
            assert_eq!(p.action(r), Action::Warn, "{r}");
        }
        assert_eq!(p.exempt_namespaces, vec!["kube-system"]);
        assert_eq!(Policy::parse("").unwrap(), p);
        assert_eq!(Policy::parse("{}").unwrap(), p);
    }

    #[test]
    fn overrides() {
        let p = Policy::parse(
            "mode: audit\nrules: {rwo-shared-writer: deny, claim-not-found: off}\nexemptNamespaces: []\nonLookupError: deny\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Audit);
        assert_eq!(p.action(Rule::RwoSharedWriter), Action::Deny);
        assert_eq!(p.action(Rule::ClaimNotFound), Action::Off);
        assert_eq!(p.action(Rule::LookupError), Action::Deny);
        assert!(!p.is_exempt("kube-system"));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, want) in [
            (
                "rules: {rwop-exclusiv: warn}",
                "unknown rule id \"rwop-exclusiv\"",
            ),
            ("rules: {rwop-exclusive: block}", "unknown variant"),
            ("mode: strict", "unknown variant"),
            ("exemptNamespace: [a]", "unknown field"),
            ("mode: [", "mode"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'));
        }
    }
}
