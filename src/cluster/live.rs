//! The live cluster view: kube-runtime watchers for pods, persistentvolumeclaims,
//! persistentvolumes, storageclasses, namespaces, nodes (hostname label, `Ready`
//! condition, unreachable / out-of-service taints) and volumeattachments feed the
//! claim index
//! ([`ClusterState`]) through its `apply_*`/`delete_*` methods; a cache miss on a claim
//! is answered by one short, cached GET ([`LiveFetcher`]).
//!
//! Watch objects are deserialized straight into claimguard's narrow `objects::*` types
//! (unknown fields skipped by serde, no `k8s-openapi` tree is ever built) through
//! [`Watched`], a thin wrapper that gives kube the `Resource` impl and the little
//! `ObjectMeta` its watcher reads (name, namespace, resourceVersion).
//!
//! Consistency after faults: the watcher re-lists after a `410 Gone` or any failed
//! resume. Objects listed are applied as they arrive (no whole-list buffer, so memory
//! stays bounded by the page size); at `InitDone` every object of that kind that the
//! index knew but the new list did not contain is deleted. The index then equals one
//! built from scratch from the list.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use tokio::task::JoinHandle;

use super::{ClaimFetcher, ClusterState, SharedCluster};
use crate::objects;

/// Errors of the live view's set-up. Once started, watch errors are retried forever
/// (counted in [`LiveHandle::watch_restarts`]), never returned.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no cluster configuration (in-cluster service account or ~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("the live cluster view must be started inside a tokio runtime")]
    NoRuntime,
}

/// Tuning of the live view. `Default` is what `serve` uses.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Page size of the initial (and every re-) list: bounds start-up memory.
    pub page_size: u32,
    /// `timeoutSeconds` of each watch request; `None` = kube's default (290 s).
    pub watch_timeout: Option<u32>,
    /// How often reservations are expired.
    pub expiry_interval: Duration,
    /// Timeout of the GET done on a claim the view does not know.
    pub fetch_timeout: Duration,
    /// How long a fetched claim (or its absence) is remembered.
    pub fetch_cache_ttl: Duration,
    /// Install a [`LiveFetcher`] on the shared cluster.
    pub install_fetcher: bool,
    /// Also count watch restarts here: the server's `claimguard_watch_restarts_total`.
    pub restarts_metric: Option<prometheus_client::metrics::counter::Counter>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            page_size: 500,
            watch_timeout: None,
            expiry_interval: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(1),
            fetch_cache_ttl: Duration::from_secs(5),
            install_fetcher: true,
            restarts_metric: None,
        }
    }
}

/// The running live view. Dropping it stops the watchers.
pub struct LiveHandle {
    restarts: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl LiveHandle {
    /// Watch errors so far (failed lists, failed watch starts, `410 Gone` and other
    /// ERROR events, broken streams): each makes a watcher retry or re-list. A watch the
    /// server ends cleanly (every `timeoutSeconds`) is resumed from its resourceVersion
    /// without an error and is not counted.
    pub fn watch_restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The counter itself, for a metrics registry (`claimguard_watch_restarts_total`).
    pub fn restarts_counter(&self) -> Arc<AtomicU64> {
        self.restarts.clone()
    }

    /// Stop every task of the live view.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for LiveHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Kubernetes client from an explicit kubeconfig file, else kube's inference
/// (in-cluster service account, then `$KUBECONFIG` / `~/.kube/config`).
pub async fn client_from(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client, LiveError> {
    let opts = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                LiveError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|source| LiveError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        // A context names an entry of $KUBECONFIG / ~/.kube/config: no
        // in-cluster fallback.
        (None, Some(_)) => kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|source| LiveError::Kubeconfig {
                path: "$KUBECONFIG or ~/.kube/config".into(),
                source,
            })?,
        (None, None) => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Start the watchers, the reservation expiry and (unless disabled) the claim fetcher.
/// Returns at once; `cluster.is_synced()` turns true once all kinds have been
/// listed completely (seven kinds). It stays true across later re-lists: the view is then briefly
/// stale, not empty, and flapping readiness on every `410` would empty the endpoints
/// of a large cluster.
pub async fn start(
    client: kube::Client,
    cluster: Arc<SharedCluster>,
    opts: LiveOptions,
) -> Result<LiveHandle, LiveError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| LiveError::NoRuntime)?;
    let restarts = Arc::new(AtomicU64::new(0));
    let pending = Arc::new(AtomicUsize::new(7));
    let ctx = |c: &Arc<SharedCluster>| TaskCtx {
        cluster: c.clone(),
        restarts: restarts.clone(),
        restarts_metric: opts.restarts_metric.clone(),
        pending: pending.clone(),
    };
    let cfg = {
        let mut c = watcher::Config::default().page_size(opts.page_size);
        c.timeout = opts.watch_timeout;
        c
    };
    let mut tasks = vec![
        rt.spawn(run_kind::<objects::Pod>(
            Api::all(client.clone()),
            cfg.clone(),
            ctx(&cluster),
        )),
        rt.spawn(run_kind::<objects::PersistentVolumeClaim>(
            Api::all(client.clone()),
            cfg.clone(),
            ctx(&cluster),
        )),
        rt.spawn(run_kind::<objects::PersistentVolume>(
            Api::all(client.clone()),
            cfg.clone(),
            ctx(&cluster),
        )),
        rt.spawn(run_kind::<objects::StorageClass>(
            Api::all(client.clone()),
            cfg.clone(),
            ctx(&cluster),
        )),
        rt.spawn(run_kind::<objects::Namespace>(
            Api::all(client.clone()),
            cfg.clone(),
            ctx(&cluster),
        )),
        // Node name -> kubernetes.io/hostname label (hostname pins) and health.
        rt.spawn(run_kind::<objects::Node>(
            Api::all(client.clone()),
            cfg.clone(),
            ctx(&cluster),
        )),
        // Where volumes are attached: stuck attachments on dead nodes.
        rt.spawn(run_kind::<objects::VolumeAttachment>(
            Api::all(client.clone()),
            cfg,
            ctx(&cluster),
        )),
    ];
    let expiry_cluster = cluster.clone();
    let interval = opts.expiry_interval;
    tasks.push(rt.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let n = expiry_cluster.write().expire_reservations(Instant::now());
            if n > 0 {
                tracing::debug!(expired = n, "claim reservations expired");
            }
        }
    }));
    if opts.install_fetcher {
        cluster.set_workload_fetcher(Box::new(super::LiveWorkloadFetcher::new(
            client.clone(),
            opts.fetch_timeout,
        )));
        cluster.set_fetcher(Arc::new(LiveFetcher::new(
            client,
            opts.fetch_timeout,
            opts.fetch_cache_ttl,
        )));
    }
    Ok(LiveHandle { restarts, tasks })
}

struct TaskCtx {
    cluster: Arc<SharedCluster>,
    restarts: Arc<AtomicU64>,
    restarts_metric: Option<prometheus_client::metrics::counter::Counter>,
    /// Kinds that have not finished their first list yet.
    pending: Arc<AtomicUsize>,
}

/// (namespace or "", name)
type Key = (String, String);

/// What the watch loop needs of each kind: its API coordinates and how it enters the index.
pub trait WatchKind: Clone + Debug + DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;
    const GROUP: &'static str;
    const VERSION: &'static str;
    const PLURAL: &'static str;
    type Scope;
    fn narrow_meta(&self) -> &objects::ObjectMeta;
    fn apply(&self, state: &mut ClusterState);
    fn delete(state: &mut ClusterState, namespace: &str, name: &str);
    /// Keys of this kind the index holds from watches (reservations excluded).
    fn keys(state: &ClusterState) -> Vec<Key>;
    /// This object's key in `keys` and `delete`: (namespace or "", name).
    fn key(&self) -> Key {
        let m = self.narrow_meta();
        (m.namespace.clone().unwrap_or_default(), m.name.clone())
    }
    /// The view can serve without this kind: when the service account may not
    /// list it (an install whose RBAC predates it), readiness does not wait for
    /// it; the rules that read it stay silent until a list succeeds.
    const OPTIONAL: bool = false;
}

macro_rules! watch_kind {
    ($ty:ty, $kind:literal, $group:literal, $version:literal, $plural:literal, $scope:ty,
     |$o:ident, $st:ident| $apply:expr, |$st2:ident, $ns:ident, $name:ident| $delete:expr,
     |$st3:ident| $keys:expr) => {
        impl WatchKind for $ty {
            const KIND: &'static str = $kind;
            const GROUP: &'static str = $group;
            const VERSION: &'static str = $version;
            const PLURAL: &'static str = $plural;
            type Scope = $scope;
            fn narrow_meta(&self) -> &objects::ObjectMeta {
                &self.metadata
            }
            fn apply(&self, $st: &mut ClusterState) {
                let $o = self;
                $apply
            }
            #[allow(unused_variables)]
            fn delete($st2: &mut ClusterState, $ns: &str, $name: &str) {
                $delete
            }
            fn keys($st3: &ClusterState) -> Vec<Key> {
                $keys
            }
        }
    };
}

watch_kind!(
    objects::Pod,
    "Pod",
    "",
    "v1",
    "pods",
    NamespaceResourceScope,
    |o, st| st.apply_pod(o),
    |st, ns, name| st.delete_pod(ns, name),
    |st| st.pod_keys()
);
watch_kind!(
    objects::PersistentVolumeClaim,
    "PersistentVolumeClaim",
    "",
    "v1",
    "persistentvolumeclaims",
    NamespaceResourceScope,
    |o, st| st.apply_pvc(o),
    |st, ns, name| st.delete_pvc(ns, name),
    |st| st.pvc_keys()
);
watch_kind!(
    objects::PersistentVolume,
    "PersistentVolume",
    "",
    "v1",
    "persistentvolumes",
    ClusterResourceScope,
    |o, st| st.apply_pv(o),
    |st, ns, name| st.delete_pv(name),
    |st| cluster_keys(st.pv_names())
);
watch_kind!(
    objects::StorageClass,
    "StorageClass",
    "storage.k8s.io",
    "v1",
    "storageclasses",
    ClusterResourceScope,
    |o, st| st.apply_storage_class(o),
    |st, ns, name| st.delete_storage_class(name),
    |st| cluster_keys(st.storage_class_names())
);
watch_kind!(
    objects::Namespace,
    "Namespace",
    "",
    "v1",
    "namespaces",
    ClusterResourceScope,
    |o, st| st.apply_namespace(o),
    |st, ns, name| st.delete_namespace(name),
    |st| cluster_keys(st.namespace_names())
);

watch_kind!(
    objects::Node,
    "Node",
    "",
    "v1",
    "nodes",
    ClusterResourceScope,
    |o, st| st.apply_node(o),
    |st, ns, name| st.delete_node(name),
    |st| cluster_keys(st.node_names())
);

// The index keeps attachments by volume, so a VolumeAttachment's key is
// (its PersistentVolume, its name) in place of (namespace, name): a deletion
// finds the entry with one probe. Inline volumes are never stored; their key
// has an empty volume and matches nothing.
impl WatchKind for objects::VolumeAttachment {
    const KIND: &'static str = "VolumeAttachment";
    const GROUP: &'static str = "storage.k8s.io";
    const VERSION: &'static str = "v1";
    const PLURAL: &'static str = "volumeattachments";
    type Scope = ClusterResourceScope;
    const OPTIONAL: bool = true;
    fn narrow_meta(&self) -> &objects::ObjectMeta {
        &self.metadata
    }
    fn apply(&self, state: &mut ClusterState) {
        state.apply_volume_attachment(self)
    }
    fn delete(state: &mut ClusterState, volume: &str, name: &str) {
        state.delete_volume_attachment(volume, name)
    }
    fn keys(state: &ClusterState) -> Vec<Key> {
        state.volume_attachment_keys()
    }
    fn key(&self) -> Key {
        let volume = self
            .spec
            .as_ref()
            .and_then(|s| s.source.persistent_volume_name.clone())
            .unwrap_or_default();
        (volume, self.metadata.name.clone())
    }
}

fn cluster_keys(names: Vec<String>) -> Vec<Key> {
    names.into_iter().map(|n| (String::new(), n)).collect()
}

/// A narrow object as kube's watcher sees it: the object plus the three metadata
/// fields the watcher and `Api` read. Deserializing it deserializes only `T`.
#[derive(Clone, Debug)]
pub struct Watched<T> {
    meta: kube::core::ObjectMeta,
    pub object: T,
}

impl<'de, T: WatchKind> Deserialize<'de> for Watched<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let object = T::deserialize(d)?;
        let m = object.narrow_meta();
        let meta = kube::core::ObjectMeta {
            name: Some(m.name.clone()),
            namespace: m.namespace.clone(),
            resource_version: m.resource_version.clone(),
            ..Default::default()
        };
        Ok(Watched { meta, object })
    }
}

impl<T: WatchKind> kube::Resource for Watched<T> {
    type DynamicType = ();
    type Scope = T::Scope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        T::KIND.into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        T::GROUP.into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        T::VERSION.into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        T::PLURAL.into()
    }
    fn meta(&self) -> &kube::core::ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut kube::core::ObjectMeta {
        &mut self.meta
    }
}

fn key_of<T: WatchKind>(o: &T) -> Key {
    o.key()
}

/// Keys listed since the last `Init`; `Some` while a (re-)list is in progress. Only a
/// list in progress costs memory: at `InitDone` the index's own keys of the kind are
/// compared against it.
#[derive(Default)]
struct KindKeys {
    relisting: Option<HashSet<Key>>,
}

/// Most events applied under one write lock: bounded so admission readers never wait
/// behind a whole initial list.
const BATCH: usize = 256;

async fn run_kind<T: WatchKind>(api: Api<Watched<T>>, cfg: watcher::Config, ctx: TaskCtx) {
    let mut keys = KindKeys::default();
    let mut first_list_done = false;
    let stream = watcher::watcher(api, cfg)
        .default_backoff()
        .ready_chunks(BATCH);
    let mut stream = std::pin::pin!(stream);
    // The watcher stream never ends by itself; if it somehow did, the view would go stale
    // silently, so say so loudly.
    while let Some(batch) = stream.next().await {
        let mut state = ctx.cluster.write();
        for item in batch {
            let listed = match item {
                Ok(ev) => handle_event(&mut state, &mut keys, ev),
                Err(e) => {
                    ctx.restarts.fetch_add(1, Ordering::Relaxed);
                    if let Some(m) = &ctx.restarts_metric {
                        m.inc();
                    }
                    if T::OPTIONAL && is_forbidden(&e) {
                        if !first_list_done {
                            tracing::error!(
                                kind = T::KIND,
                                error = %e,
                                "may not list {}: the rules that read them stay silent until RBAC allows get/list/watch; retrying with backoff",
                                T::PLURAL
                            );
                        }
                    } else {
                        tracing::warn!(kind = T::KIND, error = %e, "watch error; retrying with backoff");
                    }
                    T::OPTIONAL && is_forbidden(&e)
                }
            };
            if listed && !first_list_done {
                first_list_done = true;
                tracing::info!(kind = T::KIND, "initial list complete");
                if ctx.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                    ctx.cluster.set_synced(true);
                    // The initial lists' page buffers are freed now;
                    // give them back rather than carry them for good.
                    crate::cluster::release_freed_heap();
                    tracing::info!("cluster view synced: all kinds listed");
                }
            }
        }
    }
    tracing::error!(
        kind = T::KIND,
        "watch stream ended; the cluster view for this kind is stale"
    );
}

/// The API server refused the service account (403 Forbidden).
fn is_forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 403,
        watcher::Error::WatchError(s) => s.code == 403,
        _ => false,
    }
}

/// Apply one watcher event. Returns true on `InitDone`.
fn handle_event<T: WatchKind>(
    state: &mut ClusterState,
    keys: &mut KindKeys,
    ev: Event<Watched<T>>,
) -> bool {
    match ev {
        Event::Init => {
            keys.relisting = Some(HashSet::new());
        }
        Event::InitApply(w) => {
            w.object.apply(state);
            if let Some(seen) = keys.relisting.as_mut() {
                seen.insert(key_of(&w.object));
            }
        }
        Event::InitDone => {
            // Without an Init there is no complete list to compare against: delete nothing.
            let Some(seen) = keys.relisting.take() else {
                return true;
            };
            let mut removed = 0usize;
            for (ns, name) in T::keys(state) {
                if !seen.contains(&(ns.clone(), name.clone())) {
                    T::delete(state, &ns, &name);
                    removed += 1;
                }
            }
            if removed > 0 {
                tracing::info!(
                    kind = T::KIND,
                    removed,
                    "re-list removed objects deleted while unwatched"
                );
            }
            return true;
        }
        Event::Apply(w) => w.object.apply(state),
        Event::Delete(w) => {
            let (ns, name) = key_of(&w.object);
            T::delete(state, &ns, &name);
        }
    }
    false
}

/// Answers a cache miss on a claim with one GET (short timeout), remembering the
/// answer — the claim, or that it does not exist — for a few seconds so a burst of
/// pods naming a claim costs one request. Errors are not cached.
#[derive(Clone)]
pub struct LiveFetcher {
    inner: Arc<FetcherInner>,
}

struct FetcherInner {
    client: kube::Client,
    timeout: Duration,
    ttl: Duration,
    cache: Mutex<HashMap<Key, (Instant, Option<objects::PersistentVolumeClaim>)>>,
}

/// Bound on remembered answers: names in a pod spec are user input.
const FETCH_CACHE_MAX: usize = 4096;

impl LiveFetcher {
    pub fn new(client: kube::Client, timeout: Duration, ttl: Duration) -> Self {
        LiveFetcher {
            inner: Arc::new(FetcherInner {
                client,
                timeout,
                ttl,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn cached(&self, key: &Key) -> Option<Option<objects::PersistentVolumeClaim>> {
        let cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.inner.ttl)
            .map(|(_, v)| v.clone())
    }
}

impl FetcherInner {
    fn remember(&self, key: Key, value: Option<objects::PersistentVolumeClaim>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= FETCH_CACHE_MAX {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= FETCH_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), value));
    }
}

impl ClaimFetcher for LiveFetcher {
    fn fetch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<objects::PersistentVolumeClaim>, String>> {
        let key: Key = (namespace.to_string(), name.to_string());
        if let Some(hit) = self.cached(&key) {
            return futures::future::ready(Ok(hit)).boxed();
        }
        let inner = self.inner.clone();
        async move {
            let api: Api<Watched<objects::PersistentVolumeClaim>> =
                Api::namespaced(inner.client.clone(), &key.0);
            let got = tokio::time::timeout(inner.timeout, api.get_opt(&key.1))
                .await
                .map_err(|_| {
                    format!(
                        "GET of PersistentVolumeClaim {}/{} timed out after {:?}",
                        key.0, key.1, inner.timeout
                    )
                })?
                .map_err(|e| {
                    format!(
                        "GET of PersistentVolumeClaim {}/{} failed: {e}",
                        key.0, key.1
                    )
                })?
                .map(|w| w.object);
            inner.remember(key, got.clone());
            Ok(got)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn pod_json(
        name: &str,
        claim: usize,
        node: Option<usize>,
        phase: &str,
        rv: u64,
    ) -> serde_json::Value {
        let mut spec = json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": format!("c{claim}")}}],
                              "containers": [{"name": "app", "volumeMounts": [{"name": "v", "mountPath": "/d"}]}]});
        if let Some(n) = node {
            spec["nodeName"] = json!(format!("node-{n}"));
        }
        json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                            "resourceVersion": rv.to_string()},
               "spec": spec, "status": {"phase": phase}})
    }

    fn watched(v: &serde_json::Value) -> Watched<objects::Pod> {
        serde_json::from_value(v.clone()).expect("pod deserializes")
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Create or change pod `i` on the server; `delivered` = the watch saw it.
        Upsert {
            i: usize,
            claim: usize,
            node: Option<usize>,
            phase: usize,
            delivered: bool,
        },
        Delete {
            i: usize,
            delivered: bool,
        },
        /// The watcher re-lists (after a 410); `cut_after` pages of it arrive before an
        /// error interrupts it and it starts over.
        Relist {
            cut_after: Option<usize>,
        },
    }

    const PHASES: [&str; 3] = ["Pending", "Running", "Succeeded"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..10usize, 0..3usize, prop::option::of(0..3usize), 0..3usize, prop::bool::weighted(0.7))
                .prop_map(|(i, claim, node, phase, delivered)| Op::Upsert { i, claim, node, phase, delivered }),
            2 => (0..10usize, prop::bool::weighted(0.7)).prop_map(|(i, delivered)| Op::Delete { i, delivered }),
            1 => prop::option::of(0..5usize).prop_map(|cut_after| Op::Relist { cut_after }),
        ]
    }

    fn relist(
        st: &mut ClusterState,
        keys: &mut KindKeys,
        server: &BTreeMap<String, serde_json::Value>,
        cut_after: Option<usize>,
    ) {
        if let Some(n) = cut_after {
            // An interrupted list: Init and a few objects, then the watcher starts over.
            handle_event::<objects::Pod>(st, keys, Event::Init);
            for v in server.values().take(n) {
                handle_event(st, keys, Event::InitApply(watched(v)));
            }
        }
        handle_event::<objects::Pod>(st, keys, Event::Init);
        for v in server.values() {
            handle_event(st, keys, Event::InitApply(watched(v)));
        }
        assert!(handle_event::<objects::Pod>(st, keys, Event::InitDone));
    }

    fn fresh(server: &BTreeMap<String, serde_json::Value>) -> Vec<String> {
        let mut st = ClusterState::new();
        for v in server.values() {
            st.apply_pod(&watched(v).object);
        }
        st.canonical_dump()
    }

    proptest! {
        /// Whatever the watch missed (changes and deletions during an outage), the next
        /// complete re-list leaves the index equal to a fresh build — no ghosts, no losses.
        #[test]
        fn relist_converges_to_fresh_build(ops in prop::collection::vec(op(), 0..60)) {
            let mut server: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            let mut st = ClusterState::new();
            let mut keys = KindKeys::default();
            let mut rv = 1000u64;
            let mut missed = false;
            relist(&mut st, &mut keys, &server, None);
            for op in ops {
                rv += 1;
                match op {
                    Op::Upsert { i, claim, node, phase, delivered } => {
                        let name = format!("p{i}");
                        let v = pod_json(&name, claim, node, PHASES[phase], rv);
                        if delivered {
                            handle_event(&mut st, &mut keys, Event::Apply(watched(&v)));
                        } else {
                            missed = true;
                        }
                        server.insert(name, v);
                    }
                    Op::Delete { i, delivered } => {
                        if let Some(mut v) = server.remove(&format!("p{i}")) {
                            v["metadata"]["resourceVersion"] = json!(rv.to_string());
                            if delivered {
                                handle_event(&mut st, &mut keys, Event::Delete(watched(&v)));
                            } else {
                                missed = true;
                            }
                        }
                    }
                    Op::Relist { cut_after } => {
                        relist(&mut st, &mut keys, &server, cut_after);
                        missed = false;
                    }
                }
                if !missed {
                    prop_assert_eq!(st.canonical_dump(), fresh(&server));
                }
            }
            relist(&mut st, &mut keys, &server, None);
            prop_assert_eq!(st.canonical_dump(), fresh(&server));
        }
    }

    #[test]
    fn watched_reads_name_namespace_and_resource_version() {
        let w = watched(&pod_json("p", 0, Some(1), "Running", 42));
        use kube::ResourceExt;
        assert_eq!(w.name_any(), "p");
        assert_eq!(w.namespace().as_deref(), Some("ns"));
        assert_eq!(w.resource_version().as_deref(), Some("42"));
    }
}
