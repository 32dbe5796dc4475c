//! AdmissionReview v1 on the wire: narrow serde types for what the API server
//! sends, and the response it expects.
//!
//! The request's `object` is parsed straight into the narrow type of its
//! kind: no `DynamicObject`, no JSON tree. The API server writes `kind` and
//! `operation` before `object` (Go struct order), so the object is parsed in
//! the same pass as the review; a review written in another order has its
//! object kept as raw JSON and parsed once the kind is known.

use crate::objects::{Kind, Object};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("request body is not an AdmissionReview: {0}")]
    NotAReview(String),
    #[error("unsupported apiVersion {0:?}: claimguard speaks admission.k8s.io/v1 (set admissionReviewVersions: [v1])")]
    ApiVersion(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has no uid")]
    NoUid,
    #[error("AdmissionReview request for {operation} {kind} has no object")]
    NoObject { operation: String, kind: String },
    /// `reason` starts with the path of the field that failed, inside the
    /// object (`spec.volumes: invalid type: …`), when it is known.
    #[error("request.object is not a valid {kind}: {reason}")]
    BadObject { kind: String, reason: String },
}

/// Where a parse of `body` as `T` fails: the field path (`request.uid`,
/// `request.object.spec.volumes`), or `None` when it does not fail there.
/// Only for a body already known to be bad: it parses it once more.
fn failing_field<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Option<String> {
    let mut track = serde_path_to_error::Track::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    match T::deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track)) {
        Ok(_) => None,
        Err(_) => Some(track.path().to_string()).filter(|p| p != "."),
    }
}

/// The object's own path of a field under `request.object` or
/// `request.oldObject`, with the object named when it is the old one.
fn object_field(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("request.object.") {
        rest.to_string()
    } else if let Some(rest) = path.strip_prefix("request.oldObject.") {
        format!("oldObject.{rest}")
    } else {
        path.to_string()
    }
}

/// `path: reason`, or the reason alone when the path is not known.
fn with_field(path: Option<String>, reason: String) -> String {
    match path {
        Some(p) => format!("{p}: {reason}"),
        None => reason,
    }
}

/// Parse an object's JSON as `kind`; on failure, the reason led by the
/// field's path in the object.
fn object_from_raw(kind: Kind, raw: &str) -> Result<Object, String> {
    let mut track = serde_path_to_error::Track::new();
    let mut de = serde_json::Deserializer::from_str(raw);
    let parsed = Object::deserialize_as(
        kind,
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
    )
    .and_then(|o| de.end().map(|()| o));
    parsed.map_err(|e| {
        let path = Some(track.path().to_string()).filter(|p| p != ".");
        with_field(path, one_line(e.to_string()))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(borrow, default, deserialize_with = "request_in")]
    request: Option<RequestIn<'a>>,
}

thread_local! {
    /// Why `request.object` did not parse, when it did not: the parse of the
    /// whole review fails with it, and the caller names the object.
    static OBJECT_FAILURE: RefCell<Option<(Kind, String)>> = const { RefCell::new(None) };
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GroupVersionKind {
    group: String,
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GroupVersionResource {
    group: String,
    resource: String,
}

/// An `autoscaling/v1` Scale: only the replica count matters.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScaleIn {
    spec: ScaleSpecIn,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScaleSpecIn {
    replicas: Option<i64>,
}

#[derive(Default)]
struct RequestIn<'a> {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    sub_resource: String,
    scale: Option<ScaleIn>,
    old_scale: Option<ScaleIn>,
    name: String,
    namespace: String,
    operation: String,
    object: ObjectIn<'a>,
    old_object: ObjectIn<'a>,
    dry_run: Option<bool>,
}

/// `request.object` / `request.oldObject` as read. Two per request and
/// short-lived: boxing the parsed object would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Default)]
enum ObjectIn<'a> {
    #[default]
    Absent,
    Raw(&'a RawValue),
    /// Parsed in place (`None` for JSON `null`).
    Parsed(Option<Object>),
}

impl ObjectIn<'_> {
    fn is_null(&self) -> bool {
        match self {
            ObjectIn::Absent | ObjectIn::Parsed(None) => true,
            ObjectIn::Raw(r) => r.get().trim() == "null",
            ObjectIn::Parsed(Some(_)) => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Uid,
    Kind,
    Resource,
    SubResource,
    Name,
    Namespace,
    Operation,
    Object,
    OldObject,
    DryRun,
    #[serde(other)]
    Other,
}

fn request_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RequestIn<'de>>, D::Error> {
    struct OptionVisitor;
    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<RequestIn<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an AdmissionRequest")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(RequestVisitor).map(Some)
        }
    }
    d.deserialize_option(OptionVisitor)
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = RequestIn<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct AdmissionRequest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestIn<'de>, A::Error> {
        let mut r = RequestIn::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Uid => r.uid = map.next_value()?,
                Field::Kind => r.kind = map.next_value()?,
                Field::Resource => r.resource = map.next_value()?,
                Field::SubResource => r.sub_resource = map.next_value()?,
                Field::Object | Field::OldObject if is_scale(&r.kind) => {
                    let s: Option<ScaleIn> = map.next_value()?;
                    match field {
                        Field::Object => r.scale = s,
                        _ => r.old_scale = s,
                    }
                }
                Field::Name => r.name = map.next_value()?,
                Field::Namespace => r.namespace = map.next_value()?,
                Field::Operation => r.operation = map.next_value()?,
                Field::DryRun => r.dry_run = map.next_value()?,
                Field::Object | Field::OldObject => {
                    let wanted = match field {
                        Field::Object => judged_op(&r.operation),
                        _ => r.operation == "UPDATE",
                    };
                    let kind = Kind::from_kind(&r.kind.group, &r.kind.kind);
                    let value = match kind {
                        Some(kind) if wanted => {
                            ObjectIn::Parsed(map.next_value_seed(ObjectSeed(kind))?)
                        }
                        // Kind or operation not seen yet: keep the text.
                        _ if r.operation.is_empty() || r.kind.kind.is_empty() => {
                            match map.next_value::<Option<&'de RawValue>>()? {
                                Some(raw) => ObjectIn::Raw(raw),
                                None => ObjectIn::Parsed(None),
                            }
                        }
                        // Not judged: skip it without keeping anything.
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            ObjectIn::Absent
                        }
                    };
                    match field {
                        Field::Object => r.object = value,
                        _ => r.old_object = value,
                    }
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }
}

/// Parses an object of a known kind in place; `null` is `None`.
struct ObjectSeed(Kind);

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Option<Object>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Object>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed {
    type Value = Option<Object>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {}", self.0.as_str())
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match Object::deserialize_as(self.0, d) {
            Ok(o) => Ok(Some(o)),
            Err(e) => {
                let reason = e.to_string();
                OBJECT_FAILURE.with(|f| *f.borrow_mut() = Some((self.0, reason)));
                Err(e)
            }
        }
    }
}

fn is_scale(k: &GroupVersionKind) -> bool {
    k.group == "autoscaling" && k.kind == "Scale"
}

/// A scale subresource request (`kubectl scale`, an HPA): the workload it
/// scales and the replica counts. No template: the engine looks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleRequest {
    /// From `request.resource` (`apps/v1 deployments` → Deployment).
    pub workload: Kind,
    pub replicas: Option<i64>,
    pub old_replicas: Option<i64>,
}

fn scaled_kind(r: &GroupVersionResource) -> Option<Kind> {
    Some(match (r.group.as_str(), r.resource.as_str()) {
        ("apps", "deployments") => Kind::Deployment,
        ("apps", "statefulsets") => Kind::StatefulSet,
        ("apps", "replicasets") => Kind::ReplicaSet,
        ("", "replicationcontrollers") => Kind::ReplicationController,
        _ => return None,
    })
}

fn judged_op(op: &str) -> bool {
    matches!(op, "CREATE" | "UPDATE")
}

/// A parsed admission request.
#[derive(Debug)]
pub struct AdmissionRequest {
    pub uid: String,
    /// `request.kind.kind` as sent, for logs, even when claimguard does not judge it.
    pub kind_name: String,
    pub kind: Option<Kind>,
    pub operation: String,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    pub object: Option<Object>,
    /// Boxed: only an UPDATE has one, and a request is moved several times.
    pub old_object: Option<Box<Object>>,
    /// Set for UPDATE of a workload's scale subresource.
    pub scale: Option<ScaleRequest>,
}

fn one_line(s: String) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    // Tell "not JSON" from "JSON of the wrong shape": both are 400s, but the
    // person reading the log needs to know which.
    OBJECT_FAILURE.with(|f| f.borrow_mut().take());
    // One UTF-8 check of the whole body is cheaper than serde_json checking
    // each string it keeps; a body that is not UTF-8 takes the byte path,
    // which accepts bad bytes inside skipped strings as it always did.
    let parsed = match simdutf8::basic::from_utf8(body) {
        Ok(text) => serde_json::from_str::<ReviewIn<'_>>(text),
        Err(_) => serde_json::from_slice::<ReviewIn<'_>>(body),
    };
    let review = parsed.map_err(|e| {
        let object_failure = OBJECT_FAILURE.with(|f| f.borrow_mut().take());
        if e.is_syntax() || e.is_eof() {
            return ReviewError::NotJson(one_line(e.to_string()));
        }
        // The error path only: parse again, tracking the field that failed.
        let field = failing_field::<ReviewIn<'_>>(body);
        OBJECT_FAILURE.with(|f| f.borrow_mut().take());
        match object_failure {
            // serde's own message carries the position in the whole body.
            Some((kind, _)) => ReviewError::BadObject {
                kind: kind.as_str().into(),
                reason: with_field(field.as_deref().map(object_field), one_line(e.to_string())),
            },
            None => ReviewError::NotAReview(with_field(field, one_line(e.to_string()))),
        }
    })?;
    match review.kind.as_deref() {
        Some("AdmissionReview") => {}
        Some(other) => return Err(ReviewError::NotAReview(format!("kind is {other:?}"))),
        None => return Err(ReviewError::NotAReview("no kind".into())),
    }
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => return Err(ReviewError::ApiVersion(other.unwrap_or("").to_string())),
    }
    let req = review.request.ok_or(ReviewError::NoRequest)?;
    if req.uid.is_empty() {
        return Err(ReviewError::NoUid);
    }
    let kind = Kind::from_kind(&req.kind.group, &req.kind.kind);
    let scale = if is_scale(&req.kind) && req.sub_resource == "scale" {
        // A review written with `object` before `kind` kept the text.
        let reparse = |field: &ObjectIn<'_>| -> Result<Option<ScaleIn>, ReviewError> {
            match field {
                ObjectIn::Raw(raw) => {
                    serde_json::from_str(raw.get()).map_err(|e| ReviewError::BadObject {
                        kind: "Scale".into(),
                        reason: one_line(e.to_string()),
                    })
                }
                _ => Ok(None),
            }
        };
        let new = match req.scale {
            Some(s) => Some(s),
            None => reparse(&req.object)?,
        };
        let old = match req.old_scale {
            Some(s) => Some(s),
            None => reparse(&req.old_object)?,
        };
        match (scaled_kind(&req.resource), req.operation.as_str()) {
            (Some(workload), "UPDATE") => Some(ScaleRequest {
                workload,
                replicas: new.and_then(|s| s.spec.replicas),
                old_replicas: old.and_then(|s| s.spec.replicas),
            }),
            _ => None,
        }
    } else {
        None
    };
    let parse = |field: ObjectIn<'_>| -> Result<Option<Object>, ReviewError> {
        match (kind, field) {
            (Some(_), ObjectIn::Parsed(o)) => Ok(o),
            (Some(k), ObjectIn::Raw(r)) if r.get().trim() != "null" => object_from_raw(k, r.get())
                .map(Some)
                .map_err(|reason| ReviewError::BadObject {
                    kind: k.as_str().into(),
                    reason,
                }),
            _ => Ok(None),
        }
    };
    let judged = judged_op(&req.operation);
    if kind.is_some() && judged && req.object.is_null() {
        return Err(ReviewError::NoObject {
            operation: req.operation,
            kind: req.kind.kind,
        });
    }
    let mut object = if judged { parse(req.object)? } else { None };
    let old_object = if req.operation == "UPDATE" {
        parse(req.old_object)?.map(Box::new)
    } else {
        None
    };
    // On CREATE the object may not carry its namespace yet; the request does.
    if let Some(o) = &mut object {
        let meta = o.metadata_mut();
        if meta.namespace.as_deref().is_none_or(str::is_empty) && !req.namespace.is_empty() {
            meta.namespace = Some(req.namespace.clone());
        }
        if meta.name.is_empty() && !req.name.is_empty() {
            meta.name = req.name.clone();
        }
    }
    Ok(AdmissionRequest {
        uid: req.uid,
        kind_name: req.kind.kind,
        kind,
        operation: req.operation,
        namespace: req.namespace,
        name: req.name,
        dry_run: req.dry_run.unwrap_or(false),
        object,
        old_object,
        scale,
    })
}

/// Serialize the response review: the bytes `serde_json` makes of
/// `{"apiVersion", "kind", "response": {"uid", "allowed", "status"?,
/// "warnings"?, "auditAnnotations"?}}` (a test holds it to that), written
/// directly because its byte-at-a-time escaping was ~6 % of a review that
/// warns.
pub fn response_body(
    uid: &str,
    allowed: bool,
    denial: Option<&str>,
    warnings: &[String],
    audit_annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let strings = uid.len()
        + denial.map_or(0, str::len)
        + warnings.iter().map(|w| w.len() + 3).sum::<usize>()
        + audit_annotations
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>();
    let mut out = Vec::with_capacity(160 + strings + strings / 8);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(API_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    json_string(&mut out, uid);
    out.extend_from_slice(if allowed {
        b",\"allowed\":true"
    } else {
        b",\"allowed\":false"
    });
    if let Some(message) = denial {
        out.extend_from_slice(b",\"status\":{\"code\":403,\"reason\":\"Forbidden\",\"message\":");
        json_string(&mut out, message);
        out.push(b'}');
    }
    if !warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":[");
        for (i, w) in warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_string(&mut out, w);
        }
        out.push(b']');
    }
    if !audit_annotations.is_empty() {
        out.extend_from_slice(b",\"auditAnnotations\":{");
        for (i, (k, v)) in audit_annotations.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_string(&mut out, k);
            out.push(b':');
            json_string(&mut out, v);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    out
}

/// `s` as a JSON string, escaped exactly as `serde_json` escapes it: `"`,
/// `\\` and the C0 controls (the short forms where JSON has one, else
/// `\u00xx`); nothing else. Found sixteen bytes at a time, the clean runs
/// between them copied whole.
fn json_string(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let (mut i, mut copied) = (0, 0);
    loop {
        let x = if let Some(chunk) = b[i..].first_chunk::<16>() {
            let bits = super::scan::special_bits(chunk);
            if bits == 0 {
                i += 16;
                continue;
            }
            i += bits.trailing_zeros() as usize;
            b[i]
        } else {
            match b[i..]
                .iter()
                .position(|&x| x < 0x20 || x == b'"' || x == b'\\')
            {
                Some(k) => {
                    i += k;
                    b[i]
                }
                None => break,
            }
        };
        out.extend_from_slice(&b[copied..i]);
        match x {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(x >> 4)]);
                out.push(HEX[usize::from(x & 0xf)]);
            }
        }
        i += 1;
        copied = i;
    }
    out.extend_from_slice(&b[copied..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(request: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request})).unwrap()
    }

    #[test]
    fn parses_a_pod_review() {
        let body = review(serde_json::json!({
            "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team", "name": "p", "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "managedFields": [{"x": 1}]},
                       "spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "b"}]}]}},
            "oldObject": null, "dryRun": true, "options": {"kind": "CreateOptions"}
        }));
        let r = parse_request(&body).unwrap();
        assert_eq!(r.uid, "u1");
        assert_eq!(r.kind, Some(Kind::Pod));
        assert!(r.dry_run);
        assert_eq!(
            r.object.unwrap().metadata().namespace.as_deref(),
            Some("team")
        );
    }

    #[test]
    fn errors_are_named() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "not valid JSON"),
            (b"{\"a\":".to_vec(), "not valid JSON"),
            (b"[1,2]".to_vec(), "not an AdmissionReview"),
            (b"{\"kind\":\"Pod\"}".to_vec(), "not an AdmissionReview"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\",\"request\":{}}".to_vec(), "unsupported apiVersion"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}".to_vec(), "no request"),
            (review(serde_json::json!({"kind": {"kind": "Pod"}, "operation": "CREATE"})), "no uid"),
            (review(serde_json::json!({"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE"})), "has no object"),
            (
                review(serde_json::json!({"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": {"spec": {"volumes": 5}}})),
                "not a valid Pod: spec.volumes: invalid type: integer `5`, expected a sequence",
            ),
            (
                // `object` before `kind`: the raw-text path names the field too.
                review(serde_json::json!({"object": {"spec": {"containers": [{"name": "c", "volumeMounts": "m"}]}}, "uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE"})),
                "not a valid Pod: spec.containers[0].volumeMounts: invalid type: string \"m\", expected a sequence",
            ),
            (
                review(serde_json::json!({"uid": 7, "kind": {"kind": "Pod"}, "operation": "CREATE"})),
                "not an AdmissionReview: request.uid: invalid type: integer `7`, expected a string",
            ),
        ];
        for (body, want) in cases {
            let e = parse_request(&body).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert!(!e.contains('\n'));
        }
    }

    /// The API server's field order (kind and operation before object) is
    /// parsed in one pass; any other order through the raw-text path. Both
    /// must give the same request.
    #[test]
    fn field_order_does_not_change_the_result() {
        let api_server_order = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"name":"p","namespace":"team","operation":"CREATE","userInfo":{"username":"alice","groups":["a","b"]},"object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","uid":"x","managedFields":[{"manager":"m","fieldsV1":{"f:spec":{}}}],"annotations":{"claimguard.io/allow-shared-writers":"true"}},"spec":{"volumes":[{"name":"d","persistentVolumeClaim":{"claimName":"data","readOnly":true}}],"containers":[{"name":"c","env":[{"name":"A","value":"\"b\""}],"volumeMounts":[{"name":"d","mountPath":"/d"}]}],"nodeName":"n1"},"status":{"phase":"Pending"}},"oldObject":null,"dryRun":false,"options":{"kind":"CreateOptions"}}}"#;
        let sorted = serde_json::to_vec(
            &serde_json::from_str::<serde_json::Value>(api_server_order).unwrap(),
        )
        .unwrap();
        assert!(
            String::from_utf8_lossy(&sorted).find("\"object\"")
                < String::from_utf8_lossy(&sorted).find("\"operation\"")
        );
        let a = parse_request(api_server_order.as_bytes()).unwrap();
        let b = parse_request(&sorted).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let Some(Object::Pod(pod)) = &a.object else {
            panic!("not a pod: {a:?}")
        };
        assert_eq!(pod.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(
            pod.spec.as_ref().unwrap().volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "data"
        );

        // A bad object, a null object and an unjudged kind, in API server order.
        let bad = api_server_order.replace(r#""volumes":[{"#, r#""volumes":5,"x":[{"#);
        let e = parse_request(bad.as_bytes()).unwrap_err();
        assert!(matches!(e, ReviewError::BadObject { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("not a valid Pod: spec.volumes: invalid type: integer `5`"),
            "{e}"
        );
        let broken = api_server_order.replace(r#""nodeName":"n1""#, r#""nodeName":"n1"#);
        assert!(matches!(
            parse_request(broken.as_bytes()),
            Err(ReviewError::NotJson(_))
        ));
        let null = api_server_order.replace(
            r#""object":{"kind":"Pod""#,
            r#""object":null,"x":{"kind":"Pod""#,
        );
        assert!(matches!(
            parse_request(null.as_bytes()),
            Err(ReviewError::NoObject { .. })
        ));
        let cm = api_server_order.replace(
            r#""kind":"Pod"},"resource""#,
            r#""kind":"ConfigMap"},"resource""#,
        );
        let r = parse_request(cm.as_bytes()).unwrap();
        assert!(r.kind.is_none() && r.object.is_none());
        let delete = api_server_order.replace(r#""operation":"CREATE""#, r#""operation":"DELETE""#);
        assert!(parse_request(delete.as_bytes()).unwrap().object.is_none());
        // After a failure the next parse starts clean.
        assert!(parse_request(api_server_order.as_bytes()).is_ok());
    }

    #[test]
    fn unknown_kinds_and_deletes_need_no_object() {
        let r = parse_request(&review(serde_json::json!({"uid": "u", "kind": {"kind": "ConfigMap"}, "operation": "CREATE", "object": {"data": {}}}))).unwrap();
        assert!(r.kind.is_none() && r.object.is_none());
        let r = parse_request(&review(serde_json::json!({"uid": "u", "kind": {"kind": "Pod"}, "operation": "DELETE", "object": null}))).unwrap();
        assert!(r.object.is_none());
    }

    #[test]
    fn response_shape() {
        let mut ann = BTreeMap::new();
        ann.insert("rwop-exclusive".to_string(), "m".to_string());
        let body = response_body(
            "u1",
            false,
            Some("[rwop-exclusive] no"),
            &["[x] w".into()],
            &ann,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
                "uid": "u1", "allowed": false,
                "status": {"code": 403, "reason": "Forbidden", "message": "[rwop-exclusive] no"},
                "warnings": ["[x] w"], "auditAnnotations": {"rwop-exclusive": "m"}}})
        );
        let v: serde_json::Value =
            serde_json::from_slice(&response_body("u2", true, None, &[], &BTreeMap::new()))
                .unwrap();
        assert_eq!(
            v["response"],
            serde_json::json!({"uid": "u2", "allowed": true})
        );
    }
}

#[cfg(test)]
mod response_tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;

    /// What `response_body` replaced: serde_json's serialization of the
    /// same shape. The hand-written writer must make exactly these bytes.
    fn by_serde(
        uid: &str,
        allowed: bool,
        denial: Option<&str>,
        warnings: &[String],
        audit_annotations: &BTreeMap<String, String>,
    ) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ReviewOut<'a> {
            api_version: &'static str,
            kind: &'static str,
            response: ResponseOut<'a>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ResponseOut<'a> {
            uid: &'a str,
            allowed: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<StatusOut<'a>>,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            warnings: &'a [String],
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            audit_annotations: &'a BTreeMap<String, String>,
        }
        #[derive(Serialize)]
        struct StatusOut<'a> {
            code: u16,
            reason: &'static str,
            message: &'a str,
        }
        serde_json::to_vec(&ReviewOut {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: ResponseOut {
                uid,
                allowed,
                status: denial.map(|message| StatusOut {
                    code: 403,
                    reason: "Forbidden",
                    message,
                }),
                warnings,
                audit_annotations,
            },
        })
        .unwrap()
    }

    /// Text weighted towards what needs escaping: quotes, backslashes,
    /// every C0 control, DEL, C1 and multi-byte characters, at any offset
    /// around the 16-byte blocks.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                4 => prop::char::range('a', 'z'),
                1 => prop::char::range('\u{0}', '\u{1f}'),
                1 => prop::sample::select(vec!['"', '\\', '/', '\u{7f}', '\u{85}', 'é', '→', '😀']),
            ],
            0..70,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    #[test]
    fn writes_what_serde_writes_for_every_shape() {
        let notes = BTreeMap::from([("rwo-shared-node".to_string(), "line \"1\"\n".to_string())]);
        for denial in [None, Some("denied: \"a\"\tb")] {
            for warnings in [vec![], vec!["w1".to_string(), "w\\2".to_string()]] {
                for ann in [BTreeMap::new(), notes.clone()] {
                    for allowed in [true, false] {
                        let ours = response_body("u-1", allowed, denial, &warnings, &ann);
                        assert_eq!(
                            String::from_utf8(ours).unwrap(),
                            String::from_utf8(by_serde("u-1", allowed, denial, &warnings, &ann))
                                .unwrap()
                        );
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn escapes_as_serde_does(
            uid in text(),
            denial in prop::option::of(text()),
            warnings in prop::collection::vec(text(), 0..3),
            ann in prop::collection::btree_map(text(), text(), 0..3),
            allowed in any::<bool>(),
        ) {
            prop_assert_eq!(
                response_body(&uid, allowed, denial.as_deref(), &warnings, &ann),
                by_serde(&uid, allowed, denial.as_deref(), &warnings, &ann)
            );
        }
    }
}
