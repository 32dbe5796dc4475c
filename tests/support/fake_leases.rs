//! `coordination.k8s.io/v1` Leases for the fake API server, with the API
//! server's optimistic concurrency: create (409 AlreadyExists), replace with a
//! `metadata.resourceVersion` (409 Conflict when it is not the stored one, 404
//! when the Lease is gone), delete with a resourceVersion precondition (409),
//! GET, and list + watch (namespaced or all, `labelSelector` of `k=v` terms,
//! watch from a resourceVersion out of the history).
//!
//! Fault controls: `partition`/`heal` (every Lease request gets 500) and
//! `set_delay` (every Lease request waits first: a slow API server).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const PREFIX: &str = "/apis/coordination.k8s.io/v1";

#[derive(Default, Debug, Clone, Copy)]
pub struct LeaseCounters {
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    pub conflicts: u64,
    pub gets: u64,
    pub lists: u64,
    pub watches: u64,
}

struct LeaseWatch {
    namespace: Option<String>,
    selector: Vec<(String, String)>,
    tx: mpsc::UnboundedSender<Result<Bytes, io::Error>>,
}

struct Inner {
    rv: u64,
    uid_seq: u64,
    /// (namespace, name) -> the Lease with kind/apiVersion.
    objects: BTreeMap<(String, String), Value>,
    history: Vec<(u64, String, Value, &'static str)>,
    watches: Vec<LeaseWatch>,
    partitioned: bool,
    delay: Duration,
    counters: LeaseCounters,
}

/// The Lease store of one fake API server.
pub struct FakeLeases {
    inner: Mutex<Inner>,
}

impl Default for FakeLeases {
    fn default() -> Self {
        FakeLeases {
            inner: Mutex::new(Inner {
                rv: 50_000,
                uid_seq: 0,
                objects: BTreeMap::new(),
                history: Vec::new(),
                watches: Vec::new(),
                partitioned: false,
                delay: Duration::ZERO,
                counters: LeaseCounters::default(),
            }),
        }
    }
}

/// Mount the Lease routes on the fake server's `App`.
pub fn routes(leases: Arc<FakeLeases>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let data = web::Data::from(leases);
        cfg.service(
            web::scope(PREFIX)
                .app_data(data)
                .default_service(web::to(handle)),
        );
    }
}

impl FakeLeases {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every Lease request gets HTTP 500 until `heal`; open watches end.
    pub fn partition(&self) {
        let mut i = self.lock();
        i.partitioned = true;
        i.watches.clear();
    }

    pub fn heal(&self) {
        self.lock().partitioned = false;
    }

    /// Every Lease request waits this long before it is served.
    pub fn set_delay(&self, d: Duration) {
        self.lock().delay = d;
    }

    pub fn counters(&self) -> LeaseCounters {
        self.lock().counters
    }

    pub fn count(&self) -> usize {
        self.lock().objects.len()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn all(&self) -> Vec<Value> {
        self.lock().objects.values().cloned().collect()
    }

    /// Store a Lease directly (as another writer would), ADDED or MODIFIED.
    pub fn put(&self, mut lease: Value) -> u64 {
        let mut i = self.lock();
        let ns = lease["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = lease["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let key = (ns.clone(), name);
        let typ = if i.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let rv = i.stamp(&mut lease, &ns);
        i.objects.insert(key, lease.clone());
        i.record(rv, &ns, lease, typ);
        rv
    }

    /// The reservation entries of every Lease: (lease name, pod uid, entry).
    pub fn entries(&self) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for l in self.all() {
            let name = l["metadata"]["name"].as_str().unwrap_or("").to_string();
            let Some(s) = l["metadata"]["annotations"]["claimguard.io/reservations"].as_str()
            else {
                continue;
            };
            let m: serde_json::Map<String, Value> = serde_json::from_str(s).unwrap_or_default();
            for (uid, e) in m {
                out.push((name.clone(), uid, e));
            }
        }
        out
    }
}

impl Inner {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Fill in what the API server sets: resourceVersion, uid, creationTimestamp.
    fn stamp(&mut self, lease: &mut Value, ns: &str) -> u64 {
        let rv = self.next_rv();
        self.uid_seq += 1;
        let uid_seq = self.uid_seq;
        lease["kind"] = json!("Lease");
        lease["apiVersion"] = json!("coordination.k8s.io/v1");
        let meta = lease["metadata"].as_object_mut().expect("metadata");
        meta.insert("namespace".into(), json!(ns));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.entry("uid")
            .or_insert_with(|| json!(format!("00000000-0000-4000-9000-{uid_seq:012x}")));
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!("2026-12-01T20:00:00Z"));
        rv
    }

    fn record(&mut self, rv: u64, ns: &str, obj: Value, typ: &'static str) {
        let line = event_line(typ, &obj);
        self.watches.retain(|w| {
            if !matches(w.namespace.as_deref(), &w.selector, ns, &obj) {
                return true;
            }
            w.tx.send(Ok(line.clone())).is_ok()
        });
        self.history.push((rv, ns.to_string(), obj, typ));
    }
}

fn matches(ns_filter: Option<&str>, selector: &[(String, String)], ns: &str, obj: &Value) -> bool {
    if ns_filter.is_some_and(|n| n != ns) {
        return false;
    }
    selector
        .iter()
        .all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v.as_str()))
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&json!({"type": typ, "object": obj})).expect("event");
    out.push(b'\n');
    Bytes::from(out)
}

fn status(code: u16, reason: &str, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(code)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .content_type("application/json")
    .body(
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
            "details": {"group": "coordination.k8s.io", "kind": "leases"}
        })
        .to_string(),
    )
}

fn object(code: u16, v: &Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status"))
        .content_type("application/json")
        .body(v.to_string())
}

fn selector_of(q: &HashMap<String, String>) -> Vec<(String, String)> {
    q.get("labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|t| {
                    let (k, v) = t.split_once('=')?;
                    Some((k.trim_end_matches('=').to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(req: HttpRequest, body: Bytes, leases: web::Data<FakeLeases>) -> HttpResponse {
    let delay = leases.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = req.path().strip_prefix(PREFIX).unwrap_or("");
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (ns, name) = match segs.as_slice() {
        ["leases"] => (None, None),
        ["namespaces", ns, "leases"] => (Some(ns.to_string()), None),
        ["namespaces", ns, "leases", name] => (Some(ns.to_string()), Some(name.to_string())),
        _ => {
            return status(
                404,
                "NotFound",
                &format!(
                    "the server could not find the requested resource ({})",
                    req.path()
                ),
            )
        }
    };
    let query: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .unwrap_or_default();
    let mut i = leases.lock();
    if i.partitioned {
        return status(500, "InternalError", "fake API server: partitioned");
    }
    let method = req.method().as_str().to_string();
    match (method.as_str(), ns, name) {
        ("GET", ns, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            i.counters.watches += 1;
            watch(&mut i, ns, &query)
        }
        ("GET", ns, None) => {
            i.counters.lists += 1;
            let sel = selector_of(&query);
            let items: Vec<&Value> = i
                .objects
                .iter()
                .filter(|((n, _), o)| matches(ns.as_deref(), &sel, n, o))
                .map(|(_, o)| o)
                .collect();
            object(
                200,
                &json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
                        "metadata": {"resourceVersion": i.rv.to_string()}, "items": items}),
            )
        }
        ("GET", Some(ns), Some(name)) => {
            i.counters.gets += 1;
            match i.objects.get(&(ns, name.clone())) {
                Some(o) => object(200, o),
                None => status(
                    404,
                    "NotFound",
                    &format!("leases.coordination.k8s.io \"{name}\" not found"),
                ),
            }
        }
        ("POST", Some(ns), None) => {
            i.counters.creates += 1;
            let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "the body is not a Lease");
            };
            let Some(name) = lease["metadata"]["name"].as_str().map(str::to_string) else {
                return status(422, "Invalid", "metadata.name: Required value");
            };
            if lease["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
            {
                return status(
                    500,
                    "InternalError",
                    "resourceVersion should not be set on objects to be created",
                );
            }
            let key = (ns.clone(), name.clone());
            if i.objects.contains_key(&key) {
                i.counters.conflicts += 1;
                return status(
                    409,
                    "AlreadyExists",
                    &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                );
            }
            let rv = i.stamp(&mut lease, &ns);
            i.objects.insert(key, lease.clone());
            i.record(rv, &ns, lease.clone(), "ADDED");
            object(201, &lease)
        }
        ("PUT", Some(ns), Some(name)) => {
            i.counters.updates += 1;
            let Ok(mut lease) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "the body is not a Lease");
            };
            let key = (ns.clone(), name.clone());
            let Some(stored) = i.objects.get(&key) else {
                return status(
                    404,
                    "NotFound",
                    &format!("leases.coordination.k8s.io \"{name}\" not found"),
                );
            };
            let sent = lease["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if !sent.is_empty()
                && stored["metadata"]["resourceVersion"].as_str() != Some(sent.as_str())
            {
                i.counters.conflicts += 1;
                return status(409, "Conflict", &format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"));
            }
            lease["metadata"]["uid"] = stored["metadata"]["uid"].clone();
            lease["metadata"]["creationTimestamp"] =
                stored["metadata"]["creationTimestamp"].clone();
            let rv = i.stamp(&mut lease, &ns);
            i.objects.insert(key, lease.clone());
            i.record(rv, &ns, lease.clone(), "MODIFIED");
            object(200, &lease)
        }
        ("DELETE", Some(ns), Some(name)) => {
            i.counters.deletes += 1;
            let key = (ns.clone(), name.clone());
            let Some(stored) = i.objects.get(&key) else {
                return status(
                    404,
                    "NotFound",
                    &format!("leases.coordination.k8s.io \"{name}\" not found"),
                );
            };
            let opts: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let stored_rv = stored["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if let Some(want) = opts["preconditions"]["resourceVersion"].as_str() {
                if want != stored_rv {
                    i.counters.conflicts += 1;
                    return status(409, "Conflict", &format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {stored_rv}"));
                }
            }
            let Some(mut gone) = i.objects.remove(&key) else {
                return status(404, "NotFound", "gone");
            };
            let rv = i.next_rv();
            gone["metadata"]["resourceVersion"] = json!(rv.to_string());
            let uid = gone["metadata"]["uid"].clone();
            i.record(rv, &ns, gone, "DELETED");
            object(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases", "uid": uid}}),
            )
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the fake API server does not serve this on leases",
        ),
    }
}

fn watch(i: &mut Inner, ns: Option<String>, query: &HashMap<String, String>) -> HttpResponse {
    let sel = selector_of(query);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, io::Error>>();
    let rv_param = query.get("resourceVersion").cloned().unwrap_or_default();
    match rv_param.parse::<u64>() {
        Ok(from) if from > 0 => {
            for (rv, n, o, typ) in &i.history {
                if *rv > from && matches(ns.as_deref(), &sel, n, o) {
                    let _ = tx.send(Ok(event_line(typ, o)));
                }
            }
        }
        _ => {
            for ((n, _), o) in &i.objects {
                if matches(ns.as_deref(), &sel, n, o) {
                    let _ = tx.send(Ok(event_line("ADDED", o)));
                }
            }
        }
    }
    i.watches.push(LeaseWatch {
        namespace: ns,
        selector: sel,
        tx,
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let stream = futures::stream::unfold(rx, move |mut rx| async move {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => Some((item, rx)),
            Ok(None) | Err(_) => None,
        }
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(stream)
}
