//! kubectl in the loop: the real `kubectl` binary drives an API-server stand-in whose
//! admission chain is built from `kubectl kustomize manifests/` (and its overlays), and
//! calls the real `claimguard serve` binary over TLS verified with the caBundle's CA.
//! claimguard runs in live mode against the stand-in (whose reads and watches of pods,
//! claims and namespaces come from the fake API server that stores what kubectl
//! creates), so it sees the cluster through its watches, as in a cluster.
//!
//! Assertions are on kubectl's exit codes and exact printed lines, and on the
//! AdmissionReviews the chain sent.
//!
//! The chain can also be built from `helm template charts/claimguard` (the chart's own
//! CA, serving certificate and caBundles): `kubectl_through_the_chart_admission_chain`
//! runs the same scenarios from it, so the chart's webhooks are exercised end to end
//! too. It needs `helm` on the PATH, under the rule of `CLAIMGUARD_REQUIRE_HELM`.
//!
//! `CLAIMGUARD_KUBECTL_TRANSCRIPT=docs/kubectl.md cargo test --test kubectl -- --ignored
//! write_transcript` rewrites the transcript in docs/kubectl.md from a run.
//!
//! The tests need `kubectl` on the PATH (`.ci/run` installs it); without it they print
//! a note and pass, unless `CLAIMGUARD_REQUIRE_KUBECTL` is set (as `.ci/run` does when
//! the install succeeded).

#[path = "support/kube_standin/mod.rs"]
mod kube_standin;
mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_standin::chain::{self, Attributes, Chain};
use kube_standin::StandIn;
use serde::Deserialize;
use serde_json::{json, Value};
use support::fake_apiserver::{FakeApiServer, Kind};

const SERVICE_NS: &str = "claimguard-system";
const SERVICE: &str = "claimguard";
const HOST: &str = "claimguard.claimguard-system.svc";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The minor version of the kubectl on the PATH, if it runs.
fn kubectl_minor() -> Option<u32> {
    let out = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let minor = v["clientVersion"]["minor"].as_str()?;
    minor.trim_end_matches('+').parse().ok()
}

/// kustomize v5 (for `labels:`), `--dry-run=server` and today's output wording.
const MIN_KUBECTL_MINOR: u32 = 27;

/// Whether a recent enough kubectl can run here; false (and a note) when it cannot and
/// `CLAIMGUARD_REQUIRE_KUBECTL` is not set.
fn have_kubectl() -> bool {
    let minor = kubectl_minor();
    let ok = minor.is_some_and(|m| m >= MIN_KUBECTL_MINOR);
    if !ok {
        let why = match minor {
            None => "kubectl not found".to_string(),
            Some(m) => format!("kubectl 1.{m} is older than 1.{MIN_KUBECTL_MINOR}"),
        };
        assert!(
            std::env::var_os("CLAIMGUARD_REQUIRE_KUBECTL").is_none(),
            "CLAIMGUARD_REQUIRE_KUBECTL is set but {why}"
        );
        eprintln!("note: {why}; skipping the kubectl tests");
    }
    ok
}

/// Every document of `kubectl kustomize <dir>`.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The base (`manifests/`) and every overlay under it, deduplicated by kind and name
/// (first seen wins, the base first): what a cluster holds after `kubectl apply -k` of
/// the base and of each overlay that adds objects.
fn rendered_manifests() -> Vec<Value> {
    let root = repo().join("manifests");
    let mut dirs = vec![root.clone()];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("read manifests/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("kustomization.yaml").is_file() && !p.ends_with("base"))
        .collect();
    overlays.sort();
    dirs.extend(overlays);
    let mut seen = std::collections::HashSet::new();
    let mut docs = Vec::new();
    for d in dirs {
        for doc in kustomize(&d) {
            let key = (
                doc["kind"].as_str().unwrap_or("").to_string(),
                doc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                doc["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            if seen.insert(key) {
                docs.push(doc);
            }
        }
    }
    docs
}

/// Whether helm runs here; false (and a note) when it does not and
/// `CLAIMGUARD_REQUIRE_HELM` is not set.
fn have_helm() -> bool {
    let ok = Command::new("helm")
        .args(["version", "--short"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CLAIMGUARD_REQUIRE_HELM").is_none(),
            "CLAIMGUARD_REQUIRE_HELM is set but helm does not run"
        );
        eprintln!("note: helm not found; skipping the chart's kubectl test");
    }
    ok
}

/// `helm template claimguard charts/claimguard -n claimguard-system` with co-location on
/// (what the chain needs for the co-location scenario), plus the Namespace that `helm
/// install --create-namespace` makes (no labels but the name the API server adds).
fn rendered_chart() -> Vec<Value> {
    let out = Command::new("helm")
        .arg("template")
        .arg("claimguard")
        .arg(repo().join("charts/claimguard"))
        .args(["--namespace", SERVICE_NS, "--set", "colocate.enabled=true"])
        .env_remove("HELM_NAMESPACE")
        .output()
        .expect("run helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    let mut docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect();
    docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SERVICE_NS}}));
    docs
}

/// claimguard's serving certificate and key, the CA that verifies them, and (for
/// manifests/) the caBundle patch the install applies.
struct Certs {
    ca_cert: PathBuf,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    cabundle_patch: Option<PathBuf>,
}

/// The serving certificate, its key and CA from the chart's Secret `claimguard-tls`.
fn chart_certificates(docs: &[Value], dir: &Path) -> Certs {
    use base64::Engine as _;
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "claimguard-tls")
        .expect("the chart renders the Secret claimguard-tls");
    std::fs::create_dir_all(dir).expect("mkdir");
    let write = |key: &str| {
        let b64 = secret["data"][key].as_str().expect("a data key");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        let path = dir.join(key);
        std::fs::write(&path, bytes).expect("write");
        path
    };
    Certs {
        ca_cert: write("ca.crt"),
        tls_cert: write("tls.crt"),
        tls_key: write("tls.key"),
        cabundle_patch: None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// claimguard runs and the Service routes to it.
    Claimguard,
    /// The Service routes to a closed port: claimguard is down.
    Down,
    /// The Service routes to a port that accepts connections and never answers.
    Stalled,
}

/// Where the admission chain's configurations (and claimguard's certificate and policy)
/// come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `kubectl kustomize manifests/` and its overlays, with `claimguard certs`.
    Manifests,
    /// `helm template charts/claimguard --set colocate.enabled=true`: the chart's Secret
    /// is the serving certificate and its caBundles the trust.
    Chart,
}

struct Options {
    source: Source,
    backend: Backend,
    /// Override the failurePolicy of the validating webhooks (as `kubectl patch` would).
    failure_policy: Option<&'static str>,
    /// Add `deployments/scale` to the workloads webhook's rules when it lacks it.
    scale_rule: bool,
    /// Add a test MutatingWebhookConfiguration (Service `mutator`, for namespaces
    /// labelled `mutate=yes`) served by [`start_mutator`].
    mutator: bool,
}

/// One output of kubectl.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(s: &str) -> Vec<&str> {
        s.lines().filter(|l| !l.is_empty()).collect()
    }
    fn out(&self) -> Vec<&str> {
        Self::lines(&self.stdout)
    }
    fn err(&self) -> Vec<&str> {
        Self::lines(&self.stderr)
    }
}

struct Suite {
    dir: tempfile::TempDir,
    api: Arc<FakeApiServer>,
    standin: StandIn,
    /// Killed when the suite is dropped.
    _claimguard: Option<Killed>,
    /// The address the Service routes to.
    backend: SocketAddr,
    transcript: Mutex<Vec<String>>,
}

impl Suite {
    async fn start(opts: Options) -> Suite {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["home/.kube", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let (mut docs, certs) = match opts.source {
            Source::Manifests => {
                let w = claimguard::certs::write_bundle(&claimguard::certs::CertsOptions::new(
                    dir.path().join("certs"),
                ))
                .expect("claimguard certs");
                let certs = Certs {
                    ca_cert: w.ca_cert,
                    tls_cert: w.tls_cert,
                    tls_key: w.tls_key,
                    cabundle_patch: Some(w.cabundle_patch),
                };
                (rendered_manifests(), certs)
            }
            Source::Chart => {
                let docs = rendered_chart();
                let certs = chart_certificates(&docs, &dir.path().join("certs"));
                (docs, certs)
            }
        };
        let ca_pem = std::fs::read_to_string(&certs.ca_cert).expect("ca.crt");
        let ca_b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&ca_pem)
        };

        let mutator_certs = opts.mutator.then(|| {
            let mut o = claimguard::certs::CertsOptions::new(dir.path().join("mutator-certs"));
            o.service = "mutator".into();
            claimguard::certs::write_bundle(&o).expect("mutator certs")
        });
        if let Some(m) = &mutator_certs {
            use base64::Engine as _;
            let ca = std::fs::read(&m.ca_cert).expect("mutator ca.crt");
            docs.push(mutator_configuration(
                &base64::engine::general_purpose::STANDARD.encode(ca),
                &ca_b64,
            ));
        }
        // The install steps: the caBundle patch of `claimguard certs` on the validating
        // configuration; any other configuration (mutating overlays) gets the CA as
        // cert-manager's injector would give it.
        let patch: Option<json_patch::Patch> = certs.cabundle_patch.as_ref().map(|p| {
            serde_json::from_str(&std::fs::read_to_string(p).expect("cabundle-patch.json"))
                .expect("the caBundle patch is a JSON Patch")
        });
        for d in docs.iter_mut() {
            let kind = d["kind"].as_str().unwrap_or("");
            if !kind.ends_with("WebhookConfiguration") {
                continue;
            }
            let validating =
                kind == "ValidatingWebhookConfiguration" && d["metadata"]["name"] == "claimguard";
            if let Some(patch) = patch.as_ref().filter(|_| validating) {
                json_patch::patch(d, patch).expect(
                    "certs/cabundle-patch.json applies to the rendered ValidatingWebhookConfiguration",
                );
            }
            for w in d["webhooks"].as_array_mut().into_iter().flatten() {
                if w["clientConfig"]["caBundle"].is_null() {
                    w["clientConfig"]["caBundle"] = json!(ca_b64);
                }
                // `kubectl patch validatingwebhookconfiguration claimguard` (docs/install.md).
                if let Some(fp) = opts.failure_policy.filter(|_| validating) {
                    w["failurePolicy"] = json!(fp);
                }
                let has_scale = w["rules"].as_array().into_iter().flatten().any(|r| {
                    r["resources"]
                        .as_array()
                        .is_some_and(|rs| rs.iter().any(|x| x == "deployments/scale"))
                });
                if opts.scale_rule && w["name"] == "workloads.claimguard.io" && !has_scale {
                    w["rules"].as_array_mut().expect("rules").push(json!({
                        "apiGroups": ["apps"], "apiVersions": ["v1"],
                        "resources": ["deployments/scale"], "operations": ["UPDATE"],
                        "scope": "Namespaced"}));
                }
            }
        }
        let webhooks = chain::webhooks_of(&docs).expect("the webhook configurations parse");
        for id in [
            "claimguard/pods.claimguard.io",
            "claimguard/pvcs.claimguard.io",
            "claimguard/workloads.claimguard.io",
        ] {
            assert!(
                webhooks.iter().any(|w| w.id == id),
                "the rendered manifests hold the webhook {id}"
            );
        }
        let chain = Arc::new(Chain::new(webhooks));

        let api = Arc::new(FakeApiServer::start().await);
        for ns in ["default", "kube-system"] {
            api.add(Kind::Namespace, support::k8s::namespace(ns, &[]));
        }
        for d in &docs {
            if d["kind"] == "Namespace" {
                let mut ns = d.clone();
                ns["metadata"]["labels"]["kubernetes.io/metadata.name"] =
                    d["metadata"]["name"].clone();
                api.add(Kind::Namespace, ns);
            }
        }
        let standin = StandIn::start(api.clone(), chain.clone()).await;

        let write_kubeconfig = |path: &Path, server: &str| {
            std::fs::write(
                path,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {server}\nusers:\n- name: admin\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: admin\n    namespace: default\ncurrent-context: standin\n"
                ),
            )
            .expect("write kubeconfig");
        };
        write_kubeconfig(&dir.path().join("home/.kube/config"), &standin.url());

        let (claimguard, backend) = match opts.backend {
            Backend::Down => (None, free_addr()),
            Backend::Stalled => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = l.local_addr().expect("addr");
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Ok((conn, _)) = l.accept().await {
                        held.push(conn);
                    }
                });
                (None, addr)
            }
            Backend::Claimguard => {
                let cg_kubeconfig = dir.path().join("claimguard-kubeconfig");
                // claimguard talks to the stand-in, as a webhook talks to its API server.
                write_kubeconfig(&cg_kubeconfig, &standin.url());
                let policy = docs
                    .iter()
                    .find(|d| {
                        d["kind"] == "ConfigMap" && d["metadata"]["name"] == "claimguard-policy"
                    })
                    .and_then(|d| d["data"]["policy.yaml"].as_str())
                    .expect("the rendered manifests hold the policy ConfigMap");
                let policy_path = dir.path().join("policy.yaml");
                std::fs::write(&policy_path, policy).expect("write policy");
                let addr = free_addr();
                let child = Command::new(env!("CARGO_BIN_EXE_claimguard"))
                    .args(["serve", "--listen", &addr.to_string(), "--kubeconfig"])
                    .arg(&cg_kubeconfig)
                    .arg("--tls-cert")
                    .arg(&certs.tls_cert)
                    .arg("--tls-key")
                    .arg(&certs.tls_key)
                    .arg("--policy")
                    .arg(&policy_path)
                    .args(["--shutdown-grace", "0s"])
                    .env_remove("CLAIMGUARD_SNAPSHOT")
                    .env_remove("HTTPS_PROXY")
                    .env_remove("https_proxy")
                    .env_remove("HTTP_PROXY")
                    .env_remove("http_proxy")
                    .env("CLAIMGUARD_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("start claimguard serve");
                let child = Killed(child);
                let client = reqwest::Client::builder()
                    .add_root_certificate(
                        reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"),
                    )
                    .tls_built_in_root_certs(false)
                    .resolve(HOST, addr)
                    .no_proxy()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client");
                let url = format!("https://{HOST}:{}/readyz", addr.port());
                let t = Instant::now();
                loop {
                    if matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) {
                        break;
                    }
                    assert!(
                        t.elapsed() < Duration::from_secs(60),
                        "claimguard did not become ready within 60 s"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (Some(child), addr)
            }
        };
        chain.set_endpoint(SERVICE_NS, SERVICE, backend);
        if let Some(m) = &mutator_certs {
            let addr = start_mutator(&m.tls_cert, &m.tls_key);
            chain.set_endpoint(SERVICE_NS, "mutator", addr);
        }
        Suite {
            dir,
            api,
            standin,
            _claimguard: claimguard,
            backend,
            transcript: Mutex::new(Vec::new()),
        }
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Write a manifest into kubectl's working directory.
    fn file(&self, name: &str, yaml: &str) {
        std::fs::write(self.work().join(name), yaml).expect("write manifest");
    }

    /// Run kubectl (in the working directory, with its own HOME, so discovery caches stay
    /// per suite) and record the command and its output in the transcript.
    async fn kubectl(&self, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.args(args)
            .current_dir(self.work())
            .env("HOME", self.dir.path().join("home"))
            .env("KUBECONFIG", self.dir.path().join("home/.kube/config"))
            .env_remove("KUBECACHEDIR")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .kill_on_drop(true)
            .stdin(Stdio::null());
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within 90 s"))
            .expect("run kubectl");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: self.normalize(&String::from_utf8_lossy(&out.stdout)),
            stderr: self.normalize(&String::from_utf8_lossy(&out.stderr)),
        };
        if std::env::var_os("CLAIMGUARD_STANDIN_DEBUG").is_some() {
            eprintln!("kubectl {args:?} -> {run:?}");
            for r in self.standin.requests() {
                eprintln!("  {r}");
            }
        }
        let mut t = self.transcript.lock().unwrap();
        let shown: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        t.push(format!("$ kubectl {}", shown.join(" ")));
        // kubectl prints warnings as the response arrives, before the result.
        let (warnings, errors): (Vec<&str>, Vec<&str>) = run
            .err()
            .into_iter()
            .partition(|l| l.starts_with("Warning: "));
        t.extend(warnings.iter().map(|l| l.to_string()));
        t.extend(run.out().iter().map(|l| l.to_string()));
        t.extend(errors.iter().map(|l| l.to_string()));
        drop(t);
        run
    }

    /// Replace what changes from run to run (the local port of the Service's endpoint).
    fn normalize(&self, s: &str) -> String {
        s.replace(&self.backend.to_string(), "127.0.0.1:PORT")
    }

    fn note(&self, line: &str) {
        self.transcript.lock().unwrap().push(format!("# {line}"));
    }

    fn take_transcript(&self) -> Vec<String> {
        std::mem::take(&mut *self.transcript.lock().unwrap())
    }

    /// The AdmissionReviews `webhook` was sent about `namespace/name`.
    fn reviews(&self, webhook: &str, namespace: &str, name: &str) -> Vec<Value> {
        self.standin
            .chain()
            .calls()
            .into_iter()
            .filter(|c| {
                c.webhook == webhook
                    && c.review["request"]["namespace"] == namespace
                    && c.review["request"]["name"] == name
            })
            .map(|c| c.review)
            .collect()
    }

    /// Ask the chain (not kubectl) whether a dry-run pod using `claim` would be allowed,
    /// and with which warnings: a probe of what claimguard's view holds.
    async fn probe(&self, ns: &str, claim: &str) -> (bool, Vec<String>) {
        let labels = self
            .api
            .get(Kind::Namespace, "", ns)
            .map(|n| chain::labels_of(&n));
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe", "namespace": ns,
                         "uid": "00000000-0000-4000-8000-0000000probe",
                         "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"nodeName": "probe-node", "containers": [{"name": "c", "image": "busybox",
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": "Pending"}});
        let a = Attributes {
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            sub_resource: String::new(),
            kind: (String::new(), "v1".into(), "Pod".into()),
            namespace: ns.into(),
            name: "probe".into(),
            operation: "CREATE",
            object: Some(pod),
            old_object: None,
            dry_run: true,
            options: json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]}),
        };
        let o = self.standin.chain().admit(a, labels, |_| {}).await;
        (o.result.is_ok(), o.warnings)
    }

    /// Wait until claimguard's watch has seen the claim `ns/claim`.
    async fn wait_claim_seen(&self, ns: &str, claim: &str) {
        let t = Instant::now();
        loop {
            let (_, warnings) = self.probe(ns, claim).await;
            if !warnings.iter().any(|w| w.starts_with("[claim-not-found]")) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "claimguard did not see claim {ns}/{claim} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until a probe pod on `claim` is allowed (e.g. once a namespace label is seen).
    async fn wait_allowed(&self, ns: &str, claim: &str) {
        let t = Instant::now();
        while !self.probe(ns, claim).await.0 {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "a probe pod on {ns}/{claim} was still denied after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An argument as a shell would need it in the transcript.
fn shell_quote(arg: &str) -> String {
    let plain = arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn pvc_yaml(name: &str, mode: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  accessModes: [{mode}]\n  storageClassName: csi-rbd\n  resources:\n    requests:\n      storage: 10Gi\n"
    )
}

fn pod_yaml(name: &str, claim: &str, node: Option<&str>) -> String {
    let node = node
        .map(|n| format!("  nodeName: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{node}  containers:\n  - name: app\n    image: registry.example.com/app:1.2.3\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: {claim}\n"
    )
}

fn deployment_yaml(name: &str, claim: &str, replicas: u32, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  strategy:\n    type: {strategy}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/app:1.2.3\n        volumeMounts:\n        - name: data\n          mountPath: /data\n      volumes:\n      - name: data\n        persistentVolumeClaim:\n          claimName: {claim}\n"
    )
}

fn assert_run(run: &Run, code: i32, stdout: &[&str], stderr: &[&str]) {
    assert_eq!(
        (run.code, run.out(), run.err()),
        (code, stdout.to_vec(), stderr.to_vec()),
        "kubectl exit code, stdout and stderr"
    );
}

/// `kubectl apply` of a Namespace. (`kubectl create namespace` sends protobuf, which the
/// stand-in does not speak.)
async fn create_namespace(s: &Suite, ns: &str) {
    let file = format!("namespace-{ns}.yaml");
    s.file(
        &file,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
    );
    let r = s.kubectl(&["apply", "--validate=false", "-f", &file]).await;
    assert_run(&r, 0, &[&format!("namespace/{ns} created")], &[]);
}

/// A namespace and a claim in it, both created through kubectl.
async fn namespace_with_claim(s: &Suite, ns: &str, claim: &str, mode: &str) {
    create_namespace(s, ns).await;
    s.file(&format!("{claim}.yaml"), &pvc_yaml(claim, mode));
    let r = s
        .kubectl(&[
            "apply",
            "--validate=false",
            "-n",
            ns,
            "-f",
            &format!("{claim}.yaml"),
        ])
        .await;
    assert_run(
        &r,
        0,
        &[&format!("persistentvolumeclaim/{claim} created")],
        &[],
    );
    s.wait_claim_seen(ns, claim).await;
}

async fn apply(s: &Suite, ns: &str, file: &str) -> Run {
    s.kubectl(&["apply", "--validate=false", "-n", ns, "-f", file])
        .await
}

/// A MutatingWebhookConfiguration of the test's own: pods CREATE in namespaces labelled
/// `mutate=yes`, to the Service `mutator` in claimguard's namespace, with its own CA; and
/// one with the wrong CA (claimguard's) for namespaces labelled `wrong-ca=yes`.
fn mutator_configuration(ca_bundle: &str, wrong_ca_bundle: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "test-mutator"},
        "webhooks": [{
            "name": "label.test-mutator.example.com",
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                       "operations": ["CREATE"], "scope": "Namespaced"}],
            "clientConfig": {"service": {"name": "mutator", "namespace": SERVICE_NS,
                                         "path": "/mutate", "port": 443},
                             "caBundle": ca_bundle},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": 3,
            "failurePolicy": "Fail",
            "namespaceSelector": {"matchLabels": {"mutate": "yes"}}
        }, {
            "name": "wrong-ca.test-mutator.example.com",
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                       "operations": ["CREATE"], "scope": "Namespaced"}],
            "clientConfig": {"service": {"name": "mutator", "namespace": SERVICE_NS,
                                         "path": "/mutate", "port": 443},
                             "caBundle": wrong_ca_bundle},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": 3,
            "failurePolicy": "Fail",
            "namespaceSelector": {"matchLabels": {"wrong-ca": "yes"}}
        }]
    })
}

/// A mutating webhook over TLS (actix-web + rustls, a serving certificate of
/// `claimguard certs --service mutator`): allows every pod, adds the label `mutated-by: test-mutator`
/// with a base64 JSONPatch, and says so in a warning.
fn start_mutator(cert: &Path, key: &Path) -> SocketAddr {
    use actix_web::{web, App, HttpResponse, HttpServer};
    use base64::Engine as _;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("tls.crt")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("tls.key");
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("serving certificate");
    async fn mutate(review: web::Json<Value>) -> HttpResponse {
        let patch = json!([{"op": "add", "path": "/metadata/labels",
                            "value": {"mutated-by": "test-mutator"}}]);
        let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        HttpResponse::Ok().json(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": true,
                         "patchType": "JSONPatch", "patch": patch,
                         "warnings": ["[test-mutator] added the label mutated-by"]}
        }))
    }
    let server = HttpServer::new(|| App::new().route("/mutate", web::post().to(mutate)))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind_rustls_0_23(("127.0.0.1", 0), tls)
        .expect("bind the test mutator");
    let addr = server.addrs()[0];
    tokio::spawn(server.run());
    addr
}

// ---- scenarios (each in its own namespace) ----

/// A second pod on a ReadWriteOncePod claim: denied with the API server's wording.
async fn conflicting_pod_denied(s: &Suite) {
    s.note("A ReadWriteOncePod claim and a pod that uses it; a second pod is denied.");
    namespace_with_claim(s, "shop", "data", "ReadWriteOncePod").await;
    s.file("pod-a.yaml", &pod_yaml("pod-a", "data", Some("worker-1")));
    s.file("pod-b.yaml", &pod_yaml("pod-b", "data", None));
    assert_run(
        &apply(s, "shop", "pod-a.yaml").await,
        0,
        &["pod/pod-a created"],
        &[],
    );
    let r = apply(s, "shop", "pod-b.yaml").await;
    assert_run(
        &r,
        1,
        &[],
        &["Error from server (Forbidden): error when creating \"pod-b.yaml\": admission webhook \"pods.claimguard.io\" denied the request: [rwop-exclusive] PersistentVolumeClaim \"data\" is ReadWriteOncePod and already used by pod shop/pod-a on node worker-1; delete that pod first or use another claim"],
    );
    assert!(
        s.api.get(Kind::Pod, "shop", "pod-b").is_none(),
        "a denied pod is not stored"
    );
    // What the chain sent for pod-b: a CREATE as the API server sends it.
    let reviews = s.reviews("pods.claimguard.io", "shop", "pod-b");
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    let req = &reviews[0]["request"];
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(req["dryRun"], false);
    assert_eq!(req["oldObject"], Value::Null);
    assert_eq!(req["options"]["kind"], "CreateOptions");
    assert_eq!(req["options"]["fieldManager"], "kubectl-client-side-apply");
    assert_eq!(
        req["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert!(req.get("subResource").is_none());
    let meta = &req["object"]["metadata"];
    assert!(
        meta["uid"].as_str().is_some_and(|u| u.len() == 36),
        "uid set before validating admission: {meta}"
    );
    assert!(meta["creationTimestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(meta["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());
}

/// A second writer of a ReadWriteOnce claim: allowed, kubectl prints the warning.
async fn warning_printed(s: &Suite) {
    s.note("A ReadWriteOnce claim with a writer on worker-1; a second writer gets a warning.");
    namespace_with_claim(s, "web", "cache", "ReadWriteOnce").await;
    s.file("web-a.yaml", &pod_yaml("web-a", "cache", Some("worker-1")));
    s.file("web-b.yaml", &pod_yaml("web-b", "cache", None));
    assert_run(
        &apply(s, "web", "web-a.yaml").await,
        0,
        &["pod/web-a created"],
        &[],
    );
    let r = apply(s, "web", "web-b.yaml").await;
    assert_run(
        &r,
        0,
        &["pod/web-b created"],
        &["Warning: [rwo-shared-writer] PersistentVolumeClaim \"cache\" is ReadWriteOnce and written by pod web/web-a on node worker-1; this pod must share worker-1 and write too: mount it readOnly or annotate claimguard.io/allow-shared-writers"],
    );
    for line in r.err() {
        assert!(
            line.len() < 256 + "Warning: ".len(),
            "warning under 256 bytes: {line}"
        );
    }
    assert!(
        s.api.get(Kind::Pod, "web", "web-b").is_some(),
        "a warned pod is stored"
    );
}

/// `--dry-run=server`: judged, answered, stored nowhere, reserving nothing.
async fn server_dry_run(s: &Suite) {
    s.note("A server-side dry run is judged like the real thing and leaves nothing behind.");
    namespace_with_claim(s, "dry", "db", "ReadWriteOncePod").await;
    s.file("db-0.yaml", &pod_yaml("db-0", "db", Some("worker-2")));
    s.file("db-1.yaml", &pod_yaml("db-1", "db", Some("worker-2")));
    let r = s
        .kubectl(&[
            "apply",
            "--validate=false",
            "--dry-run=server",
            "-n",
            "dry",
            "-f",
            "db-0.yaml",
        ])
        .await;
    assert_run(&r, 0, &["pod/db-0 created (server dry run)"], &[]);
    let reviews = s.reviews("pods.claimguard.io", "dry", "db-0");
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["request"]["dryRun"], true);
    assert_eq!(reviews[0]["request"]["options"]["dryRun"], json!(["All"]));
    let r = s
        .kubectl(&["get", "pod", "db-0", "-n", "dry", "-o", "name"])
        .await;
    assert_run(
        &r,
        1,
        &[],
        &["Error from server (NotFound): pods \"db-0\" not found"],
    );
    // The dry run reserved nothing: the real pod is allowed, and then holds the claim.
    assert_run(
        &apply(s, "dry", "db-0.yaml").await,
        0,
        &["pod/db-0 created"],
        &[],
    );
    let r = s
        .kubectl(&[
            "apply",
            "--validate=false",
            "--dry-run=server",
            "-n",
            "dry",
            "-f",
            "db-1.yaml",
        ])
        .await;
    assert_run(
        &r,
        1,
        &[],
        &["Error from server (Forbidden): error when creating \"db-1.yaml\": admission webhook \"pods.claimguard.io\" denied the request: [rwop-exclusive] PersistentVolumeClaim \"db\" is ReadWriteOncePod and already used by pod dry/db-0 on node worker-2; delete that pod first or use another claim"],
    );
}

/// Deployments: replicas > 1 on an RWOP claim denied at CREATE and at UPDATE (apply's
/// strategic merge PATCH, with oldObject).
async fn deployment_replicas_denied(s: &Suite) {
    s.note("A Deployment that would run three pods on one ReadWriteOncePod claim is denied.");
    namespace_with_claim(s, "apps", "state", "ReadWriteOncePod").await;
    s.file("app.yaml", &deployment_yaml("app", "state", 3, "Recreate"));
    let r = apply(s, "apps", "app.yaml").await;
    assert_run(
        &r,
        1,
        &[],
        &["Error from server (Forbidden): error when creating \"app.yaml\": admission webhook \"workloads.claimguard.io\" denied the request: [workload-rwop-replicas] Deployment \"app\" runs 3 replicas but PersistentVolumeClaim \"state\" is ReadWriteOncePod: only one pod can ever use it and the rest stay Pending; set replicas: 1, or use a StatefulSet with volumeClaimTemplates"],
    );
    assert!(s
        .standin
        .get("apps", "deployments", "apps", "app")
        .is_none());

    s.note("One replica with strategy Recreate is fine; scaling it up by `kubectl apply` is not.");
    s.file("app.yaml", &deployment_yaml("app", "state", 1, "Recreate"));
    assert_run(
        &apply(s, "apps", "app.yaml").await,
        0,
        &["deployment.apps/app created"],
        &[],
    );
    s.file("app.yaml", &deployment_yaml("app", "state", 2, "Recreate"));
    s.standin.chain().clear_calls();
    let r = apply(s, "apps", "app.yaml").await;
    // kubectl's own wording for a failed patch: the patch, the target, then the error.
    let err = r.err();
    assert_eq!((r.code, r.out().len(), err.len()), (1, 0, 6), "{r:?}");
    assert_eq!(
        err[0],
        "Error from server (Forbidden): error when applying patch:"
    );
    assert!(
        err[1].ends_with(r#""spec":{"replicas":2}}"#),
        "the patch: {}",
        err[1]
    );
    assert_eq!(err[2], "to:");
    assert_eq!(
        err[3],
        "Resource: \"apps/v1, Resource=deployments\", GroupVersionKind: \"apps/v1, Kind=Deployment\""
    );
    assert_eq!(err[4], "Name: \"app\", Namespace: \"apps\"",);
    assert_eq!(
        err[5],
        "for: \"app.yaml\": error when patching \"app.yaml\": admission webhook \"workloads.claimguard.io\" denied the request: [workload-rwop-replicas] Deployment \"app\" runs 2 replicas but PersistentVolumeClaim \"state\" is ReadWriteOncePod: only one pod can ever use it and the rest stay Pending; set replicas: 1, or use a StatefulSet with volumeClaimTemplates"
    );
    let reviews = s.reviews("workloads.claimguard.io", "apps", "app");
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    let req = &reviews[0]["request"];
    assert_eq!(req["operation"], "UPDATE");
    assert_eq!(req["options"]["kind"], "UpdateOptions");
    assert_eq!(req["oldObject"]["spec"]["replicas"], 1);
    assert_eq!(req["object"]["spec"]["replicas"], 2);
    let stored = s
        .standin
        .get("apps", "deployments", "apps", "app")
        .expect("stored");
    assert_eq!(
        stored["spec"]["replicas"], 1,
        "the denied patch changed nothing"
    );

    s.note("kubectl patch takes the same road.");
    let r = s
        .kubectl(&[
            "patch",
            "deployment",
            "app",
            "-n",
            "apps",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
        ])
        .await;
    assert_run(
        &r,
        1,
        &[],
        &["Error from server (Forbidden): admission webhook \"workloads.claimguard.io\" denied the request: [workload-rwop-replicas] Deployment \"app\" runs 2 replicas but PersistentVolumeClaim \"state\" is ReadWriteOncePod: only one pod can ever use it and the rest stay Pending; set replicas: 1, or use a StatefulSet with volumeClaimTemplates"],
    );
    let r = s
        .kubectl(&[
            "patch",
            "deployment",
            "app",
            "-n",
            "apps",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/template/metadata/annotations/x","value":"y"}]"#,
        ])
        .await;
    assert_eq!(
        r.code, 1,
        "a JSON Patch to a missing path is refused: {r:?}"
    );
    let r = s
        .kubectl(&[
            "patch",
            "deployment",
            "app",
            "-n",
            "apps",
            "--type=merge",
            "-p",
            r#"{"spec":{"template":{"metadata":{"labels":{"tier":"db"}}}}}"#,
        ])
        .await;
    assert_run(&r, 0, &["deployment.apps/app patched"], &[]);
    let stored = s
        .standin
        .get("apps", "deployments", "apps", "app")
        .expect("stored");
    assert_eq!(
        stored["spec"]["template"]["metadata"]["labels"]["tier"],
        "db"
    );
    assert_eq!(
        stored["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );
}

/// `kubectl label namespace … claimguard.io/mode=audit`: the next conflict is allowed
/// with a warning that says it was not enforced.
async fn audit_mode_namespace(s: &Suite) {
    s.note("Audit mode for one namespace: the same conflict is allowed, with a warning.");
    namespace_with_claim(s, "legacy", "files", "ReadWriteOncePod").await;
    s.file("old-0.yaml", &pod_yaml("old-0", "files", Some("worker-1")));
    s.file("old-1.yaml", &pod_yaml("old-1", "files", Some("worker-3")));
    assert_run(
        &apply(s, "legacy", "old-0.yaml").await,
        0,
        &["pod/old-0 created"],
        &[],
    );
    let r = s
        .kubectl(&["label", "namespace", "legacy", "claimguard.io/mode=audit"])
        .await;
    assert_run(&r, 0, &["namespace/legacy labeled"], &[]);
    s.wait_allowed("legacy", "files").await;
    let r = apply(s, "legacy", "old-1.yaml").await;
    assert_run(
        &r,
        0,
        &["pod/old-1 created"],
        &["Warning: [rwop-exclusive] not enforced (audit mode): PersistentVolumeClaim \"files\" is ReadWriteOncePod and already used by pod legacy/old-0 on node worker-1; delete that pod first or use another claim"],
    );
    assert!(r.err()[0].len() < 256 + "Warning: ".len());
    assert!(s.api.get(Kind::Pod, "legacy", "old-1").is_some());
}

/// `claimguard.io/mode=off`: the namespaceSelector keeps the request from the webhook.
async fn mode_off_namespace_not_sent(s: &Suite) {
    s.note("A namespace labelled claimguard.io/mode=off (or kube-system) is not sent to claimguard at all.");
    s.file(
        "scratch.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scratch\n  labels:\n    claimguard.io/mode: \"off\"\n",
    );
    let r = s
        .kubectl(&["apply", "--validate=false", "-f", "scratch.yaml"])
        .await;
    assert_run(&r, 0, &["namespace/scratch created"], &[]);
    s.file("tmp.yaml", &pvc_yaml("tmp", "ReadWriteOncePod"));
    s.file("tmp-a.yaml", &pod_yaml("tmp-a", "tmp", Some("worker-1")));
    s.file("tmp-b.yaml", &pod_yaml("tmp-b", "tmp", Some("worker-2")));
    for (f, out) in [
        ("tmp.yaml", "persistentvolumeclaim/tmp created"),
        ("tmp-a.yaml", "pod/tmp-a created"),
        ("tmp-b.yaml", "pod/tmp-b created"),
    ] {
        assert_run(&apply(s, "scratch", f).await, 0, &[out], &[]);
    }
    let sent = s
        .standin
        .chain()
        .calls()
        .into_iter()
        .filter(|c| !c.mutating && c.review["request"]["namespace"] == "scratch")
        .count();
    s.file(
        "system.yaml",
        &pod_yaml("system-0", "tmp", Some("worker-1")),
    );
    assert_run(
        &apply(s, "kube-system", "system.yaml").await,
        0,
        &["pod/system-0 created"],
        &[],
    );
    let system = s
        .standin
        .chain()
        .calls()
        .into_iter()
        .filter(|c| !c.mutating && c.review["request"]["namespace"] == "kube-system")
        .count();
    assert_eq!(system, 0, "kube-system is excluded by name");
    assert_eq!(
        sent, 0,
        "nothing in a mode=off namespace reaches claimguard"
    );
}

/// `kubectl delete`: the claim is free again once claimguard's watch sees the deletion.
async fn delete_frees_the_claim(s: &Suite) {
    s.note("Deleting the holder frees the claim.");
    let r = s
        .kubectl(&["delete", "pod", "pod-a", "-n", "shop", "--wait=false"])
        .await;
    assert_run(&r, 0, &["pod \"pod-a\" deleted"], &[]);
    s.wait_allowed("shop", "data").await;
    assert_run(
        &apply(s, "shop", "pod-b.yaml").await,
        0,
        &["pod/pod-b created"],
        &[],
    );
}

/// A mutating webhook runs first; its JSONPatch is in the object the validating
/// webhooks see and in the stored object.
async fn mutating_before_validating(s: &Suite) {
    s.note("A mutating webhook (the test's own) runs before claimguard's validating one.");
    s.file(
        "namespace-mutated.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mutated\n  labels:\n    mutate: \"yes\"\n",
    );
    let r = s
        .kubectl(&["apply", "--validate=false", "-f", "namespace-mutated.yaml"])
        .await;
    assert_run(&r, 0, &["namespace/mutated created"], &[]);
    s.file("m-0.yaml", &pod_yaml("m-0", "nowhere", None));
    let r = apply(s, "mutated", "m-0.yaml").await;
    assert_run(
        &r,
        0,
        &["pod/m-0 created"],
        &[
            "Warning: [test-mutator] added the label mutated-by",
            "Warning: [claim-not-found] PersistentVolumeClaim \"nowhere\" does not exist in namespace mutated; the pod will stay Pending until it is created: check the claimName or create the claim first",
        ],
    );
    let calls: Vec<_> = s
        .standin
        .chain()
        .calls()
        .into_iter()
        .filter(|c| c.review["request"]["namespace"] == "mutated")
        .collect();
    let names: Vec<&str> = calls.iter().map(|c| c.webhook.as_str()).collect();
    // The co-location overlay's webhook for namespaces without the opt-in
    // label is mutating too: it runs first (by name) and changes nothing here.
    assert_eq!(
        names,
        [
            "colocate-pods.claimguard.io",
            "label.test-mutator.example.com",
            "pods.claimguard.io"
        ]
    );
    for mutating in &calls[..2] {
        assert!(
            mutating.review["request"]["object"]["metadata"]["uid"].is_null(),
            "uid comes after mutating admission"
        );
    }
    let validated = &calls[2].review["request"]["object"]["metadata"];
    assert_eq!(
        validated["labels"]["mutated-by"], "test-mutator",
        "claimguard sees the patched pod"
    );
    assert!(validated["uid"].is_string());
    let stored = s.api.get(Kind::Pod, "mutated", "m-0").expect("stored");
    assert_eq!(stored["metadata"]["labels"]["mutated-by"], "test-mutator");

    s.note("The caBundle is checked: a webhook whose caBundle holds another CA cannot be called.");
    s.file(
        "namespace-wrong-ca.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: wrong-ca\n  labels:\n    wrong-ca: \"yes\"\n",
    );
    let r = s
        .kubectl(&["apply", "--validate=false", "-f", "namespace-wrong-ca.yaml"])
        .await;
    assert_run(&r, 0, &["namespace/wrong-ca created"], &[]);
    let r = apply(s, "wrong-ca", "m-0.yaml").await;
    let err = r.err();
    assert_eq!((r.code, r.out().len(), err.len()), (1, 0, 1), "{r:?}");
    // rustls' reason (UnknownIssuer, BadSignature when the CAs share a name) follows.
    assert!(
        err[0].starts_with("Error from server (InternalError): error when creating \"m-0.yaml\": Internal error occurred: failed calling webhook \"wrong-ca.test-mutator.example.com\": failed to call webhook: Post \"https://mutator.claimguard-system.svc:443/mutate?timeout=3s\": tls: failed to verify certificate: invalid peer certificate: "),
        "{}",
        err[0]
    );
    assert!(s.api.get(Kind::Pod, "wrong-ca", "m-0").is_none());
}

/// `kubectl scale` from 1 to 3 on an RWOP claim: denied through `deployments/scale`.
async fn scale_denied(s: &Suite) {
    s.note("kubectl scale goes through the deployments/scale subresource.");
    namespace_with_claim(s, "scaling", "journal", "ReadWriteOncePod").await;
    s.file(
        "writer.yaml",
        &deployment_yaml("writer", "journal", 1, "Recreate"),
    );
    assert_run(
        &apply(s, "scaling", "writer.yaml").await,
        0,
        &["deployment.apps/writer created"],
        &[],
    );
    let r = s
        .kubectl(&[
            "scale",
            "deployment/writer",
            "--replicas=3",
            "-n",
            "scaling",
        ])
        .await;
    assert_eq!(r.code, 1, "{r:?}");
    let err = r.err();
    assert_eq!(err.len(), 1, "{r:?}");
    assert!(
        err[0].starts_with("Error from server (Forbidden): admission webhook \"workloads.claimguard.io\" denied the request: [workload-rwop-replicas] ")
            || err[0].contains("denied the request: [workload-rwop-replicas] "),
        "{}",
        err[0]
    );
    let reviews = s.reviews("workloads.claimguard.io", "scaling", "writer");
    let scale = reviews
        .iter()
        .find(|r| r["request"]["subResource"] == "scale")
        .expect("a review for deployments/scale");
    assert_eq!(
        scale["request"]["kind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert_eq!(scale["request"]["oldObject"]["spec"]["replicas"], 1);
    assert_eq!(scale["request"]["object"]["spec"]["replicas"], 3);
    let stored = s
        .standin
        .get("apps", "deployments", "scaling", "writer")
        .expect("stored");
    assert_eq!(
        stored["spec"]["replicas"], 1,
        "the denied scale changed nothing"
    );
}

/// With `deployments/scale` in the rules, `kubectl scale` reaches claimguard as the API
/// server sends it: an UPDATE of an autoscaling/v1 Scale on apps/v1 deployments, subresource
/// scale, old and new replica counts. (A ReadWriteMany claim: allowed with or without
/// scale judging.)
async fn scale_review_shape(s: &Suite) {
    namespace_with_claim(s, "shared", "media", "ReadWriteMany").await;
    s.file(
        "media.yaml",
        &deployment_yaml("media", "media", 1, "RollingUpdate"),
    );
    assert_run(
        &apply(s, "shared", "media.yaml").await,
        0,
        &["deployment.apps/media created"],
        &[],
    );
    let r = s
        .kubectl(&["scale", "deployment/media", "--replicas=3", "-n", "shared"])
        .await;
    assert_run(&r, 0, &["deployment.apps/media scaled"], &[]);
    let reviews = s.reviews("workloads.claimguard.io", "shared", "media");
    let review = reviews
        .iter()
        .find(|r| r["request"]["subResource"] == "scale")
        .expect("a review for deployments/scale");
    let req = &review["request"];
    assert_eq!(req["operation"], "UPDATE");
    assert_eq!(
        req["kind"],
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    );
    assert_eq!(
        req["resource"],
        json!({"group": "apps", "version": "v1", "resource": "deployments"})
    );
    assert_eq!(req["requestSubResource"], "scale");
    assert_eq!(req["oldObject"]["spec"]["replicas"], 1);
    assert_eq!(req["object"]["spec"]["replicas"], 3);
    assert_eq!(req["object"]["status"]["selector"], "app=media");
    let stored = s
        .standin
        .get("apps", "deployments", "shared", "media")
        .expect("stored");
    assert_eq!(stored["spec"]["replicas"], 3);
    assert!(
        s.standin
            .requests()
            .iter()
            .any(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/shared/deployments/media/scale")),
        "kubectl scale patches the scale subresource"
    );
}

/// claimguard unreachable, every webhook patched to `failurePolicy: Ignore` (how to fail
/// open, docs/operations.md): the pod that uses a claim is created unchecked.
async fn down_ignore(s: &Suite) {
    s.note("claimguard is down; with failurePolicy: Ignore the pod is admitted unchecked.");
    create_namespace(s, "outage").await;
    s.file("lonely.yaml", &pod_yaml("lonely", "data", None));
    let r = apply(s, "outage", "lonely.yaml").await;
    assert_run(&r, 0, &["pod/lonely created"], &[]);
    let calls: Vec<_> = (s.standin.chain().calls().into_iter())
        .filter(|c| c.webhook == "pods.claimguard.io")
        .collect();
    assert_eq!(calls.len(), 1, "the webhook was called: {calls:?}");
    let err = calls[0].answer.as_ref().expect_err("the call failed");
    assert!(err.ends_with("connect: connection refused"), "{err}");
    assert!(s.api.get(Kind::Pod, "outage", "lonely").is_some());
}

/// claimguard unreachable, `failurePolicy: Fail`: the API server's error.
async fn down_fail(s: &Suite) {
    s.note("claimguard is down; with failurePolicy: Fail the API server refuses the pod.");
    create_namespace(s, "outage").await;
    s.file("lonely.yaml", &pod_yaml("lonely", "data", None));
    let r = apply(s, "outage", "lonely.yaml").await;
    assert_run(
        &r,
        1,
        &[],
        &["Error from server (InternalError): error when creating \"lonely.yaml\": Internal error occurred: failed calling webhook \"pods.claimguard.io\": failed to call webhook: Post \"https://claimguard.claimguard-system.svc:443/validate?timeout=3s\": dial tcp 127.0.0.1:PORT: connect: connection refused"],
    );
    assert!(s.api.get(Kind::Pod, "outage", "lonely").is_none());
}

/// claimguard unreachable, the shipped configuration (pods webhook `Fail`, every webhook
/// narrowed by matchConditions): pods and workloads without claims are created as
/// usual and never reach the webhook; a pod that names a claim gets the API server's
/// `failed calling webhook` error; a Deployment that uses a claim is admitted (its
/// webhook fails open) and its pods would wait.
async fn down_default(s: &Suite) {
    s.note("claimguard is down; the shipped failure policy: only pods that use a claim wait.");
    create_namespace(s, "outage").await;
    s.file(
        "plain.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\nspec:\n  containers:\n  - name: app\n    image: registry.example.com/app:1.2.3\n    volumeMounts:\n    - name: scratch\n      mountPath: /tmp\n  volumes:\n  - name: scratch\n    emptyDir: {}\n",
    );
    assert_run(
        &apply(s, "outage", "plain.yaml").await,
        0,
        &["pod/plain created"],
        &[],
    );
    s.file(
        "web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/app:1.2.3\n",
    );
    assert_run(
        &apply(s, "outage", "web.yaml").await,
        0,
        &["deployment.apps/web created"],
        &[],
    );
    s.file("scratch.yaml", &pvc_yaml("scratch", "ReadWriteOnce"));
    assert_run(
        &apply(s, "outage", "scratch.yaml").await,
        0,
        &["persistentvolumeclaim/scratch created"],
        &[],
    );
    assert!(
        s.standin.chain().calls().is_empty(),
        "nothing without a claim (nor a plain ReadWriteOnce claim) was sent to claimguard: {:?}",
        s.standin.chain().calls()
    );
    s.file("lonely.yaml", &pod_yaml("lonely", "data", None));
    let r = apply(s, "outage", "lonely.yaml").await;
    assert_run(
        &r,
        1,
        &[],
        &["Error from server (InternalError): error when creating \"lonely.yaml\": Internal error occurred: failed calling webhook \"pods.claimguard.io\": failed to call webhook: Post \"https://claimguard.claimguard-system.svc:443/validate?timeout=3s\": dial tcp 127.0.0.1:PORT: connect: connection refused"],
    );
    assert!(s.api.get(Kind::Pod, "outage", "lonely").is_none());
    // The workloads webhook fails open: a Deployment on a claim is admitted unchecked.
    s.file("db.yaml", &deployment_yaml("db", "data", 1, "Recreate"));
    assert_run(
        &apply(s, "outage", "db.yaml").await,
        0,
        &["deployment.apps/db created"],
        &[],
    );
    let called: Vec<String> = s
        .standin
        .chain()
        .calls()
        .into_iter()
        .map(|c| {
            format!(
                "{} {}",
                c.webhook,
                c.review["request"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        called,
        [
            // The co-location overlay's mutating webhook (fails open), then the validating one.
            "colocate-pods.claimguard.io lonely",
            "pods.claimguard.io lonely",
            "workloads.claimguard.io db"
        ],
        "only the requests that name a claim reached the webhooks"
    );
    assert!(s.api.get(Kind::Pod, "outage", "plain").is_some());
}

/// claimguard accepts connections but never answers: the API server gives up after the
/// webhook's timeoutSeconds (3 s in the manifests) and, with `Fail`, refuses the pod.
async fn stalled_fail(s: &Suite) {
    s.note("claimguard hangs; after timeoutSeconds (3 s) failurePolicy: Fail refuses the pod.");
    create_namespace(s, "outage").await;
    s.file("lonely.yaml", &pod_yaml("lonely", "data", None));
    let t = Instant::now();
    let r = apply(s, "outage", "lonely.yaml").await;
    let took = t.elapsed();
    assert_run(
        &r,
        1,
        &[],
        &["Error from server (InternalError): error when creating \"lonely.yaml\": Internal error occurred: failed calling webhook \"pods.claimguard.io\": failed to call webhook: Post \"https://claimguard.claimguard-system.svc:443/validate?timeout=3s\": context deadline exceeded"],
    );
    assert!(
        took >= Duration::from_millis(2900),
        "waited the webhook's 3 s: {took:?}"
    );
    assert!(s.api.get(Kind::Pod, "outage", "lonely").is_none());
}

/// Co-location (the `manifests/colocate` overlay's mutating webhook): in a
/// namespace labelled `claimguard.io/colocate=true`, a second user of a
/// ReadWriteOnce claim comes back from `kubectl apply` pinned to the holder's node.
async fn colocated_pod_is_pinned(s: &Suite) {
    s.note("Co-location: a second user of a ReadWriteOnce claim in an opted-in namespace is pinned to the claim's node.");
    namespace_with_claim(s, "backup", "vault", "ReadWriteOnce").await;
    let r = s
        .kubectl(&[
            "label",
            "namespace",
            "backup",
            "claimguard.io/colocate=true",
        ])
        .await;
    assert_run(&r, 0, &["namespace/backup labeled"], &[]);
    s.file(
        "vault-0.yaml",
        &pod_yaml("vault-0", "vault", Some("worker-2")),
    );
    assert_run(
        &apply(s, "backup", "vault-0.yaml").await,
        0,
        &["pod/vault-0 created"],
        &[],
    );
    s.file("backup-job.yaml", &pod_yaml("backup-job", "vault", None));
    // claimguard learns the label and the holder from its watch: a server-side
    // dry run is patched the same way once it has.
    let t = Instant::now();
    loop {
        let r = s
            .kubectl(&[
                "apply",
                "--validate=false",
                "--dry-run=server",
                "-n",
                "backup",
                "-f",
                "backup-job.yaml",
            ])
            .await;
        if r.err()
            .iter()
            .any(|l| l.starts_with("Warning: [colocate] "))
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never pinned: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = apply(s, "backup", "backup-job.yaml").await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.out(), vec!["pod/backup-job created"]);
    assert!(
        r.err()
            .iter()
            .any(|l| l.starts_with("Warning: [colocate] pinned to node worker-2")),
        "{r:?}"
    );
    // What the API server stored is the patched pod, and so does kubectl get.
    let r = s
        .kubectl(&[
            "get",
            "pod",
            "backup-job",
            "-n",
            "backup",
            "-o",
            "jsonpath={.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0]}",
        ])
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    let pin: Value = serde_json::from_str(&r.out().join("")).expect("jsonpath prints the term");
    assert_eq!(
        pin,
        json!({"key": "metadata.name", "operator": "In", "values": ["worker-2"]})
    );
}

async fn main_suite(s: &Suite) {
    conflicting_pod_denied(s).await;
    warning_printed(s).await;
    server_dry_run(s).await;
    deployment_replicas_denied(s).await;
    audit_mode_namespace(s).await;
    mode_off_namespace_not_sent(s).await;
    delete_frees_the_claim(s).await;
    mutating_before_validating(s).await;
    colocated_pod_is_pinned(s).await;
    let requests = s.standin.requests();
    for kind in ["pods", "persistentvolumeclaims", "namespaces"] {
        assert!(
            requests
                .iter()
                .any(|r| r.starts_with(&format!("GET /api/v1/{kind}?")) && r.contains("watch=true")),
            "claimguard watches {kind} through the stand-in"
        );
    }
}

fn with_claimguard() -> Options {
    Options {
        source: Source::Manifests,
        backend: Backend::Claimguard,
        failure_policy: None,
        scale_rule: false,
        mutator: true,
    }
}

/// One claimguard for the scenarios, run in order in their own namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_through_the_admission_chain() {
    if !have_kubectl() {
        return;
    }
    let s = Suite::start(with_claimguard()).await;
    main_suite(&s).await;
}

/// The same scenarios with the admission chain, certificate and policy of the Helm chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_through_the_chart_admission_chain() {
    if !have_kubectl() || !have_helm() {
        return;
    }
    let s = Suite::start(Options {
        source: Source::Chart,
        ..with_claimguard()
    })
    .await;
    main_suite(&s).await;
    // claimguard served the chart's certificate and the chain trusted the chart's CA.
    assert!(s
        .standin
        .chain()
        .calls()
        .iter()
        .any(|c| c.webhook == "pods.claimguard.io" && c.answer.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_is_judged() {
    if !have_kubectl() {
        return;
    }
    let s = Suite::start(with_claimguard()).await;
    scale_denied(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_reaches_the_webhook_through_its_scale_rule() {
    if !have_kubectl() {
        return;
    }
    let s = Suite::start(Options {
        scale_rule: true,
        ..with_claimguard()
    })
    .await;
    scale_review_shape(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimguard_down_with_the_shipped_failure_policy() {
    if !have_kubectl() {
        return;
    }
    let s = Suite::start(Options {
        source: Source::Manifests,
        backend: Backend::Down,
        failure_policy: None,
        scale_rule: false,
        mutator: false,
    })
    .await;
    down_default(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimguard_down_with_failure_policy_ignore() {
    if !have_kubectl() {
        return;
    }
    let s = Suite::start(Options {
        source: Source::Manifests,
        backend: Backend::Down,
        failure_policy: Some("Ignore"),
        scale_rule: false,
        mutator: false,
    })
    .await;
    down_ignore(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimguard_down_with_failure_policy_fail() {
    if !have_kubectl() {
        return;
    }
    let s = Suite::start(Options {
        source: Source::Manifests,
        backend: Backend::Down,
        failure_policy: Some("Fail"),
        scale_rule: false,
        mutator: false,
    })
    .await;
    down_fail(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimguard_stalled_past_timeout_seconds_with_failure_policy_fail() {
    if !have_kubectl() {
        return;
    }
    let s = Suite::start(Options {
        source: Source::Manifests,
        backend: Backend::Stalled,
        failure_policy: Some("Fail"),
        scale_rule: false,
        mutator: false,
    })
    .await;
    stalled_fail(&s).await;
}

/// Rewrites the transcript (docs/kubectl.md by default) from a run of every scenario.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/kubectl.md; run with CLAIMGUARD_KUBECTL_TRANSCRIPT=docs/kubectl.md"]
async fn write_transcript() {
    assert!(have_kubectl(), "the transcript needs kubectl");
    let Some(path) = std::env::var_os("CLAIMGUARD_KUBECTL_TRANSCRIPT") else {
        panic!("set CLAIMGUARD_KUBECTL_TRANSCRIPT to the file to write (docs/kubectl.md)");
    };
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let s = Suite::start(with_claimguard()).await;
    main_suite(&s).await;
    sections.push(("claimguard running".into(), s.take_transcript()));
    if std::env::var_os("CLAIMGUARD_TRANSCRIPT_SCALE").is_some() {
        scale_denied(&s).await;
        sections.push(("kubectl scale".into(), s.take_transcript()));
    }
    drop(s);
    let s = Suite::start(Options {
        source: Source::Manifests,
        backend: Backend::Down,
        failure_policy: None,
        scale_rule: false,
        mutator: false,
    })
    .await;
    down_default(&s).await;
    sections.push((
        "claimguard down, the shipped failure policy".into(),
        s.take_transcript(),
    ));
    drop(s);
    let s = Suite::start(Options {
        source: Source::Manifests,
        backend: Backend::Down,
        failure_policy: Some("Ignore"),
        scale_rule: false,
        mutator: false,
    })
    .await;
    down_ignore(&s).await;
    sections.push((
        "claimguard down, failurePolicy: Ignore".into(),
        s.take_transcript(),
    ));
    drop(s);
    let s = Suite::start(Options {
        source: Source::Manifests,
        backend: Backend::Down,
        failure_policy: Some("Fail"),
        scale_rule: false,
        mutator: false,
    })
    .await;
    down_fail(&s).await;
    sections.push((
        "claimguard down, failurePolicy: Fail".into(),
        s.take_transcript(),
    ));
    drop(s);
    let s = Suite::start(Options {
        source: Source::Manifests,
        backend: Backend::Stalled,
        failure_policy: Some("Fail"),
        scale_rule: false,
        mutator: false,
    })
    .await;
    stalled_fail(&s).await;
    sections.push((
        "claimguard hangs past timeoutSeconds, failurePolicy: Fail".into(),
        s.take_transcript(),
    ));

    let mut md = String::from(TRANSCRIPT_HEAD);
    for (title, lines) in sections {
        md.push_str(&format!("\n## {title}\n\n```console\n"));
        for l in lines {
            md.push_str(&l);
            md.push('\n');
        }
        md.push_str("```\n");
    }
    std::fs::write(repo().join(path), md).expect("write the transcript");
}

/// The README's first console block is taken from the transcript, line for line,
/// without the `--validate=false` that only the stand-in needs (it serves no OpenAPI).
#[test]
fn readme_console_block_is_from_the_transcript() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let transcript =
        std::fs::read_to_string(repo().join("docs/kubectl.md")).expect("docs/kubectl.md");
    let block = readme
        .split("```console\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("README.md has a console block");
    let transcript = transcript.replace(" --validate=false", "");
    let lines: Vec<&str> = transcript.lines().collect();
    let mut at = 0;
    for l in block.lines() {
        match lines[at..].iter().position(|t| *t == l) {
            Some(i) => at += i + 1,
            None => panic!("README console line not in docs/kubectl.md (in order): {l}"),
        }
    }
}

const TRANSCRIPT_HEAD: &str = "# kubectl with claimguard: a transcript

What `kubectl` (v1.32) prints when it talks to an API server whose admission chain
is built from `kubectl kustomize manifests/` and calls `claimguard serve` over TLS.
Generated by the test suite, not written by hand:

    CLAIMGUARD_KUBECTL_TRANSCRIPT=docs/kubectl.md cargo test --test kubectl -- --ignored write_transcript

The API server is a stand-in (`tests/support/kube_standin/`): it serves discovery,
create, get, patch, delete and scale, runs every webhook of the rendered
ValidatingWebhookConfiguration (and any MutatingWebhookConfiguration of an overlay)
whose rules, namespaceSelector and matchConditions (CEL) match, and answers as the API server does: a 403
Status `admission webhook \"<name>\" denied the request: <message>`, and each warning
as a `Warning: 299 - \"<text>\"` header, which kubectl prints as `Warning: <text>`.
claimguard watches the pods, claims and namespaces that kubectl creates, as in a
cluster. Lines starting with `#` are comments; `127.0.0.1:PORT` stands for the
Service's endpoint. `--validate=false` is there because the stand-in serves no
OpenAPI document. \"Down\" is an endpoint whose port is closed; in a cluster where
no replica is ready the API server says `no endpoints available for service
\"claimguard\"` instead, with the same outcome.
";
