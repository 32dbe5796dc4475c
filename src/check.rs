//! `claimguard check`: replay manifests against a cluster state, offline, and
//! print what `kubectl apply` would print.

use crate::cluster::{snapshot, ClusterState, ClusterView, SnapshotError};
use crate::objects::Object;
use crate::policy::{self, Operation, Policy, Request};
use serde::Serialize;
use std::path::PathBuf;

/// The webhook name `kubectl` shows in a denial.
pub const WEBHOOK_NAME: &str = "claimguard.io";

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Input(#[from] SnapshotError),
    #[error("{path}: {reason}")]
    Path { path: String, reason: String },
    #[error("no manifest files given")]
    NoFiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingOut {
    pub rule: &'static str,
    /// deny, warn, audit (allowed silently), not-enforced (audit mode) or pre-existing.
    pub effect: &'static str,
    pub claim: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectResult {
    pub file: String,
    pub document: usize,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub allowed: bool,
    /// The line `kubectl apply` prints.
    pub result: String,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    pub findings: Vec<FindingOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub objects: Vec<ObjectResult>,
    pub denied: usize,
    pub warnings: usize,
}

/// Manifest files named on the command line; a directory means its
/// `.yaml`, `.yml` and `.json` files in name order, as `kubectl apply -f dir/`.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CheckError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| CheckError::Path {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && matches!(
                            f.extension().and_then(|e| e.to_str()),
                            Some("yaml") | Some("yml") | Some("json")
                        )
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn effect_name(e: policy::Effect) -> &'static str {
    match e {
        policy::Effect::Deny => "deny",
        policy::Effect::Warn => "warn",
        policy::Effect::Audit => "audit",
        policy::Effect::NotEnforced => "not-enforced",
        policy::Effect::PreExisting => "pre-existing",
    }
}

/// Read every input first, so bad input fails before any verdict is printed.
pub fn run(
    snapshots: &[PathBuf],
    policy: &Policy,
    files: &[PathBuf],
) -> Result<CheckReport, CheckError> {
    if files.is_empty() {
        return Err(CheckError::NoFiles);
    }
    let mut state: ClusterState = snapshot::load_snapshot(snapshots)?;
    let mut docs = Vec::new();
    for f in expand_paths(files)? {
        docs.extend(snapshot::read_documents(&f)?);
    }
    let mut report = CheckReport {
        objects: Vec::new(),
        denied: 0,
        warnings: 0,
    };
    let mut generated = 0;
    for mut d in docs {
        if let Some(o) = &mut d.object {
            let meta = o.metadata_mut();
            if meta.name.is_empty() {
                // The API server would generate the name; so do we, predictably.
                generated += 1;
                meta.name = format!("{}{generated:05}", meta.generate_name);
                d.name = meta.name.clone();
            }
        }
        let resource = format!("{}/{}", d.kubectl_resource(), d.name);
        let mut res = ObjectResult {
            file: d.path.clone(),
            document: d.doc,
            kind: d.kind.clone(),
            namespace: d.namespace.clone(),
            name: d.name.clone(),
            allowed: true,
            result: format!("{resource} created"),
            warnings: Vec::new(),
            denial: None,
            findings: Vec::new(),
        };
        if let Some(object) = &d.object {
            let ns = object
                .metadata()
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let verdict = policy::evaluate(
                policy,
                &Request {
                    operation: Operation::Create,
                    namespace: &ns,
                    object,
                    old_object: None,
                },
                &state as &dyn ClusterView,
            );
            res.allowed = verdict.allowed;
            res.warnings = verdict.warnings.clone();
            res.findings = verdict
                .findings
                .iter()
                .map(|f| FindingOut {
                    rule: f.rule.id(),
                    effect: effect_name(f.effect),
                    claim: f.claim.clone(),
                    message: f.message.clone(),
                })
                .collect();
            if let Some(denial) = &verdict.denial {
                res.result = format!(
                    "Error from server (Forbidden): admission webhook \"{WEBHOOK_NAME}\" denied the request: {denial}"
                );
                res.denial = Some(denial.clone());
                report.denied += 1;
            } else {
                // Admitted: the object joins the state, as a cluster would store it.
                store(&mut state, object);
            }
        }
        report.warnings += res.warnings.len();
        report.objects.push(res);
    }
    Ok(report)
}

fn store(state: &mut ClusterState, object: &Object) {
    state.apply_object(object);
}

/// What `kubectl apply` prints, object by object.
pub fn render_text(report: &CheckReport) -> String {
    let mut out = String::new();
    for o in &report.objects {
        for w in &o.warnings {
            out.push_str("Warning: ");
            out.push_str(w);
            out.push('\n');
        }
        out.push_str(&o.result);
        out.push('\n');
    }
    out
}

pub fn render_json(report: &CheckReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
}
