//! A fake Kubernetes API server for tests: plain HTTP on 127.0.0.1, list (paged) and
//! watch (chunked, newline-delimited events, replayed from a history) for pods,
//! persistentvolumeclaims, persistentvolumes, storageclasses, namespaces, nodes and
//! volumeattachments, plus
//! single-object GET. It speaks what kube-runtime's `watcher` sends: `limit`/`continue`
//! on lists, `watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`
//! on watches.
//!
//! Objects are stored as serialized JSON (`Bytes`), so a server holding 100,000 pods
//! does not hold 100,000 `serde_json::Value` trees.
//!
//! Fault controls: `drop_watches` (clean end of every open stream, as on an API server
//! restart or a watch timeout), `abort_watches` (the connection is cut mid-stream),
//! `partition`/`heal` (the server is unreachable: open watches end, new list/watch
//! requests get 500 (not 503: kube's client retries 503 itself for minutes); changes made meanwhile are only in the history),
//! `expire_history` (etcd compaction: a watch from an older resourceVersion gets
//! `410 Expired`, as does a list `continue` token), `gone_next_watches(n)`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The kinds the fake server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Pvc,
    Pv,
    StorageClass,
    Namespace,
    Node,
    VolumeAttachment,
    /// core/v1 Events (read by `explain`; claimguard writes events.k8s.io/v1).
    Event,
    // Workloads (listed by `audit` and `migrate`; served read-only).
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Pod,
        Kind::Pvc,
        Kind::Pv,
        Kind::StorageClass,
        Kind::Namespace,
        Kind::Node,
        Kind::VolumeAttachment,
        Kind::Event,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::ReplicationController,
        Kind::Job,
        Kind::CronJob,
    ];

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Pvc => "persistentvolumeclaims",
            Kind::Pv => "persistentvolumes",
            Kind::StorageClass => "storageclasses",
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::VolumeAttachment => "volumeattachments",
            Kind::Event => "events",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::ReplicaSet => "replicasets",
            Kind::ReplicationController => "replicationcontrollers",
            Kind::Job => "jobs",
            Kind::CronJob => "cronjobs",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Pvc => "PersistentVolumeClaim",
            Kind::Pv => "PersistentVolume",
            Kind::StorageClass => "StorageClass",
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::VolumeAttachment => "VolumeAttachment",
            Kind::Event => "Event",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ReplicationController => "ReplicationController",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::StorageClass | Kind::VolumeAttachment => "storage.k8s.io/v1",
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet => "apps/v1",
            Kind::Job | Kind::CronJob => "batch/v1",
            _ => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Pv | Kind::StorageClass | Kind::Namespace | Kind::Node | Kind::VolumeAttachment
        )
    }

    fn from_plural(p: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == p)
    }
}

/// (namespace or "", name): the etcd key order lists are served in.
type Key = (String, String);

pub(super) struct Stored {
    /// The object as the API server stores it, without `kind`/`apiVersion` (list items
    /// carry neither; watch events add them).
    pub(super) body: Bytes,
}

struct HistEvent {
    rv: u64,
    kind: Kind,
    namespace: String,
    line: Bytes,
}

struct Watch {
    kind: Kind,
    namespace: Option<String>,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Result<Bytes, io::Error>>,
}

#[derive(Default)]
struct Counters {
    lists: HashMap<Kind, u64>,
    watches: HashMap<Kind, u64>,
    gets: u64,
    gone_sent: u64,
}

pub(super) struct Inner {
    rv: u64,
    uid_seq: u64,
    pub(super) objects: HashMap<Kind, BTreeMap<Key, Stored>>,
    /// PV/PVC writes, faults and the PV controller (`fake_storage`).
    pub(super) storage: super::fake_storage::Storage,
    history: Vec<HistEvent>,
    /// A watch from a resourceVersion below this (or a continue token minted below it)
    /// is answered 410 Expired.
    compacted_rv: u64,
    watches: Vec<Watch>,
    gone_next_watches: usize,
    fail_next_lists: usize,
    fail_lists_of: HashMap<Kind, usize>,
    /// Kinds the caller may not read (RBAC): every request gets 403.
    pub(super) forbidden: std::collections::HashSet<Kind>,
    gone_next_continues: usize,
    partitioned: bool,
    get_delay: Duration,
    counters: Counters,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            // Real resourceVersions are large etcd revisions; starting high catches code
            // that assumes small numbers or compares them as strings.
            rv: 1000,
            uid_seq: 0,
            objects: HashMap::new(),
            storage: Default::default(),
            history: Vec::new(),
            compacted_rv: 0,
            watches: Vec::new(),
            gone_next_watches: 0,
            fail_next_lists: 0,
            fail_lists_of: HashMap::new(),
            forbidden: Default::default(),
            gone_next_continues: 0,
            partitioned: false,
            get_delay: Duration::ZERO,
            counters: Counters::default(),
        }
    }
}

pub(super) struct Shared {
    inner: Mutex<Inner>,
    /// Event writes received (`events.k8s.io/v1` POST and PATCH), in order.
    events: Mutex<Vec<EventWrite>>,
}

/// An Event write the server received.
#[derive(Debug, Clone)]
pub struct EventWrite {
    pub method: String,
    pub path: String,
    pub body: Value,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the other tests' servers.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake API server. Dropping it stops the server.
pub struct FakeApiServer {
    addr: SocketAddr,
    pub(super) shared: Arc<Shared>,
    handle: ServerHandle,
    leases: Arc<super::fake_leases::FakeLeases>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.lock().watches.clear();
        let stop = self.handle.stop(false);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(stop);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

impl FakeApiServer {
    /// Start on 127.0.0.1:0. Must be called inside a tokio runtime.
    pub async fn start() -> FakeApiServer {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            events: Mutex::new(Vec::new()),
        });
        let data = web::Data::new(shared.clone());
        let leases = Arc::new(super::fake_leases::FakeLeases::default());
        let leases_routes = leases.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(super::fake_leases::routes(leases_routes.clone()))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", 0))
        .expect("bind fake API server on 127.0.0.1:0");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeApiServer {
            addr,
            shared,
            handle,
            leases,
        }
    }

    /// The `coordination.k8s.io/v1` Leases this server stores (`fake_leases`).
    pub fn leases(&self) -> &super::fake_leases::FakeLeases {
        &self.leases
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server (plain HTTP, default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("server URL"));
        kube::Client::try_from(config).expect("kube client for the fake API server")
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Create or update an object: ADDED if new, MODIFIED otherwise. Returns the new
    /// resourceVersion. `metadata.resourceVersion`, `uid` and `creationTimestamp` are
    /// filled in by the server, as a real one does.
    pub fn apply(&self, kind: Kind, obj: Value) -> u64 {
        let mut inner = self.lock();
        inner.upsert(kind, obj, None)
    }

    /// Create an object; panics if it exists.
    pub fn add(&self, kind: Kind, obj: Value) -> u64 {
        let mut inner = self.lock();
        inner.upsert(kind, obj, Some(EventType::Added))
    }

    /// Replace an existing object; panics if it does not exist.
    pub fn modify(&self, kind: Kind, obj: Value) -> u64 {
        let mut inner = self.lock();
        inner.upsert(kind, obj, Some(EventType::Modified))
    }

    /// Change an existing object in place and store it (MODIFIED).
    pub fn update(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> u64 {
        let mut inner = self.lock();
        let mut obj = inner
            .get_value(kind, namespace, name)
            .unwrap_or_else(|| panic!("update of missing {kind:?} {namespace}/{name}"));
        f(&mut obj);
        inner.upsert(kind, obj, Some(EventType::Modified))
    }

    /// Delete an object; returns false if it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.lock().delete(kind, namespace, name)
    }

    /// Insert many objects at once (for large fixtures); they reach watchers and the
    /// history like any other change.
    pub fn add_many(&self, kind: Kind, objs: impl IntoIterator<Item = Value>) {
        let mut inner = self.lock();
        for obj in objs {
            inner.upsert(kind, obj, Some(EventType::Added));
        }
    }

    /// Load objects that existed before anyone watched: no history, no events (keeps a
    /// 100,000-object fixture from being held twice).
    pub fn seed_many(&self, kind: Kind, objs: impl IntoIterator<Item = Value>) {
        let mut inner = self.lock();
        for obj in objs {
            inner.upsert(kind, obj, Some(EventType::Added));
            inner.history.pop();
        }
        inner.compacted_rv = inner.rv;
    }

    /// Every Event write received so far (POST creates, PATCH series updates).
    pub fn event_writes(&self) -> Vec<EventWrite> {
        self.shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.lock().get_value(kind, namespace, name)
    }

    /// Every stored object of a kind, in key order, with `kind` and `apiVersion` set.
    /// Writes a kubeconfig that points at this server (no credentials,
    /// namespace `default`), as `claimguard serve --kubeconfig` reads it.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: c, context: {{cluster: fake, user: u, namespace: default}}}}]\ncurrent-context: c\n",
                self.url()
            ),
        )
        .expect("write kubeconfig");
    }

    /// The index a fresh start would build from what the server holds now:
    /// what a live view must equal once it has caught up.
    pub fn fresh_state(&self) -> claimguard::cluster::ClusterState {
        fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
            serde_json::from_value(v).expect("server object deserializes")
        }
        use claimguard::objects;
        let mut st = claimguard::cluster::ClusterState::new();
        for v in self.objects(Kind::Namespace) {
            st.apply_namespace(&from::<objects::Namespace>(v));
        }
        for v in self.objects(Kind::StorageClass) {
            st.apply_storage_class(&from::<objects::StorageClass>(v));
        }
        for v in self.objects(Kind::Pv) {
            st.apply_pv(&from::<objects::PersistentVolume>(v));
        }
        for v in self.objects(Kind::Pvc) {
            st.apply_pvc(&from::<objects::PersistentVolumeClaim>(v));
        }
        for v in self.objects(Kind::Pod) {
            st.apply_pod(&from::<objects::Pod>(v));
        }
        for v in self.objects(Kind::Node) {
            st.apply_node(&from::<objects::Node>(v));
        }
        for v in self.objects(Kind::VolumeAttachment) {
            st.apply_volume_attachment(&from::<objects::VolumeAttachment>(v));
        }
        st
    }

    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        let inner = self.lock();
        inner
            .objects
            .get(&kind)
            .map(|m| {
                m.values()
                    .map(|s| with_type(kind, serde_json::from_slice(&s.body).expect("stored JSON")))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.lock().objects.get(&kind).map_or(0, BTreeMap::len)
    }

    /// End every open watch stream cleanly (final chunk sent), as an API server does
    /// when a watch times out or the server restarts. Clients resume from their last
    /// resourceVersion.
    pub fn drop_watches(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.watches.len();
        inner.watches.clear();
        n
    }

    /// Cut every open watch connection mid-stream (no final chunk).
    pub fn abort_watches(&self) -> usize {
        let mut inner = self.lock();
        let n = inner.watches.len();
        for w in inner.watches.drain(..) {
            let _ = w.tx.send(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fake API server: connection cut",
            )));
        }
        n
    }

    /// The server becomes unreachable: open watches end, new list and watch requests
    /// get 500 until `heal`. Changes made meanwhile go to the history only.
    pub fn partition(&self) {
        let mut inner = self.lock();
        inner.partitioned = true;
        inner.watches.clear();
    }

    pub fn heal(&self) {
        self.lock().partitioned = false;
    }

    /// Compact the history: every watch from a resourceVersion older than now, and
    /// every continue token minted before now, gets 410 Expired.
    pub fn expire_history(&self) {
        let mut inner = self.lock();
        inner.compacted_rv = inner.rv;
        inner.history.clear();
    }

    /// The next `n` watch requests get a 410 ERROR event, whatever their resourceVersion.
    pub fn gone_next_watches(&self, n: usize) {
        self.lock().gone_next_watches = n;
    }

    /// The next `n` list requests get HTTP 500.
    pub fn fail_next_lists(&self, n: usize) {
        self.lock().fail_next_lists = n;
    }

    /// The next `n` list requests that carry a continue token get 410 Expired, as when
    /// etcd compacts past a list in progress.
    pub fn gone_next_continues(&self, n: usize) {
        self.lock().gone_next_continues = n;
    }

    /// Every request for `kind` gets 403 Forbidden, as RBAC answers.
    pub fn forbid(&self, kind: Kind) {
        self.lock().forbidden.insert(kind);
    }

    /// The next `n` list requests for `kind` get HTTP 500.
    pub fn fail_next_lists_of(&self, kind: Kind, n: usize) {
        self.lock().fail_lists_of.insert(kind, n);
    }

    /// Delay answers to single-object GETs (to exercise client timeouts).
    pub fn set_get_delay(&self, d: Duration) {
        self.lock().get_delay = d;
    }

    /// Send a BOOKMARK at the current resourceVersion to every watch that asked for them.
    pub fn bookmark(&self) {
        let mut inner = self.lock();
        let rv = inner.rv;
        inner.watches.retain(|w| {
            if !w.bookmarks {
                return true;
            }
            let line = bookmark_line(w.kind, rv);
            w.tx.send(Ok(line)).is_ok()
        });
    }

    pub fn list_calls(&self, kind: Kind) -> u64 {
        self.lock().counters.lists.get(&kind).copied().unwrap_or(0)
    }

    pub fn total_list_calls(&self) -> u64 {
        self.lock().counters.lists.values().sum()
    }

    pub fn watch_calls(&self, kind: Kind) -> u64 {
        self.lock()
            .counters
            .watches
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_watch_calls(&self) -> u64 {
        self.lock().counters.watches.values().sum()
    }

    pub fn get_calls(&self) -> u64 {
        self.lock().counters.gets
    }

    /// How many 410 answers (watch ERROR events and expired continue tokens) were sent.
    pub fn gone_sent(&self) -> u64 {
        self.lock().counters.gone_sent
    }

    /// Number of watch streams currently open.
    pub fn open_watches(&self) -> usize {
        let mut inner = self.lock();
        inner.watches.retain(|w| !w.tx.is_closed());
        inner.watches.len()
    }
}

impl Inner {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    pub(super) fn get_value(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let ns = if kind.namespaced() { namespace } else { "" };
        self.objects
            .get(&kind)?
            .get(&(ns.to_string(), name.to_string()))
            .map(|s| serde_json::from_slice(&s.body).expect("stored JSON"))
    }

    pub(super) fn upsert(&mut self, kind: Kind, mut obj: Value, expect: Option<EventType>) -> u64 {
        let meta = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("object needs metadata");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .expect("object needs metadata.name")
            .to_string();
        let ns = if kind.namespaced() {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            meta.insert("namespace".into(), json!(ns));
            ns
        } else {
            meta.remove("namespace");
            String::new()
        };
        let key = (ns.clone(), name.clone());
        let existing = self.objects.get(&kind).and_then(|m| m.get(&key)).map(|s| {
            serde_json::from_slice::<Value>(&s.body).expect("stored JSON")["metadata"].clone()
        });
        let event = match (&existing, expect) {
            (Some(_), Some(EventType::Added)) => panic!("add of existing {kind:?} {ns}/{name}"),
            (None, Some(EventType::Modified)) => panic!("modify of missing {kind:?} {ns}/{name}"),
            (Some(_), _) => EventType::Modified,
            (None, _) => EventType::Added,
        };
        let rv = self.next_rv();
        // uid and creationTimestamp are immutable once set by the server.
        let (uid, created) = match &existing {
            Some(m) => (m["uid"].clone(), m["creationTimestamp"].clone()),
            None => {
                self.uid_seq += 1;
                let uid = meta.get("uid").cloned().unwrap_or_else(|| {
                    json!(format!("00000000-0000-4000-8000-{:012x}", self.uid_seq))
                });
                let created = meta
                    .get("creationTimestamp")
                    .cloned()
                    .unwrap_or_else(|| json!("2026-11-21T20:00:00Z"));
                (uid, created)
            }
        };
        meta.insert("uid".into(), uid);
        meta.insert("creationTimestamp".into(), created);
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if let Some(o) = obj.as_object_mut() {
            o.remove("kind");
            o.remove("apiVersion");
        }
        let body = Bytes::from(serde_json::to_vec(&obj).expect("serialize object"));
        self.record(kind, &ns, rv, event, &body);
        self.objects
            .entry(kind)
            .or_default()
            .insert(key, Stored { body });
        rv
    }

    pub(super) fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> bool {
        let ns = if kind.namespaced() { namespace } else { "" };
        let key = (ns.to_string(), name.to_string());
        let Some(stored) = self.objects.get_mut(&kind).and_then(|m| m.remove(&key)) else {
            return false;
        };
        let rv = self.next_rv();
        // The DELETED event carries the last state with the deletion's resourceVersion.
        let mut obj: Value = serde_json::from_slice(&stored.body).expect("stored JSON");
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let body = Bytes::from(serde_json::to_vec(&obj).expect("serialize object"));
        self.record(kind, ns, rv, EventType::Deleted, &body);
        true
    }

    fn record(&mut self, kind: Kind, ns: &str, rv: u64, event: EventType, body: &Bytes) {
        let line = event_line(event.as_str(), kind, body);
        self.watches.retain(|w| {
            if w.kind != kind || w.namespace.as_deref().is_some_and(|n| n != ns) {
                return true;
            }
            w.tx.send(Ok(line.clone())).is_ok()
        });
        self.history.push(HistEvent {
            rv,
            kind,
            namespace: ns.to_string(),
            line,
        });
    }
}

pub(super) fn with_type(kind: Kind, mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), json!(kind.kind()));
        o.insert("apiVersion".into(), json!(kind.api_version()));
    }
    v
}

/// `{"type":T,"object":{"kind":..,"apiVersion":..,<stored fields>}}\n`, built by splicing
/// bytes so a watch event costs no re-serialization.
fn event_line(typ: &str, kind: Kind, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 96);
    out.extend_from_slice(
        format!(
            r#"{{"type":"{typ}","object":{{"kind":"{}","apiVersion":"{}""#,
            kind.kind(),
            kind.api_version()
        )
        .as_bytes(),
    );
    let rest = &body[1..]; // skip '{'
    if rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark_line(kind: Kind, rv: u64) -> Bytes {
    let v = json!({
        "type": "BOOKMARK",
        "object": {"kind": kind.kind(), "apiVersion": kind.api_version(),
                   "metadata": {"resourceVersion": rv.to_string()}}
    });
    let mut out = serde_json::to_vec(&v).expect("serialize bookmark");
    out.push(b'\n');
    Bytes::from(out)
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

pub(super) fn status_response(code: u16, reason: &str, message: &str) -> HttpResponse {
    let code_http = actix_web::http::StatusCode::from_u16(code)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code_http)
        .content_type("application/json")
        .body(status(code, reason, message).to_string())
}

/// What a request path names.
pub(super) struct Target {
    pub(super) kind: Kind,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, kind, namespace, name) = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, plural] => {
            let k = Kind::from_plural(plural)?;
            ("", k, Some(ns.to_string()), None)
        }
        ["api", "v1", "namespaces", ns, plural, name] => {
            let k = Kind::from_plural(plural)?;
            ("", k, Some(ns.to_string()), Some(name.to_string()))
        }
        ["api", "v1", "namespaces", name] => ("", Kind::Namespace, None, Some(name.to_string())),
        ["api", "v1", plural] => ("", Kind::from_plural(plural)?, None, None),
        ["api", "v1", plural, name] => {
            ("", Kind::from_plural(plural)?, None, Some(name.to_string()))
        }
        ["apis", group, "v1", "namespaces", ns, plural] => (
            *group,
            Kind::from_plural(plural)?,
            Some(ns.to_string()),
            None,
        ),
        ["apis", group, "v1", "namespaces", ns, plural, name] => (
            *group,
            Kind::from_plural(plural)?,
            Some(ns.to_string()),
            Some(name.to_string()),
        ),
        ["apis", group, "v1", plural] => (*group, Kind::from_plural(plural)?, None, None),
        ["apis", group, "v1", plural, name] => (
            *group,
            Kind::from_plural(plural)?,
            None,
            Some(name.to_string()),
        ),
        _ => return None,
    };
    // Namespaced paths only exist for namespaced kinds, and vice versa for a named GET.
    if namespace.is_some() && !kind.namespaced() {
        return None;
    }
    if name.is_some() && namespace.is_none() && kind.namespaced() {
        return None;
    }
    let kind_group = kind
        .api_version()
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or("");
    if kind_group != group {
        return None;
    }
    Some(Target {
        kind,
        namespace,
        name,
    })
}

async fn handle(req: HttpRequest, body: Bytes, shared: web::Data<Arc<Shared>>) -> HttpResponse {
    shared
        .lock()
        .storage
        .note_request(req.method().as_str(), req.path(), req.query_string());
    if req.path().starts_with("/apis/events.k8s.io/v1/") {
        return event_write(&req, &body, &shared);
    }
    if req.method() != actix_web::http::Method::GET {
        if let Some(t) = parse_path(req.path()).filter(|t| matches!(t.kind, Kind::Pv | Kind::Pvc)) {
            return super::fake_storage::write(&shared, &req, &body, t).await;
        }
        return status_response(
            405,
            "MethodNotAllowed",
            "the fake API server only serves GET",
        );
    }
    let Some(target) = parse_path(req.path()) else {
        return status_response(
            404,
            "NotFound",
            &format!(
                "the server could not find the requested resource ({})",
                req.path()
            ),
        );
    };
    if shared.lock().forbidden.contains(&target.kind) {
        let verb = if target.name.is_some() { "get" } else { "list" };
        let scope = match &target.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        return status_response(
            403,
            "Forbidden",
            &format!(
                "{} is forbidden: User \"jane\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
                target.kind.plural(),
                target.kind.plural(),
                target.kind.api_version().rsplit_once('/').map(|(g, _)| g).unwrap_or("")
            ),
        );
    }
    let query: HashMap<String, String> = url_query(req.query_string());
    if let Some(name) = target.name.clone() {
        return get_one(&shared, target, &name).await;
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        watch(&shared, target, &query)
    } else {
        list(&shared, target, &query)
    }
}

/// `events.k8s.io/v1` POST (create) and PATCH (series update): recorded and
/// echoed back as the stored Event, as an API server answers.
fn event_write(req: &HttpRequest, body: &[u8], shared: &Shared) -> HttpResponse {
    let method = req.method().as_str().to_string();
    if method != "POST" && method != "PATCH" {
        return status_response(
            405,
            "MethodNotAllowed",
            "fake API server: events are write-only",
        );
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return status_response(400, "BadRequest", "fake API server: event body is not JSON");
    };
    shared
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(EventWrite {
            method: method.clone(),
            path: req.path().to_string(),
            body: v.clone(),
        });
    v["apiVersion"] = json!("events.k8s.io/v1");
    v["kind"] = json!("Event");
    let code = if method == "POST" { 201 } else { 200 };
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status"))
        .content_type("application/json")
        .body(v.to_string())
}

fn url_query(q: &str) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(q)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

async fn get_one(shared: &Shared, target: Target, name: &str) -> HttpResponse {
    let delay = {
        let mut inner = shared.lock();
        inner.counters.gets += 1;
        inner.get_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let inner = shared.lock();
    let ns = target.namespace.unwrap_or_default();
    match inner.get_value(target.kind, &ns, name) {
        Some(v) => HttpResponse::Ok()
            .content_type("application/json")
            .body(with_type(target.kind, v).to_string()),
        None => status_response(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", target.kind.plural()),
        ),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn list(shared: &Shared, target: Target, query: &HashMap<String, String>) -> HttpResponse {
    let mut inner = shared.lock();
    *inner.counters.lists.entry(target.kind).or_default() += 1;
    if inner.partitioned {
        return status_response(500, "InternalError", "fake API server: partitioned");
    }
    if inner.fail_next_lists > 0 {
        inner.fail_next_lists -= 1;
        return status_response(
            500,
            "InternalError",
            "fake API server: injected list failure",
        );
    }
    if let Some(n) = inner
        .fail_lists_of
        .get_mut(&target.kind)
        .filter(|n| **n > 0)
    {
        *n -= 1;
        return status_response(
            500,
            "InternalError",
            "fake API server: injected list failure",
        );
    }
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (list_rv, start) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let Some(tok) = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
            else {
                return status_response(400, "BadRequest", "invalid continue token");
            };
            let forced = inner.gone_next_continues > 0;
            if forced {
                inner.gone_next_continues -= 1;
            }
            if forced || tok.rv < inner.compacted_rv {
                inner.counters.gone_sent += 1;
                return status_response(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
            }
            (tok.rv, Some((tok.ns, tok.name)))
        }
        None => (inner.rv, None),
    };
    // `fieldSelector=a.b=x,c=y`, as the API server filters Events by their
    // involved object; a field it does not index is a 400 there too.
    let mut selector: Vec<(String, String)> = Vec::new();
    for term in query
        .get("fieldSelector")
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .filter(|t| !t.is_empty())
    {
        let Some((field, value)) = term.split_once('=') else {
            return status_response(
                400,
                "BadRequest",
                &format!("invalid field selector {term:?}"),
            );
        };
        let field = field.trim_end_matches('=');
        if !(field.starts_with("involvedObject.") || field.starts_with("metadata.")) {
            return status_response(
                400,
                "BadRequest",
                &format!("field label not supported: {field}"),
            );
        }
        selector.push((format!("/{}", field.replace('.', "/")), value.to_string()));
    }
    let selected = |body: &Bytes| -> bool {
        if selector.is_empty() {
            return true;
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return false;
        };
        selector
            .iter()
            .all(|(p, want)| v.pointer(p).and_then(Value::as_str) == Some(want.as_str()))
    };
    let kind = target.kind;
    let mut items: Vec<&Bytes> = Vec::new();
    let mut last_key: Option<&Key> = None;
    let mut has_more = false;
    if let Some(map) = inner.objects.get(&kind) {
        let range = match &start {
            Some(k) => map.range::<Key, _>((Bound::Excluded(k), Bound::Unbounded)),
            None => map.range::<Key, _>(..),
        };
        for (key, stored) in range {
            if target.namespace.as_ref().is_some_and(|ns| &key.0 != ns) {
                continue;
            }
            if !selected(&stored.body) {
                continue;
            }
            if limit.is_some_and(|l| items.len() == l) {
                has_more = true;
                break;
            }
            items.push(&stored.body);
            last_key = Some(key);
        }
    }
    // The token resumes after the last item served, at the first page's resourceVersion.
    let continue_token = match (has_more, last_key) {
        (true, Some(last)) => {
            let tok = ContinueToken {
                rv: list_rv,
                ns: last.0.clone(),
                name: last.1.clone(),
            };
            Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(serde_json::to_vec(&tok).expect("serialize continue token")),
            )
        }
        _ => None,
    };
    let mut meta = serde_json::Map::new();
    meta.insert("resourceVersion".into(), json!(list_rv.to_string()));
    if let Some(c) = &continue_token {
        meta.insert("continue".into(), json!(c));
    }
    let total: usize = items.iter().map(|b| b.len() + 1).sum();
    let mut out = Vec::with_capacity(total + 200);
    out.extend_from_slice(
        format!(
            r#"{{"kind":"{}List","apiVersion":"{}","metadata":{},"items":["#,
            kind.kind(),
            kind.api_version(),
            Value::Object(meta)
        )
        .as_bytes(),
    );
    for (i, b) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b);
    }
    out.extend_from_slice(b"]}");
    HttpResponse::Ok()
        .content_type("application/json")
        .body(out)
}

fn watch(shared: &Shared, target: Target, query: &HashMap<String, String>) -> HttpResponse {
    let mut inner = shared.lock();
    *inner.counters.watches.entry(target.kind).or_default() += 1;
    if inner.partitioned {
        return status_response(500, "InternalError", "fake API server: partitioned");
    }
    let kind = target.kind;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let rv_param = query.get("resourceVersion").cloned().unwrap_or_default();
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, io::Error>>();

    let gone = |inner: &mut Inner, rv: &str| {
        inner.counters.gone_sent += 1;
        let msg = format!(
            "too old resource version: {rv} ({})",
            inner.compacted_rv.max(1)
        );
        let v = json!({"type": "ERROR", "object": status(410, "Expired", &msg)});
        let mut line = serde_json::to_vec(&v).expect("serialize status");
        line.push(b'\n');
        Bytes::from(line)
    };

    if inner.gone_next_watches > 0 {
        inner.gone_next_watches -= 1;
        let line = gone(&mut inner, &rv_param);
        let _ = tx.send(Ok(line));
        drop(tx);
        return stream_response(rx, timeout);
    }
    let in_ns = |ns: &str| target.namespace.as_deref().is_none_or(|n| n == ns);
    if rv_param.is_empty() || rv_param == "0" {
        // "Start at most recent": synthetic ADDED for every current object, then live.
        if let Some(map) = inner.objects.get(&kind) {
            for ((ns, _), stored) in map {
                if in_ns(ns) {
                    let _ = tx.send(Ok(event_line("ADDED", kind, &stored.body)));
                }
            }
        }
    } else {
        let Ok(from) = rv_param.parse::<u64>() else {
            return status_response(400, "BadRequest", "invalid resourceVersion");
        };
        if from < inner.compacted_rv {
            let line = gone(&mut inner, &rv_param);
            let _ = tx.send(Ok(line));
            drop(tx);
            return stream_response(rx, timeout);
        }
        for ev in &inner.history {
            if ev.rv > from && ev.kind == kind && in_ns(&ev.namespace) {
                let _ = tx.send(Ok(ev.line.clone()));
            }
        }
    }
    inner.watches.push(Watch {
        kind,
        namespace: target.namespace.clone(),
        bookmarks,
        tx,
    });
    stream_response(rx, timeout)
}

fn stream_response(
    rx: mpsc::UnboundedReceiver<Result<Bytes, io::Error>>,
    timeout_secs: u64,
) -> HttpResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    let stream = futures::stream::unfold(rx, move |mut rx| async move {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => Some((item, rx)),
            // Sender gone (drop_watches) or timeoutSeconds reached: end the stream cleanly.
            Ok(None) | Err(_) => None,
        }
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(stream)
}
