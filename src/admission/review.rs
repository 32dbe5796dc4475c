//! AdmissionReview v1 on the wire: narrow serde types for what the API server
//! sends, and the response it expects.
//!
//! The request's `object` is kept as raw JSON and parsed straight into the
//! narrow type of its kind: no `DynamicObject`, no JSON tree.

use crate::objects::{Kind, Object};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

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
    #[error("request.object is not a valid {kind}: {reason}")]
    BadObject { kind: String, reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GroupVersionKind {
    group: String,
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    kind: GroupVersionKind,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    operation: String,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: Option<bool>,
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
    pub old_object: Option<Object>,
}

fn is_null(v: Option<&RawValue>) -> bool {
    v.is_none_or(|r| r.get().trim() == "null")
}

fn one_line(s: String) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    // Tell "not JSON" from "JSON of the wrong shape": both are 400s, but the
    // person reading the log needs to know which.
    let review: ReviewIn<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ReviewError::NotJson(one_line(e.to_string()))
        } else {
            ReviewError::NotAReview(one_line(e.to_string()))
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
    let parse = |raw: Option<&RawValue>| -> Result<Option<Object>, ReviewError> {
        match (kind, raw) {
            (Some(k), Some(r)) if !is_null(Some(r)) => Object::from_slice(k, r.get().as_bytes())
                .map(Some)
                .map_err(|e| ReviewError::BadObject {
                    kind: k.as_str().into(),
                    reason: one_line(e.to_string()),
                }),
            _ => Ok(None),
        }
    };
    let judged_op = matches!(req.operation.as_str(), "CREATE" | "UPDATE");
    if kind.is_some() && judged_op && is_null(req.object) {
        return Err(ReviewError::NoObject {
            operation: req.operation,
            kind: req.kind.kind,
        });
    }
    let mut object = if judged_op { parse(req.object)? } else { None };
    let old_object = if req.operation == "UPDATE" {
        parse(req.old_object)?
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
    })
}

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

/// Serialize the response review.
pub fn response_body(
    uid: &str,
    allowed: bool,
    denial: Option<&str>,
    warnings: &[String],
    audit_annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let out = ReviewOut {
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
    };
    // Serializing plain structs of strings and bools cannot fail.
    serde_json::to_vec(&out).unwrap_or_default()
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
                "not a valid Pod",
            ),
        ];
        for (body, want) in cases {
            let e = parse_request(&body).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert!(!e.contains('\n'));
        }
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
