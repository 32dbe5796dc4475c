//! `claimguard explain pod/NAME` (or `pvc/NAME`): why a pod is stuck, from
//! the claim to its other users, to where its volume is attached, to the
//! node's health, to the command that fixes it.
//!
//! A one-shot read — live with the user's kubeconfig (`fetch`), or offline
//! from a support bundle (`--snapshot`) — into a [`Bundle`], explained by
//! the pure [`model::explain`] and printed by [`render`]. Installed or linked
//! as `kubectl-claimguard`, the same binary is a kubectl plugin:
//! `kubectl claimguard explain pod/db-1 -n shop`.

pub(crate) mod fetch;
pub mod model;
mod render;

pub use model::{explain, Bundle, Explanation};
pub use render::{render_json, render_text};

use std::path::{Path, PathBuf};

/// What to explain, as kubectl writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Pod,
    Claim,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Pod => "Pod",
            TargetKind::Claim => "PersistentVolumeClaim",
        }
    }

    fn of(resource: &str) -> Option<TargetKind> {
        // kubectl's names for the two kinds, with or without the group.
        match resource.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" | "pod.v1" => Some(TargetKind::Pod),
            "pvc" | "pvcs" | "persistentvolumeclaim" | "persistentvolumeclaims" => {
                Some(TargetKind::Claim)
            }
            _ => None,
        }
    }
}

/// Everything that ends `explain` with exit status 2, each one line.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Usage(String),
    #[error("{what} not found in namespace {namespace}")]
    NotFound { what: String, namespace: String },
    #[error("cannot read {what}: {reason}")]
    Unreadable { what: String, reason: String },
    #[error("{0}")]
    Snapshot(#[from] crate::cluster::SnapshotError),
    #[error("cannot read kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("forbidden: cannot {verb} {what} in namespace {namespace} ({reason}); explain needs get/list on pods, persistentvolumeclaims and events there")]
    Forbidden {
        verb: &'static str,
        what: String,
        namespace: String,
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
}

/// Parse `pod/NAME`, `pvc/NAME`, `persistentvolumeclaim/NAME`, or the two
/// words `pod NAME`.
pub fn parse_target(words: &[String]) -> Result<Target, ExplainError> {
    let usage = || {
        ExplainError::Usage(
            "expected a target such as pod/NAME, pvc/NAME or `pod NAME`".to_string(),
        )
    };
    let (resource, name) = crate::one_shot::split_target(words).ok_or_else(usage)?;
    let kind = TargetKind::of(resource).ok_or_else(|| {
        ExplainError::Usage(format!(
            "explain takes a pod or a persistentvolumeclaim, not \"{resource}\" (pod/NAME or pvc/NAME)"
        ))
    })?;
    if name.is_empty() || name.contains('/') {
        return Err(usage());
    }
    Ok(Target {
        kind,
        name: name.to_string(),
    })
}

/// Where the objects come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Support bundle files (`kubectl get … -A -o yaml`).
    Snapshot(Vec<PathBuf>),
    /// The API server, through a kubeconfig (`None`: kube's inference) and context.
    Live {
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    },
}

/// Read what `target` needs and explain it. `namespace` is `-n`; when
/// absent: the kubeconfig context's namespace (live), else `default`.
pub async fn run(
    source: &Source,
    target: &Target,
    namespace: Option<&str>,
) -> Result<Explanation, ExplainError> {
    match source {
        Source::Snapshot(paths) => {
            let ns = namespace.unwrap_or("default");
            let bundle = read_bundle(paths)?;
            explain(&bundle, target, ns)
        }
        Source::Live {
            kubeconfig,
            context,
        } => {
            let (client, default_ns) =
                fetch::client(kubeconfig.as_deref(), context.as_deref()).await?;
            let ns = namespace.map(str::to_string).unwrap_or(default_ns);
            let (bundle, notes) = fetch::read(&client, target, &ns).await?;
            let mut e = explain(&bundle, target, &ns)?;
            e.notes = notes;
            Ok(e)
        }
    }
}

/// Every object of the snapshot files, Lists flattened.
pub fn read_bundle(paths: &[PathBuf]) -> Result<Bundle, ExplainError> {
    let mut objects = Vec::new();
    for p in paths {
        objects.extend(read_file(p)?);
    }
    Ok(Bundle { objects })
}

fn read_file(path: &Path) -> Result<Vec<serde_json::Value>, ExplainError> {
    use crate::cluster::snapshot::{self, SnapshotError, MAX_FILE_BYTES};
    let shown = path.display().to_string();
    let err = |reason: String| SnapshotError::Read {
        path: shown.clone(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")).into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let values = snapshot::parse_values(&shown, &text)?;
    // Empty, `/dev/null`, only `---`: refused, as by check and audit; an
    // empty `kind: List` is an empty cluster (the target is then not found).
    if values.iter().all(serde_json::Value::is_null) {
        return Err(snapshot::no_object(&shown).into());
    }
    let mut out = Vec::new();
    for v in values {
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        match v.get("items") {
            Some(serde_json::Value::Array(items)) if kind.ends_with("List") => {
                let item_kind = kind.strip_suffix("List").unwrap_or_default();
                for mut item in items.iter().cloned() {
                    if item.get("kind").is_none() && !item_kind.is_empty() {
                        item["kind"] = item_kind.into();
                    }
                    out.push(item);
                }
            }
            _ if v.is_object() => out.push(v),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn targets_as_kubectl_writes_them() {
        for (w, kind, name) in [
            (&["pod/db-1"][..], TargetKind::Pod, "db-1"),
            (&["pods/db-1"][..], TargetKind::Pod, "db-1"),
            (&["pod", "db-1"][..], TargetKind::Pod, "db-1"),
            (&["pvc/data"][..], TargetKind::Claim, "data"),
            (
                &["persistentvolumeclaim/data"][..],
                TargetKind::Claim,
                "data",
            ),
            (&["PVC", "data"][..], TargetKind::Claim, "data"),
        ] {
            let t = parse_target(&words(w)).unwrap();
            assert_eq!((t.kind, t.name.as_str()), (kind, name), "{w:?}");
        }
        for bad in [
            &["deployment/web"][..],
            &["db-1"][..],
            &["pod/"][..],
            &["pod/a/b"][..],
            &[][..],
            &["pod", "a", "b"][..],
        ] {
            let e = parse_target(&words(bad)).unwrap_err().to_string();
            assert!(!e.contains('\n') && !e.is_empty(), "{bad:?}: {e}");
        }
        assert!(parse_target(&words(&["deployment/web"]))
            .unwrap_err()
            .to_string()
            .contains("not \"deployment\""));
    }
}
