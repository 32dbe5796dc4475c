//! Reading manifests and snapshot files: YAML (one or many documents) or
//! JSON, each document an object or a `kind: List` — exactly what
//! [`DUMP_COMMAND`] prints.

use super::ClusterState;
use crate::objects::{Kind, Object};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The one command that dumps a cluster for `check`, `audit`, `explain` and
/// `migrate --list`: every kind they read. A macro so that clap help text can
/// `concat!` it; the docs and `--help` are held to it by a test.
#[macro_export]
macro_rules! dump_command {
    () => {
        "kubectl get namespaces,storageclasses,pv,pvc,pods,nodes,volumeattachments,events,deployments,statefulsets,daemonsets,replicasets,replicationcontrollers,jobs,cronjobs -A -o json > cluster.json"
    };
}

/// See [`dump_command!`].
pub const DUMP_COMMAND: &str = dump_command!();

/// Largest file read; a cluster dump of 100k pods is well under this.
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: document {doc}: {reason}")]
    Document {
        path: String,
        doc: usize,
        reason: String,
    },
    /// A field of a known kind with the wrong shape, named by its path in
    /// the document (`spec.volumes`, `items[3].spec.replicas`); the document
    /// is numbered only in a file of several.
    #[error("{path}: {}{field}: {reason}", .doc.map(|d| format!("document {d}: ")).unwrap_or_default())]
    Field {
        path: String,
        doc: Option<usize>,
        field: String,
        reason: String,
    },
}

/// Why a document could not be read: a reason about the whole document, or
/// a field of it that does not have its kind's shape.
enum DocError {
    Reason(String),
    Field { field: String, reason: String },
}

impl From<String> for DocError {
    fn from(reason: String) -> Self {
        DocError::Reason(reason)
    }
}

/// Parse `value` as `kind`; on failure, the path of the field that failed
/// (`spec.volumes`) and serde's reason.
pub fn object_with_path(kind: Kind, value: &serde_json::Value) -> Result<Object, (String, String)> {
    let mut track = serde_path_to_error::Track::new();
    match Object::deserialize_as(
        kind,
        serde_path_to_error::Deserializer::new(value, &mut track),
    ) {
        Ok(o) => Ok(o),
        Err(e) => Err((track.path().to_string(), e.to_string())),
    }
}

/// One document of a manifest file, in file order. `object` is `None` for
/// kinds claimguard neither judges nor stores (ConfigMap, Service, …).
#[derive(Debug, Clone)]
pub struct Document {
    pub path: String,
    /// 1-based position in the file (items of a List count one each).
    pub doc: usize,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub object: Option<Object>,
}

impl Document {
    /// What `kubectl` prints before the name: `deployment.apps`, `configmap`.
    pub fn kubectl_resource(&self) -> String {
        if let Some(o) = &self.object {
            return o.kind().kubectl_resource().to_string();
        }
        let group = self
            .api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("");
        if group.is_empty() {
            self.kind.to_lowercase()
        } else {
            format!("{}.{}", self.kind.to_lowercase(), group)
        }
    }
}

/// Read every document of `path`. A document without `kind`, or a known kind
/// that does not have the shape of its kind, is an error naming the document.
pub fn read_documents(path: &Path) -> Result<Vec<Document>, SnapshotError> {
    parse_documents(&path.display().to_string(), &read_text(path)?)
}

/// The text of a manifest or snapshot file, within [`MAX_FILE_BYTES`].
fn read_text(path: &Path) -> Result<String, SnapshotError> {
    let shown = path.display().to_string();
    let read_err = |reason: String| SnapshotError::Read {
        path: shown.clone(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
    if meta.is_dir() {
        return Err(read_err("is a directory".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(read_err(format!(
            "file is {} bytes, more than the {} byte limit",
            meta.len(),
            MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| read_err(format!("not UTF-8 text: {}", e.utf8_error())))
}

/// Parse manifest text (JSON or YAML) into documents.
pub fn parse_documents(path: &str, text: &str) -> Result<Vec<Document>, SnapshotError> {
    documents_of(path, parse_values(path, text)?)
}

/// What a cluster snapshot file says about the cluster: a file without a
/// single document (empty, `/dev/null`, only `---` or comments) is refused,
/// so a failed dump is not read as an empty cluster. An empty cluster is an
/// empty `kind: List`.
pub fn read_snapshot_documents(path: &Path) -> Result<Vec<Document>, SnapshotError> {
    let shown = path.display().to_string();
    let values = parse_values(&shown, &read_text(path)?)?;
    if values.iter().all(serde_json::Value::is_null) {
        return Err(no_object(&shown));
    }
    documents_of(&shown, values)
}

/// The one-line refusal of a snapshot that holds no document.
pub fn no_object(path: &str) -> SnapshotError {
    SnapshotError::Read {
        path: path.to_string(),
        reason: "holds no object (an empty cluster is an empty `kind: List`)".into(),
    }
}

fn documents_of(
    path: &str,
    values: Vec<serde_json::Value>,
) -> Result<Vec<Document>, SnapshotError> {
    let several = values.iter().filter(|v| !v.is_null()).count() > 1;
    let mut out = Vec::new();
    let mut n = 0;
    for (i, v) in values.into_iter().enumerate() {
        let located = |e: DocError, item: Option<usize>| match (e, item) {
            (DocError::Reason(reason), None) => SnapshotError::Document {
                path: path.to_string(),
                doc: i + 1,
                reason,
            },
            (DocError::Reason(reason), Some(j)) => SnapshotError::Document {
                path: path.to_string(),
                doc: i + 1,
                reason: format!("item {}: {reason}", j + 1),
            },
            (DocError::Field { field, reason }, item) => SnapshotError::Field {
                path: path.to_string(),
                doc: several.then_some(i + 1),
                field: match item {
                    Some(j) => format!("items[{j}].{field}"),
                    None => field,
                },
                reason,
            },
        };
        let doc_err = |reason: String| located(DocError::Reason(reason), None);
        if v.is_null() {
            continue; // an empty YAML document (`---` at the end)
        }
        if !v.is_object() {
            return Err(doc_err(
                "not a Kubernetes object (expected a mapping)".into(),
            ));
        }
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind.is_empty() {
            return Err(doc_err("has no kind".into()));
        }
        if kind == "List" || kind.ends_with("List") && v.get("items").is_some() {
            let items = match v.get("items") {
                Some(serde_json::Value::Array(items)) => items.as_slice(),
                Some(serde_json::Value::Null) | None => &[],
                Some(_) => return Err(doc_err("`items` of a List is not a list".into())),
            };
            // `kubectl get pods -o json` items carry their own kind; a typed
            // list (`PodList`) may omit it, so fall back to the list's kind.
            let item_kind = kind.strip_suffix("List").unwrap_or("");
            for (j, item) in items.iter().enumerate() {
                n += 1;
                out.push(
                    to_document(path, n, item, item_kind, &v).map_err(|e| located(e, Some(j)))?,
                );
            }
        } else {
            n += 1;
            out.push(to_document(path, n, &v, "", &v).map_err(|e| located(e, None))?);
        }
    }
    Ok(out)
}

fn to_document(
    path: &str,
    doc: usize,
    v: &serde_json::Value,
    fallback_kind: &str,
    list: &serde_json::Value,
) -> Result<Document, DocError> {
    if !v.is_object() {
        return Err(DocError::Reason(
            "not a Kubernetes object (expected a mapping)".into(),
        ));
    }
    let kind = v
        .get("kind")
        .and_then(|k| k.as_str())
        .filter(|k| !k.is_empty())
        .unwrap_or(fallback_kind);
    if kind.is_empty() {
        return Err(DocError::Reason("has no kind".into()));
    }
    let api_version = v
        .get("apiVersion")
        .and_then(|a| a.as_str())
        .or_else(|| list.get("apiVersion").and_then(|a| a.as_str()))
        .unwrap_or("");
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let kind_enum = Kind::from_api_version(api_version, kind)
        // `kind` alone is enough when apiVersion is missing from an item.
        .or_else(|| api_version.is_empty().then(|| guess_kind(kind)).flatten());
    let object = match kind_enum {
        Some(k) => {
            let shown = if name.is_empty() { "<unnamed>" } else { &name };
            if name.is_empty() && meta.and_then(|m| m.get("generateName")).is_none() {
                return Err(format!("{kind} has no metadata.name").into());
            }
            let spec_required = matches!(k, Kind::Pod) || k.is_workload();
            if spec_required && !v.get("spec").is_some_and(|s| s.is_object()) {
                return Err(format!("{kind} {shown} has no spec").into());
            }
            let has_containers = v
                .pointer("/spec/containers")
                .and_then(|c| c.as_array())
                .is_some_and(|a| !a.is_empty());
            // The shape first: a field of the wrong type is named by its
            // path, whatever else is missing.
            let mut o = object_with_path(k, v)
                .map_err(|(field, reason)| DocError::Field { field, reason })?;
            if k == Kind::Pod && !has_containers {
                return Err(format!("Pod {shown} has no containers").into());
            }
            if k.is_namespaced() && o.metadata().namespace.is_none() {
                o.metadata_mut().namespace = Some("default".into());
            }
            Some(o)
        }
        None => None,
    };
    Ok(Document {
        path: path.to_string(),
        doc,
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name,
        namespace,
        object,
    })
}

fn guess_kind(kind: &str) -> Option<Kind> {
    ["", "apps", "batch", "storage.k8s.io"]
        .iter()
        .find_map(|g| Kind::from_kind(g, kind))
}

/// Deepest flow nesting accepted. Real manifests stay under 20; libyaml
/// spends quadratic time on deep flow collections before serde's recursion
/// limit can stop it, so depth is checked first, in one linear pass.
const MAX_NESTING: usize = 256;

fn flow_depth_exceeds(text: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Every value of a manifest text (JSON or YAML, one or many documents),
/// Lists not yet flattened.
pub fn parse_values(path: &str, text: &str) -> Result<Vec<serde_json::Value>, SnapshotError> {
    if flow_depth_exceeds(text, MAX_NESTING) {
        return Err(SnapshotError::Read {
            path: path.to_string(),
            reason: format!("nested deeper than {MAX_NESTING} levels"),
        });
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON: one value, or a stream of values as `kubectl get -o json` of
        // several resources sometimes prints. serde_json limits nesting to 128.
        let mut out = Vec::new();
        let stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
        for (i, v) in stream.enumerate() {
            let v = v.map_err(|e| SnapshotError::Document {
                path: path.to_string(),
                doc: i + 1,
                reason: format!("invalid JSON: {e}"),
            })?;
            match v {
                serde_json::Value::Array(items) => out.extend(items),
                v => out.push(v),
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = serde_json::Value::deserialize(de).map_err(|e| SnapshotError::Document {
            path: path.to_string(),
            doc: i + 1,
            reason: format!("invalid YAML: {}", one_line(&e.to_string())),
        })?;
        out.push(v);
    }
    Ok(out)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Build a cluster state from snapshot files. Unknown kinds are ignored.
pub fn load_snapshot(paths: &[PathBuf]) -> Result<ClusterState, SnapshotError> {
    load_into(paths, |state: &mut ClusterState, o| state.apply_object(&o))
}

/// Feed every object of the snapshot files to `apply`, in file order, into
/// a fresh `S`. A JSON `List` (`kubectl get … -o json`) takes a fast path:
/// each item is parsed straight into its narrow type instead of a JSON tree
/// of the whole dump first — three times faster and a fraction of the memory
/// on a 100k-pod dump. Anything that path does not expect (another shape, an
/// item the reader would refuse) restarts the load through `read_documents`,
/// so errors are the reader's, word for word.
pub fn load_into<S: Default>(
    paths: &[PathBuf],
    mut apply: impl FnMut(&mut S, Object),
) -> Result<S, SnapshotError> {
    let mut sink = S::default();
    for p in paths {
        if !fast_json_list(p, &mut sink, &mut apply) {
            // The fast path may have fed part of a file: start over, every
            // file through the reader.
            let mut sink = S::default();
            for p in paths {
                for d in read_snapshot_documents(p)? {
                    if let Some(o) = d.object {
                        apply(&mut sink, o);
                    }
                }
            }
            return Ok(sink);
        }
    }
    Ok(sink)
}

#[derive(serde::Deserialize)]
struct RawList<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    items: Vec<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHead<'a> {
    #[serde(borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    api_version: Option<std::borrow::Cow<'a, str>>,
}

/// One item of a JSON List: `Ok(None)` for a kind claimguard does not use,
/// `Err` for anything the reader would refuse or read differently.
fn parse_item(item: &serde_json::value::RawValue) -> Result<Option<Object>, ()> {
    let head = serde_json::from_str::<RawHead<'_>>(item.get()).map_err(|_| ())?;
    let (Some(kind), Some(api)) = (head.kind, head.api_version) else {
        return Err(());
    };
    let Some(k) = Kind::from_api_version(&api, &kind) else {
        return Ok(None); // a kind claimguard neither judges nor stores
    };
    let mut o = Object::from_slice(k, item.get().as_bytes()).map_err(|_| ())?;
    // What the reader refuses; it will say so in its own words.
    let complete = !o.metadata().name.is_empty()
        && match &o {
            Object::Pod(p) => p.spec.as_ref().is_some_and(|s| !s.containers.is_empty()),
            Object::Workload(_, w) => w.spec.is_some(),
            _ => true,
        };
    if !complete {
        return Err(());
    }
    if k.is_namespaced() && o.metadata().namespace.is_none() {
        o.metadata_mut().namespace = Some("default".into());
    }
    Ok(Some(o))
}

/// The fast path of `load_into`. Returns false when the file is not a
/// JSON List it can read exactly as `read_documents` would; the caller then
/// drops what was fed so far and starts over with the reader.
fn fast_json_list<S>(path: &Path, sink: &mut S, apply: &mut impl FnMut(&mut S, Object)) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return false;
    }
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return false;
    }
    let Ok(list) = serde_json::from_slice::<RawList<'_>>(&bytes) else {
        return false;
    };
    if list.kind != "List" {
        return false;
    }
    // One item at a time, straight into the index: no second copy of
    // 100k parsed pods alive at once.
    for item in &list.items {
        match parse_item(item) {
            Ok(Some(o)) => apply(sink, o),
            Ok(None) => {}
            Err(()) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterView;

    #[test]
    fn yaml_list_and_multi_doc() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: default}
  spec:
    nodeName: n1
    containers: [{name: c, image: x}]
    volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cm}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec: {accessModes: [ReadWriteOncePod]}
---
"#;
        let docs = parse_documents("t.yaml", text).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].kubectl_resource(), "configmap");
        assert!(docs[1].object.is_none());
        let mut s = ClusterState::new();
        for d in &docs {
            if let Some(o) = &d.object {
                s.apply_object(o);
            }
        }
        assert_eq!(s.consumers("default", "data").unwrap().len(), 1);
        assert!(s
            .claim("default", "data")
            .unwrap()
            .unwrap()
            .effective
            .is_rwop());
    }

    #[test]
    fn json_list() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x","labels":{"claimguard.io/mode":"audit"}}}]}"#;
        let docs = parse_documents("t.json", text).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].kind, "Namespace");
    }

    #[test]
    fn bad_input_is_a_one_line_error() {
        let cases = [
            ("kind: Pod\nmetadata: {name: [unclosed", "invalid YAML"),
            ("{\"kind\": ", "invalid JSON"),
            ("apiVersion: v1\nmetadata: {name: a}\n", "has no kind"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n", "has no spec"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n", "no containers"),
            ("- 1\n- 2\n", "expected a mapping"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}], volumes: 3}\n", "f.yaml: spec.volumes: invalid type: integer `3`, expected a sequence"),
        ];
        for (text, want) in cases {
            let err = parse_documents("f.yaml", text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
            assert!(err.starts_with("f.yaml"), "{err:?} names the file");
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_by_its_path() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: c}]\n  volumes: data\n";
        let err = parse_documents("pod.yaml", pod).unwrap_err().to_string();
        assert_eq!(
            err,
            "pod.yaml: spec.volumes: invalid type: string \"data\", expected a sequence"
        );
        // Several documents: which one; a List: which item.
        let two = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{pod}");
        let err = parse_documents("two.yaml", &two).unwrap_err().to_string();
        assert!(
            err.starts_with("two.yaml: document 2: spec.volumes: invalid type"),
            "{err}"
        );
        let list = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c"}]}},
            {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"template":{"spec":{"containers":[{"name":"c","volumeMounts":[{"name":"v","readOnly":"yes"}]}]}}}}]}"#;
        let err = parse_documents("list.json", list).unwrap_err().to_string();
        assert_eq!(
            err,
            "list.json: items[1].spec.template.spec.containers[0].volumeMounts[0].readOnly: invalid type: string \"yes\", expected a boolean"
        );
    }

    #[test]
    fn a_snapshot_without_a_document_is_refused_and_an_empty_list_is_an_empty_cluster() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("empty.yaml", ""),
            ("dashes.yaml", "---\n"),
            ("comments.yaml", "# a dump that failed\n---\n---\n"),
            ("array.json", "[]"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let err = load_snapshot(std::slice::from_ref(&p))
                .unwrap_err()
                .to_string();
            assert!(
                err.ends_with("holds no object (an empty cluster is an empty `kind: List`)"),
                "{name}: {err}"
            );
        }
        let err = load_snapshot(&[PathBuf::from("/dev/null")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/dev/null: holds no object"), "{err}");
        for (name, text) in [
            ("list.yaml", "apiVersion: v1\nkind: List\nitems: []\n"),
            (
                "list.json",
                r#"{"apiVersion":"v1","kind":"List","items":[]}"#,
            ),
            ("null-items.yaml", "apiVersion: v1\nkind: List\nitems:\n"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let state = load_snapshot(&[p]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(state.pod_count(), 0);
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_documents("d.json", &deep_json).is_err());
        let deep_yaml = format!(
            "kind: Pod\nx: {}1{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_documents("d.yaml", &deep_yaml).is_err());
    }

    #[test]
    fn yaml_alias_bomb_is_refused() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let mut prev = 'a';
        for c in 'b'..='j' {
            text.push_str(&format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = c;
        }
        text.push_str("kind: Pod\n");
        assert!(parse_documents("bomb.yaml", &text).is_err());
    }
}
