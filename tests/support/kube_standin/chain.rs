//! The API server's admission chain, built from the rendered webhook configurations
//! (`kubectl kustomize manifests/` and its overlays): for each request, every matching
//! mutating webhook in turn (its JSONPatch applied), then every matching validating
//! webhook, each called with an AdmissionReview v1 over TLS verified against the
//! webhook's `caBundle` for the Service's DNS name.
//!
//! Follows k8s.io/apiserver/pkg/admission/plugin/webhook: rule matching (apiGroups,
//! apiVersions, resources incl. `x/scale` and `*/*`, operations, scope), the
//! namespaceSelector (the namespace's labels; a Namespace's own labels; never excludes
//! other cluster-scoped objects), the objectSelector (new or old object's labels),
//! `failurePolicy` (default Fail), `timeoutSeconds` (default 10), the denial
//! (`admission webhook "<name>" denied the request: <message>`, the webhook's code or
//! 400) and the failure (`failed calling webhook ...`, 500 InternalError).
//!
//! `matchConditions` (CEL, [`match_conditions`]) are evaluated after the rules and
//! selectors: a false condition skips the webhook; an evaluation error skips it under
//! `Ignore` and refuses the request under `Fail` with the API server's 403
//! (`<resource> "<name>" is forbidden: <errors>`), the webhook never called.
//!
//! Not modelled: `matchPolicy: Equivalent`
//! across versions (the stand-in serves one version per resource), reinvocation,
//! `clientConfig.url`, and validating webhooks run in parallel (here: in order).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

#[path = "../match_conditions.rs"]
pub mod match_conditions;

/// What the API server knows about one request when it runs admission.
#[derive(Clone, Debug)]
pub struct Attributes {
    /// group, version, plural of the resource (for a subresource: the parent's).
    pub group: String,
    pub version: String,
    pub resource: String,
    pub sub_resource: String,
    /// group, version, kind of `object` (autoscaling/v1 Scale for `x/scale`).
    pub kind: (String, String, String),
    pub namespace: String,
    pub name: String,
    /// CREATE, UPDATE, DELETE.
    pub operation: &'static str,
    pub object: Option<Value>,
    pub old_object: Option<Value>,
    pub dry_run: bool,
    pub options: Value,
}

/// Why a request did not get through admission: the Status the client receives.
#[derive(Clone, Debug)]
pub struct Rejection {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

/// The outcome of admission: the (possibly mutated) object, or a rejection; the
/// warnings travel in both cases (the API server sends them on errors too).
pub struct Outcome {
    pub result: Result<Option<Value>, Rejection>,
    pub warnings: Vec<String>,
}

/// One AdmissionReview exchange, kept for assertions.
#[derive(Clone, Debug)]
pub struct Call {
    pub webhook: String,
    pub mutating: bool,
    pub review: Value,
    /// The response body, or the error that made the call fail.
    pub answer: Result<Value, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

#[derive(Clone, Debug)]
struct Rule {
    groups: Vec<String>,
    versions: Vec<String>,
    resources: Vec<String>,
    operations: Vec<String>,
    scope: String,
}

/// A label selector (matchLabels + matchExpressions).
#[derive(Clone, Debug, Default)]
pub struct Selector {
    match_labels: BTreeMap<String, String>,
    expressions: Vec<(String, String, Vec<String>)>,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    pub path: String,
}

#[derive(Clone, Debug)]
pub struct Webhook {
    /// `<configuration>/<webhook>`.
    pub id: String,
    pub name: String,
    pub mutating: bool,
    rules: Vec<Rule>,
    namespace_selector: Selector,
    object_selector: Selector,
    pub failure_policy: FailurePolicy,
    pub timeout: Duration,
    pub service: Service,
    pub ca_bundle_pem: Option<String>,
    match_conditions: Arc<Vec<match_conditions::MatchCondition>>,
}

/// The admission chain.
pub struct Chain {
    pub webhooks: Vec<Webhook>,
    /// Where each Service (`namespace/name`) answers: the test's stand-in for kube-proxy.
    endpoints: Mutex<HashMap<String, SocketAddr>>,
    calls: Mutex<Vec<Call>>,
    uid_seq: AtomicU64,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Selector {
    pub fn parse(v: &Value) -> Result<Selector, String> {
        let mut s = Selector::default();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                let val = val
                    .as_str()
                    .ok_or_else(|| format!("matchLabels.{k} is not a string"))?;
                s.match_labels.insert(k.clone(), val.to_string());
            }
        }
        for e in v
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().ok_or("matchExpressions[].key missing")?;
            let op = e["operator"]
                .as_str()
                .ok_or("matchExpressions[].operator missing")?;
            if !matches!(op, "In" | "NotIn" | "Exists" | "DoesNotExist") {
                return Err(format!("unknown selector operator {op:?}"));
            }
            s.expressions
                .push((key.to_string(), op.to_string(), strings(&e["values"])));
        }
        Ok(s)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(k, op, values)| {
                let got = labels.get(k);
                match op.as_str() {
                    "In" => got.is_some_and(|g| values.contains(g)),
                    "NotIn" => got.is_none_or(|g| !values.contains(g)),
                    "Exists" => got.is_some(),
                    _ => got.is_none(),
                }
            })
    }
}

pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn any_or(list: &[String], value: &str) -> bool {
    list.iter().any(|x| x == "*" || x == value)
}

impl Rule {
    fn matches(&self, a: &Attributes) -> bool {
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*/*" {
                return true;
            }
            let (res, sub) = match r.split_once('/') {
                Some((res, sub)) => (res, Some(sub)),
                None => (r.as_str(), None),
            };
            (res == "*" || res == a.resource)
                && match sub {
                    None => a.sub_resource.is_empty(),
                    Some(s) => s == "*" || s == a.sub_resource,
                }
        });
        let scope_ok = match self.scope.as_str() {
            "Cluster" => a.namespace.is_empty(),
            "Namespaced" => !a.namespace.is_empty(),
            _ => true,
        };
        any_or(&self.operations, a.operation)
            && any_or(&self.groups, &a.group)
            && any_or(&self.versions, &a.version)
            && resource_ok
            && scope_ok
    }
}

impl Webhook {
    fn parse(config: &Value, mutating: bool, w: &Value) -> Result<Webhook, String> {
        let configuration = config["metadata"]["name"]
            .as_str()
            .ok_or("webhook configuration without metadata.name")?
            .to_string();
        let name = w["name"]
            .as_str()
            .ok_or_else(|| format!("{configuration}: a webhook without a name"))?
            .to_string();
        let match_conditions =
            match_conditions::compile(&w["matchConditions"]).map_err(|e| format!("{name}: {e}"))?;
        let svc = &w["clientConfig"]["service"];
        if !svc.is_object() {
            return Err(format!(
                "{name}: only clientConfig.service is modelled (not url)"
            ));
        }
        let service = Service {
            namespace: svc["namespace"].as_str().unwrap_or_default().to_string(),
            name: svc["name"].as_str().unwrap_or_default().to_string(),
            port: svc["port"].as_u64().unwrap_or(443) as u16,
            path: svc["path"].as_str().unwrap_or("/").to_string(),
        };
        if !strings(&w["admissionReviewVersions"]).contains(&"v1".to_string()) {
            return Err(format!("{name}: admissionReviewVersions lacks v1"));
        }
        let rules = w["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Rule {
                groups: strings(&r["apiGroups"]),
                versions: strings(&r["apiVersions"]),
                resources: strings(&r["resources"]),
                operations: strings(&r["operations"]),
                scope: r["scope"].as_str().unwrap_or("*").to_string(),
            })
            .collect();
        let failure_policy = match w["failurePolicy"].as_str() {
            None | Some("Fail") => FailurePolicy::Fail,
            Some("Ignore") => FailurePolicy::Ignore,
            Some(other) => return Err(format!("{name}: failurePolicy {other:?}")),
        };
        let ca_bundle_pem = match w["clientConfig"]["caBundle"].as_str() {
            Some(b64) => Some(
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| format!("{name}: caBundle is not base64: {e}"))?,
                )
                .map_err(|_| format!("{name}: caBundle is not PEM text"))?,
            ),
            None => None,
        };
        Ok(Webhook {
            id: format!("{configuration}/{name}"),
            name: name.clone(),
            mutating,
            rules,
            namespace_selector: Selector::parse(&w["namespaceSelector"])
                .map_err(|e| format!("{name}: namespaceSelector: {e}"))?,
            object_selector: Selector::parse(&w["objectSelector"])
                .map_err(|e| format!("{name}: objectSelector: {e}"))?,
            failure_policy,
            timeout: Duration::from_secs(w["timeoutSeconds"].as_u64().unwrap_or(10)),
            service,
            ca_bundle_pem,
            match_conditions: Arc::new(match_conditions),
        })
    }

    /// Rules, then selectors: whether the API server sends this request here.
    /// `namespace_labels` is None for cluster-scoped objects (other than Namespaces).
    pub fn matches(
        &self,
        a: &Attributes,
        namespace_labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        if !self.rules.iter().any(|r| r.matches(a)) {
            return false;
        }
        if let Some(labels) = namespace_labels {
            if !self.namespace_selector.matches(labels) {
                return false;
            }
        }
        let objects = [a.object.as_ref(), a.old_object.as_ref()];
        objects
            .iter()
            .flatten()
            .any(|o| self.object_selector.matches(&labels_of(o)))
    }

    /// The webhook's `matchConditions` for this request (after [`Webhook::matches`]).
    pub fn conditions(&self, a: &Attributes, review: &Value) -> match_conditions::Verdict {
        // The CEL `request` is the AdmissionRequest without the objects, which are
        // variables of their own.
        let mut request = review["request"].clone();
        if let Some(r) = request.as_object_mut() {
            r.remove("object");
            r.remove("oldObject");
        }
        match_conditions::evaluate(
            &self.match_conditions,
            a.object.as_ref(),
            a.old_object.as_ref(),
            &request,
        )
    }

    pub fn url(&self) -> String {
        format!(
            "https://{}.{}.svc:{}{}?timeout={}s",
            self.service.name,
            self.service.namespace,
            self.service.port,
            self.service.path,
            self.timeout.as_secs()
        )
    }
}

/// Every webhook of every Validating/MutatingWebhookConfiguration in `docs`, in the
/// API server's order (configurations by name, webhooks in their order).
pub fn webhooks_of(docs: &[Value]) -> Result<Vec<Webhook>, String> {
    let mut configs: Vec<(&str, bool, &Value)> = Vec::new();
    for d in docs {
        let mutating = match d["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => true,
            Some("ValidatingWebhookConfiguration") => false,
            _ => continue,
        };
        if d["apiVersion"] != "admissionregistration.k8s.io/v1" {
            return Err(format!("{}: apiVersion {}", d["kind"], d["apiVersion"]));
        }
        configs.push((d["metadata"]["name"].as_str().unwrap_or(""), mutating, d));
    }
    configs.sort_by_key(|c| (!c.1, c.0));
    let mut out = Vec::new();
    for (_, mutating, config) in configs {
        for w in config["webhooks"].as_array().into_iter().flatten() {
            out.push(Webhook::parse(config, mutating, w)?);
        }
    }
    Ok(out)
}

/// What the API server's warning recorder keeps of a request's warnings
/// (k8s.io/apiserver/pkg/endpoints/filters/warning.go): empty and duplicate texts
/// dropped, texts that are not valid header values (control characters) dropped, and
/// once the total passes 4096 characters every warning cut to 256 characters.
pub fn recorded_warnings(warnings: &[String]) -> Vec<String> {
    const TOTAL: usize = 4 * 1024;
    const ITEM: usize = 256;
    let mut seen = std::collections::HashSet::new();
    let kept: Vec<&String> = warnings
        .iter()
        .filter(|w| !w.is_empty() && !w.chars().any(char::is_control))
        .filter(|w| seen.insert(w.as_str()))
        .collect();
    let total: usize = kept.iter().map(|w| w.chars().count()).sum();
    kept.into_iter()
        .map(|w| {
            if total > TOTAL {
                w.chars().take(ITEM).collect()
            } else {
                w.clone()
            }
        })
        .collect()
}

/// The API server's header form of a warning: `299 - "<text>"`, `"` and `\` escaped.
pub fn warning_header(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("299 - \"{quoted}\"")
}

fn gvk(g: &str, v: &str, k: &str) -> Value {
    json!({"group": g, "version": v, "kind": k})
}

impl Chain {
    pub fn new(webhooks: Vec<Webhook>) -> Chain {
        Chain {
            webhooks,
            endpoints: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            uid_seq: AtomicU64::new(0),
        }
    }

    /// Route the Service `namespace/name` to `addr` (what kube-proxy would do).
    pub fn set_endpoint(&self, namespace: &str, name: &str, addr: SocketAddr) {
        self.endpoints
            .lock()
            .unwrap()
            .insert(format!("{namespace}/{name}"), addr);
    }

    /// Every exchange so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn clear_calls(&self) {
        self.calls.lock().unwrap().clear();
    }

    fn review(&self, a: &Attributes) -> Value {
        let n = self.uid_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            nanos,
            n & 0xffff,
            (n >> 16) & 0xfff,
            nanos & 0xfff,
            n
        );
        let resource = json!({"group": a.group, "version": a.version, "resource": a.resource});
        let kind = gvk(&a.kind.0, &a.kind.1, &a.kind.2);
        let mut req = json!({
            "uid": uid,
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": a.name,
            "operation": a.operation,
            "userInfo": {"username": "kubernetes-admin",
                         "groups": ["kubeadm:cluster-admins", "system:authenticated"]},
            "object": a.object.clone().unwrap_or(Value::Null),
            "oldObject": a.old_object.clone().unwrap_or(Value::Null),
            "dryRun": a.dry_run,
            "options": a.options,
        });
        if !a.sub_resource.is_empty() {
            req["subResource"] = json!(a.sub_resource);
            req["requestSubResource"] = json!(a.sub_resource);
        }
        if !a.namespace.is_empty() {
            req["namespace"] = json!(a.namespace);
        }
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": req})
    }

    async fn call(&self, w: &Webhook, review: &Value) -> Result<Value, String> {
        let url = w.url();
        let fail = |why: String| format!("failed to call webhook: Post \"{url}\": {why}");
        let ep = self
            .endpoints
            .lock()
            .unwrap()
            .get(&format!("{}/{}", w.service.namespace, w.service.name))
            .copied();
        let Some(addr) = ep else {
            return Err(fail(format!(
                "no endpoints available for service \"{}\"",
                w.service.name
            )));
        };
        let ca = w
            .ca_bundle_pem
            .as_deref()
            .ok_or_else(|| fail("tls: failed to verify certificate: x509: certificate signed by unknown authority (no caBundle)".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            let cert = cert.map_err(|e| fail(format!("caBundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| fail(format!("caBundle: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = format!("{}.{}.svc", w.service.name, w.service.namespace);
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve(&host, addr)
            .no_proxy()
            .http1_only()
            .timeout(w.timeout)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let resp = client.post(&url).json(review).send().await.map_err(|e| {
            if e.is_timeout() {
                fail("context deadline exceeded".into())
            } else if e.is_connect() && format!("{e:?}").contains("ConnectionRefused") {
                fail(format!("dial tcp {addr}: connect: connection refused"))
            } else {
                // The innermost cause, e.g. rustls' certificate verdict.
                let mut inner: &dyn std::error::Error = &e;
                while let Some(next) = inner.source() {
                    inner = next;
                }
                let why = inner.to_string();
                if why.contains("certificate") {
                    fail(format!("tls: failed to verify certificate: {why}"))
                } else {
                    fail(why)
                }
            }
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| fail(format!("reading the response: {e}")))?;
        if !status.is_success() {
            return Err(format!(
                "received invalid webhook response: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("received invalid webhook response: {e}"))?;
        if v["apiVersion"] != "admission.k8s.io/v1" || v["kind"] != "AdmissionReview" {
            return Err(format!(
                "received invalid webhook response: expected admission.k8s.io/v1 AdmissionReview, got {} {}",
                v["apiVersion"], v["kind"]
            ));
        }
        let want = &review["request"]["uid"];
        if &v["response"]["uid"] != want {
            return Err(format!(
                "expected response.uid={want}, got {}",
                v["response"]["uid"]
            ));
        }
        Ok(v["response"].clone())
    }

    /// Run admission for one request. `namespace_labels`: the labels of the request's
    /// namespace (None when the namespace is unknown or the object is cluster-scoped).
    pub async fn admit(
        &self,
        mut a: Attributes,
        namespace_labels: Option<BTreeMap<String, String>>,
        before_validating: impl FnOnce(&mut Attributes),
    ) -> Outcome {
        let mut warnings = Vec::new();
        let mut before_validating = Some(before_validating);
        // A Namespace is judged by its own labels; other cluster-scoped objects by none.
        let ns_labels = |a: &Attributes| -> Option<BTreeMap<String, String>> {
            if a.resource == "namespaces" && a.sub_resource.is_empty() {
                a.object.as_ref().or(a.old_object.as_ref()).map(labels_of)
            } else if a.namespace.is_empty() {
                None
            } else {
                Some(namespace_labels.clone().unwrap_or_default())
            }
        };
        for phase_mutating in [true, false] {
            if !phase_mutating {
                // uid, creationTimestamp and the like are set between the two phases.
                if let Some(f) = before_validating.take() {
                    f(&mut a);
                }
            }
            let labels = ns_labels(&a);
            for w in self
                .webhooks
                .iter()
                .filter(|w| w.mutating == phase_mutating)
            {
                if !w.matches(&a, labels.as_ref()) {
                    continue;
                }
                let review = self.review(&a);
                match w.conditions(&a, &review) {
                    match_conditions::Verdict::Call => {}
                    match_conditions::Verdict::Skip(_) => continue,
                    match_conditions::Verdict::Error(e) => match w.failure_policy {
                        FailurePolicy::Ignore => continue,
                        FailurePolicy::Fail => {
                            let result = Err(Rejection {
                                code: 403,
                                reason: "Forbidden".into(),
                                message: format!(
                                    "{} \"{}\" is forbidden: {e}",
                                    qualified_resource(&a),
                                    a.name
                                ),
                            });
                            return Outcome { result, warnings };
                        }
                    },
                }
                let answer = self.call(w, &review).await;
                self.calls.lock().unwrap().push(Call {
                    webhook: w.name.clone(),
                    mutating: w.mutating,
                    review: review.clone(),
                    answer: answer.clone(),
                });
                let resp = match answer {
                    Ok(r) => r,
                    Err(e) => match w.failure_policy {
                        FailurePolicy::Ignore => continue,
                        FailurePolicy::Fail => {
                            let result = Err(call_failed(&w.name, &e));
                            return Outcome { result, warnings };
                        }
                    },
                };
                warnings.extend(strings(&resp["warnings"]));
                if resp["allowed"] != true {
                    let st = &resp["status"];
                    let code = st["code"].as_u64().unwrap_or(0).max(400) as u16;
                    let denied = format!("admission webhook \"{}\" denied the request", w.name);
                    let message = match (st["message"].as_str(), st["reason"].as_str()) {
                        (Some(m), _) if !m.is_empty() => format!("{denied}: {m}"),
                        (_, Some(r)) if !r.is_empty() => format!("{denied}: {r}"),
                        _ => format!("{denied} without explanation"),
                    };
                    return Outcome {
                        result: Err(Rejection {
                            code,
                            reason: st["reason"].as_str().unwrap_or("").to_string(),
                            message,
                        }),
                        warnings,
                    };
                }
                if phase_mutating {
                    if let Some(p) = resp["patch"].as_str() {
                        let applied = apply_patch(&mut a, p, &resp["patchType"]);
                        if let Err(e) = applied {
                            let result = Err(call_failed(&w.name, &e));
                            return Outcome { result, warnings };
                        }
                    }
                }
            }
        }
        Outcome {
            result: Ok(a.object),
            warnings,
        }
    }
}

/// `resource.group` as the API server names it in errors (`pods`, `deployments.apps`).
fn qualified_resource(a: &Attributes) -> String {
    if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    }
}

/// The API server's error when a webhook could not be called or answered nonsense.
fn call_failed(webhook: &str, why: &str) -> Rejection {
    Rejection {
        code: 500,
        reason: "InternalError".into(),
        message: format!("Internal error occurred: failed calling webhook \"{webhook}\": {why}"),
    }
}

fn apply_patch(a: &mut Attributes, b64: &str, patch_type: &Value) -> Result<(), String> {
    if patch_type != "JSONPatch" {
        return Err(format!("unsupported patch type {patch_type}"));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&raw).map_err(|e| format!("the patch is not a JSON Patch: {e}"))?;
    let obj = a
        .object
        .as_mut()
        .ok_or("a patch for a request without object")?;
    json_patch::patch(obj, &patch).map_err(|e| format!("the patch does not apply: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(resource: &str, sub: &str, namespace: &str, operation: &'static str) -> Attributes {
        let group = match resource {
            "deployments" | "statefulsets" => "apps",
            _ => "",
        };
        Attributes {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            sub_resource: sub.into(),
            kind: (group.into(), "v1".into(), "X".into()),
            namespace: namespace.into(),
            name: "x".into(),
            operation,
            object: Some(json!({"metadata": {"name": "x", "labels": {"app": "a"}}})),
            old_object: None,
            dry_run: false,
            options: Value::Null,
        }
    }

    fn config(webhook: Value) -> Value {
        json!({"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "c"},
               "webhooks": [webhook]})
    }

    fn hook(rules: Value, extra: Value) -> Webhook {
        let mut w = json!({"name": "w.example.com", "rules": rules, "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": {"service": {"name": "s", "namespace": "n", "path": "/validate"}}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            w[k] = v.clone();
        }
        webhooks_of(&[config(w)]).expect("parses").remove(0)
    }

    #[test]
    fn rules_match_resources_subresources_operations_and_scope() {
        let rule = |resources: Value, ops: Value, scope: &str| {
            hook(
                json!([{"apiGroups": ["", "apps"], "apiVersions": ["v1"], "resources": resources,
                        "operations": ops, "scope": scope}]),
                json!({}),
            )
        };
        let none = BTreeMap::new();
        let m = |w: &Webhook, a: Attributes| w.matches(&a, Some(&none));
        let pods = rule(json!(["pods"]), json!(["CREATE"]), "Namespaced");
        assert!(m(&pods, attrs("pods", "", "ns", "CREATE")));
        assert!(
            !m(&pods, attrs("pods", "status", "ns", "CREATE")),
            "pods is not pods/status"
        );
        assert!(!m(&pods, attrs("pods", "", "ns", "UPDATE")));
        assert!(!m(
            &pods,
            attrs("persistentvolumeclaims", "", "ns", "CREATE")
        ));
        let scale = rule(json!(["deployments/scale"]), json!(["UPDATE"]), "*");
        assert!(m(&scale, attrs("deployments", "scale", "ns", "UPDATE")));
        assert!(
            !m(&scale, attrs("deployments", "", "ns", "UPDATE")),
            "only the subresource"
        );
        assert!(!m(&scale, attrs("statefulsets", "scale", "ns", "UPDATE")));
        let any_scale = rule(json!(["*/scale"]), json!(["*"]), "*");
        assert!(m(
            &any_scale,
            attrs("statefulsets", "scale", "ns", "UPDATE")
        ));
        let star = rule(json!(["*"]), json!(["*"]), "*");
        assert!(m(&star, attrs("pods", "", "ns", "DELETE")));
        assert!(
            !m(&star, attrs("pods", "status", "ns", "UPDATE")),
            "* has no subresources"
        );
        let all = rule(json!(["*/*"]), json!(["*"]), "*");
        assert!(m(&all, attrs("deployments", "scale", "ns", "UPDATE")));
        let cluster = rule(json!(["*"]), json!(["*"]), "Cluster");
        assert!(!m(&cluster, attrs("pods", "", "ns", "CREATE")));
        assert!(m(&cluster, attrs("namespaces", "", "", "CREATE")));
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let s = Selector::parse(&json!({"matchLabels": {"a": "1"}, "matchExpressions": [
            {"key": "mode", "operator": "NotIn", "values": ["off"]},
            {"key": "team", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"}]}))
        .expect("parses");
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(
            s.matches(&l(&[("a", "1"), ("team", "x")])),
            "NotIn matches a missing key"
        );
        assert!(!s.matches(&l(&[("a", "1"), ("team", "x"), ("mode", "off")])));
        assert!(s.matches(&l(&[("a", "1"), ("team", "x"), ("mode", "audit")])));
        assert!(!s.matches(&l(&[("a", "1")])), "Exists");
        assert!(!s.matches(&l(&[("a", "1"), ("team", "x"), ("legacy", "")])));
        assert!(!s.matches(&l(&[("a", "2"), ("team", "x")])));
        let in_ = Selector::parse(&json!({"matchExpressions": [
            {"key": "k", "operator": "In", "values": ["v"]}]}))
        .expect("parses");
        assert!(!in_.matches(&l(&[])), "In needs the key");
        assert!(Selector::parse(&json!({"matchExpressions": [
            {"key": "k", "operator": "Gt", "values": ["1"]}]}))
        .is_err());
        assert!(Selector::parse(&Value::Null)
            .expect("empty")
            .matches(&l(&[])));
    }

    #[test]
    fn namespace_selector_skips_cluster_scoped_objects() {
        let w = hook(
            json!([{"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["*"]}]),
            json!({"namespaceSelector": {"matchLabels": {"on": "yes"}}}),
        );
        let a = attrs("persistentvolumes", "", "", "CREATE");
        assert!(
            w.matches(&a, None),
            "no namespace: the selector does not apply"
        );
        let a = attrs("pods", "", "ns", "CREATE");
        assert!(!w.matches(&a, Some(&BTreeMap::new())));
    }

    #[test]
    fn webhook_defaults_and_refusals() {
        let w = hook(json!([]), json!({}));
        assert_eq!(w.failure_policy, FailurePolicy::Fail, "v1 default");
        assert_eq!(w.timeout, Duration::from_secs(10), "v1 default");
        assert_eq!(w.url(), "https://s.n.svc:443/validate?timeout=10s");
        let mut c = config(
            json!({"name": "w", "rules": [], "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "s", "namespace": "n"}},
            "matchConditions": [{"name": "x", "expression": "object.("}]}),
        );
        let err = webhooks_of(std::slice::from_ref(&c)).expect_err("refused");
        assert!(err.contains("matchCondition x"), "{err}");
        c["webhooks"][0]
            .as_object_mut()
            .expect("object")
            .remove("matchConditions");
        c["webhooks"][0]["admissionReviewVersions"] = json!(["v1beta1"]);
        assert!(webhooks_of(&[c]).is_err());
    }

    #[tokio::test]
    async fn match_conditions_skip_refuse_or_call_as_the_api_server_does() {
        let conditions = json!([{"name": "uses-a-claim", "expression":
            "has(object.spec.volumes) && object.spec.volumes.exists(v, has(v.persistentVolumeClaim))"}]);
        let rules = json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                            "operations": ["CREATE"]}]);
        let chain = |policy: &str| {
            Chain::new(vec![hook(
                rules.clone(),
                json!({"failurePolicy": policy, "matchConditions": conditions}),
            )])
        };
        let pod = |spec: Value| {
            let mut a = attrs("pods", "", "ns", "CREATE");
            a.object = Some(json!({"metadata": {"name": "x"}, "spec": spec}));
            a
        };
        // No claim: the webhook (which has no endpoint) is never called.
        let c = chain("Fail");
        let o = c
            .admit(
                pod(json!({"volumes": [{"name": "e", "emptyDir": {}}]})),
                None,
                |_| {},
            )
            .await;
        assert!(o.result.is_ok());
        assert!(c.calls().is_empty());
        // A claim: called, and the unreachable webhook fails the request.
        let with_claim =
            json!({"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]});
        let o = c.admit(pod(with_claim), None, |_| {}).await;
        let r = o.result.expect_err("the call failed");
        assert_eq!((r.code, r.reason.as_str()), (500, "InternalError"));
        assert_eq!(c.calls().len(), 1);
        // A condition that cannot be evaluated (volumes is not a list): Fail refuses
        // without a call, as the API server's Forbidden; Ignore skips the webhook.
        let c = chain("Fail");
        let o = c.admit(pod(json!({"volumes": "oops"})), None, |_| {}).await;
        let r = o.result.expect_err("refused");
        assert_eq!((r.code, r.reason.as_str()), (403, "Forbidden"));
        assert!(
            r.message
                .starts_with("pods \"x\" is forbidden: matchCondition uses-a-claim: "),
            "{}",
            r.message
        );
        assert!(c.calls().is_empty());
        let c = chain("Ignore");
        let o = c.admit(pod(json!({"volumes": "oops"})), None, |_| {}).await;
        assert!(o.result.is_ok());
        assert!(c.calls().is_empty());
    }

    #[test]
    fn mutating_configurations_come_first_then_by_name() {
        let cfg = |kind: &str, name: &str| {
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                   "metadata": {"name": name}, "webhooks": [{"name": format!("{name}.hook"),
                   "admissionReviewVersions": ["v1"],
                   "clientConfig": {"service": {"name": "s", "namespace": "n"}}}]})
        };
        let hooks = webhooks_of(&[
            cfg("ValidatingWebhookConfiguration", "b"),
            cfg("MutatingWebhookConfiguration", "z"),
            cfg("ValidatingWebhookConfiguration", "a"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        ])
        .expect("parses");
        let ids: Vec<&str> = hooks.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["z/z.hook", "a/a.hook", "b/b.hook"]);
        assert!(hooks[0].mutating && !hooks[1].mutating);
    }

    #[test]
    fn a_base64_json_patch_is_applied_and_a_bad_one_refused() {
        let mut a = attrs("pods", "", "ns", "CREATE");
        let patch = r#"[{"op":"add","path":"/spec","value":{"nodeName":"n1"}}]"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(patch);
        apply_patch(&mut a, &b64, &json!("JSONPatch")).expect("applies");
        assert_eq!(a.object.as_ref().expect("object")["spec"]["nodeName"], "n1");
        assert!(apply_patch(&mut a, "not base64!", &json!("JSONPatch")).is_err());
        assert!(apply_patch(&mut a, &b64, &json!("MergePatch")).is_err());
        let bad = base64::engine::general_purpose::STANDARD
            .encode(r#"[{"op":"replace","path":"/nope/x","value":1}]"#);
        assert!(apply_patch(&mut a, &bad, &json!("JSONPatch")).is_err());
    }

    #[test]
    fn warnings_are_deduplicated_validated_and_truncated_past_4k() {
        let w = |s: &str| s.to_string();
        assert_eq!(
            recorded_warnings(&[w("a"), w(""), w("a"), w("bad\nline"), w("b")]),
            [w("a"), w("b")]
        );
        let long = "x".repeat(300);
        let one = vec![long];
        assert_eq!(recorded_warnings(&one), one);
        let many: Vec<String> = (0..20).map(|i| format!("{i}{}", one[0])).collect();
        let kept = recorded_warnings(&many);
        assert_eq!(kept.len(), 20);
        assert!(kept.iter().all(|k| k.chars().count() == 256));
    }

    #[test]
    fn warnings_become_299_headers_with_quotes_escaped() {
        assert_eq!(
            warning_header(r#"[rule] claim "data" \ x"#),
            r#"299 - "[rule] claim \"data\" \\ x""#
        );
    }
}
