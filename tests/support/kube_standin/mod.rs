//! An API-server stand-in that the real `kubectl` can drive: legacy discovery, create,
//! get, list, replace, patch (JSON, merge and a simplified strategic merge), delete and
//! the `scale` subresource for pods, claims, volumes, namespaces, storage classes and
//! workloads, with `dryRun=All`; every write goes through the admission [`chain`] built
//! from the rendered webhook configurations.
//!
//! Webhooks are matched by rules, selectors and `matchConditions` (CEL, [`chain`]).
//!
//! Pods, claims, volumes, storage classes and namespaces are stored in a
//! [`FakeApiServer`]; reads of them (get, list, watch) and every path the stand-in does
//! not model (leases, events, nodes, ...) are forwarded to it, so claimguard pointed at
//! the stand-in watches what kubectl wrote, as in a cluster. Workloads are kept here
//! (get and list, no watch).
//!
//! Not modelled: authentication, server-side apply, OpenAPI (`kubectl --validate=false`),
//! Table output, watches of workloads, field/label selectors on workload lists, finalizers and
//! graceful deletion (a delete removes at once), controllers (a Deployment makes no
//! pods), `resourceVersion` preconditions on PATCH, protobuf bodies (415: `kubectl create
//! namespace` sends protobuf; use `kubectl apply` of a Namespace).
//!
//! Use it from a test file as `tests/kubectl.rs` does (`mod support;` and
//! `#[path = "support/kube_standin/mod.rs"] mod kube_standin;`); it is kept out of
//! `support/mod.rs` so the other test binaries do not compile it.

pub mod chain;
pub mod discovery;
pub mod merge;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::support::fake_apiserver::FakeApiServer;
use chain::{labels_of, Attributes, Chain, Outcome};
use discovery::Resource;

/// A running stand-in. Dropping it stops the server (the fake API server lives on as
/// long as someone holds it).
pub struct StandIn {
    addr: SocketAddr,
    state: Arc<State>,
    handle: ServerHandle,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(stop);
        }
    }
}

struct Local {
    rv: u64,
    uid_seq: u64,
    objects: BTreeMap<(&'static str, String, String), Value>,
}

struct State {
    api: Arc<FakeApiServer>,
    chain: Arc<Chain>,
    local: Mutex<Local>,
    requests: Mutex<Vec<String>>,
    server: Mutex<String>,
    /// HTTP client to the fake API server.
    backend: reqwest::Client,
}

impl StandIn {
    /// Start on 127.0.0.1:0 (inside a tokio runtime).
    pub async fn start(api: Arc<FakeApiServer>, chain: Arc<Chain>) -> StandIn {
        let state = Arc::new(State {
            api,
            chain,
            local: Mutex::new(Local {
                rv: 5000,
                uid_seq: 0,
                objects: BTreeMap::new(),
            }),
            requests: Mutex::new(Vec::new()),
            server: Mutex::new(String::new()),
            backend: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        });
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(8 << 20))
                .default_service(web::to(handle))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", 0))
        .expect("bind the API-server stand-in on 127.0.0.1:0");
        let addr = server.addrs()[0];
        *state.server.lock().unwrap() = addr.to_string();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        StandIn {
            addr,
            state,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn chain(&self) -> &Chain {
        &self.state.chain
    }

    /// `METHOD path?query content-type` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    /// A stored object (with kind and apiVersion), e.g. `get("apps", "deployments", ..)`.
    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = discovery::find(group, "v1", plural).expect("a served resource");
        self.state.get(r, namespace, name)
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl State {
    fn get(&self, r: &Resource, ns: &str, name: &str) -> Option<Value> {
        let ns = if r.namespaced { ns } else { "" };
        let mut v = match r.fake {
            Some(kind) => self.api.get(kind, ns, name)?,
            None => self
                .local
                .lock()
                .unwrap()
                .objects
                .get(&(r.plural, ns.to_string(), name.to_string()))?
                .clone(),
        };
        set_type(r, &mut v);
        Some(v)
    }

    fn list(&self, r: &Resource, ns: &str) -> (Vec<Value>, String) {
        let mut items: Vec<Value> = match r.fake {
            Some(kind) => self.api.objects(kind),
            None => self
                .local
                .lock()
                .unwrap()
                .objects
                .iter()
                .filter(|((p, _, _), _)| *p == r.plural)
                .map(|(_, v)| v.clone())
                .collect(),
        };
        if !ns.is_empty() {
            items.retain(|o| o["metadata"]["namespace"] == ns);
        }
        for i in &mut items {
            set_type(r, i);
        }
        let rv = match r.fake {
            Some(_) => self.api.resource_version(),
            None => self.local.lock().unwrap().rv,
        };
        (items, rv.to_string())
    }

    /// Store (create or replace); returns the stored object.
    fn put(&self, r: &Resource, obj: Value) -> Value {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match r.fake {
            Some(kind) => {
                self.api.apply(kind, obj);
            }
            None => {
                let mut l = self.local.lock().unwrap();
                l.rv += 1;
                let mut obj = obj;
                obj["metadata"]["resourceVersion"] = json!(l.rv.to_string());
                l.objects.insert((r.plural, ns.clone(), name.clone()), obj);
            }
        }
        self.get(r, &ns, &name).expect("just stored")
    }

    fn remove(&self, r: &Resource, ns: &str, name: &str) {
        match r.fake {
            Some(kind) => {
                self.api.delete(kind, ns, name);
            }
            None => {
                self.local.lock().unwrap().objects.remove(&(
                    r.plural,
                    ns.to_string(),
                    name.to_string(),
                ));
            }
        }
    }

    fn new_uid(&self) -> String {
        let mut l = self.local.lock().unwrap();
        l.uid_seq += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!(
            "{:08x}-5a7d-4e1b-9c3f-{:012x}",
            nanos,
            l.uid_seq * 7919 + 0x5eed
        )
    }

    fn namespace_labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        let r = discovery::find("", "v1", "namespaces").expect("namespaces");
        self.get(r, "", ns).map(|n| labels_of(&n))
    }
}

fn set_type(r: &Resource, v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), json!(r.kind));
        o.insert("apiVersion".into(), json!(r.api_version()));
    }
}

fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code});
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

fn respond(code: u16, body: &Value, warnings: &[String]) -> HttpResponse {
    let mut b = HttpResponse::build(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    b.content_type("application/json");
    for w in chain::recorded_warnings(warnings) {
        b.append_header(("Warning", chain::warning_header(&w)));
    }
    b.body(body.to_string())
}

fn fail(code: u16, reason: &str, message: &str) -> HttpResponse {
    respond(code, &status(code, reason, message, None), &[])
}

fn not_found(r: &Resource, name: &str) -> HttpResponse {
    let what = if r.group.is_empty() {
        r.plural.to_string()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    respond(
        404,
        &status(
            404,
            "NotFound",
            &format!("{what} \"{name}\" not found"),
            Some(json!({"name": name, "group": r.group, "kind": r.plural})),
        ),
        &[],
    )
}

/// What a resource path names.
struct Target {
    resource: &'static Resource,
    namespace: String,
    name: Option<String>,
    sub: String,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let namespaced = |p: &str| discovery::find(group, version, p).filter(|r| r.namespaced);
    let (resource, namespace, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced(plural).is_some() => {
            (namespaced(plural)?, ns.to_string(), tail)
        }
        [plural, tail @ ..] => (
            discovery::find(group, version, plural)?,
            String::new(),
            tail,
        ),
        _ => return None,
    };
    let (name, sub) = match tail {
        [] => (None, String::new()),
        [name] => (Some(name.to_string()), String::new()),
        [name, sub] => (Some(name.to_string()), sub.to_string()),
        _ => return None,
    };
    if name.is_some() && resource.namespaced && namespace.is_empty() {
        return None;
    }
    Some(Target {
        resource,
        namespace,
        name,
        sub,
    })
}

fn query_map(q: &str) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(q)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

fn ok_json(v: Value) -> HttpResponse {
    respond(200, &v, &[])
}

async fn handle(req: HttpRequest, body: Bytes, st: web::Data<Arc<State>>) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    st.requests.lock().unwrap().push(
        format!(
            "{} {}?{} {content_type}",
            req.method(),
            req.path(),
            req.query_string()
        )
        .trim_end()
        .to_string(),
    );
    let path = req.path().trim_end_matches('/');
    let method = req.method().as_str().to_string();
    if method == "GET" {
        match path {
            "/api" => return ok_json(discovery::api_versions(&st.server.lock().unwrap())),
            "/apis" => return ok_json(discovery::api_group_list()),
            "/version" => {
                return ok_json(
                    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-standin",
                    "platform": "linux/amd64"}),
                )
            }
            _ => {}
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let doc = match segs.as_slice() {
            ["api", v] => discovery::resource_list("", v),
            ["apis", g, v] => discovery::resource_list(g, v),
            ["apis", g] => discovery::api_group(g),
            _ => None,
        };
        if let Some(doc) = doc {
            return ok_json(doc);
        }
    }
    let target = parse_path(path);
    // Reads of what the fake API server stores (list, watch, get), and whatever the
    // stand-in does not model (leases, events, nodes...), are the fake's: claimguard
    // pointed here watches exactly what kubectl wrote.
    let proxied = match &target {
        None => true,
        Some(t) => t.resource.fake.is_some() && method == "GET",
    };
    if proxied {
        return proxy(&st, &req, body).await;
    }
    let Some(t) = target else {
        return fail(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let q = query_map(req.query_string());
    let st: &State = &st;
    if !body.is_empty() && content_type.contains("protobuf") {
        return fail(
            415,
            "UnsupportedMediaType",
            "the stand-in speaks JSON only, not protobuf",
        );
    }
    match (method.as_str(), t.name.clone(), t.sub.as_str()) {
        ("GET", None, "") => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return fail(
                    405,
                    "MethodNotAllowed",
                    "the stand-in serves no watches of workloads",
                );
            }
            let (items, rv) = st.list(t.resource, &t.namespace);
            ok_json(json!({"kind": format!("{}List", t.resource.kind),
                "apiVersion": t.resource.api_version(),
                "metadata": {"resourceVersion": rv}, "items": items}))
        }
        ("POST", None, "") => create(st, &t, &q, &body).await,
        ("GET", Some(name), "") => match st.get(t.resource, &t.namespace, &name) {
            Some(v) => ok_json(v),
            None => not_found(t.resource, &name),
        },
        ("PUT", Some(name), "") | ("PATCH", Some(name), "") => {
            update(st, &t, &name, &q, &body, &method, &content_type).await
        }
        ("DELETE", Some(name), "") => delete(st, &t, &name, &q, &body).await,
        ("GET", Some(name), "scale") if t.resource.scale => {
            match st.get(t.resource, &t.namespace, &name) {
                Some(w) => ok_json(scale_of(&w)),
                None => not_found(t.resource, &name),
            }
        }
        ("PUT", Some(name), "scale") | ("PATCH", Some(name), "scale") if t.resource.scale => {
            scale(st, &t, &name, &q, &body, &method, &content_type).await
        }
        _ => fail(
            405,
            "MethodNotAllowed",
            &format!("the stand-in does not serve {method} on {}", req.path()),
        ),
    }
}

/// Forward a request to the fake API server, streaming the answer (watches included).
async fn proxy(st: &State, req: &HttpRequest, body: Bytes) -> HttpResponse {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let method = match reqwest::Method::from_bytes(req.method().as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => return fail(405, "MethodNotAllowed", "unknown method"),
    };
    let mut rb = st
        .backend
        .request(method, format!("{}{path}", st.api.url()))
        .body(body.to_vec());
    for h in ["content-type", "accept"] {
        if let Some(v) = req.headers().get(h).and_then(|v| v.to_str().ok()) {
            rb = rb.header(h, v);
        }
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            return fail(
                503,
                "ServiceUnavailable",
                &format!("the fake API server: {e}"),
            )
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let stream = futures::stream::unfold(Some(resp), |resp| async move {
        let mut resp = resp?;
        match resp.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), Some(resp))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    HttpResponse::build(status)
        .content_type(content_type)
        .streaming(stream)
}

fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|d| d == "All")
}

fn options(kind: &str, q: &HashMap<String, String>) -> Value {
    let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if dry_run(q) {
        o["dryRun"] = json!(["All"]);
    }
    for key in ["fieldManager", "fieldValidation"] {
        if let Some(v) = q.get(key) {
            o[key] = json!(v);
        }
    }
    o
}

/// What the API server's defaulting adds to the objects the tests use.
fn defaults(r: &Resource, obj: &mut Value) {
    let set = |v: &mut Value, key: &str, val: Value| {
        if v.get(key).is_none_or(Value::is_null) {
            v[key] = val;
        }
    };
    match r.kind {
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            set(&mut obj["metadata"], "labels", json!({}));
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            set(obj, "spec", json!({"finalizers": ["kubernetes"]}));
            obj["status"] = json!({"phase": "Active"});
        }
        "Pod" => {
            set(obj, "spec", json!({}));
            for (k, v) in [
                ("restartPolicy", json!("Always")),
                ("terminationGracePeriodSeconds", json!(30)),
                ("dnsPolicy", json!("ClusterFirst")),
                ("schedulerName", json!("default-scheduler")),
                ("serviceAccountName", json!("default")),
                ("enableServiceLinks", json!(true)),
            ] {
                set(&mut obj["spec"], k, v);
            }
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        "PersistentVolumeClaim" => {
            set(obj, "spec", json!({}));
            set(&mut obj["spec"], "volumeMode", json!("Filesystem"));
            obj["status"] = json!({"phase": "Pending"});
        }
        "Deployment" => {
            set(obj, "spec", json!({}));
            let s = &mut obj["spec"];
            set(s, "replicas", json!(1));
            set(s, "revisionHistoryLimit", json!(10));
            set(s, "progressDeadlineSeconds", json!(600));
            set(s, "strategy", json!({"type": "RollingUpdate"}));
            if s["strategy"]["type"] == "RollingUpdate" {
                set(&mut s["strategy"], "rollingUpdate", json!({}));
                set(
                    &mut s["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
                set(
                    &mut s["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
            obj["status"] = json!({});
        }
        "StatefulSet" | "ReplicaSet" | "ReplicationController" => {
            set(obj, "spec", json!({}));
            set(&mut obj["spec"], "replicas", json!(1));
            obj["status"] = json!({"replicas": 0});
        }
        _ => {}
    }
}

fn attributes(r: &Resource, ns: &str, name: &str, operation: &'static str) -> Attributes {
    Attributes {
        group: r.group.to_string(),
        version: r.version.to_string(),
        resource: r.plural.to_string(),
        sub_resource: String::new(),
        kind: (
            r.group.to_string(),
            r.version.to_string(),
            r.kind.to_string(),
        ),
        namespace: ns.to_string(),
        name: name.to_string(),
        operation,
        object: None,
        old_object: None,
        dry_run: false,
        options: Value::Null,
    }
}

// The error is the answer to send; this is test support, not a hot path.
#[allow(clippy::result_large_err)]
fn rejected(o: Outcome) -> Result<(Option<Value>, Vec<String>), HttpResponse> {
    match o.result {
        Ok(obj) => Ok((obj, o.warnings)),
        Err(r) => Err(respond(
            r.code,
            &status(r.code, &r.reason, &r.message, None),
            &o.warnings,
        )),
    }
}

async fn create(st: &State, t: &Target, q: &HashMap<String, String>, body: &[u8]) -> HttpResponse {
    let r = t.resource;
    let mut obj: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return fail(400, "BadRequest", "the body is not a JSON object"),
    };
    if obj["kind"] != r.kind || obj["apiVersion"] != r.api_version().as_str() {
        return fail(
            400,
            "BadRequest",
            &format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                obj["apiVersion"],
                r.api_version()
            ),
        );
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if r.namespaced {
        match obj["metadata"]["namespace"].as_str() {
            Some(ns) if ns != t.namespace => {
                return fail(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            }
            _ => obj["metadata"]["namespace"] = json!(t.namespace),
        }
        if st.namespace_labels(&t.namespace).is_none() {
            return respond(
                404,
                &status(
                    404,
                    "NotFound",
                    &format!("namespaces \"{}\" not found", t.namespace),
                    None,
                ),
                &[],
            );
        }
    }
    let name = match (
        obj["metadata"]["name"].as_str(),
        obj["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(g)) => format!("{g}{}", &st.new_uid()[..5]),
        _ => {
            return fail(
                422,
                "Invalid",
                &format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", r.kind),
            )
        }
    };
    obj["metadata"]["name"] = json!(name);
    if st.get(r, &t.namespace, &name).is_some() {
        let what = if r.group.is_empty() {
            r.plural.to_string()
        } else {
            format!("{}.{}", r.plural, r.group)
        };
        return respond(
            409,
            &status(
                409,
                "AlreadyExists",
                &format!("{what} \"{name}\" already exists"),
                Some(json!({"name": name, "group": r.group, "kind": r.plural})),
            ),
            &[],
        );
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
            m.remove(k);
        }
    }
    defaults(r, &mut obj);
    let mut a = attributes(r, &t.namespace, &name, "CREATE");
    a.object = Some(obj);
    a.dry_run = dry_run(q);
    a.options = options("CreateOptions", q);
    let uid = st.new_uid();
    let stamp = now_rfc3339();
    let has_generation = !matches!(
        r.kind,
        "Pod" | "PersistentVolumeClaim" | "PersistentVolume" | "Namespace" | "StorageClass"
    );
    let outcome = st
        .chain
        .admit(a, st.namespace_labels(&t.namespace), |a| {
            // BeforeCreate: between mutating and validating admission.
            if let Some(o) = a.object.as_mut() {
                o["metadata"]["uid"] = json!(uid);
                o["metadata"]["creationTimestamp"] = json!(stamp);
                if has_generation {
                    o["metadata"]["generation"] = json!(1);
                }
            }
        })
        .await;
    let (obj, warnings) = match rejected(outcome) {
        Ok((Some(o), w)) => (o, w),
        Ok((None, _)) => return fail(500, "InternalError", "admission lost the object"),
        Err(resp) => return resp,
    };
    let out = if dry_run(q) { obj } else { st.put(r, obj) };
    respond(201, &out, &warnings)
}

/// Apply a PATCH body of `content_type` to `current`, or take a PUT body as is.
#[allow(clippy::result_large_err)]
fn patched(
    current: &Value,
    body: &[u8],
    method: &str,
    content_type: &str,
) -> Result<Value, HttpResponse> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| fail(400, "BadRequest", &format!("the body is not JSON: {e}")))?;
    if method == "PUT" {
        return Ok(patch);
    }
    let mut new = current.clone();
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| fail(400, "BadRequest", &format!("not a JSON Patch: {e}")))?;
            json_patch::patch(&mut new, &p)
                .map_err(|e| fail(422, "Invalid", &format!("the JSON Patch does not apply: {e}")))?;
        }
        "application/merge-patch+json" => json_patch::merge(&mut new, &patch),
        "application/strategic-merge-patch+json" => merge::strategic_merge(&mut new, &patch),
        other => {
            return Err(fail(
                415,
                "UnsupportedMediaType",
                &format!("the stand-in does not support the patch type {other:?} (server-side apply is not modelled)"),
            ))
        }
    }
    Ok(new)
}

async fn update(
    st: &State,
    t: &Target,
    name: &str,
    q: &HashMap<String, String>,
    body: &[u8],
    method: &str,
    content_type: &str,
) -> HttpResponse {
    let r = t.resource;
    let Some(current) = st.get(r, &t.namespace, name) else {
        return not_found(r, name);
    };
    let mut new = match patched(&current, body, method, content_type) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if method == "PUT" {
        let rv = &new["metadata"]["resourceVersion"];
        if !rv.is_null() && rv != &current["metadata"]["resourceVersion"] {
            return fail(409, "Conflict", &format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", r.plural));
        }
    }
    // What the client may not change.
    for k in [
        "uid",
        "creationTimestamp",
        "name",
        "namespace",
        "generation",
    ] {
        new["metadata"][k] = current["metadata"][k].clone();
    }
    if let Some(m) = new["metadata"].as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    set_type(r, &mut new);
    if new.get("spec") != current.get("spec") {
        if let Some(g) = current["metadata"]["generation"].as_u64() {
            new["metadata"]["generation"] = json!(g + 1);
        }
    }
    let mut a = attributes(r, &t.namespace, name, "UPDATE");
    a.object = Some(new);
    a.old_object = Some(current);
    a.dry_run = dry_run(q);
    // A PATCH reaches admission as an UPDATE with UpdateOptions.
    a.options = options("UpdateOptions", q);
    let outcome = st
        .chain
        .admit(a, st.namespace_labels(&t.namespace), |_| {})
        .await;
    let (obj, warnings) = match rejected(outcome) {
        Ok((Some(o), w)) => (o, w),
        Ok((None, _)) => return fail(500, "InternalError", "admission lost the object"),
        Err(resp) => return resp,
    };
    let out = if dry_run(q) { obj } else { st.put(r, obj) };
    respond(200, &out, &warnings)
}

async fn delete(
    st: &State,
    t: &Target,
    name: &str,
    q: &HashMap<String, String>,
    body: &[u8],
) -> HttpResponse {
    let r = t.resource;
    let Some(current) = st.get(r, &t.namespace, name) else {
        return not_found(r, name);
    };
    let mut opts = options("DeleteOptions", q);
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
        for (k, v) in m {
            if k != "kind" && k != "apiVersion" {
                opts[k] = v;
            }
        }
    }
    let mut a = attributes(r, &t.namespace, name, "DELETE");
    a.old_object = Some(current.clone());
    a.dry_run = dry_run(q) || opts["dryRun"] == json!(["All"]);
    a.options = opts;
    let dry = a.dry_run;
    let outcome = st
        .chain
        .admit(a, st.namespace_labels(&t.namespace), |_| {})
        .await;
    let warnings = match rejected(outcome) {
        Ok((_, w)) => w,
        Err(resp) => return resp,
    };
    if !dry {
        st.remove(r, &t.namespace, name);
    }
    if r.kind == "Pod" {
        return respond(200, &current, &warnings);
    }
    let details = json!({"name": name, "group": r.group, "kind": r.plural,
                         "uid": current["metadata"]["uid"]});
    respond(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details}),
        &warnings,
    )
}

/// The autoscaling/v1 Scale of a workload.
fn scale_of(w: &Value) -> Value {
    let selector = w["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &w["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"],
                     "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": w["spec"]["replicas"].as_u64().unwrap_or(1)},
        "status": {"replicas": w["status"]["replicas"].as_u64().unwrap_or(0), "selector": selector},
    })
}

async fn scale(
    st: &State,
    t: &Target,
    name: &str,
    q: &HashMap<String, String>,
    body: &[u8],
    method: &str,
    content_type: &str,
) -> HttpResponse {
    let r = t.resource;
    let Some(workload) = st.get(r, &t.namespace, name) else {
        return not_found(r, name);
    };
    let old = scale_of(&workload);
    let mut new = match patched(&old, body, method, content_type) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some(replicas) = new["spec"]["replicas"].as_u64() else {
        return fail(
            422,
            "Invalid",
            &format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: must be a non-negative integer"),
        );
    };
    new["metadata"] = old["metadata"].clone();
    new["status"] = old["status"].clone();
    let mut a = attributes(r, &t.namespace, name, "UPDATE");
    a.sub_resource = "scale".into();
    a.kind = ("autoscaling".into(), "v1".into(), "Scale".into());
    a.object = Some(new);
    a.old_object = Some(old);
    a.dry_run = dry_run(q);
    a.options = options("UpdateOptions", q);
    let outcome = st
        .chain
        .admit(a, st.namespace_labels(&t.namespace), |_| {})
        .await;
    let (scale, warnings) = match rejected(outcome) {
        Ok((Some(o), w)) => (o, w),
        Ok((None, _)) => return fail(500, "InternalError", "admission lost the object"),
        Err(resp) => return resp,
    };
    if dry_run(q) {
        return respond(200, &scale, &warnings);
    }
    let mut w = workload;
    if w["spec"]["replicas"].as_u64() != Some(replicas) {
        w["spec"]["replicas"] = json!(replicas);
        if let Some(g) = w["metadata"]["generation"].as_u64() {
            w["metadata"]["generation"] = json!(g + 1);
        }
    }
    let stored = st.put(r, w);
    respond(200, &scale_of(&stored), &warnings)
}
