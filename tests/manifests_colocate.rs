//! The co-location overlays (`manifests/colocate/`,
//! `manifests/cert-manager-colocate/`): both render with `kubectl kustomize`,
//! add exactly the MutatingWebhookConfiguration to their base, and its two
//! webhooks call `/mutate` on the Service with the settings issue 15 asks for
//! (reinvocationPolicy IfNeeded, sideEffects None, the namespace opt-in
//! label, disjoint selectors). Without kubectl the webhook file itself is
//! checked and the overlay comparison is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const NS: &str = "claimguard-system";
const NAME: &str = "claimguard-colocate";

fn manifests_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(sub)
}

fn parse_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubectl kustomize DIR`, or `None` when kubectl is not installed.
fn kubectl_render(sub: &str) -> Option<Vec<Value>> {
    let dir = manifests_dir(sub);
    let out = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: kubectl not found; checking the webhook file only");
            return None;
        }
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(parse_docs(&String::from_utf8(out.stdout).unwrap()))
}

fn key(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or_default().to_string(),
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = objs
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}/{name}");
    found[0]
}

/// A label selector (matchLabels + matchExpressions) against a label set.
fn selects(selector: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let labels_ok = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()) == v.as_str().as_ref());
    let exprs_ok = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let k = e["key"].as_str().unwrap();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().expect("selector values are strings"))
                .collect();
            match e["operator"].as_str().unwrap() {
                "In" => labels.get(k).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(k).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(k),
                "DoesNotExist" => !labels.contains_key(k),
                op => panic!("unknown operator {op}"),
            }
        });
    labels_ok && exprs_ok
}

/// The namespace labels the API server sees (it sets kubernetes.io/metadata.name).
fn namespace(
    name: &'static str,
    extra: &[(&'static str, &'static str)],
) -> BTreeMap<&'static str, &'static str> {
    let mut l = BTreeMap::from([("kubernetes.io/metadata.name", name)]);
    l.extend(extra.iter().copied());
    l
}

/// Which of the two webhooks receive a pod from this namespace.
fn receivers(mwc: &Value, ns: &BTreeMap<&str, &str>) -> Vec<String> {
    mwc["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| selects(&w["namespaceSelector"], ns))
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect()
}

fn check_mutating_webhooks(mwc: &Value) {
    assert_eq!(mwc["apiVersion"], "admissionregistration.k8s.io/v1");
    let hooks = mwc["webhooks"].as_array().expect("webhooks");
    let names: Vec<&str> = hooks.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["colocate.claimguard.io", "colocate-pods.claimguard.io"]
    );
    for w in hooks {
        let name = w["name"].as_str().unwrap();
        assert_eq!(
            w["rules"],
            serde_json::json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                                "operations": ["CREATE"], "scope": "Namespaced"}]),
            "{name}: pods, CREATE only"
        );
        let svc = &w["clientConfig"]["service"];
        assert_eq!(svc["name"], "claimguard", "{name}");
        assert_eq!(svc["namespace"], NS, "{name}");
        assert_eq!(svc["path"], "/mutate", "{name}");
        assert_eq!(svc["port"], 443, "{name}");
        assert!(w["clientConfig"]["url"].is_null(), "{name}");
        // Left to cert-manager or `claimguard certs`: never an empty string
        // that a later apply would write over the injected value with.
        assert!(w["clientConfig"]["caBundle"].is_null(), "{name}");
        assert_eq!(
            w["admissionReviewVersions"],
            serde_json::json!(["v1"]),
            "{name}"
        );
        assert_eq!(w["sideEffects"], "None", "{name}");
        assert_eq!(w["reinvocationPolicy"], "IfNeeded", "{name}");
        assert_eq!(w["failurePolicy"], "Ignore", "{name}");
        assert_eq!(w["matchPolicy"], "Equivalent", "{name}");
        let timeout = w["timeoutSeconds"].as_u64().expect("timeoutSeconds");
        assert!((1..=10).contains(&timeout), "{name}: {timeout}");
        assert!(w["objectSelector"].is_null(), "{name}");
    }

    let opted = namespace("shop", &[("claimguard.io/colocate", "true")]);
    let plain = namespace("default", &[]);
    let not_true = namespace("other", &[("claimguard.io/colocate", "false")]);
    let off = namespace(
        "quiet",
        &[
            ("claimguard.io/colocate", "true"),
            ("claimguard.io/mode", "off"),
        ],
    );
    assert_eq!(receivers(mwc, &opted), ["colocate.claimguard.io"]);
    // Every other namespace goes to the second webhook only: one call per pod.
    assert_eq!(receivers(mwc, &plain), ["colocate-pods.claimguard.io"]);
    assert_eq!(receivers(mwc, &not_true), ["colocate-pods.claimguard.io"]);
    for system in ["kube-system", NS] {
        let labelled = namespace(system, &[("claimguard.io/colocate", "true")]);
        assert!(receivers(mwc, &labelled).is_empty(), "{system}");
        assert!(
            receivers(mwc, &namespace(system, &[])).is_empty(),
            "{system}"
        );
    }
    assert!(
        receivers(mwc, &off).is_empty(),
        "mode=off skips the namespace"
    );
}

#[test]
fn webhook_file_has_the_settings_issue_15_asks_for() {
    let path = manifests_dir("components/colocate/mutating-webhook.yaml");
    let docs = parse_docs(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["kind"], "MutatingWebhookConfiguration");
    assert_eq!(docs[0]["metadata"]["name"], NAME);
    check_mutating_webhooks(&docs[0]);
}

/// The overlay renders to its base plus the MutatingWebhookConfiguration.
fn check_overlay(overlay: &str, base: &str) -> Option<Vec<Value>> {
    let rendered = kubectl_render(overlay)?;
    let base_objs = kubectl_render(base)?;
    let keys = |objs: &[Value]| objs.iter().map(key).collect::<BTreeSet<_>>();
    let added: Vec<_> = keys(&rendered)
        .difference(&keys(&base_objs))
        .cloned()
        .collect();
    assert_eq!(
        added,
        [("MutatingWebhookConfiguration".to_string(), NAME.to_string())],
        "{overlay}"
    );
    assert!(keys(&base_objs).is_subset(&keys(&rendered)), "{overlay}");
    // The base objects are unchanged by the overlay.
    for o in &base_objs {
        let (kind, name) = key(o);
        assert_eq!(find(&rendered, &kind, &name), o, "{overlay}: {kind}/{name}");
    }
    let mwc = find(&rendered, "MutatingWebhookConfiguration", NAME);
    check_mutating_webhooks(mwc);
    assert_eq!(
        mwc["metadata"]["labels"]["app.kubernetes.io/part-of"], "claimguard",
        "{overlay}"
    );
    // The Service the webhooks call exists and serves port 443.
    let svc = find(&rendered, "Service", "claimguard");
    assert_eq!(svc["metadata"]["namespace"], NS);
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 443),
        "{svc}"
    );
    Some(rendered)
}

#[test]
fn colocate_overlay_adds_the_mutating_webhook_to_the_base() {
    let Some(rendered) = check_overlay("colocate", "base") else {
        return;
    };
    let mwc = find(&rendered, "MutatingWebhookConfiguration", NAME);
    assert!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_null(),
        "no cert-manager in this variant"
    );
}

#[test]
fn cert_manager_colocate_overlay_injects_the_ca_into_the_mutating_webhook() {
    let Some(rendered) = check_overlay("cert-manager-colocate", "cert-manager") else {
        return;
    };
    let mwc = find(&rendered, "MutatingWebhookConfiguration", NAME);
    let vwc = find(&rendered, "ValidatingWebhookConfiguration", "claimguard");
    let inject = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        .as_str()
        .expect("inject-ca-from on the mutating webhook");
    assert_eq!(
        Some(inject),
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str(),
        "the same CA as the validating webhooks"
    );
    let (ns, cert) = inject.split_once('/').unwrap();
    let c = find(&rendered, "Certificate", cert);
    assert_eq!(c["metadata"]["namespace"], ns);
    let dns: Vec<&str> = c["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(dns.contains(&"claimguard.claimguard-system.svc"), "{dns:?}");
}

/// `claimguard certs` writes a caBundle patch for the co-location webhooks
/// too; it fills both and fails on a configuration with fewer.
#[test]
fn certs_writes_the_colocate_cabundle_patch() {
    let file = manifests_dir("components/colocate/mutating-webhook.yaml");
    let docs = parse_docs(&std::fs::read_to_string(file).unwrap());
    let mut mwc = find(&docs, "MutatingWebhookConfiguration", NAME).clone();
    let dir = tempfile::tempdir().unwrap();
    let written =
        claimguard::certs::write_bundle(&claimguard::certs::CertsOptions::new(dir.path())).unwrap();
    let ca = std::fs::read_to_string(&written.ca_cert).unwrap();
    let patch: json_patch::Patch =
        serde_json::from_str(&std::fs::read_to_string(&written.cabundle_patch_colocate).unwrap())
            .unwrap();
    json_patch::patch(&mut mwc, &patch).unwrap();
    use base64::Engine as _;
    let want = base64::engine::general_purpose::STANDARD.encode(&ca);
    let hooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), claimguard::certs::COLOCATE_WEBHOOK_COUNT);
    for hook in hooks {
        assert_eq!(hook["clientConfig"]["caBundle"], want, "{}", hook["name"]);
        assert_eq!(hook["clientConfig"]["service"]["path"], "/mutate");
    }
}
