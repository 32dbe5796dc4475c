//! A validating JSON scan, in two readings of a Pod CREATE review.
//!
//! `pod_create_request` (a pod that uses a claim) reads it into exactly the
//! `AdmissionRequest` the typed serde parse makes: every field of the narrow
//! types of `crate::objects`, with serde's rules for `null`, defaults and
//! duplicates; anything else gives up and serde decides.
//!
//! `pod_create` (the cheap path) reads only what the cheap path needs from a
//! Pod CREATE review: the request's uid, kind, operation, namespace, name and
//! dryRun, the object's name, generateName, namespace and uid, and whether
//! any of its volumes has a claim source (then it gives up).
//!
//! Why not serde: a typed serde parse of a 6 KB review costs ~15 µs, and
//! serde_json needs ~9 µs just to validate and skip those bytes (most of them
//! are `managedFields`, env, probes: nothing a rule reads). This scan checks
//! the same JSON grammar in a few µs (strings eight bytes at a time) and
//! keeps four slices.
//!
//! It is *stricter* than serde_json, never looser: anything it is not sure
//! of — an escape in a string it keeps, `\u`, a duplicate key it reads, a
//! type other than the one the full parse expects, nesting deeper than 100,
//! a body that is not UTF-8 — answers `None`, and the full path (serde)
//! decides and words any error. So every body the scan accepts is JSON
//! serde_json accepts (a property test in this module holds it to that).
//!
//! What it does not do is type-check the parts of the object no rule reads
//! (`"containers": "x"`): the API server decodes and validates every object
//! into its Go type before calling a webhook, so such an object never comes
//! from it. The full path refuses one with a 400; the cheap path allows it.

use super::AdmissionRequest;
use crate::objects::{Kind, Object};
use std::cell::Cell;

/// What the cheap path answers a claimless Pod CREATE from.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PodCreate<'a> {
    pub uid: &'a str,
    /// `request.namespace` / `request.name`.
    pub namespace: &'a str,
    pub name: &'a str,
    pub dry_run: bool,
    /// `object.metadata.*`.
    pub meta_name: &'a str,
    pub meta_generate_name: &'a str,
    pub meta_namespace: Option<&'a str>,
    pub meta_uid: Option<&'a str>,
}

/// The request of a Pod CREATE, or `None` when this body is anything else or
/// anything the scan does not vouch for (then the full parse decides).
pub(super) fn pod_create(body: &[u8]) -> Option<PodCreate<'_>> {
    envelope(body, |s| {
        let mut out = PodCreate::default();
        let h = header(s, Scan::string, |s| pod(s, &mut out))?;
        out.uid = h.uid.filter(|u| !u.is_empty())?;
        out.namespace = h.namespace.unwrap_or("");
        out.name = h.name.unwrap_or("");
        out.dry_run = h.dry_run;
        Some(out)
    })
}

/// The AdmissionReview around a request: `apiVersion` and `kind` checked,
/// the whole body consumed; `request` reads the request.
fn envelope<'a, T>(
    body: &'a [u8],
    mut request: impl FnMut(&mut Scan<'a, '_>) -> Option<T>,
) -> Option<T> {
    // Kept strings are sliced from the body: one check makes them all `str`.
    let text = simdutf8::basic::from_utf8(body).ok()?;
    with_padded(text, |s| {
        let (mut api_version, mut kind, mut out) = (None, None, None);
        s.ws();
        s.object(0, |s, key| match key {
            b"apiVersion" => set(&mut api_version, s.string()?),
            b"kind" => set(&mut kind, s.string()?),
            b"request" => set(&mut out, request(s)?),
            _ => s.value(1),
        })?;
        s.ws();
        if s.i != text.len()
            || api_version != Some(super::review::API_VERSION)
            || kind != Some("AdmissionReview")
        {
            return None;
        }
        out
    })
}

/// What both readings take from `request` besides the object.
struct Header<S> {
    uid: Option<S>,
    namespace: Option<S>,
    name: Option<S>,
    dry_run: bool,
}

/// `request` of a Pod CREATE: its names read with `text`, the object handed
/// to `object` (which must consume it, once). Gives up early on another kind
/// or operation (the API server writes both before `object`).
fn header<'a, 'b, S>(
    s: &mut Scan<'a, 'b>,
    text: fn(&mut Scan<'a, 'b>) -> Option<S>,
    mut object: impl FnMut(&mut Scan<'a, 'b>) -> Option<()>,
) -> Option<Header<S>> {
    let (mut uid, mut namespace, mut name, mut operation) = (None, None, None, None);
    let (mut dry_run, mut sub_resource) = (None, None);
    let (mut kind_seen, mut resource_seen, mut object_seen) = (false, false, false);
    s.object(1, |s, key| match key {
        b"uid" => set(&mut uid, text(s)?),
        b"namespace" => set(&mut namespace, text(s)?),
        b"name" => set(&mut name, text(s)?),
        b"subResource" => set(&mut sub_resource, s.string()?),
        b"operation" => {
            let op = s.string()?;
            (op == "CREATE").then_some(())?;
            set(&mut operation, op)
        }
        b"dryRun" => set(&mut dry_run, s.opt_bool()?),
        b"kind" => {
            once(&mut kind_seen)?;
            let (group, kind) = group_and(s, b"kind")?;
            (group.is_empty() && kind == "Pod").then_some(())
        }
        b"resource" => {
            once(&mut resource_seen)?;
            group_and(s, b"resource").map(drop)
        }
        b"object" => {
            once(&mut object_seen)?;
            object(s)
        }
        _ => s.value(2),
    })?;
    (kind_seen && object_seen && operation.is_some()).then_some(())?;
    Some(Header {
        uid,
        namespace,
        name,
        dry_run: dry_run.flatten().unwrap_or(false),
    })
}

/// `{"group": "...", "<second>": "...", ...}` (a GroupVersionKind or
/// GroupVersionResource: both strings, defaulting to "").
fn group_and<'a>(s: &mut Scan<'a, '_>, second: &[u8]) -> Option<(&'a str, &'a str)> {
    let (mut group, mut other) = (None, None);
    s.object(2, |s, key| {
        if key == b"group" {
            set(&mut group, s.string()?)
        } else if key == second {
            set(&mut other, s.string()?)
        } else {
            s.value(3)
        }
    })?;
    Some((group.unwrap_or(""), other.unwrap_or("")))
}

/// `request.object`: a Pod that uses no claim; only its metadata and its
/// volumes' sources are read. A volume with a `persistentVolumeClaim` or an
/// `ephemeral` source gives up: the full path judges the pod.
fn pod<'a>(s: &mut Scan<'a, '_>, out: &mut PodCreate<'a>) -> Option<()> {
    let (mut metadata_seen, mut spec_seen) = (false, false);
    s.object(2, |s, key| match key {
        b"spec" => {
            once(&mut spec_seen)?;
            if s.null() {
                return Some(());
            }
            let mut volumes_seen = false;
            s.object(3, |s, key| match key {
                b"volumes" => {
                    once(&mut volumes_seen)?;
                    if s.null() {
                        return Some(());
                    }
                    s.array(4, |s| {
                        let (mut pvc_seen, mut ephemeral_seen) = (false, false);
                        s.object(5, |s, key| match key {
                            b"persistentVolumeClaim" => {
                                once(&mut pvc_seen)?;
                                s.null().then_some(())
                            }
                            b"ephemeral" => {
                                once(&mut ephemeral_seen)?;
                                s.null().then_some(())
                            }
                            _ => s.value(6),
                        })
                    })
                }
                _ => s.value(4),
            })
        }
        b"metadata" => {
            once(&mut metadata_seen)?;
            let (mut name, mut generate_name, mut namespace, mut uid) = (None, None, None, None);
            s.object(3, |s, key| match key {
                b"name" => set(&mut name, s.string()?),
                b"generateName" => set(&mut generate_name, s.string()?),
                b"namespace" => set(&mut namespace, s.opt_string()?),
                b"uid" => set(&mut uid, s.opt_string()?),
                _ => s.value(4),
            })?;
            out.meta_name = name.unwrap_or("");
            out.meta_generate_name = generate_name.unwrap_or("");
            out.meta_namespace = namespace.flatten();
            out.meta_uid = uid.flatten();
            Some(())
        }
        _ => s.value(3),
    })
}

/// A Pod CREATE review read whole: exactly the `AdmissionRequest` that
/// `parse_request` returns for it, or `None` when this body is anything else
/// or anything the scan does not vouch for (then the full parse decides).
pub(super) fn pod_create_request(body: &[u8]) -> Option<AdmissionRequest> {
    envelope(body, |s| {
        let mut object = None;
        // `null` is the full path's "no object" error.
        let h = header(s, Scan::owned, |s| set(&mut object, typed::pod(s, 2)?))?;
        let uid = h.uid.filter(|u| !u.is_empty())?;
        let namespace = h.namespace.unwrap_or_default();
        let name = h.name.unwrap_or_default();
        let mut pod = object?;
        // As `parse_request`: on CREATE the object may not carry its
        // namespace or name yet; the request does.
        let meta = &mut pod.metadata;
        if meta.namespace.as_deref().is_none_or(str::is_empty) && !namespace.is_empty() {
            meta.namespace = Some(namespace.clone());
        }
        if meta.name.is_empty() && !name.is_empty() {
            meta.name = name.clone();
        }
        Some(AdmissionRequest {
            uid,
            kind_name: "Pod".to_owned(),
            kind: Some(Kind::Pod),
            operation: "CREATE".to_owned(),
            namespace,
            name,
            dry_run: h.dry_run,
            object: Some(Object::Pod(pod)),
            old_object: None,
            scale: None,
        })
    })
}

/// The narrow types of `crate::objects` read field by field with serde's
/// rules for them: a missing field takes its default, `null` is `None` for
/// an `Option` and empty for a list or map marked `null_as_default`, and
/// anything else of the wrong type gives up. A field read twice gives up
/// (serde refuses duplicate struct fields); map keys keep the last value.
mod typed {
    use super::{set, Scan};
    use crate::objects::*;
    use std::collections::BTreeMap;

    pub(super) fn pod(s: &mut Scan<'_, '_>, d: usize) -> Option<Pod> {
        let (mut metadata, mut spec, mut status) = (None, None, None);
        s.object(d, |s, key| match key {
            b"metadata" => set(&mut metadata, meta(s, d + 1)?),
            b"spec" => set(&mut spec, s.opt(|s| pod_spec(s, d + 1))?),
            b"status" => set(
                &mut status,
                s.opt(|s| {
                    let mut phase = None;
                    s.object(d + 1, |s, key| match key {
                        b"phase" => set(&mut phase, s.opt_owned()?),
                        _ => s.value(d + 2),
                    })?;
                    Some(PodStatus {
                        phase: phase.flatten(),
                    })
                })?,
            ),
            _ => s.value(d + 1),
        })?;
        Some(Pod {
            metadata: metadata.unwrap_or_default(),
            spec: spec.flatten(),
            status: status.flatten(),
        })
    }

    fn meta(s: &mut Scan<'_, '_>, d: usize) -> Option<ObjectMeta> {
        let (mut name, mut generate_name, mut namespace, mut uid) = (None, None, None, None);
        let (mut annotations, mut deletion, mut version, mut owners) = (None, None, None, None);
        s.object(d, |s, key| match key {
            b"name" => set(&mut name, s.owned()?),
            b"generateName" => set(&mut generate_name, s.owned()?),
            b"namespace" => set(&mut namespace, s.opt_owned()?),
            b"uid" => set(&mut uid, s.opt_owned()?),
            // A pod keeps no labels (`objects::pod_meta`): skipped as serde
            // skips an unknown field, duplicates and any type included.
            b"annotations" => set(&mut annotations, kept_annotations(s, d + 1)?),
            b"deletionTimestamp" => set(&mut deletion, s.opt_owned()?),
            b"resourceVersion" => set(&mut version, s.opt_owned()?),
            b"ownerReferences" => set(&mut owners, s.list(d + 1, |s| owner(s, d + 2))?),
            _ => s.value(d + 1),
        })?;
        Some(ObjectMeta {
            name: name.unwrap_or_default(),
            generate_name: generate_name.unwrap_or_default(),
            namespace: namespace.flatten(),
            uid: uid.flatten(),
            labels: BTreeMap::new(),
            annotations: annotations.unwrap_or_default(),
            deletion_timestamp: deletion.flatten(),
            resource_version: version.flatten(),
            owner_references: owners.unwrap_or_default(),
        })
    }

    fn owner(s: &mut Scan<'_, '_>, d: usize) -> Option<OwnerReference> {
        let (mut api_version, mut kind, mut name, mut uid, mut controller) =
            (None, None, None, None, None);
        s.object(d, |s, key| match key {
            b"apiVersion" => set(&mut api_version, s.owned()?),
            b"kind" => set(&mut kind, s.owned()?),
            b"name" => set(&mut name, s.owned()?),
            b"uid" => set(&mut uid, s.owned()?),
            b"controller" => set(&mut controller, s.opt_bool()?),
            _ => s.value(d + 1),
        })?;
        Some(OwnerReference {
            api_version: api_version.unwrap_or_default(),
            kind: kind.unwrap_or_default(),
            name: name.unwrap_or_default(),
            uid: uid.unwrap_or_default(),
            controller: controller.flatten(),
        })
    }

    /// The annotations a pod keeps (`objects::pod_meta`): those under
    /// `POD_ANNOTATION_PREFIX`, `null` as empty; the others must be strings
    /// and are not copied.
    fn kept_annotations(s: &mut Scan<'_, '_>, d: usize) -> Option<BTreeMap<String, String>> {
        let mut map = BTreeMap::new();
        if s.null() {
            return Some(map);
        }
        let prefix = POD_ANNOTATION_PREFIX.as_bytes();
        s.object(d, |s, key| {
            // An escaped key may unescape into the prefix: read it whole.
            if key.starts_with(prefix) || super::has_escape(key) {
                let key = s.owned_of(key)?;
                if key.starts_with(POD_ANNOTATION_PREFIX) {
                    map.insert(key, s.owned()?);
                    return Some(());
                }
            }
            s.raw_string().map(drop)
        })?;
        Some(map)
    }

    /// `map<string, string>`, `null` as empty.
    fn string_map(s: &mut Scan<'_, '_>, d: usize) -> Option<BTreeMap<String, String>> {
        let mut map = BTreeMap::new();
        if s.null() {
            return Some(map);
        }
        s.object(d, |s, key| {
            let key = s.owned_of(key)?;
            map.insert(key, s.owned()?);
            Some(())
        })?;
        Some(map)
    }

    fn pod_spec(s: &mut Scan<'_, '_>, d: usize) -> Option<PodSpec> {
        let (mut volumes, mut containers, mut init, mut node_name, mut selector, mut affinity) =
            (None, None, None, None, None, None);
        s.object(d, |s, key| match key {
            b"volumes" => set(&mut volumes, s.list(d + 1, |s| volume(s, d + 2))?),
            b"containers" => set(&mut containers, s.list(d + 1, |s| container(s, d + 2))?),
            b"initContainers" => set(&mut init, s.list(d + 1, |s| container(s, d + 2))?),
            b"nodeName" => set(&mut node_name, s.opt_owned()?),
            b"nodeSelector" => set(&mut selector, string_map(s, d + 1)?),
            b"affinity" => set(&mut affinity, s.opt(|s| affinity_of(s, d + 1))?),
            _ => s.value(d + 1),
        })?;
        Some(PodSpec {
            volumes: volumes.unwrap_or_default(),
            containers: containers.unwrap_or_default(),
            init_containers: init.unwrap_or_default(),
            node_name: node_name.flatten(),
            node_selector: selector.unwrap_or_default(),
            affinity: affinity.flatten(),
        })
    }

    fn volume(s: &mut Scan<'_, '_>, d: usize) -> Option<Volume> {
        let (mut name, mut claim) = (None, None);
        s.object(d, |s, key| match key {
            b"name" => set(&mut name, s.owned()?),
            b"persistentVolumeClaim" => set(
                &mut claim,
                s.opt(|s| {
                    let (mut claim_name, mut read_only) = (None, None);
                    s.object(d + 1, |s, key| match key {
                        b"claimName" => set(&mut claim_name, s.owned()?),
                        b"readOnly" => set(&mut read_only, s.boolean()?),
                        _ => s.value(d + 2),
                    })?;
                    Some(PvcVolumeSource {
                        claim_name: claim_name.unwrap_or_default(),
                        read_only: read_only.unwrap_or_default(),
                    })
                })?,
            ),
            // Kept as a JSON tree by the typed parse; a pod that has one is
            // left to it (no rule reads it, so it is rare and cheap there).
            b"ephemeral" => s.null().then_some(()),
            _ => s.value(d + 1),
        })?;
        Some(Volume {
            name: name.unwrap_or_default(),
            persistent_volume_claim: claim.flatten(),
            ephemeral: None,
        })
    }

    fn container(s: &mut Scan<'_, '_>, d: usize) -> Option<Container> {
        let (mut mounts, mut devices) = (None, None);
        s.object(d, |s, key| match key {
            b"volumeMounts" => set(
                &mut mounts,
                s.list(d + 1, |s| {
                    let (mut name, mut read_only) = (None, None);
                    s.object(d + 2, |s, key| match key {
                        b"name" => set(&mut name, s.owned()?),
                        b"readOnly" => set(&mut read_only, s.boolean()?),
                        _ => s.value(d + 3),
                    })?;
                    Some(VolumeMount {
                        name: name.unwrap_or_default(),
                        read_only: read_only.unwrap_or_default(),
                    })
                })?,
            ),
            b"volumeDevices" => set(
                &mut devices,
                s.list(d + 1, |s| {
                    let mut name = None;
                    s.object(d + 2, |s, key| match key {
                        b"name" => set(&mut name, s.owned()?),
                        _ => s.value(d + 3),
                    })?;
                    Some(VolumeDevice {
                        name: name.unwrap_or_default(),
                    })
                })?,
            ),
            _ => s.value(d + 1),
        })?;
        Some(Container {
            volume_mounts: mounts.unwrap_or_default(),
            volume_devices: devices.unwrap_or_default(),
        })
    }

    fn affinity_of(s: &mut Scan<'_, '_>, d: usize) -> Option<Affinity> {
        let mut node = None;
        s.object(d, |s, key| match key {
            b"nodeAffinity" => set(
                &mut node,
                s.opt(|s| {
                    let mut required = None;
                    s.object(d + 1, |s, key| match key {
                        b"requiredDuringSchedulingIgnoredDuringExecution" => set(
                            &mut required,
                            s.opt(|s| {
                                let mut terms = None;
                                s.object(d + 2, |s, key| match key {
                                    b"nodeSelectorTerms" => {
                                        set(&mut terms, s.list(d + 3, |s| term(s, d + 4))?)
                                    }
                                    _ => s.value(d + 3),
                                })?;
                                Some(NodeSelector {
                                    node_selector_terms: terms.unwrap_or_default(),
                                })
                            })?,
                        ),
                        _ => s.value(d + 2),
                    })?;
                    Some(NodeAffinity {
                        required_during_scheduling_ignored_during_execution: required.flatten(),
                    })
                })?,
            ),
            _ => s.value(d + 1),
        })?;
        Some(Affinity {
            node_affinity: node.flatten(),
        })
    }

    fn term(s: &mut Scan<'_, '_>, d: usize) -> Option<NodeSelectorTerm> {
        let (mut expressions, mut fields) = (None, None);
        s.object(d, |s, key| match key {
            b"matchExpressions" => set(&mut expressions, s.list(d + 1, |s| requirement(s, d + 2))?),
            b"matchFields" => set(&mut fields, s.list(d + 1, |s| requirement(s, d + 2))?),
            _ => s.value(d + 1),
        })?;
        Some(NodeSelectorTerm {
            match_expressions: expressions.unwrap_or_default(),
            match_fields: fields.unwrap_or_default(),
        })
    }

    fn requirement(s: &mut Scan<'_, '_>, d: usize) -> Option<NodeSelectorRequirement> {
        let (mut key_, mut operator, mut values) = (None, None, None);
        s.object(d, |s, key| match key {
            b"key" => set(&mut key_, s.owned()?),
            b"operator" => set(&mut operator, s.owned()?),
            b"values" => set(&mut values, s.list(d + 1, |s| s.owned())?),
            _ => s.value(d + 1),
        })?;
        Some(NodeSelectorRequirement {
            key: key_.unwrap_or_default(),
            operator: operator.unwrap_or_default(),
            values: values.unwrap_or_default(),
        })
    }
}

/// Whether a raw string (a key) holds an escape.
// `contains` goes through memchr, whose setup costs more than a key is long.
#[allow(clippy::manual_contains)]
fn has_escape(raw: &[u8]) -> bool {
    raw.iter().any(|&c| c == b'\\')
}

/// A raw string's text with its (simple) escapes undone; `\u` never gets
/// here (the scan refuses it).
fn unescape(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&c) = it.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        out.push(match it.next()? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            _ => return None,
        });
    }
    String::from_utf8(out).ok()
}

/// A field read once: a second occurrence is a duplicate serde may refuse.
fn set<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.replace(v).is_some() {
        return None;
    }
    Some(())
}

fn once(seen: &mut bool) -> Option<()> {
    (!std::mem::replace(seen, true)).then_some(())
}

/// serde_json refuses nesting past 128; staying well below it keeps this
/// scan stricter.
const MAX_DEPTH: usize = 100;

/// Zero bytes after the scanned copy of the body. No JSON token holds a zero
/// byte and every step of the scan stops at one, so the cursor never passes
/// the body's end, and no read is more than 16 bytes past the cursor: the
/// scan reads without bounds checks (they were a fifth of its instructions).
const PAD: usize = 16;

/// A thread keeps its copy's buffer for the next review unless a body this
/// large made it grow.
const KEEP: usize = 256 * 1024;

thread_local! {
    static PADDED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `scan` over `text` followed by `PAD` zero bytes: the only way a
/// `Scan` is made, so its invariant holds.
fn with_padded<'t, T>(text: &'t str, scan: impl FnOnce(&mut Scan<'t, '_>) -> T) -> T {
    let mut buf = PADDED.take();
    buf.clear();
    buf.reserve(text.len() + PAD);
    buf.extend_from_slice(text.as_bytes());
    buf.resize(text.len() + PAD, 0);
    let out = scan(&mut Scan {
        text,
        b: &buf,
        i: 0,
    });
    if buf.capacity() <= KEEP {
        PADDED.set(buf);
    }
    out
}

/// The cursor over a body. Invariant: `b` is `text`'s bytes followed by
/// `PAD` zero bytes, and `i <= text.len()`. Every step forward passes only
/// bytes it has read as non-zero, and `b[text.len()]` is zero, so no step
/// can break it.
struct Scan<'t, 'b> {
    /// The body, checked UTF-8 once: a kept string is sliced from it (its
    /// quotes are ASCII, so its ends are character boundaries).
    text: &'t str,
    b: &'b [u8],
    i: usize,
}

impl<'t, 'b> Scan<'t, 'b> {
    /// The byte `k` places after the cursor (`k < PAD`); zero past the body.
    #[inline(always)]
    fn at(&self, k: usize) -> u8 {
        debug_assert!(k < PAD && self.i <= self.text.len());
        // SAFETY: `i <= text.len()` (the invariant) and `k < PAD`, so
        // `i + k < b.len()`.
        unsafe { *self.b.get_unchecked(self.i + k) }
    }

    #[inline(always)]
    fn ws(&mut self) {
        // The API server sends compact JSON: one compare in the usual case.
        if self.at(0) > b' ' {
            return;
        }
        while let b' ' | b'\n' | b'\r' | b'\t' = self.at(0) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.at(0) == c).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// Walks an object at `depth`, handing each key to `field`, which must
    /// consume the value (after the colon and whitespace).
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &'b [u8]) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            // An escaped key is passed raw: `\u` is refused, and the other
            // escapes stand for characters (`"`, `\`, `/`, controls) no key
            // this scan reads contains, so it can never match one of ours.
            let (key, _) = self.raw_string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            field(self, key)?;
            self.ws();
            match self.at(0) {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Walks an array at `depth`, handing each element to `item`, which must
    /// consume it.
    fn array(&mut self, depth: usize, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.at(0) {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Consumes a `null` at the cursor, if there is one.
    fn null(&mut self) -> bool {
        let found = self.b[self.i..].starts_with(b"null");
        if found {
            self.i += 4;
        }
        found
    }

    /// Any JSON value at `depth`, validated and skipped: this is where the
    /// scan spends most of its time (managedFields, env, probes).
    #[inline(always)]
    fn value(&mut self, depth: usize) -> Option<()> {
        // Half the values a review skips are strings (image, policies,
        // paths): passed here, without the walk's set-up.
        if self.at(0) == b'"' {
            return self.skip_string();
        }
        self.walk(depth)
    }

    /// `value` for anything but a string: a loop with its own stack rather
    /// than `object`/`array` recursion.
    fn walk(&mut self, depth: usize) -> Option<()> {
        // The walk runs on a copy of the cursor, written back once at the
        // end: stepping `self.i` itself kept a store to memory in every step.
        let mut s = Scan {
            text: self.text,
            b: self.b,
            i: self.i,
        };
        s.skip_value(depth)?;
        self.i = s.i;
        Some(())
    }

    #[inline(always)]
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        // A stack of the open containers' kinds, one bit each (1: object),
        // the innermost lowest; `MAX_DEPTH` < 128 keeps it in one word.
        const _: () = assert!(MAX_DEPTH < 128);
        let (mut objects, mut open) = (0u128, 0usize);
        // Whitespace is the last arm of each match rather than a check
        // before it: the API server sends compact JSON, so the check would
        // be a compare and branch per token that never finds any.
        loop {
            // A value at the cursor.
            match self.at(0) {
                b'"' => self.skip_string()?,
                c @ (b'{' | b'[') => {
                    if depth + open > MAX_DEPTH {
                        return None;
                    }
                    let object = c == b'{';
                    objects = objects << 1 | u128::from(object);
                    open += 1;
                    self.i += 1;
                    self.ws();
                    if self.eat(if object { b'}' } else { b']' }).is_some() {
                        objects >>= 1;
                        open -= 1;
                    } else {
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                b' ' | b'\n' | b'\r' | b'\t' => {
                    self.i += 1;
                    continue;
                }
                _ => return None,
            }
            // After a value: the next one in its container, or the ends of
            // the containers it closes.
            loop {
                if open == 0 {
                    return Some(());
                }
                let object = objects & 1 == 1;
                match self.at(0) {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        self.i += 1;
                        continue;
                    }
                    _ => return None,
                }
                self.i += 1;
                objects >>= 1;
                open -= 1;
            }
        }
    }

    /// A key and its colon, at the cursor; whitespace after the colon is
    /// left to the value's dispatch.
    #[inline(always)]
    fn key(&mut self) -> Option<()> {
        self.skip_string()?;
        self.ws();
        self.eat(b':')
    }

    /// `raw_string` without keeping anything, inlined into the skip loop.
    #[inline(always)]
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.i = self.special();
            match self.at(0) {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => match self.at(1) {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// A string kept as is: no escapes (an escaped value would need
    /// unescaping to compare; the full path does that).
    fn string(&mut self) -> Option<&'t str> {
        let (raw, escaped) = self.raw_string()?;
        if escaped {
            return None;
        }
        self.text_of(raw)
    }

    /// The text of `raw`, a slice of the padded copy.
    fn text_of(&self, raw: &'b [u8]) -> Option<&'t str> {
        let at = (raw.as_ptr() as usize).wrapping_sub(self.b.as_ptr() as usize);
        self.text.get(at..at + raw.len())
    }

    fn opt_string(&mut self) -> Option<Option<&'t str>> {
        if self.at(0) == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        self.string().map(Some)
    }

    /// A string, escapes undone.
    fn owned(&mut self) -> Option<String> {
        let (raw, escaped) = self.raw_string()?;
        if !escaped {
            return self.text_of(raw).map(str::to_owned);
        }
        unescape(raw)
    }

    /// A raw string already read (a key), escapes undone.
    fn owned_of(&self, raw: &'b [u8]) -> Option<String> {
        if has_escape(raw) {
            return unescape(raw);
        }
        self.text_of(raw).map(str::to_owned)
    }

    fn opt_owned(&mut self) -> Option<Option<String>> {
        self.opt(Self::owned)
    }

    fn boolean(&mut self) -> Option<bool> {
        self.opt_bool()?
    }

    /// `null` as `None`, else what `read` makes of the value.
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() {
            return Some(None);
        }
        read(self).map(Some)
    }

    /// A list, `null` as empty (serde's `null_as_default`).
    fn list<T>(
        &mut self,
        depth: usize,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        if self.null() {
            return Some(out);
        }
        self.array(depth, |s| {
            out.push(item(s)?);
            Some(())
        })?;
        Some(out)
    }

    fn opt_bool(&mut self) -> Option<Option<bool>> {
        match self.at(0) {
            b't' => self.literal(b"true").map(|()| Some(true)),
            b'f' => self.literal(b"false").map(|()| Some(false)),
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    /// A string at the cursor: its raw bytes between the quotes, and whether
    /// it held an escape. Validates escapes and refuses control characters,
    /// as JSON does; `\u` is left to the full parse.
    #[inline(always)]
    fn raw_string(&mut self) -> Option<(&'b [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = self.special();
            match self.at(0) {
                b'"' => {
                    let raw = &self.b[start..self.i];
                    self.i += 1;
                    return Some((raw, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match self.at(1) {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        _ => return None,
                    }
                }
                _ => return None, // a control character, or the end
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.at(0) {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.at(0).is_ascii_digit().then_some(())?;
            self.digits();
        }
        if let b'e' | b'E' = self.at(0) {
            self.i += 1;
            if let b'+' | b'-' = self.at(0) {
                self.i += 1;
            }
            self.at(0).is_ascii_digit().then_some(())?;
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.at(0).is_ascii_digit() {
            self.i += 1;
        }
    }

    /// Where the string at the cursor ends or needs a closer look: the first
    /// `"`, `\` or control byte at or after it (the zero byte after the body
    /// at the latest, so the invariant holds for the result).
    #[inline(always)]
    fn special(&self) -> usize {
        // SAFETY: by the invariant, `b[text.len()]` is a zero byte at or
        // after the cursor, with `PAD - 1` (15) readable bytes after it.
        unsafe { special_from(self.b, self.i) }
    }
}

/// The index of the first `"`, `\` or control byte (< 0x20) at or after
/// `i` in `b`, sixteen bytes at a time; strings in a pod average about 13
/// bytes.
///
/// # Safety
///
/// `b` must hold such a byte at or after `i` with at least 15 bytes after
/// it (a padded body: the zero byte after it).
#[inline(always)]
unsafe fn special_from(b: &[u8], mut i: usize) -> usize {
    loop {
        debug_assert!(i + 16 <= b.len());
        // SAFETY: a chunk with no special byte lies before the first one,
        // which has 15 readable bytes after it, so every chunk read is
        // inside `b` (the caller's promise).
        let hits = special_bits(unsafe { &*b.as_ptr().add(i).cast::<[u8; 16]>() });
        if hits != 0 {
            return i + hits.trailing_zeros() as usize;
        }
        i += 16;
    }
}

/// One bit per byte of `chunk` (the lowest for its first) that is `"`, `\`
/// or a control byte (< 0x20): the bytes a JSON string cannot hold as they
/// are. SSE2, part of every x86_64.
#[inline(always)]
pub(super) fn special_bits(chunk: &[u8; 16]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: the load reads the 16 bytes of `chunk` (unaligned), and
        // SSE2 is always enabled on x86_64.
        unsafe {
            let x = _mm_loadu_si128(chunk.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
            // max(x, 0x1f) == 0x1f exactly for the bytes 0x00..=0x1f.
            let low = _mm_set1_epi8(0x1f);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(x, low), low);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        chunk.iter().enumerate().fold(0, |bits, (k, &c)| {
            bits | (u32::from(c == b'"' || c == b'\\' || c < 0x20) << k)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn review(object: &str, rest: &str) -> String {
        format!(
            r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"u-1","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"name":"web-1","namespace":"default","operation":"CREATE"{rest},"object":{object},"oldObject":null}}}}"#
        )
    }

    const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default","uid":"p-1","labels":{"a":"b"},"annotations":{"claimguard.io/x":"{\"k\":\"v\\n\"}","prometheus.io/port":"8080"},"managedFields":[{"manager":"kubectl","time":"2026-11-21T20:31:07Z","fieldsV1":{"f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{}}}}}}]},"spec":{"containers":[{"name":"c","image":"nginx","ports":[{"containerPort":80}],"resources":{"limits":{"cpu":"500m"}},"env":[{"name":"RATIO","value":"-0.5e+3"}]}],"volumes":[{"name":"t","emptyDir":{}}],"priority":0,"terminationGracePeriodSeconds":30}}"#;

    #[test]
    fn reads_a_pod_creation() {
        let body = review(POD, r#","dryRun":true"#);
        assert_eq!(
            pod_create(body.as_bytes()),
            Some(PodCreate {
                uid: "u-1",
                namespace: "default",
                name: "web-1",
                dry_run: true,
                meta_name: "web-1",
                meta_generate_name: "",
                meta_namespace: Some("default"),
                meta_uid: Some("p-1"),
            })
        );
        // Whitespace where JSON allows it.
        let spaced = format!(
            " \n{}\t\r\n",
            body.replace(",\"", " ,\n \"").replace(':', " : ")
        );
        assert!(pod_create(spaced.as_bytes()).is_some(), "{spaced}");
        // No claim source: the words alone, or null sources, change nothing.
        for (from, to) in [
            (
                r#""emptyDir":{}"#,
                r#""emptyDir":{},"persistentVolumeClaim":null,"ephemeral":null"#,
            ),
            (
                r#""volumes":[{"name":"t","emptyDir":{}}]"#,
                r#""volumes":null"#,
            ),
            (
                r#""volumes":[{"name":"t","emptyDir":{}}]"#,
                r#""volumes":[]"#,
            ),
            (r#""a":"b""#, r#""a":"persistentVolumeClaim ephemeral""#),
        ] {
            assert!(POD.contains(from), "{from}");
            let body = review(&POD.replacen(from, to, 1), "");
            assert!(pod_create(body.as_bytes()).is_some(), "{body}");
        }
        let body = review(
            &POD.replacen(r#","spec":{"#, r#","spec":null,"x":{"#, 1),
            "",
        );
        assert!(pod_create(body.as_bytes()).is_some(), "{body}");
    }

    /// The scan's request is the typed parse's, field for field.
    fn same_as_serde(body: &[u8]) -> bool {
        let Some(scanned) = pod_create_request(body) else {
            return false;
        };
        let parsed = super::super::parse_request(body).expect("serde parses what the scan read");
        assert_eq!(
            format!("{scanned:?}"),
            format!("{parsed:?}"),
            "{}",
            String::from_utf8_lossy(body)
        );
        true
    }

    #[test]
    fn typed_reads_what_serde_reads() {
        let body = review(POD, r#","dryRun":true"#);
        let r = pod_create_request(body.as_bytes()).expect("a pod creation");
        assert_eq!(
            (
                r.uid.as_str(),
                r.namespace.as_str(),
                r.name.as_str(),
                r.dry_run
            ),
            ("u-1", "default", "web-1", true)
        );
        let Some(Object::Pod(p)) = &r.object else {
            panic!("no pod")
        };
        assert_eq!(p.metadata.annotations["claimguard.io/x"], r#"{"k":"v\n"}"#);
        // A pod keeps no labels and no annotation outside claimguard.io/.
        assert!(p.metadata.labels.is_empty());
        assert_eq!(p.metadata.annotations.len(), 1);
        assert!(same_as_serde(body.as_bytes()));
        // Whitespace where JSON allows it.
        let spaced = format!(
            " \n{}\t\r\n",
            body.replace(",\"", " ,\n \"").replace(':', " : ")
        );
        assert!(same_as_serde(spaced.as_bytes()), "{spaced}");
        // Every field the narrow types have, in the shapes serde reads.
        for (from, to) in [
            (
                r#""emptyDir":{}"#,
                r#""persistentVolumeClaim":{"claimName":"d","readOnly":true}"#,
            ),
            (
                r#""emptyDir":{}"#,
                r#""persistentVolumeClaim":null,"ephemeral":null"#,
            ),
            (
                r#""volumes":[{"name":"t","emptyDir":{}}]"#,
                r#""volumes":null"#,
            ),
            (
                r#""volumes":[{"name":"t","emptyDir":{}}]"#,
                r#""volumes":[]"#,
            ),
            (
                r#""a":"b""#,
                r#""a":"persistentVolumeClaim ephemeral","c\"d":"e\\f""#,
            ),
            (
                r#""prometheus.io/port":"8080""#,
                // Escaped keys: one unescapes into the kept prefix.
                r#""claimguard.io\/e":"v","c\"d":"e\\f","claimguard.io/x":"last wins""#,
            ),
            (r#""annotations":{"#, r#""annotations":null,"x":{"#),
            // Labels are skipped, whatever they hold, as serde skips them.
            (
                r#""labels":{"a":"b"}"#,
                r#""labels":{"a":1},"labels":[null]"#,
            ),
            (
                r#""labels":{"a":"b"}"#,
                r#""labels":null,"deletionTimestamp":"2026-01-01T00:00:00Z","resourceVersion":null"#,
            ),
            (
                r#""labels":{"a":"b"}"#,
                // Unsorted, with duplicates: the last of each key wins.
                r#""labels":{"z":"1","a":"2","m":"3","a":"4","z":"5"}"#,
            ),
            (
                r#""uid":"p-1""#,
                r#""uid":null,"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"w","uid":"o","controller":true,"blockOwnerDeletion":true},{"kind":"X","controller":null}]"#,
            ),
            (
                r#""name":"c","image""#,
                r#""name":"c","volumeMounts":[{"name":"t","mountPath":"/t","readOnly":true},{"name":"u"}],"volumeDevices":[{"name":"b","devicePath":"/dev/b"}],"image""#,
            ),
            (
                r#""priority":0"#,
                r#""priority":0,"initContainers":[{"volumeMounts":null}],"nodeName":"n1","nodeSelector":{"kubernetes.io/hostname":"n1"}"#,
            ),
            (
                r#""priority":0"#,
                r#""affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"k","operator":"In","values":["a","b"]}],"matchFields":[{"key":"metadata.name","operator":"In","values":null}]}]},"preferredDuringSchedulingIgnoredDuringExecution":[]},"podAntiAffinity":{}}"#,
            ),
            (r#""priority":0"#, r#""affinity":{"nodeAffinity":null}"#),
            (r#""priority":0"#, r#""affinity":null,"nodeName":null"#),
        ] {
            assert!(POD.contains(from), "{from}");
            let body = review(&POD.replacen(from, to, 1), "");
            assert!(same_as_serde(body.as_bytes()), "{body}");
        }
        for object in [
            POD.replacen(r#","spec":{"#, r#","spec":null,"x":{"#, 1),
            POD.replacen(r#"}}]},"spec""#, r#"}}]},"status":{"phase":"Running"},"spec""#, 1),
            POD.replacen(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-1","namespace":"default","#, r#"{"metadata":{"generateName":"web-","namespace":null,"#, 1),
            r#"{}"#.to_string(),
        ] {
            let body = review(&object, "");
            assert!(same_as_serde(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn typed_gives_up_where_serde_refuses_or_keeps_a_tree() {
        let ok = review(POD, "");
        assert!(same_as_serde(ok.as_bytes()));
        for (from, to) in [
            (
                r#""emptyDir":{}"#,
                r#""ephemeral":{"volumeClaimTemplate":{}}"#,
            ),
            (
                r#""emptyDir":{}"#,
                r#""persistentVolumeClaim":{"claimName":"d","readOnly":"yes"}"#,
            ),
            (r#""annotations":{"#, r#""annotations":{"other":1,"#),
            (
                r#""annotations":{"#,
                r#""annotations":{"claimguard.io/x":[],"#,
            ),
            (r#""annotations":{"#, r#""annotations":"x","x":{"#),
            (r#""containers":["#, r#""containers":"x","c":["#),
            (
                r#""name":"c","image""#,
                r#""name":"c","volumeMounts":[{"name":5}],"image""#,
            ),
            (r#""metadata":{"#, r#""metadata":{"name":"dup","#),
            (r#""image":"nginx""#, r#""image":"ng\u0069nx""#),
            (r#""operation":"CREATE""#, r#""operation":"UPDATE""#),
        ] {
            assert!(ok.contains(from), "{from}");
            let bad = ok.replacen(from, to, 1);
            assert!(pod_create_request(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn gives_up_on_anything_else() {
        let ok = review(POD, "");
        assert!(pod_create(ok.as_bytes()).is_some());
        for (from, to) in [
            (r#""operation":"CREATE""#, r#""operation":"UPDATE""#),
            (r#""kind":"Pod"}"#, r#""kind":"Deployment"}"#),
            (r#""uid":"u-1""#, r#""uid":"""#),
            (r#""uid":"u-1""#, r#""uid":7"#),
            (r#""uid":"u-1""#, r#""uid":"u\"1""#),
            (
                r#""name":"web-1","namespace""#,
                r#""name":null,"namespace""#,
            ),
            (r#""namespace":"default","uid""#, r#""namespace":5,"uid""#),
            (r#""admission.k8s.io/v1""#, r#""admission.k8s.io/v1beta1""#),
            (r#""object":{"#, r#""object":null,"x":{"#),
            (r#""metadata":{"#, r#""metadata":{"name":"dup","#),
            (r#""resource":{"group":"""#, r#""resource":{"group":1"#),
            (r#""image":"nginx""#, r#""image":"ng\u0069nx""#),
            (r#""image":"nginx""#, r#""image":"ng	inx""#), // a raw tab
            (r#""image":"nginx""#, r#""image":"nginx"x"#),
            (r#""containerPort":80"#, r#""containerPort":080"#),
            (r#""containerPort":80"#, r#""containerPort":8."#),
            (r#""containerPort":80"#, r#""containerPort":+8"#),
            (r#"{}}]"#, r#"{},}]"#),
            (r#""priority":0"#, r#""priority":nul"#),
            // A claim source: the full path judges the pod.
            (
                r#""emptyDir":{}"#,
                r#""persistentVolumeClaim":{"claimName":"d"}"#,
            ),
            (
                r#""emptyDir":{}"#,
                r#""ephemeral":{"volumeClaimTemplate":{}}"#,
            ),
            (
                r#""emptyDir":{}"#,
                r#""emptyDir":{},"persistentVolumeClaim":null,"persistentVolumeClaim":null"#,
            ),
            // Shapes the typed parse refuses.
            (r#""volumes":[{"#, r#""volumes":[7,{"#),
            (r#""volumes":["#, r#""volumes":{"x":1},"v":["#),
            (r#""spec":{"#, r#""spec":7,"s":{"#),
        ] {
            assert!(ok.contains(from), "{from}");
            let bad = ok.replacen(from, to, 1);
            assert_eq!(pod_create(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(pod_create(format!("{ok}x").as_bytes()), None);
        assert_eq!(pod_create(&ok.as_bytes()[..ok.len() - 1]), None);
        assert_eq!(pod_create(b""), None);
        let deep = review(&format!("{}1{}", "[".repeat(200), "]".repeat(200)), "");
        assert_eq!(pod_create(deep.as_bytes()), None);
        let mut not_utf8 = ok.clone().into_bytes();
        let at = ok.find("nginx").unwrap();
        not_utf8[at] = 0xff;
        assert_eq!(pod_create(&not_utf8), None);
    }

    #[test]
    fn finds_specials_in_every_position() {
        // As the scan calls it: the body followed by `PAD` zero bytes.
        let find = |mut b: Vec<u8>, from: usize| {
            b.resize(b.len() + PAD, 0);
            // SAFETY: padded: a zero byte with `PAD - 1` bytes after it.
            unsafe { special_from(&b, from) }
        };
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\', 0x00, 0x01, 0x1f] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    for from in 0..=at {
                        assert_eq!(find(b.clone(), from), at, "{len} {at} {c} {from}");
                    }
                }
            }
            // No special byte in the body: the first zero byte after it.
            assert_eq!(find(vec![0x7fu8; len], 0), len);
            assert_eq!(find(vec![0xc3u8; len], 0), len);
            assert_eq!(find(vec![b' '; len], len), len);
        }
    }

    /// A body of mostly-valid JSON with a few bytes changed.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let base = review(POD, r#","dryRun":false"#).into_bytes();
        let n = base.len();
        prop::collection::vec(
            (
                0..n,
                prop::sample::select(b"{}[]\",:\\ \t\n0-.eE+9tfnaxu\x01\x7f\xc3".to_vec()),
                0..3u8,
            ),
            1..4,
        )
        .prop_map(move |edits| {
            let mut b = base.clone();
            for (at, byte, how) in edits {
                let at = at.min(b.len().saturating_sub(1));
                match how {
                    0 => b[at] = byte,
                    1 => b.insert(at, byte),
                    _ => {
                        b.remove(at);
                    }
                }
            }
            b
        })
    }

    /// Any JSON value: nested containers, every scalar, strings with the
    /// escapes the scan reads (no `\u`: serde writes one only for a
    /// control character, left out here).
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let text = prop::collection::vec(
            prop::sample::select(vec![
                'a', 'z', ' ', '"', '\\', '/', '{', ']', ':', ',', 'é', '😀',
            ]),
            0..80,
        )
        .prop_map(|cs| cs.into_iter().collect::<String>());
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(text.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Stricter than serde_json, never looser: whatever the scan accepts
        /// is JSON, and the full parse reads the same request from it — or
        /// refuses the object for a type in a part no rule reads.
        #[test]
        fn accepts_only_what_serde_accepts(body in mutated()) {
            if let Some(seen) = pod_create(&body) {
                let text = String::from_utf8_lossy(&body).into_owned();
                prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok(),
                    "scan accepted what is not JSON: {}", text);
                match super::super::parse_request(&body) {
                    Ok(r) => {
                        prop_assert_eq!(seen.uid, r.uid.as_str());
                        prop_assert_eq!(seen.dry_run, r.dry_run);
                        prop_assert_eq!(seen.namespace, r.namespace.as_str());
                        prop_assert_eq!(seen.name, r.name.as_str());
                        prop_assert_eq!(r.kind, Some(crate::objects::Kind::Pod));
                        prop_assert_eq!(r.operation.as_str(), "CREATE");
                        let Some(crate::objects::Object::Pod(p)) = r.object else {
                            return Err(TestCaseError::fail(format!("no pod parsed from {text}")));
                        };
                        if !seen.meta_name.is_empty() {
                            prop_assert_eq!(seen.meta_name, p.metadata.name.as_str());
                        }
                        prop_assert_eq!(seen.meta_uid, p.metadata.uid.as_deref());
                    }
                    Err(super::super::ReviewError::BadObject { .. }) => {}
                    Err(e) => {
                        return Err(TestCaseError::fail(format!("scan accepted what the full parse refuses ({e}): {text}")));
                    }
                }
            }
        }

        /// Not so strict that it gives up on JSON it can read: any value in a
        /// part no rule reads, compact or pretty, is skipped and the pod read.
        #[test]
        fn skips_any_json_value(v in any_json(), pretty in any::<bool>()) {
            let v = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            let pod = POD.replacen(r#""labels":"#, &format!(r#""x-extra": {v} ,"labels":"#), 1);
            let body = review(&pod, "");
            prop_assert!(pod_create(body.as_bytes()).is_some(), "{}", body);
            prop_assert!(pod_create_request(body.as_bytes()).is_some(), "{}", body);
        }

        /// Stricter than serde, never looser: whatever the scan accepts,
        /// serde parses to the same request, field for field.
        #[test]
        fn typed_accepts_only_what_serde_accepts(body in mutated()) {
            if let Some(scanned) = pod_create_request(&body) {
                let text = String::from_utf8_lossy(&body).into_owned();
                match super::super::parse_request(&body) {
                    Ok(parsed) => prop_assert_eq!(format!("{scanned:?}"), format!("{parsed:?}"), "{}", text),
                    Err(e) => return Err(TestCaseError::fail(format!("scan accepted what serde refuses ({e}): {text}"))),
                }
            }
        }
    }
}
