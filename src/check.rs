//! `claimguard check`: replay manifests against a cluster state, offline, and
//! print what `kubectl apply` would print.

use crate::cluster::{snapshot, ClusterState, ClusterView, SnapshotError};
use crate::objects::Object;
use crate::policy::{self, Operation, Policy, Request};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The name `kubectl` shows for standard input (`-f -`), in results and errors.
pub const STDIN_NAME: &str = "STDIN";

/// The webhook of `manifests/` that judges `kind`: `kubectl` names it in a denial.
pub fn webhook_name(kind: crate::objects::Kind) -> &'static str {
    use crate::objects::Kind;
    match kind {
        Kind::Pod => "pods.claimguard.io",
        Kind::PersistentVolumeClaim => "pvcs.claimguard.io",
        _ => "workloads.claimguard.io",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Input(#[from] SnapshotError),
    #[error("{path}: {reason}")]
    Path { path: String, reason: String },
    #[error("no manifest files given")]
    NoFiles,
    #[error("{path}: no .yaml, .yml or .json files in this directory")]
    EmptyDirectory { path: String },
    #[error("{path}: no Kubernetes objects in this file")]
    NoObjects { path: String },
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
/// `.yaml`, `.yml` and `.json` files in name order, as `kubectl apply -f dir/`;
/// `-` is standard input. A directory with none of those files is an error,
/// not a silent pass.
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
            if files.is_empty() {
                return Err(CheckError::EmptyDirectory {
                    path: p.display().to_string(),
                });
            }
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

/// Reads the documents of one manifest file, or of standard input for `-`.
/// A file without a single object is an error: `kubectl apply` says "no
/// objects passed to apply", and a CI job that passes on nothing hides a typo.
fn read_manifest(path: &Path) -> Result<Vec<snapshot::Document>, CheckError> {
    let docs = if path == Path::new("-") {
        use std::io::Read;
        let mut text = String::new();
        std::io::stdin()
            .take(snapshot::MAX_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| CheckError::Path {
                path: STDIN_NAME.into(),
                reason: format!("cannot read standard input: {e}"),
            })?;
        snapshot::parse_documents(STDIN_NAME, &text)?
    } else {
        snapshot::read_documents(path)?
    };
    if docs.is_empty() {
        return Err(CheckError::NoObjects {
            path: if path == Path::new("-") {
                STDIN_NAME.into()
            } else {
                path.display().to_string()
            },
        });
    }
    Ok(docs)
}

/// What identifies an object for `apply`: a second document with the same
/// kind, namespace and name updates the first instead of creating it again.
type ObjectKey = (String, String, String);

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
        docs.extend(read_manifest(&f)?);
    }
    let mut report = CheckReport {
        objects: Vec::new(),
        denied: 0,
        warnings: 0,
    };
    // Objects this run stored, by key: the old object of a later apply. An
    // unjudged kind (ConfigMap) is kept as `None` so it still prints
    // `configured` the second time.
    let mut applied: HashMap<ObjectKey, Option<Object>> = HashMap::new();
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
        let ns = d
            .object
            .as_ref()
            .and_then(|o| o.metadata().namespace.clone())
            .or_else(|| d.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let key: ObjectKey = (d.kubectl_resource(), ns.clone(), d.name.clone());
        let previous = applied.get(&key);
        let exists = previous.is_some() || in_snapshot(&state, d.object.as_ref(), &ns, &d.name);
        let old_object = previous.and_then(|o| o.clone());
        let mut res = ObjectResult {
            file: d.path.clone(),
            document: d.doc,
            kind: d.kind.clone(),
            namespace: d.namespace.clone(),
            name: d.name.clone(),
            allowed: true,
            result: format!(
                "{resource} {}",
                if exists { "configured" } else { "created" }
            ),
            warnings: Vec::new(),
            denial: None,
            findings: Vec::new(),
        };
        if let Some(object) = &d.object {
            let verdict = policy::evaluate(
                policy,
                &Request {
                    operation: if exists {
                        Operation::Update
                    } else {
                        Operation::Create
                    },
                    namespace: &ns,
                    object,
                    old_object: old_object.as_ref(),
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
                // kubectl's words: `creating` for a new object; for an existing
                // one it prints the patch first and ends with `patching`.
                let verb = if exists { "patching" } else { "creating" };
                res.result = format!(
                    "Error from server (Forbidden): error when {verb} \"{}\": admission webhook \"{}\" denied the request: {denial}",
                    d.path,
                    webhook_name(object.kind())
                );
                res.denial = Some(denial.clone());
                report.denied += 1;
            } else {
                // Admitted: the object joins the state, as a cluster would store it.
                store(&mut state, object);
                applied.insert(key, Some(object.clone()));
            }
        } else {
            applied.insert(key, None);
        }
        report.warnings += res.warnings.len();
        report.objects.push(res);
    }
    Ok(report)
}

/// Whether the snapshot already holds this object (pods and claims: the kinds
/// the index keeps by name).
fn in_snapshot(state: &ClusterState, object: Option<&Object>, ns: &str, name: &str) -> bool {
    match object {
        Some(Object::Pod(_)) => state.pod(ns, name).is_some(),
        Some(Object::PersistentVolumeClaim(_)) => {
            matches!((state as &dyn ClusterView).claim(ns, name), Ok(Some(_)))
        }
        _ => false,
    }
}

fn store(state: &mut ClusterState, object: &Object) {
    state.apply_object(object);
}

/// Where `kubectl apply` writes a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `pod/x created`, `deployment.apps/y configured`.
    Stdout,
    /// `Warning: …` and `Error from server (Forbidden): …`.
    Stderr,
}

/// What `kubectl apply` prints, object by object, each line with its stream.
pub fn text_lines(report: &CheckReport) -> Vec<(Stream, String)> {
    let mut out = Vec::new();
    for o in &report.objects {
        for w in &o.warnings {
            out.push((Stream::Stderr, format!("Warning: {w}")));
        }
        let stream = if o.denial.is_some() {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        out.push((stream, o.result.clone()));
    }
    out
}

/// Both streams of [`text_lines`] as one terminal shows them.
pub fn render_text(report: &CheckReport) -> String {
    let mut out = String::new();
    for (_, line) in text_lines(report) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub fn render_json(report: &CheckReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
}
