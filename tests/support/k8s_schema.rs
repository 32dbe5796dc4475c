//! Rendered install objects checked against the Kubernetes API types: each object is
//! decoded into its `k8s-openapi` type (v1.33, the API the crate builds against) with
//! every field the type does not know reported, so a wrong type, a missing required
//! field or a misspelt or misplaced key fails, as `kubectl apply --validate=strict`
//! would. Custom resources (cert-manager, Prometheus Operator) have no such type: their
//! apiVersion and kind must be known and their metadata is checked as ObjectMeta.

use k8s_openapi::api::{admissionregistration::v1 as adm, apps::v1 as apps, core::v1 as core};
use k8s_openapi::api::{policy::v1 as policy, rbac::v1 as rbac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Decode `v` as `T`, failing on any field `T` does not have, and on any required field
/// `v` lacks (k8s-openapi decodes a missing required field as its default; it shows up
/// when the decoded object is written back).
fn strict<T: DeserializeOwned + Serialize>(v: &Value) -> Result<(), String> {
    let mut unknown = Vec::new();
    let decoded: Result<T, _> = serde_ignored::deserialize(v.clone(), |path| {
        // serde_ignored writes `?` for each Option on the way; the API path has none.
        unknown.push(path.to_string().replace(".?", ""))
    });
    let decoded = decoded.map_err(|e| e.to_string())?;
    if !unknown.is_empty() {
        return Err(format!("unknown fields: {}", unknown.join(", ")));
    }
    let written = serde_json::to_value(&decoded).map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    missing_fields(v, &written, "", &mut missing);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing required fields: {}", missing.join(", ")))
    }
}

/// Paths present in `written` (the typed object written back) but not in `given`.
fn missing_fields(given: &Value, written: &Value, path: &str, out: &mut Vec<String>) {
    match (given, written) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match g.get(k) {
                    None | Some(Value::Null) => out.push(p),
                    Some(gv) => missing_fields(gv, wv, &p, out),
                }
            }
        }
        (Value::Array(g), Value::Array(w)) => {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                missing_fields(gv, wv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The custom resources the install renders, by apiVersion and kind.
const CUSTOM: &[(&str, &str)] = &[
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

/// Check one rendered object; the error names it and says what is wrong.
pub fn validate(obj: &Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let checked = match (api_version, kind) {
        ("v1", "Namespace") => strict::<core::Namespace>(obj),
        ("v1", "ServiceAccount") => strict::<core::ServiceAccount>(obj),
        ("v1", "ConfigMap") => strict::<core::ConfigMap>(obj),
        ("v1", "Secret") => strict::<core::Secret>(obj),
        ("v1", "Service") => strict::<core::Service>(obj),
        ("apps/v1", "Deployment") => strict::<apps::Deployment>(obj),
        ("policy/v1", "PodDisruptionBudget") => strict::<policy::PodDisruptionBudget>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<rbac::ClusterRole>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<rbac::ClusterRoleBinding>(obj)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<rbac::Role>(obj),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<rbac::RoleBinding>(obj),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            strict::<adm::ValidatingWebhookConfiguration>(obj)
        }
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            strict::<adm::MutatingWebhookConfiguration>(obj)
        }
        (av, k) if CUSTOM.contains(&(av, k)) => {
            if !obj["spec"].is_object() {
                Err("spec is not an object".to_string())
            } else {
                strict::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
                    &obj["metadata"],
                )
                .map_err(|e| format!("metadata: {e}"))
            }
        }
        (av, k) => Err(format!("no schema known for {av} {k}")),
    };
    checked.map_err(|e| format!("{kind}/{name} ({api_version}): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_unknown_fields_and_missing_fields_fail() {
        let svc = |spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec});
        validate(&svc(json!({"ports": [{"port": 443}]}))).expect("a valid Service");
        let e = validate(&svc(json!({"ports": [{"port": "many"}]}))).expect_err("type");
        assert!(e.starts_with("Service/s (v1): "), "{e}");
        let e = validate(&svc(json!({"prots": []}))).expect_err("unknown field");
        assert!(e.contains("spec.prots"), "{e}");
        let e = validate(&svc(json!({"ports": [{"name": "x"}]}))).expect_err("missing port");
        assert!(e.contains("port"), "{e}");
        let e = validate(&json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}}))
            .expect_err("unknown kind");
        assert!(e.contains("no schema"), "{e}");
        let e = validate(
            &json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": {"name": "i", "lables": {}}, "spec": {}}),
        )
        .expect_err("metadata typo");
        assert!(e.contains("lables"), "{e}");
    }
}
