//! The Helm chart (`charts/claimguard/`): `helm lint --strict`, `helm template` with the
//! defaults and with each option, every rendered object checked against the Kubernetes
//! API types, the generated certificate verified by `openssl verify -verify_hostname`,
//! bad values refused, and the chart proved to render what `kubectl kustomize
//! manifests/` (and each overlay) renders: the webhooks' rules, paths, selectors,
//! sideEffects, failurePolicy, timeoutSeconds and matchConditions, the RBAC rules, the
//! container arguments and the rest of the pod spec. That last check is the one source
//! of truth: neither install can change without the other, or this test fails.
//!
//! Needs `helm` (v3) on the PATH; `.ci/run` installs it and sets
//! `CLAIMGUARD_REQUIRE_HELM=1`. Without helm the tests print a note and pass, unless that
//! variable is set. The comparisons with manifests/ also need `kubectl` (for `kubectl
//! kustomize`), under the same rule with `CLAIMGUARD_REQUIRE_KUBECTL`.

#[path = "support/k8s_schema.rs"]
mod k8s_schema;
#[path = "support/match_conditions.rs"]
mod match_conditions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

const NS: &str = "claimguard-system";
const HOST: &str = "claimguard.claimguard-system.svc";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("charts/claimguard")
}

/// Whether `tool --version`-like `probe` runs; when it does not, a note, or a failure when
/// `require_env` is set.
fn have(tool: &str, probe: &[&str], require_env: &str) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os(require_env).is_none(),
            "{require_env} is set but `{tool}` does not run"
        );
        eprintln!("note: {tool} not found; skipping (set {require_env} to make this fail)");
    }
    ok
}

fn have_helm() -> bool {
    have("helm", &["version", "--short"], "CLAIMGUARD_REQUIRE_HELM")
}

fn have_kubectl() -> bool {
    have(
        "kubectl",
        &["version", "--client"],
        "CLAIMGUARD_REQUIRE_KUBECTL",
    )
}

fn parse_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn helm(args: &[&str]) -> Output {
    Command::new("helm")
        .args(args)
        .env_remove("HELM_NAMESPACE")
        .output()
        .expect("run helm")
}

/// `helm template claimguard charts/claimguard -n claimguard-system ARGS`.
fn template(args: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut all = vec![
        "template",
        "claimguard",
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        NS,
    ];
    all.extend_from_slice(args);
    let out = helm(&all);
    assert!(
        out.status.success(),
        "helm {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_docs(&String::from_utf8(out.stdout).expect("UTF-8"))
}

fn kustomize(sub: &str) -> Vec<Value> {
    let dir = repo().join("manifests").join(sub);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_docs(&String::from_utf8(out.stdout).expect("UTF-8"))
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = objs
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}/{name}");
    found[0]
}

fn kinds(objs: &[Value]) -> Vec<(String, String)> {
    let mut k: Vec<_> = objs
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    k.sort();
    k
}

/// Every option of the contract, as `--set` arguments, with the overlay of manifests/
/// that renders the same thing (None: no overlay has it).
fn options() -> Vec<(&'static str, Vec<&'static str>, Option<&'static str>)> {
    vec![
        ("defaults", vec![], Some("")),
        (
            "cert-manager",
            vec!["--set", "certManager.enabled=true"],
            Some("cert-manager"),
        ),
        (
            "colocate",
            vec!["--set", "colocate.enabled=true"],
            Some("colocate"),
        ),
        (
            "cert-manager + colocate",
            vec![
                "--set",
                "certManager.enabled=true",
                "--set",
                "colocate.enabled=true",
            ],
            Some("cert-manager-colocate"),
        ),
        (
            "policy reports",
            vec!["--set", "policyReports.enabled=true"],
            Some("policy-reports"),
        ),
        (
            "monitoring",
            vec![
                "--set",
                "monitoring.serviceMonitor.enabled=true",
                "--set",
                "monitoring.prometheusRule.enabled=true",
            ],
            Some("monitoring"),
        ),
        (
            "audit mode",
            vec!["--set", "policy.mode=audit"],
            Some("audit-mode"),
        ),
        (
            "client auth",
            vec!["--set", "clientAuth.caSecret=claimguard-client-ca"],
            None,
        ),
        (
            "fail open",
            vec!["--set", "webhook.failurePolicy=Ignore"],
            None,
        ),
        (
            "everything",
            vec![
                "--set",
                "replicaCount=3",
                "--set",
                "image.tag=dev",
                "--set",
                "priorityClassName=system-cluster-critical",
                "--set",
                "nodeSelector.kubernetes\\.io/os=linux",
                "--set",
                "podDisruptionBudget.enabled=false",
                "--set",
                "webhook.timeoutSeconds=5",
                "--set",
                "policy.rules.rwo-shared-writer=deny",
                "--set",
                "colocate.enabled=true",
                "--set",
                "policyReports.enabled=true",
                "--set",
                "monitoring.serviceMonitor.enabled=true",
                "--set",
                "monitoring.serviceMonitor.labels.release=kube-prometheus-stack",
                "--set",
                "clientAuth.caSecret=claimguard-client-ca",
            ],
            None,
        ),
    ]
}

#[test]
fn chart_version_and_app_version_are_the_crate_version() {
    let text = std::fs::read_to_string(chart().join("Chart.yaml")).expect("Chart.yaml");
    let meta: Value = serde_yaml_ng::from_str(&text).expect("Chart.yaml parses");
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "claimguard");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["appVersion"], env!("CARGO_PKG_VERSION"));
}

/// The chart README lists every value that values.yaml sets, by its dotted path.
#[test]
fn chart_readme_documents_every_value() {
    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let readme = std::fs::read_to_string(chart().join("README.md")).expect("chart README.md");
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            // Maps whose keys are the user's (labels, selectors, resources) are one value.
            Some(m)
                if !m.is_empty()
                    && !["resources", "affinity"].contains(&prefix)
                    && !prefix.ends_with("labels") =>
            {
                for (k, child) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&p, child, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut all = Vec::new();
    leaves("", &values, &mut all);
    assert!(all.len() >= 20, "{all:?}");
    for v in all {
        assert!(
            readme.contains(&format!("`{v}`")),
            "charts/claimguard/README.md does not document `{v}`"
        );
    }
}

#[test]
fn lint_strict_passes() {
    if !have_helm() {
        return;
    }
    for (what, args, _) in options() {
        let chart = chart();
        let mut all = vec!["lint", "--strict", chart.to_str().expect("UTF-8")];
        all.extend_from_slice(&args);
        let out = helm(&all);
        assert!(
            out.status.success(),
            "helm lint --strict ({what}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_option_renders_objects_the_api_accepts() {
    if !have_helm() {
        return;
    }
    for (what, args, _) in options() {
        let objs = template(&args);
        assert!(objs.len() >= 10, "{what}: {} objects", objs.len());
        for o in &objs {
            if let Err(e) = k8s_schema::validate(o) {
                panic!("{what}: {e}");
            }
            let cluster_scoped = matches!(
                o["kind"].as_str(),
                Some(
                    "ClusterRole"
                        | "ClusterRoleBinding"
                        | "ValidatingWebhookConfiguration"
                        | "MutatingWebhookConfiguration"
                )
            );
            if !cluster_scoped {
                assert_eq!(o["metadata"]["namespace"], NS, "{what}: {o}");
            }
        }
        // The shipped CEL compiles, as the API server would insist at apply time.
        for o in &objs {
            for w in o["webhooks"].as_array().into_iter().flatten() {
                let conds = match_conditions::compile(&w["matchConditions"])
                    .unwrap_or_else(|e| panic!("{what}: {}: {e}", w["name"]));
                assert!(
                    !conds.is_empty(),
                    "{what}: {} has no matchConditions",
                    w["name"]
                );
            }
        }
    }
}

fn bad(args: &[&str], want: &str) {
    let chart = chart();
    let mut all = vec!["template", "claimguard", chart.to_str().expect("UTF-8")];
    all.extend_from_slice(args);
    let out = helm(&all);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "helm {args:?} was accepted");
    assert!(err.contains(want), "helm {args:?}: {err}");
}

#[test]
fn bad_values_are_refused() {
    if !have_helm() {
        return;
    }
    bad(
        &["--set", "replicaCount=many"],
        "replicaCount: Invalid type. Expected: integer, given: string",
    );
    bad(
        &["--set", "replicaCounts=2"],
        "Additional property replicaCounts is not allowed",
    );
    bad(&["--set", "replicaCount=0"], "replicaCount");
    bad(
        &["--set", "webhook.failurePolicy=Sometimes"],
        "failurePolicy",
    );
    bad(&["--set", "webhook.timeoutSeconds=31"], "timeoutSeconds");
    bad(&["--set", "policy.mode=strict"], "mode");
    bad(
        &["--set", "policy.rules.rwo-shared-writer=block"],
        "rwo-shared-writer",
    );
    bad(&["--set", "policy.rulez.x=deny"], "rulez");
    bad(&["--set", "certManager.enabled=yes"], "certManager.enabled");
    bad(&["--set", "image.pullPolicy=Sometimes"], "pullPolicy");
}

/// Every rule id the server knows can be set in `policy.rules`, and every action.
#[test]
fn the_values_schema_knows_every_rule() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart().join("values.schema.json")).expect("schema"),
    )
    .expect("values.schema.json parses");
    assert_eq!(schema["additionalProperties"], false);
    let rules = &schema["properties"]["policy"]["properties"]["rules"]["properties"];
    for rule in claimguard::policy::Rule::ALL {
        assert!(rule_in(rules, rule.id()), "schema lacks rule {}", rule.id());
    }
    assert_eq!(
        schema["definitions"]["action"]["enum"],
        json!(["deny", "warn", "audit", "off"])
    );
}

fn rule_in(rules: &Value, id: &str) -> bool {
    rules.get(id).is_some()
}

/// Decoded `data` of the Secret claimguard-tls.
fn tls_secret(objs: &[Value]) -> BTreeMap<String, Vec<u8>> {
    let s = find(objs, "Secret", "claimguard-tls");
    assert_eq!(s["type"], "kubernetes.io/tls");
    s["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 string"))
                .expect("base64");
            (k.clone(), bytes)
        })
        .collect()
}

fn openssl_verify(dir: &Path, host: &str) -> Output {
    Command::new("openssl")
        .arg("verify")
        .args(["-verify_hostname", host, "-CAfile"])
        .arg(dir.join("ca.crt"))
        .arg(dir.join("tls.crt"))
        .output()
        .expect("run openssl")
}

#[test]
fn generated_certificate_verifies_for_the_service_and_fills_every_ca_bundle() {
    if !have_helm() {
        return;
    }
    let objs = template(&["--set", "colocate.enabled=true"]);
    let data = tls_secret(&objs);
    let dir = tempfile::tempdir().expect("tempdir");
    for k in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(dir.path().join(k), &data[k]).expect("write");
    }
    let out = openssl_verify(dir.path(), HOST);
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        format!("{}: OK", dir.path().join("tls.crt").display())
    );
    // The check can fail: another Service name does not verify.
    let other = openssl_verify(dir.path(), "claimguard.other.svc");
    assert!(!other.status.success(), "verified for the wrong name");
    // The key is the certificate's (what the server checks before serving it).
    let pubkey = |args: &[&str], file: &str| {
        let out = Command::new("openssl")
            .args(args)
            .arg(dir.path().join(file))
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in"], "tls.crt"),
        pubkey(&["pkey", "-pubout", "-in"], "tls.key")
    );
    // Every webhook, validating and mutating, trusts that CA.
    let want = base64::engine::general_purpose::STANDARD.encode(&data["ca.crt"]);
    let mut hooks = 0;
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        for o in objs.iter().filter(|o| o["kind"] == kind) {
            for w in o["webhooks"].as_array().expect("webhooks") {
                assert_eq!(
                    w["clientConfig"]["caBundle"],
                    want.as_str(),
                    "{}",
                    w["name"]
                );
                hooks += 1;
            }
        }
    }
    assert_eq!(hooks, 5);
    // helm template cannot look up the installed Secret: each run makes a new pair.
    let again = tls_secret(&template(&[]));
    assert_ne!(again["ca.crt"], data["ca.crt"]);
}

#[test]
fn cert_manager_issues_and_injects_instead() {
    if !have_helm() {
        return;
    }
    let objs = template(&[
        "--set",
        "certManager.enabled=true",
        "--set",
        "colocate.enabled=true",
    ]);
    assert!(
        !objs.iter().any(|o| o["kind"] == "Secret"),
        "cert-manager writes the Secret"
    );
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let o = objs.iter().find(|o| o["kind"] == kind).expect(kind);
        assert_eq!(
            o["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NS}/claimguard-serving")
        );
        for w in o["webhooks"].as_array().expect("webhooks") {
            assert!(w["clientConfig"]["caBundle"].is_null(), "{}", w["name"]);
        }
    }
    let serving = find(&objs, "Certificate", "claimguard-serving");
    assert_eq!(serving["spec"]["secretName"], "claimguard-tls");
    assert_eq!(
        serving["spec"]["dnsNames"],
        json!(claimguard::certs::service_dns_names("claimguard", NS))
    );
}

fn webhooks(objs: &[Value]) -> Vec<&Value> {
    objs.iter()
        .filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .flat_map(|o| o["webhooks"].as_array().expect("webhooks").iter())
        .collect()
}

#[test]
fn failure_policy_and_timeout_values() {
    if !have_helm() {
        return;
    }
    let policies = |objs: &[Value]| -> Vec<(String, String, u64)> {
        webhooks(objs)
            .into_iter()
            .map(|w| {
                (
                    w["name"].as_str().expect("name").to_string(),
                    w["failurePolicy"]
                        .as_str()
                        .expect("failurePolicy")
                        .to_string(),
                    w["timeoutSeconds"].as_u64().expect("timeoutSeconds"),
                )
            })
            .collect()
    };
    let fp = |objs: &[Value]| -> Vec<(String, String)> {
        policies(objs).into_iter().map(|(n, p, _)| (n, p)).collect()
    };
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    // Defaults: only the webhook narrowed to claim users fails closed.
    assert_eq!(
        fp(&template(&["--set", "colocate.enabled=true"])),
        [
            s("colocate.claimguard.io", "Ignore"),
            s("colocate-pods.claimguard.io", "Ignore"),
            s("pods.claimguard.io", "Fail"),
            s("pvcs.claimguard.io", "Ignore"),
            s("workloads.claimguard.io", "Ignore"),
        ]
    );
    let open = template(&[
        "--set",
        "webhook.failurePolicy=Ignore",
        "--set",
        "webhook.timeoutSeconds=7",
        "--set",
        "colocate.enabled=true",
    ]);
    let all = policies(&open);
    assert_eq!(all.len(), 5);
    for (name, policy, timeout) in all {
        assert_eq!(policy, "Ignore", "{name}");
        assert_eq!(timeout, 7, "{name}");
    }
}

fn container(objs: &[Value]) -> &Value {
    &find(objs, "Deployment", "claimguard")["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn client_auth_mounts_the_secret_and_passes_client_ca() {
    if !have_helm() {
        return;
    }
    let objs = template(&["--set", "clientAuth.caSecret=apiserver-client-ca"]);
    let c = container(&objs);
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string"))
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--client-ca")
        .expect("--client-ca");
    let path = args[at + 1];
    let mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().expect("path"))))
        .expect("--client-ca's file is under a mount");
    assert_eq!(mount["readOnly"], true);
    let pod = &find(&objs, "Deployment", "claimguard")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    assert_eq!(volume["secret"]["secretName"], "apiserver-client-ca");
    assert!(path.ends_with("/ca.crt"), "{path}");
    // Without the value, no client authentication.
    assert!(!container(&template(&[]))["args"]
        .to_string()
        .contains("client-ca"));
}

fn policy_text(objs: &[Value]) -> String {
    find(objs, "ConfigMap", "claimguard-policy")["data"]["policy.yaml"]
        .as_str()
        .expect("policy.yaml")
        .to_string()
}

#[test]
fn the_policy_value_renders_a_file_the_server_loads() {
    use claimguard::policy::{Mode, Policy};
    if !have_helm() {
        return;
    }
    let default = Policy::parse(&policy_text(&template(&[]))).expect("loads");
    assert_eq!(default, Policy::default());
    let mut audit =
        Policy::parse(&policy_text(&template(&["--set", "policy.mode=audit"]))).expect("loads");
    assert_eq!(audit.mode, Mode::Audit);
    audit.mode = Mode::Enforce;
    assert_eq!(audit, Policy::default());
    // A key set to an empty list wins over the default, rules are the user's.
    let text = policy_text(&template(&[
        "--set-json",
        "policy.exemptNamespaces=[]",
        "--set",
        "policy.rules.rwo-shared-writer=deny",
        "--set",
        "policy.onLookupError=deny",
    ]));
    let v: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    assert_eq!(v["exemptNamespaces"], json!([]));
    assert_eq!(v["rules"], json!({"rwo-shared-writer": "deny"}));
    let p = Policy::parse(&text).expect("loads");
    assert_ne!(p, Policy::default());
}

/// What `helm template` and `kubectl kustomize` must agree on, per webhook.
fn webhook_view(w: &Value) -> Value {
    let mut v = json!({});
    for k in [
        "name",
        "rules",
        "namespaceSelector",
        "objectSelector",
        "sideEffects",
        "failurePolicy",
        "timeoutSeconds",
        "matchConditions",
        "matchPolicy",
        "admissionReviewVersions",
        "reinvocationPolicy",
    ] {
        v[k] = w[k].clone();
    }
    v["service"] = w["clientConfig"]["service"].clone();
    v
}

fn rbac_view(objs: &[Value]) -> BTreeMap<String, Value> {
    objs.iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("ClusterRole" | "Role" | "ClusterRoleBinding" | "RoleBinding")
            )
        })
        .map(|o| {
            let key = format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            let body = json!({"rules": o["rules"], "roleRef": o["roleRef"], "subjects": o["subjects"],
                              "namespace": o["metadata"]["namespace"]});
            (key, body)
        })
        .collect()
}

/// The object kinds and names the chart renders that an overlay does not, and back.
/// The chart makes no Namespace (`helm install --create-namespace` does) and, without
/// cert-manager, renders the Secret that `claimguard certs` writes for manifests/.
fn expected_kind_difference(chart: &[Value], kustomize: &[Value]) {
    let c: Vec<_> = kinds(chart)
        .into_iter()
        .filter(|(k, _)| k != "Secret")
        .collect();
    let k: Vec<_> = kinds(kustomize)
        .into_iter()
        .filter(|(k, _)| k != "Namespace")
        .collect();
    assert_eq!(c, k, "the chart and the overlay render different objects");
}

#[test]
fn the_chart_renders_what_the_manifests_render() {
    if !have_helm() || !have_kubectl() {
        return;
    }
    for (what, args, overlay) in options() {
        let Some(overlay) = overlay else { continue };
        let chart = template(&args);
        let kust = kustomize(overlay);
        expected_kind_difference(&chart, &kust);

        let (wc, wk) = (webhooks(&chart), webhooks(&kust));
        assert_eq!(wc.len(), wk.len(), "{what}: number of webhooks");
        for (c, k) in wc.iter().zip(&wk) {
            assert_eq!(
                webhook_view(c),
                webhook_view(k),
                "{what}: webhook {}",
                k["name"]
            );
        }
        for kind in [
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ] {
            let ann = |objs: &[Value]| -> Vec<Value> {
                objs.iter()
                    .filter(|o| o["kind"] == kind)
                    .map(|o| o["metadata"]["annotations"].clone())
                    .collect()
            };
            assert_eq!(ann(&chart), ann(&kust), "{what}: {kind} annotations");
        }
        assert_eq!(rbac_view(&chart), rbac_view(&kust), "{what}: RBAC");

        // The whole pod spec, container arguments included.
        let pod = |objs: &[Value]| {
            find(objs, "Deployment", "claimguard")["spec"]["template"]["spec"].clone()
        };
        assert_eq!(pod(&chart), pod(&kust), "{what}: the Deployment's pod spec");
        let dep = |objs: &[Value]| {
            let mut spec = find(objs, "Deployment", "claimguard")["spec"].clone();
            spec["template"] = Value::Null;
            spec
        };
        assert_eq!(dep(&chart), dep(&kust), "{what}: the Deployment's spec");

        // Everything else by spec (Services, PDB, Certificates, Issuers, monitors).
        for o in &kust {
            let kind = o["kind"].as_str().unwrap_or_default();
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            if matches!(
                kind,
                "Namespace" | "Deployment" | "ConfigMap" | "ClusterRole" | "Role"
            ) || kind.ends_with("Binding")
                || kind.ends_with("WebhookConfiguration")
                || kind == "ServiceAccount"
            {
                continue;
            }
            assert_eq!(
                find(&chart, kind, name)["spec"],
                o["spec"],
                "{what}: {kind}/{name} spec"
            );
        }
        // The policy files say the same to the server.
        let parse = |objs: &[Value]| {
            claimguard::policy::Policy::parse(&policy_text(objs)).expect("policy loads")
        };
        assert_eq!(parse(&chart), parse(&kust), "{what}: policy");
    }
}

/// The shipped matchConditions, evaluated with the `cel` crate as the API server does,
/// send claimguard exactly what a rule can judge.
#[test]
fn match_conditions_let_through_only_what_a_rule_reads() {
    if !have_helm() {
        return;
    }
    let objs = template(&["--set", "colocate.enabled=true"]);
    let hook = |name: &str| {
        let w = webhooks(&objs)
            .into_iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("no webhook {name}"));
        match_conditions::compile(&w["matchConditions"]).expect("compiles")
    };
    use match_conditions::{evaluate, Verdict};
    let req = |op: &str, sub: Option<&str>| {
        let mut r = json!({"operation": op, "namespace": "default"});
        if let Some(s) = sub {
            r["subResource"] = json!(s);
        }
        r
    };
    let called = |name: &str, object: Value, request: Value| match evaluate(
        &hook(name),
        Some(&object),
        None,
        &request,
    ) {
        Verdict::Call => true,
        Verdict::Skip(_) => false,
        Verdict::Error(e) => panic!("{name}: {e} for {object}"),
    };
    let pvc_vol = json!({"name": "d", "persistentVolumeClaim": {"claimName": "data"}});
    let eph_vol = json!({"name": "s", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}});
    let empty_vol = json!({"name": "e", "emptyDir": {}});
    let pod = |vols: Vec<Value>| {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if !vols.is_empty() {
            spec["volumes"] = json!(vols);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    };
    let create = req("CREATE", None);
    let p = "pods.claimguard.io";
    assert!(!called(p, pod(vec![]), create.clone()));
    assert!(!called(p, pod(vec![empty_vol.clone()]), create.clone()));
    assert!(called(
        p,
        pod(vec![empty_vol.clone(), pvc_vol.clone()]),
        create.clone()
    ));
    assert!(called(p, pod(vec![eph_vol.clone()]), create.clone()));
    // Co-location pins only users of a persistentVolumeClaim.
    for m in ["colocate.claimguard.io", "colocate-pods.claimguard.io"] {
        assert!(called(m, pod(vec![pvc_vol.clone()]), create.clone()));
        assert!(!called(m, pod(vec![eph_vol.clone()]), create.clone()));
        assert!(!called(m, pod(vec![]), create.clone()));
    }

    let template_of = |vols: Vec<Value>| pod(vols)["spec"].clone();
    let deployment = |vols: Vec<Value>| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 2, "selector": {}, "template": {"spec": template_of(vols)}}})
    };
    let cronjob = |vols: Vec<Value>| {
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
               "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": template_of(vols)}}}}})
    };
    let w = "workloads.claimguard.io";
    for op in ["CREATE", "UPDATE"] {
        assert!(!called(w, deployment(vec![]), req(op, None)), "{op}");
        assert!(
            called(w, deployment(vec![pvc_vol.clone()]), req(op, None)),
            "{op}"
        );
        assert!(
            called(w, deployment(vec![eph_vol.clone()]), req(op, None)),
            "{op}"
        );
        assert!(
            !called(w, cronjob(vec![empty_vol.clone()]), req(op, None)),
            "{op}"
        );
        assert!(
            called(w, cronjob(vec![pvc_vol.clone()]), req(op, None)),
            "{op}"
        );
    }
    // A ReplicationController may leave its template out.
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r"}, "spec": {}});
    assert!(!called(w, rc, req("CREATE", None)));
    // A scale request carries no template: always sent (claimguard reads the workload).
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "d"},
                       "spec": {"replicas": 3}});
    assert!(called(w, scale, req("UPDATE", Some("scale"))));

    let pvc = |modes: Value| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
               "spec": {"accessModes": modes}})
    };
    let c = "pvcs.claimguard.io";
    assert!(!called(c, pvc(json!(["ReadWriteOnce"])), create.clone()));
    for modes in [
        json!(["ReadWriteOncePod"]),
        json!(["ReadWriteMany"]),
        json!(["ReadOnlyMany", "ReadWriteOnce"]),
    ] {
        assert!(called(c, pvc(modes.clone()), create.clone()), "{modes}");
    }
}

/// Plain ReadWriteOnce claims never reach claimguard (the pvcs webhook's condition):
/// no rule may judge them. Evaluated by the real policy against a cluster where every
/// provisioner the policy names has a StorageClass and two pods already use the claim.
#[test]
fn no_rule_judges_a_readwriteonce_claim() {
    use claimguard::objects::{Kind, Object};
    use claimguard::policy::{self, Action, Operation, Policy, Request, Rule};

    let mut policy = Policy::default();
    let provisioners: Vec<String> = policy
        .block_only_provisioners
        .iter()
        .chain(policy.block_multi_writer_provisioners.iter())
        .cloned()
        .chain([
            "kubernetes.io/aws-ebs".to_string(),
            "rbd.csi.ceph.com".to_string(),
        ])
        .collect();
    let mut items = Vec::new();
    for (i, p) in provisioners.iter().enumerate() {
        items.push(
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": format!("sc-{i}")}, "provisioner": p}),
        );
    }
    for n in ["a", "b"] {
        items.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": n, "namespace": "default", "uid": format!("uid-{n}")},
            "spec": {"nodeName": format!("node-{n}"), "containers": [{"name": "c", "image": "x"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]},
            "status": {"phase": "Running"}}));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.json");
    std::fs::write(
        &file,
        json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
    )
    .expect("write snapshot");
    let state = claimguard::cluster::load_snapshot(&[file]).expect("snapshot loads");
    // Every rule at deny, so even a would-be warning shows as a denial.
    for rule in Rule::ALL {
        policy.set_action(rule, Action::Deny);
    }
    for i in 0..provisioners.len() {
        for mode in ["Filesystem", "Block"] {
            let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": "default"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": format!("sc-{i}"),
                         "volumeMode": mode, "resources": {"requests": {"storage": "1Gi"}}}});
            let object = Object::from_value(Kind::PersistentVolumeClaim, &pvc).expect("PVC");
            let verdict = policy::evaluate(
                &policy,
                &Request {
                    operation: Operation::Create,
                    namespace: "default",
                    object: &object,
                    old_object: None,
                },
                &state,
            );
            assert!(
                verdict.allowed && verdict.warnings.is_empty() && verdict.findings.is_empty(),
                "a ReadWriteOnce claim was judged: {verdict:?}"
            );
            // The same claim as ReadWriteOncePod is judged (two pods hold it): the
            // check above can fail.
            let mut rwop = pvc.clone();
            rwop["spec"]["accessModes"] = json!(["ReadWriteOncePod"]);
            let object = Object::from_value(Kind::PersistentVolumeClaim, &rwop).expect("PVC");
            let verdict = policy::evaluate(
                &policy,
                &Request {
                    operation: Operation::Create,
                    namespace: "default",
                    object: &object,
                    old_object: None,
                },
                &state,
            );
            assert!(
                !verdict.allowed,
                "ReadWriteOncePod with two users: {verdict:?}"
            );
        }
    }
}

/// A cluster that holds at most the Secret `claimguard-tls`: the two paths `helm
/// template --dry-run=server` reads for the chart's `lookup` (discovery of core/v1,
/// then the Secret), over real HTTP on 127.0.0.1.
struct SecretCluster {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    handle: actix_web::dev::ServerHandle,
}

impl SecretCluster {
    async fn start(secret: Option<Value>) -> SecretCluster {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let state = web::Data::new((secret, requests.clone()));
        type State = web::Data<(Option<Value>, std::sync::Arc<std::sync::Mutex<Vec<String>>>)>;
        async fn serve(req: HttpRequest, state: State) -> HttpResponse {
            state.1.lock().unwrap().push(req.path().to_string());
            let not_found = || {
                HttpResponse::NotFound().json(json!({"kind": "Status", "apiVersion": "v1",
                    "status": "Failure", "reason": "NotFound", "code": 404}))
            };
            match req.path() {
                "/api/v1" => HttpResponse::Ok().json(json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                    "resources": [{"name": "secrets", "singularName": "secret", "namespaced": true,
                                   "kind": "Secret", "verbs": ["get", "list", "watch"]}]})),
                p if p == format!("/api/v1/namespaces/{NS}/secrets/claimguard-tls") => {
                    match &state.0 {
                        Some(s) => HttpResponse::Ok().json(s),
                        None => not_found(),
                    }
                }
                _ => not_found(),
            }
        }
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(serve))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", 0))
        .expect("bind 127.0.0.1:0");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        SecretCluster {
            addr,
            requests,
            handle,
        }
    }

    /// `helm template --dry-run=server` against this cluster.
    async fn template(&self) -> Vec<Value> {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
                self.addr
            ),
        )
        .expect("kubeconfig");
        let chart = chart();
        let out = tokio::process::Command::new("helm")
            .args(["template", "claimguard"])
            .arg(&chart)
            .args([
                "--namespace",
                NS,
                "--dry-run=server",
                "--set",
                "colocate.enabled=true",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .env_remove("HELM_NAMESPACE")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .output()
            .await
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm template --dry-run=server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_docs(&String::from_utf8(out.stdout).expect("UTF-8"))
    }
}

impl Drop for SecretCluster {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(stop);
        }
    }
}

fn ca_bundles(objs: &[Value]) -> Vec<String> {
    webhooks(objs)
        .iter()
        .map(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle")
                .to_string()
        })
        .collect()
}

/// `helm upgrade` keeps the installed certificate (the chart's `lookup` of the Secret),
/// so the API server's trust survives; with no Secret, or one that lacks a key, the
/// chart makes a new pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_keeps_the_installed_certificate() {
    if !have_helm() {
        return;
    }
    let installed = find(&template(&[]), "Secret", "claimguard-tls").clone();

    let cluster = SecretCluster::start(Some(installed.clone())).await;
    let upgraded = cluster.template().await;
    assert_eq!(
        find(&upgraded, "Secret", "claimguard-tls")["data"],
        installed["data"],
        "the installed pair is kept"
    );
    let ca = installed["data"]["ca.crt"].as_str().expect("ca.crt");
    let bundles = ca_bundles(&upgraded);
    assert_eq!(bundles.len(), 5);
    assert!(
        bundles.iter().all(|b| b == ca),
        "every caBundle is the kept CA"
    );
    assert!(
        cluster
            .requests
            .lock()
            .unwrap()
            .contains(&format!("/api/v1/namespaces/{NS}/secrets/claimguard-tls")),
        "helm looked the Secret up"
    );

    let empty = SecretCluster::start(None).await;
    let fresh = empty.template().await;
    let fresh_ca = find(&fresh, "Secret", "claimguard-tls")["data"]["ca.crt"].clone();
    assert_ne!(fresh_ca, installed["data"]["ca.crt"]);
    assert!(ca_bundles(&fresh).iter().all(|b| fresh_ca == *b));

    let mut broken = installed.clone();
    broken["data"]
        .as_object_mut()
        .expect("data")
        .remove("tls.key");
    let partial = SecretCluster::start(Some(broken)).await;
    let remade = partial.template().await;
    let remade = &find(&remade, "Secret", "claimguard-tls")["data"];
    assert!(remade["tls.key"].is_string());
    assert_ne!(remade["ca.crt"], installed["data"]["ca.crt"]);
}
