//! Checks the rendered install manifests against what the issue and the
//! admission-webhook good practices ask for. Renders with `kubectl kustomize`
//! when kubectl is on PATH; otherwise with a small built-in renderer that
//! understands exactly the kustomize features `manifests/` uses. When both
//! are available the two renderings are compared, so the fallback stays honest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use claimguard::certs;

#[path = "support/k8s_schema.rs"]
mod k8s_schema;
#[path = "support/match_conditions.rs"]
mod match_conditions;

const NS: &str = "claimguard-system";

fn manifests_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(sub)
}

fn parse_docs(text: &str, origin: &Path) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", origin.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubectl kustomize DIR`, or `None` when kubectl is not installed.
fn kubectl_render(dir: &Path) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(parse_docs(&String::from_utf8(out.stdout).unwrap(), dir))
}

/// The subset of kustomize that `manifests/` uses: `resources` (files and
/// directories), `labels` without selectors, and strategic-merge `patches`
/// (inline or by path) that only touch maps.
fn fallback_render(dir: &Path) -> Vec<Value> {
    let file = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let k: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut objects = Vec::new();
    for res in k["resources"].as_array().into_iter().flatten() {
        let path = dir.join(res.as_str().unwrap());
        if path.is_dir() {
            objects.extend(fallback_render(&path));
        } else {
            objects.extend(parse_docs(&std::fs::read_to_string(&path).unwrap(), &path));
        }
    }
    // A Component's resources, patches and labels apply to everything rendered so far,
    // in the order the components are listed.
    for comp in k["components"].as_array().into_iter().flatten() {
        let cdir = dir.join(comp.as_str().unwrap());
        let ctext = std::fs::read_to_string(cdir.join("kustomization.yaml")).unwrap();
        let c: Value = serde_yaml_ng::from_str(&ctext).unwrap();
        assert_eq!(c["kind"], "Component", "{}", cdir.display());
        apply_kustomization(&cdir, &c, &mut objects);
    }
    apply_kustomization(dir, &k, &mut objects);
    objects
}

/// The patches and labels of a kustomization, and a component's resources too,
/// applied to `objects`.
fn apply_kustomization(dir: &Path, k: &Value, objects: &mut Vec<Value>) {
    let file = dir.join("kustomization.yaml");
    if k["kind"] == "Component" {
        for res in k["resources"].as_array().into_iter().flatten() {
            let path = dir.join(res.as_str().unwrap());
            objects.extend(parse_docs(&std::fs::read_to_string(&path).unwrap(), &path));
        }
    }
    for patch in k["patches"].as_array().into_iter().flatten() {
        let body = match (patch["patch"].as_str(), patch["path"].as_str()) {
            (Some(inline), _) => inline.to_string(),
            (None, Some(p)) => std::fs::read_to_string(dir.join(p)).unwrap(),
            _ => panic!("{}: patch without body", file.display()),
        };
        for p in parse_docs(&body, &file) {
            let kind = patch["target"]["kind"].as_str().or(p["kind"].as_str());
            let name = patch["target"]["name"]
                .as_str()
                .or(p["metadata"]["name"].as_str());
            let target = objects
                .iter_mut()
                .find(|o| o["kind"].as_str() == kind && o["metadata"]["name"].as_str() == name);
            match target {
                Some(target) => merge(target, &p),
                // kustomize skips a patch whose explicit target selects nothing.
                None if patch["target"].is_object() => {}
                None => panic!("{}: no target {kind:?}/{name:?}", file.display()),
            }
        }
    }
    for set in k["labels"].as_array().into_iter().flatten() {
        assert_ne!(
            set["includeSelectors"], true,
            "fallback renderer: unsupported"
        );
        for o in objects.iter_mut() {
            let labels = &mut o["metadata"]["labels"];
            if labels.is_null() {
                *labels = json!({});
            }
            for (k, v) in set["pairs"].as_object().unwrap() {
                labels[k] = v.clone();
            }
        }
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        // Lists of named objects (containers, env, volumes) merge by name, as a
        // strategic merge patch does; kustomize puts new entries first.
        (Value::Array(t), Value::Array(p)) if is_named_list(t) && is_named_list(p) => {
            let mut added = Vec::new();
            for item in p {
                match t.iter_mut().find(|o| o["name"] == item["name"]) {
                    Some(existing) => merge(existing, item),
                    None => added.push(item.clone()),
                }
            }
            t.splice(0..0, added);
        }
        (t, p) => *t = p.clone(),
    }
}

fn is_named_list(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(|o| o["name"].is_string())
}

fn key(o: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

fn render(sub: &str) -> Vec<Value> {
    let dir = manifests_dir(sub);
    let fallback = fallback_render(&dir);
    match kubectl_render(&dir) {
        None => fallback,
        Some(rendered) => {
            let by_key = |objs: &[Value]| -> BTreeMap<_, _> {
                objs.iter().map(|o| (key(o), o.clone())).collect()
            };
            let (a, b) = (by_key(&rendered), by_key(&fallback));
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{sub}: kubectl and the fallback renderer disagree on the object list"
            );
            for (k, v) in &a {
                assert_eq!(
                    v, &b[k],
                    "{sub}: kubectl and the fallback disagree on {k:?}"
                );
            }
            rendered
        }
    }
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = objs
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}/{name}");
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Evaluates a LabelSelector the way the API server does.
fn selects(selector: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let labels_match = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str());
    let exprs_match = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let k = e["key"].as_str().unwrap();
            let values: Vec<_> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().expect("selector values must be strings"))
                .collect();
            let value = labels.get(k).copied();
            match e["operator"].as_str().unwrap() {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                op => panic!("unknown operator {op}"),
            }
        });
    labels_match && exprs_match
}

fn pod_labels(objs: &[Value]) -> BTreeMap<String, String> {
    let dep = find(objs, "Deployment", "claimguard");
    serde_json::from_value(dep["spec"]["template"]["metadata"]["labels"].clone()).unwrap()
}

fn matches_pods(selector: &Value, pod_labels: &BTreeMap<String, String>) -> bool {
    let labels = pod_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    selects(selector, &labels)
}

struct Rule {
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    operations: &'static [&'static str],
}

fn expected_webhooks() -> Vec<(&'static str, Vec<Rule>)> {
    vec![
        (
            "pods.claimguard.io",
            vec![Rule {
                groups: &[""],
                resources: &["pods"],
                operations: &["CREATE"],
            }],
        ),
        (
            "pvcs.claimguard.io",
            vec![Rule {
                groups: &[""],
                resources: &["persistentvolumeclaims"],
                operations: &["CREATE"],
            }],
        ),
        (
            "workloads.claimguard.io",
            vec![
                Rule {
                    groups: &["apps"],
                    resources: &["deployments", "replicasets", "statefulsets", "daemonsets"],
                    operations: &["CREATE", "UPDATE"],
                },
                Rule {
                    groups: &["batch"],
                    resources: &["jobs", "cronjobs"],
                    operations: &["CREATE", "UPDATE"],
                },
                Rule {
                    groups: &[""],
                    resources: &["replicationcontrollers"],
                    operations: &["CREATE", "UPDATE"],
                },
                Rule {
                    groups: &["apps"],
                    resources: &[
                        "deployments/scale",
                        "replicasets/scale",
                        "statefulsets/scale",
                    ],
                    operations: &["UPDATE"],
                },
                Rule {
                    groups: &[""],
                    resources: &["replicationcontrollers/scale"],
                    operations: &["UPDATE"],
                },
            ],
        ),
    ]
}

/// Every check on the ValidatingWebhookConfiguration, shared by all variants.
fn check_webhooks(objs: &[Value]) {
    let config = find(objs, "ValidatingWebhookConfiguration", "claimguard");
    assert_eq!(config["apiVersion"], "admissionregistration.k8s.io/v1");
    let hooks = config["webhooks"].as_array().unwrap();
    let expected = expected_webhooks();
    assert_eq!(
        hooks.iter().map(|h| h["name"].clone()).collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| json!(n)).collect::<Vec<_>>(),
        "webhook names and order"
    );
    assert_eq!(hooks.len(), certs::DEFAULT_WEBHOOK_COUNT);

    for (hook, (name, rules)) in hooks.iter().zip(&expected) {
        let got = hook["rules"].as_array().unwrap();
        assert_eq!(got.len(), rules.len(), "{name}: number of rules");
        for (g, want) in got.iter().zip(rules) {
            assert_eq!(strings(&g["apiGroups"]), want.groups, "{name}: apiGroups");
            assert_eq!(strings(&g["apiVersions"]), ["v1"], "{name}: apiVersions");
            assert_eq!(
                strings(&g["resources"]),
                want.resources,
                "{name}: resources"
            );
            assert_eq!(strings(&g["operations"]), want.operations, "{name}: ops");
            assert!(
                g["scope"].is_null() || g["scope"] == "Namespaced",
                "{name}: scope"
            );
        }

        let svc = &hook["clientConfig"]["service"];
        assert_eq!(svc["name"], "claimguard", "{name}");
        assert_eq!(svc["namespace"], NS, "{name}");
        assert_eq!(svc["path"], "/validate", "{name}");
        assert_eq!(svc["port"], 443, "{name}");
        assert!(hook["clientConfig"]["url"].is_null(), "{name}: url");
        // Only the pod webhook writes (a claim reservation Lease, Events on a
        // controller-made pod's owner), never on a dry run.
        let side_effects = if *name == "pods.claimguard.io" {
            "NoneOnDryRun"
        } else {
            "None"
        };
        assert_eq!(hook["sideEffects"], side_effects, "{name}");
        assert_eq!(strings(&hook["admissionReviewVersions"]), ["v1"], "{name}");
        let timeout = hook["timeoutSeconds"].as_u64().expect("timeoutSeconds set");
        assert!(
            (1..=3).contains(&timeout),
            "{name}: timeoutSeconds {timeout}"
        );
        assert_eq!(hook["matchPolicy"], "Equivalent", "{name}");
        let fp = hook["failurePolicy"].as_str().expect("failurePolicy set");
        assert!(fp == "Ignore" || fp == "Fail", "{name}: failurePolicy {fp}");
        assert!(hook["objectSelector"].is_null(), "{name}: objectSelector");

        let sel = &hook["namespaceSelector"];
        let ns = |name: &'static str, mode: Option<&'static str>| {
            let mut l = BTreeMap::from([("kubernetes.io/metadata.name", name)]);
            if let Some(m) = mode {
                l.insert("claimguard.io/mode", m);
            }
            l
        };
        assert!(!selects(sel, &ns(NS, None)), "{name}: {NS} excluded");
        assert!(
            !selects(sel, &ns("kube-system", None)),
            "{name}: kube-system"
        );
        assert!(!selects(sel, &ns("apps", Some("off"))), "{name}: mode off");
        assert!(selects(sel, &ns("default", None)), "{name}: default judged");
        assert!(
            selects(sel, &ns("team-a", Some("audit"))),
            "{name}: audit ns"
        );
        assert!(
            selects(sel, &ns("team-b", Some("enforce"))),
            "{name}: enforce ns"
        );
    }
}

#[test]
fn base_webhook_configuration() {
    let objs = render("");
    check_webhooks(&objs);
    let config = find(&objs, "ValidatingWebhookConfiguration", "claimguard");
    for hook in config["webhooks"].as_array().unwrap() {
        // Left out so that re-applying does not wipe an injected or patched CA.
        assert!(hook["clientConfig"]["caBundle"].is_null());
    }
}

#[test]
fn rbac_is_read_only_except_events() {
    let objs = render("");
    let allowed: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::from([
        (("", "pods"), set(&["get", "list", "watch"])),
        (
            ("", "persistentvolumeclaims"),
            set(&["get", "list", "watch"]),
        ),
        (("", "persistentvolumes"), set(&["get", "list", "watch"])),
        (("", "namespaces"), set(&["get", "list", "watch"])),
        (("", "nodes"), set(&["get", "list", "watch"])),
        (
            ("storage.k8s.io", "storageclasses"),
            set(&["get", "list", "watch"]),
        ),
        (
            ("storage.k8s.io", "volumeattachments"),
            set(&["get", "list", "watch"]),
        ),
        (("", "events"), set(&["create", "patch"])),
        (("events.k8s.io", "events"), set(&["create", "patch"])),
        (("apps", "deployments"), set(&["get"])),
        (("apps", "replicasets"), set(&["get"])),
        (("apps", "statefulsets"), set(&["get"])),
        (("batch", "jobs"), set(&["get"])),
        (("", "replicationcontrollers"), set(&["get"])),
    ]);

    let roles: Vec<_> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .collect();
    assert_eq!(roles.len(), 2, "one ClusterRole and the leases Role");
    let role = find(&objs, "ClusterRole", "claimguard");
    assert!(role["aggregationRule"].is_null());

    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule["nonResourceURLs"].is_null(), "nonResourceURLs: {rule}");
        assert!(rule["resourceNames"].is_null(), "resourceNames: {rule}");
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    assert!(
                        !g.contains('*') && !r.contains('*') && !v.contains('*'),
                        "wildcard in {rule}"
                    );
                    assert!(!r.starts_with("secrets"), "access to secrets: {rule}");
                    let ok = allowed
                        .get(&(g.as_str(), r.as_str()))
                        .is_some_and(|verbs| verbs.contains(&v));
                    assert!(ok, "verb {v} on {g}/{r} is not in the allowed list");
                    granted.entry((g.clone(), r.clone())).or_default().insert(v);
                }
            }
        }
    }
    // What the watchers need must really be there.
    for (g, r) in [
        ("", "pods"),
        ("", "persistentvolumeclaims"),
        ("", "persistentvolumes"),
        ("", "namespaces"),
        ("", "nodes"),
        ("storage.k8s.io", "storageclasses"),
        ("storage.k8s.io", "volumeattachments"),
    ] {
        assert_eq!(
            granted.get(&(g.to_string(), r.to_string())),
            Some(&set(&["get", "list", "watch"])),
            "{g}/{r}"
        );
    }

    let binding = find(&objs, "ClusterRoleBinding", "claimguard");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "claimguard"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "claimguard", "namespace": NS}])
    );
    find(&objs, "ServiceAccount", "claimguard");
    // Leases (claim reservations, audit leader election): in claimguard's
    // own namespace only.
    let leases = find(&objs, "Role", "claimguard-leases");
    assert_eq!(leases["metadata"]["namespace"], NS);
    assert_eq!(
        leases["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}])
    );
    let bindings: Vec<_> = objs.iter().filter(|o| o["kind"] == "RoleBinding").collect();
    assert_eq!(bindings.len(), 1, "only the leases binding is namespaced");
    assert_eq!(bindings[0]["metadata"]["namespace"], NS);
    assert_eq!(
        bindings[0]["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "claimguard-leases"})
    );
    assert_eq!(
        bindings[0]["subjects"],
        json!([{"kind": "ServiceAccount", "name": "claimguard", "namespace": NS}])
    );
}

#[test]
fn deployment_is_hardened_and_highly_available() {
    let objs = render("");
    find(&objs, "Namespace", NS);
    for o in &objs {
        let kind = o["kind"].as_str().unwrap();
        let cluster_scoped = matches!(
            kind,
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "ValidatingWebhookConfiguration"
        );
        if !cluster_scoped {
            assert_eq!(o["metadata"]["namespace"], NS, "{kind} namespace");
        }
    }

    let dep = find(&objs, "Deployment", "claimguard");
    assert_eq!(dep["metadata"]["namespace"], NS);
    let spec = &dep["spec"];
    assert_eq!(spec["replicas"], 2);
    let labels = pod_labels(&objs);
    assert!(matches_pods(&spec["selector"], &labels));

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "claimguard");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());

    let anti = &pod["affinity"]["podAntiAffinity"];
    let terms: Vec<&Value> = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            anti["preferredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| &w["podAffinityTerm"]),
        )
        .collect();
    assert!(
        terms
            .iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname"
                && matches_pods(&t["labelSelector"], &labels)),
        "anti-affinity across kubernetes.io/hostname for claimguard's own pods"
    );

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], "ghcr.io/claimguard/claimguard:0.1.0");
    // The replica's namespace and identity for claim reservations, from the downward API.
    for (var, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        let env = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == var);
        assert_eq!(
            env.map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
            Some(&json!(field)),
            "{var}"
        );
    }
    assert_eq!(
        strings(&c["args"]),
        [
            "serve",
            "--tls-cert",
            "/certs/tls.crt",
            "--tls-key",
            "/certs/tls.key",
            "--policy",
            "/config/policy.yaml"
        ]
    );
    assert!(
        c["command"].is_null(),
        "the image's ENTRYPOINT is the binary"
    );
    assert_eq!(c["ports"][0]["containerPort"], 8443);

    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert_ne!(sc["privileged"], true);
    assert_ne!(sc["runAsNonRoot"], false);
    assert!(sc["runAsUser"].is_null() || sc["runAsUser"] == 65532);

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["scheme"], "HTTPS", "{probe}");
        assert!(
            get["port"] == 8443 || get["port"] == "https",
            "{probe} port"
        );
    }

    let res = &c["resources"];
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(res[kind][r].is_string(), "resources.{kind}.{r}");
        }
    }
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        (1..grace).contains(&pre_stop),
        "preStop sleep {pre_stop}s must end within the {grace}s grace period"
    );

    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let source_of = |mount_path: &str| {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("no mount at {mount_path}"));
        // subPath mounts never see the kubelet's updates: rotation and policy
        // reload would silently stop working.
        assert!(m["subPath"].is_null(), "{mount_path} uses subPath");
        assert_eq!(m["readOnly"], true, "{mount_path} read-only");
        volumes.iter().find(|v| v["name"] == m["name"]).unwrap()
    };
    assert_eq!(
        source_of("/certs")["secret"]["secretName"],
        certs::SECRET_NAME
    );
    assert_eq!(
        source_of("/config")["configMap"]["name"],
        "claimguard-policy"
    );

    let pdb = find(&objs, "PodDisruptionBudget", "claimguard");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert!(matches_pods(&pdb["spec"]["selector"], &labels));

    let svc = find(&objs, "Service", "claimguard");
    assert!(matches_pods(
        &json!({"matchLabels": svc["spec"]["selector"]}),
        &labels
    ));
    let ports = svc["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["port"], 443);
    assert!(ports[0]["targetPort"] == 8443 || ports[0]["targetPort"] == "https");
}

fn policy_file(objs: &[Value]) -> Value {
    let cm = find(objs, "ConfigMap", "claimguard-policy");
    serde_yaml_ng::from_str(cm["data"]["policy.yaml"].as_str().unwrap()).unwrap()
}

#[test]
fn policy_configmap_holds_the_default_policy() {
    let policy = policy_file(&render(""));
    assert_eq!(policy["mode"], "enforce");
    assert_eq!(policy["rules"], json!({}));
    assert_eq!(policy["exemptNamespaces"], json!(["kube-system"]));
    assert_eq!(policy["onLookupError"], "allow");
    assert_eq!(
        policy["blockOnlyProvisioners"],
        json!([
            "ebs.csi.aws.com",
            "pd.csi.storage.gke.io",
            "disk.csi.azure.com",
            "kubernetes.io/aws-ebs",
            "kubernetes.io/gce-pd",
            "kubernetes.io/azure-disk"
        ])
    );
}

/// The shipped file is what the server will load: it must parse, and say
/// exactly the built-in defaults (the comments claim so).
#[test]
fn shipped_policy_files_load_with_the_real_parser() {
    use claimguard::policy::{Mode, Policy};
    let text = |objs: &[Value]| {
        let cm = find(objs, "ConfigMap", "claimguard-policy");
        cm["data"]["policy.yaml"].as_str().unwrap().to_string()
    };
    let base = Policy::parse(&text(&render(""))).unwrap();
    assert_eq!(base, Policy::default());
    let mut audit = Policy::parse(&text(&render("audit-mode"))).unwrap();
    assert_eq!(audit.mode, Mode::Audit);
    audit.mode = Mode::Enforce;
    assert_eq!(audit, Policy::default());
}

#[test]
fn policy_reports_overlay_turns_on_the_audit_and_grants_only_what_it_needs() {
    let base = render("");
    let objs = render("policy-reports");
    check_webhooks(&objs);
    let added: BTreeSet<_> = objs
        .iter()
        .map(key)
        .filter(|k| !base.iter().any(|b| key(b) == *k))
        .collect();
    assert_eq!(
        added,
        BTreeSet::from([
            (
                "ClusterRole".into(),
                String::new(),
                "claimguard-policy-reports".into()
            ),
            (
                "ClusterRoleBinding".into(),
                String::new(),
                "claimguard-policy-reports".into()
            ),
        ])
    );
    let role = find(&objs, "ClusterRole", "claimguard-policy-reports");
    let mut writes = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for r in strings(&rule["resources"]) {
            for v in strings(&rule["verbs"]) {
                if v != "list" {
                    writes.insert(format!("{r}/{v}"));
                }
            }
        }
    }
    assert!(
        writes.iter().all(|w| w.starts_with("policyreports/")),
        "{writes:?}"
    );
    let binding = find(&objs, "ClusterRoleBinding", "claimguard-policy-reports");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "claimguard", "namespace": NS}])
    );
    // The audit is on: the interval reaches the container, the base's env stays.
    let deployment = find(&objs, "Deployment", "claimguard");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let names: Vec<_> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str()))
        .collect();
    assert!(
        names.contains(&("CLAIMGUARD_AUDIT_INTERVAL", Some("10m"))),
        "{names:?}"
    );
    assert!(
        names.contains(&("CLAIMGUARD_LOG_FORMAT", Some("json"))),
        "{names:?}"
    );
    // And the base does not run it.
    let base_env = &find(&base, "Deployment", "claimguard")["spec"]["template"]["spec"]
        ["containers"][0]["env"];
    assert!(!base_env.to_string().contains("AUDIT_INTERVAL"));
}

#[test]
fn monitoring_overlay_scrapes_plain_metrics_and_alerts() {
    let base = render("");
    let objs = render("monitoring");
    check_webhooks(&objs);
    let added: BTreeSet<_> = objs
        .iter()
        .map(key)
        .filter(|k| !base.iter().any(|b| key(b) == *k))
        .collect();
    assert_eq!(
        added,
        BTreeSet::from([
            ("PrometheusRule".into(), NS.into(), "claimguard".into()),
            ("Service".into(), NS.into(), "claimguard-metrics".into()),
            ("ServiceMonitor".into(), NS.into(), "claimguard".into()),
        ])
    );
    let container =
        &find(&objs, "Deployment", "claimguard")["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].to_string();
    assert!(
        env.contains(r#"{"name":"CLAIMGUARD_METRICS_LISTEN","value":"0.0.0.0:9090"}"#),
        "{env}"
    );
    let ports: Vec<_> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        ports.contains(&("metrics", 9090)) && ports.contains(&("https", 8443)),
        "{ports:?}"
    );
    // The Service reaches the pods, the ServiceMonitor the Service, by name.
    let svc = find(&objs, "Service", "claimguard-metrics");
    let selector = json!({"matchLabels": svc["spec"]["selector"]});
    assert!(matches_pods(&selector, &pod_labels(&objs)));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let sm = find(&objs, "ServiceMonitor", "claimguard");
    let svc_labels: BTreeMap<&str, &str> = svc["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert!(selects(&sm["spec"]["selector"], &svc_labels));
    // ... and not the webhook's own Service (TLS, no /metrics for Prometheus).
    let webhook_svc = find(&objs, "Service", "claimguard");
    let webhook_labels: BTreeMap<&str, &str> = webhook_svc["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    assert!(!selects(&sm["spec"]["selector"], &webhook_labels));
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    // The job label the alerts use is what the ServiceMonitor produces.
    let job = svc_labels[sm["spec"]["jobLabel"].as_str().unwrap()];
    let rules = find(&objs, "PrometheusRule", "claimguard");
    let alerts: Vec<&Value> = rules["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(alerts.len() >= 6);
    for a in &alerts {
        let expr = a["expr"].as_str().unwrap();
        if expr.contains("up{") {
            assert!(expr.contains(&format!("job=\"{job}\"")), "{expr}");
        }
        assert!(a["labels"]["severity"].is_string(), "{a}");
        assert!(a["annotations"]["summary"].is_string(), "{a}");
    }
}

#[test]
fn audit_mode_overlay_only_changes_the_mode() {
    let base = render("");
    let audit = render("audit-mode");
    let mut want = policy_file(&base);
    want["mode"] = json!("audit");
    assert_eq!(policy_file(&audit), want);
    check_webhooks(&audit);
    assert_eq!(
        base.iter().map(key).collect::<BTreeSet<_>>(),
        audit.iter().map(key).collect::<BTreeSet<_>>()
    );
}

#[test]
fn cert_manager_overlay_issues_and_injects_the_ca() {
    let objs = render("cert-manager");
    check_webhooks(&objs);
    let config = find(&objs, "ValidatingWebhookConfiguration", "claimguard");
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NS}/claimguard-serving")
    );

    let serving = find(&objs, "Certificate", "claimguard-serving");
    assert_eq!(serving["apiVersion"], "cert-manager.io/v1");
    assert_eq!(serving["metadata"]["namespace"], NS);
    assert_eq!(serving["spec"]["secretName"], certs::SECRET_NAME);
    assert_eq!(
        strings(&serving["spec"]["dnsNames"]),
        certs::service_dns_names("claimguard", NS)
    );
    assert!(strings(&serving["spec"]["usages"]).contains(&"server auth".to_string()));

    // The chain resolves: serving <- CA issuer <- CA certificate <- self-signed issuer.
    let ca_issuer_name = serving["spec"]["issuerRef"]["name"].as_str().unwrap();
    let ca_issuer = find(&objs, "Issuer", ca_issuer_name);
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"].as_str().unwrap();
    let ca_cert = objs
        .iter()
        .find(|o| o["kind"] == "Certificate" && o["spec"]["secretName"] == ca_secret)
        .expect("a Certificate makes the CA issuer's secret");
    assert_eq!(ca_cert["spec"]["isCA"], true);
    let root = find(
        &objs,
        "Issuer",
        ca_cert["spec"]["issuerRef"]["name"].as_str().unwrap(),
    );
    assert!(root["spec"]["selfSigned"].is_object());

    // The overlay only adds: the base's workload is unchanged.
    let base = render("");
    assert_eq!(
        find(&objs, "Deployment", "claimguard"),
        find(&base, "Deployment", "claimguard")
    );
}

#[test]
fn cabundle_patch_from_certs_fills_every_webhook() {
    let objs = render("");
    let mut config = find(&objs, "ValidatingWebhookConfiguration", "claimguard").clone();
    let dir = tempfile::tempdir().unwrap();
    let written = certs::write_bundle(&certs::CertsOptions::new(dir.path())).unwrap();
    let ca = std::fs::read_to_string(&written.ca_cert).unwrap();
    let want = base64::engine::general_purpose::STANDARD.encode(&ca);

    // Read back from disk: the file `kubectl patch --patch-file` gets.
    let patch: json_patch::Patch =
        serde_json::from_str(&std::fs::read_to_string(&written.cabundle_patch).unwrap()).unwrap();
    json_patch::patch(&mut config, &patch).unwrap();
    let hooks = config["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 3);
    for hook in hooks {
        assert_eq!(hook["clientConfig"]["caBundle"], want, "{}", hook["name"]);
        // The rest of clientConfig survives the patch.
        assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
    }

    // Rotation: running certs again (with force: the files are there) and
    // patching replaces every bundle.
    let mut again = certs::CertsOptions::new(dir.path());
    again.force = true;
    let rotated = certs::write_bundle(&again).unwrap();
    let new_ca = std::fs::read_to_string(&rotated.ca_cert).unwrap();
    assert_ne!(new_ca, ca);
    json_patch::patch(&mut config, &certs::cabundle_patch(&new_ca, 3)).unwrap();
    let want = base64::engine::general_purpose::STANDARD.encode(&new_ca);
    for hook in config["webhooks"].as_array().unwrap() {
        assert_eq!(hook["clientConfig"]["caBundle"], want);
    }

    // A patch for more webhooks than exist fails instead of inventing one.
    let mut fresh = find(&objs, "ValidatingWebhookConfiguration", "claimguard").clone();
    assert!(json_patch::patch(&mut fresh, &certs::cabundle_patch(&ca, 4)).is_err());
}

#[test]
fn certs_secret_matches_what_the_deployment_mounts() {
    let objs = render("");
    let dir = tempfile::tempdir().unwrap();
    let written = certs::write_bundle(&certs::CertsOptions::new(dir.path())).unwrap();
    let secret = parse_docs(
        &std::fs::read_to_string(&written.secret).unwrap(),
        &written.secret,
    );
    assert_eq!(secret.len(), 1);
    let secret = &secret[0];
    let dep = find(&objs, "Deployment", "claimguard");
    let volumes = dep["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(volumes
        .iter()
        .any(|v| v["secret"]["secretName"] == secret["metadata"]["name"]));
    assert_eq!(
        secret["metadata"]["namespace"],
        dep["metadata"]["namespace"]
    );
    // The args name these keys.
    for k in ["tls.crt", "tls.key"] {
        assert!(secret["data"][k].is_string(), "{k}");
    }
}

/// The Deployment relies on the image's ENTRYPOINT and user; keep them in step.
#[test]
fn dockerfile_matches_the_deployment() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let last_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("multi-stage Dockerfile");
    assert!(
        last_stage.starts_with("gcr.io/distroless/"),
        "runtime image is distroless: {last_stage:.60}"
    );
    let lines: Vec<&str> = last_stage.lines().map(str::trim).collect();
    assert!(lines.contains(&"USER 65532:65532"), "non-root user");
    assert!(lines.contains(&r#"ENTRYPOINT ["/claimguard"]"#));

    let objs = render("");
    let dep = find(&objs, "Deployment", "claimguard");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
    assert!(pod["containers"][0]["command"].is_null());
    let port = pod["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    assert!(lines.contains(&format!("EXPOSE {port}").as_str()));
}

/// Every overlay's objects decode as the Kubernetes API types, strictly.
#[test]
fn every_overlay_renders_objects_the_api_accepts() {
    for sub in [
        "",
        "audit-mode",
        "cert-manager",
        "cert-manager-colocate",
        "colocate",
        "monitoring",
        "policy-reports",
        "production",
    ] {
        for o in render(sub) {
            if let Err(e) = k8s_schema::validate(&o) {
                panic!("manifests/{sub}: {e}");
            }
        }
    }
}

/// The failure domain: every webhook carries matchConditions that compile as CEL, and
/// only the pods webhook, narrowed to claim users, fails closed.
#[test]
fn only_the_narrowed_pods_webhook_fails_closed() {
    for sub in ["", "colocate"] {
        let objs = render(sub);
        for o in objs.iter().filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        }) {
            for hook in o["webhooks"].as_array().unwrap() {
                let name = hook["name"].as_str().unwrap();
                let conds = match_conditions::compile(&hook["matchConditions"])
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!conds.is_empty(), "{name}: no matchConditions");
                let want = if name == "pods.claimguard.io" {
                    "Fail"
                } else {
                    "Ignore"
                };
                assert_eq!(hook["failurePolicy"], want, "{name}");
                // Every field read is guarded: a claimless pod, a bare object and a
                // scale request evaluate without error (an error would hand the
                // request to failurePolicy).
                for (object, request) in [
                    (
                        json!({"spec": {"containers": []}}),
                        json!({"operation": "CREATE"}),
                    ),
                    (json!({"spec": {}}), json!({"operation": "UPDATE"})),
                    (
                        json!({"spec": {"replicas": 2}}),
                        json!({"operation": "UPDATE", "subResource": "scale"}),
                    ),
                ] {
                    let v = match_conditions::evaluate(&conds, Some(&object), None, &request);
                    assert!(
                        !matches!(v, match_conditions::Verdict::Error(_)),
                        "{name}: {v:?} for {object}"
                    );
                }
            }
        }
    }
}

/// Every component combines with every other in one kustomization, as a user writes
/// it (`manifests/production/` is one such): the union of what each overlay adds,
/// with cert-manager injecting the CA into the co-location webhooks as well.
#[test]
fn components_compose_in_one_kustomization() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // kustomize refuses absolute paths: the user's kustomization sits two levels
    // below the repository, as it would in a GitOps tree.
    let dir = repo
        .join("target")
        .join(format!("compose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../manifests/base
components:
  - ../../manifests/components/audit-mode
  - ../../manifests/components/colocate
  - ../../manifests/components/cert-manager
  - ../../manifests/components/monitoring
  - ../../manifests/components/policy-reports
",
    )
    .unwrap();
    let all = match kubectl_render(&dir) {
        Some(objs) => objs,
        None => fallback_render(&dir),
    };
    let _ = std::fs::remove_dir_all(&dir);

    let keys = |objs: &[Value]| objs.iter().map(key).collect::<BTreeSet<_>>();
    let mut want = BTreeSet::new();
    for sub in [
        "audit-mode",
        "cert-manager-colocate",
        "monitoring",
        "policy-reports",
    ] {
        want.extend(keys(&render(sub)));
    }
    assert_eq!(keys(&all), want);
    assert_eq!(policy_file(&all)["mode"], "audit");
    for o in all.iter().filter(|o| {
        o["kind"]
            .as_str()
            .is_some_and(|k| k.ends_with("WebhookConfiguration"))
    }) {
        assert_eq!(
            o["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "claimguard-system/claimguard-serving",
            "{}",
            o["metadata"]["name"]
        );
    }
    let deploy = all
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment");
    let env: Vec<&str> = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for want in ["CLAIMGUARD_METRICS_LISTEN", "CLAIMGUARD_AUDIT_INTERVAL"] {
        assert!(env.contains(&want), "{want} missing from {env:?}");
    }
    for o in &all {
        if let Err(e) = k8s_schema::validate(o) {
            panic!("composed: {e}");
        }
    }
}
