//! Claim reservations in the API server: one decision across replicas and
//! restarts.
//!
//! A pod admitted by one replica is invisible to the others (and to a
//! restarted self) until the pod watch shows it. So an admitted, non-dry-run
//! pod that uses a ReadWriteOncePod or single-node claim records itself in a
//! `coordination.k8s.io/v1` Lease in the replica's namespace before the
//! replica answers `allowed`.
//!
//! Shape (README, "Concurrency"):
//! - one Lease per claim, named `claimguard-claim-<16 hex digits of FNV-1a 64
//!   of "namespace/claim">`, label `claimguard.io/reservations: "true"`,
//!   annotation `claimguard.io/claim: namespace/claim`;
//! - the annotation `claimguard.io/reservations` holds a JSON object keyed by
//!   pod uid: `{"<uid>": {"namespace", "claim", "pod", "node"?, "readOnly",
//!   "deadline" (RFC 3339), "replica"}}`. Entries carry their claim, so two
//!   claims whose names hash alike share a Lease without harm;
//! - `spec.holderIdentity` / `spec.renewTime` name the last writer and when.
//!
//! Writes are compare-and-swap: a create that meets 409 AlreadyExists, or a
//! replace carrying the resourceVersion that meets 409 Conflict (404 when
//! the Lease was pruned meanwhile), re-reads the Lease and hands the decision
//! back to the caller to make again. A watch on the Leases is only the read
//! cache; the write is what makes a decision safe.
//!
//! An entry ends when this replica's pod watch shows the pod (stored: from
//! then on the pod counts itself; or gone), or at its deadline. Any replica
//! prunes dead entries by the same CAS and deletes a Lease left empty with a
//! resourceVersion precondition, so a live entry is never lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::SharedCluster;
use crate::objects;

pub const DEFAULT_NAMESPACE: &str = "claimguard-system";
/// Label on every reservation Lease (value `"true"`): what the watch selects.
pub const RESERVATION_LABEL: &str = "claimguard.io/reservations";
/// Annotation naming the claim a Lease is for (`namespace/name`).
pub const CLAIM_ANNOTATION: &str = "claimguard.io/claim";
/// Annotation holding the entries (JSON object keyed by pod uid).
pub const ENTRIES_ANNOTATION: &str = "claimguard.io/reservations";
const LEASE_PREFIX: &str = "claimguard-claim-";

/// How long an entry holds its claim when no watch shows the pod. The API
/// server gives a request at most its `--request-timeout` (default 60 s) to
/// finish, admission and the etcd write included, so a pod not stored 60 s
/// after it was admitted never will be; 5 s more cover clock skew between
/// replicas (deadlines are wall-clock, compared by another replica).
pub const DEFAULT_HOLD: Duration = Duration::from_secs(65);
/// Budget of one admission's reservation writes (all retries included).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The Lease name for a claim.
pub fn lease_name(namespace: &str, claim: &str) -> String {
    // FNV-1a 64: stable, tiny, and a collision only merges two claims' entries.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(claim.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{LEASE_PREFIX}{h:016x}")
}

/// One admitted pod's hold on one claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub namespace: String,
    pub claim: String,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    /// RFC 3339.
    pub deadline: String,
    #[serde(default)]
    pub replica: String,
}

impl Entry {
    /// Past its deadline (an unreadable deadline counts as past).
    pub fn expired(&self, now: Timestamp) -> bool {
        self.deadline
            .parse::<Timestamp>()
            .map_or(true, |d| d <= now)
    }
}

/// A live entry as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub uid: String,
    pub entry: Entry,
}

/// The version of each claim's Lease (`None`: no Lease) that a decision was
/// made from. A reservation is written only over that same version: if the
/// watch brought a newer one between the decision and the write, the write
/// would otherwise carry the newer resourceVersion, succeed, and add a second
/// holder the decision never saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    versions: HashMap<String, Option<String>>,
}

/// What the API server said to a reservation write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// Someone else wrote the Lease first: it was read again; decide again.
    #[error("the Lease {0} changed meanwhile")]
    Conflict(String),
    /// The API server could not be reached in time, or refused the write.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
struct Cached {
    rv: String,
    entries: BTreeMap<String, Entry>,
}

/// Counters of the reservation path, for `/metrics` (unregistered by default).
#[derive(Debug, Clone, Default)]
pub struct ReservationMetrics {
    /// Entries written before an `allowed` answer.
    pub recorded: Counter,
    /// Writes that lost a race (409/404) and were decided again.
    pub conflicts: Counter,
    /// Admissions answered per `onLookupError` because the write failed.
    pub unrecorded: Counter,
    /// Dead entries removed (pod seen, or deadline passed).
    pub pruned: Counter,
}

/// Where reservations are read and written. Cheap to share (`Arc`).
pub struct ReservationBook {
    api: Api<Lease>,
    namespace: String,
    identity: String,
    hold: Duration,
    write_timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
    /// One in-flight decision per claim in this replica: requests for one
    /// claim queue here instead of racing each other to the API server.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: ReservationMetrics,
}

/// Holds the per-claim locks of one decision.
pub struct ClaimLocks {
    _guards: Vec<tokio::sync::OwnedMutexGuard<()>>,
}

fn parse_entries(lease: &Lease) -> BTreeMap<String, Entry> {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ENTRIES_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

fn cached_of(lease: &Lease) -> Option<(String, Cached)> {
    let name = lease.metadata.name.clone()?;
    let rv = lease.metadata.resource_version.clone().unwrap_or_default();
    Some((
        name,
        Cached {
            rv,
            entries: parse_entries(lease),
        },
    ))
}

/// Is `new` at least as recent as `old`? resourceVersions are opaque, but
/// etcd's are integers: compare them as such when both parse.
fn not_older(new: &str, old: &str) -> bool {
    match (new.parse::<u64>(), old.parse::<u64>()) {
        (Ok(n), Ok(o)) => n >= o,
        _ => true,
    }
}

fn api_error(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

impl ReservationBook {
    pub fn new(client: kube::Client, namespace: &str, identity: &str) -> Self {
        ReservationBook {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            hold: DEFAULT_HOLD,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            cache: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            metrics: ReservationMetrics::default(),
        }
    }

    pub fn with_metrics(mut self, m: ReservationMetrics) -> Self {
        self.metrics = m;
        self
    }

    pub fn metrics(&self) -> &ReservationMetrics {
        &self.metrics
    }

    pub fn with_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    pub fn with_write_timeout(mut self, t: Duration) -> Self {
        self.write_timeout = t;
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live entries (deadline not passed) for these claims of `namespace`,
    /// from the read cache.
    pub fn entries_for(&self, namespace: &str, claims: &[String]) -> Vec<Reserved> {
        self.entries_seen(namespace, claims).0
    }

    /// As [`Self::entries_for`], with the Lease versions they were read
    /// from, in one look at the cache: what [`Self::reserve`] must write over.
    pub fn entries_seen(&self, namespace: &str, claims: &[String]) -> (Vec<Reserved>, Seen) {
        let mut seen = Seen::default();
        if claims.is_empty() {
            return (Vec::new(), seen);
        }
        let now = Timestamp::now();
        let cache = self.cache();
        let mut out = Vec::new();
        for claim in claims {
            let name = lease_name(namespace, claim);
            let cached = cache.get(&name);
            seen.versions.insert(name, cached.map(|c| c.rv.clone()));
            let Some(c) = cached else {
                continue;
            };
            for (uid, e) in &c.entries {
                if e.namespace == namespace && &e.claim == claim && !e.expired(now) {
                    out.push(Reserved {
                        uid: uid.clone(),
                        entry: e.clone(),
                    });
                }
            }
        }
        (out, seen)
    }

    /// Number of cached entries, live or not (for tests and metrics).
    pub fn cached_entries(&self) -> usize {
        self.cache().values().map(|c| c.entries.len()).sum()
    }

    /// Serialize decisions on these claims within this replica (sorted, so
    /// two pods naming the same claims never wait on each other in a cycle).
    pub async fn lock_claims(&self, namespace: &str, claims: &[String]) -> ClaimLocks {
        let mut names: Vec<String> = claims.iter().map(|c| lease_name(namespace, c)).collect();
        names.sort();
        names.dedup();
        let mut guards = Vec::with_capacity(names.len());
        for n in names {
            let m = {
                let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
                if locks.len() > 1024 {
                    locks.retain(|_, m| Arc::strong_count(m) > 1);
                }
                locks.entry(n).or_default().clone()
            };
            guards.push(m.lock_owned().await);
        }
        ClaimLocks { _guards: guards }
    }

    fn store(&self, lease: &Lease) {
        if let Some((name, c)) = cached_of(lease) {
            let mut cache = self.cache();
            match cache.get(&name) {
                Some(old) if !not_older(&c.rv, &old.rv) => {}
                _ => {
                    cache.insert(name, c);
                }
            }
        }
    }

    fn forget(&self, name: &str, rv: Option<&str>) {
        let mut cache = self.cache();
        let newer_cached = match (rv, cache.get(name)) {
            (Some(rv), Some(old)) => !not_older(rv, &old.rv),
            _ => false,
        };
        if !newer_cached {
            cache.remove(name);
        }
    }

    /// Read one Lease from the API server into the cache.
    async fn refresh(&self, name: &str) -> Result<(), ReserveError> {
        match tokio::time::timeout(self.write_timeout, self.api.get_opt(name)).await {
            Ok(Ok(Some(lease))) => {
                // A read is the truth at its moment: replace whatever was cached.
                if let Some((n, c)) = cached_of(&lease) {
                    self.cache().insert(n, c);
                }
                Ok(())
            }
            Ok(Ok(None)) => {
                self.cache().remove(name);
                Ok(())
            }
            Ok(Err(e)) => Err(ReserveError::Unavailable(format!(
                "reading Lease {name}: {}",
                one_line(&e)
            ))),
            Err(_) => Err(ReserveError::Unavailable(format!(
                "reading Lease {name} timed out after {:?}",
                self.write_timeout
            ))),
        }
    }

    fn lease(
        &self,
        name: &str,
        claim_key: &str,
        rv: Option<String>,
        entries: &BTreeMap<String, Entry>,
    ) -> Lease {
        let mut labels = BTreeMap::new();
        labels.insert(RESERVATION_LABEL.to_string(), "true".to_string());
        labels.insert(
            "app.kubernetes.io/managed-by".to_string(),
            "claimguard".to_string(),
        );
        let mut annotations = BTreeMap::new();
        annotations.insert(CLAIM_ANNOTATION.to_string(), claim_key.to_string());
        annotations.insert(
            ENTRIES_ANNOTATION.to_string(),
            serde_json::to_string(entries).unwrap_or_else(|_| "{}".into()),
        );
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                resource_version: rv,
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.hold.as_secs() as i32),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        }
    }

    /// Write (or, with `entry: None`, remove) the entry of `uid` in the Lease
    /// of one claim, based on the cached Lease. Expired entries are dropped on
    /// the way. A Lease left empty is deleted.
    ///
    /// With `seen`, only over the version the caller decided from: a newer
    /// cached version is a lost race, answered without a call.
    async fn write(
        &self,
        namespace: &str,
        claim: &str,
        uid: &str,
        entry: Option<Entry>,
        seen: Option<&Seen>,
    ) -> Result<(), ReserveError> {
        let name = lease_name(namespace, claim);
        let cached = self.cache().get(&name).cloned();
        if let Some(seen) = seen {
            let decided_from = seen.versions.get(&name).cloned().flatten();
            if cached.as_ref().map(|c| &c.rv) != decided_from.as_ref() {
                return Err(ReserveError::Conflict(format!("{}/{name}", self.namespace)));
            }
        }
        let now = Timestamp::now();
        let mut entries = cached
            .as_ref()
            .map(|c| c.entries.clone())
            .unwrap_or_default();
        entries.retain(|_, e| !e.expired(now));
        match &entry {
            Some(e) => {
                entries.insert(uid.to_string(), e.clone());
            }
            None => {
                entries.remove(uid);
            }
        }
        let claim_key = format!("{namespace}/{claim}");
        let call = async {
            match (&cached, entries.is_empty()) {
                (None, true) => Ok(None),
                (None, false) => self
                    .api
                    .create(
                        &PostParams::default(),
                        &self.lease(&name, &claim_key, None, &entries),
                    )
                    .await
                    .map(Some),
                (Some(c), false) => self
                    .api
                    .replace(
                        &name,
                        &PostParams::default(),
                        &self.lease(&name, &claim_key, Some(c.rv.clone()), &entries),
                    )
                    .await
                    .map(Some),
                (Some(c), true) => {
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            resource_version: Some(c.rv.clone()),
                            uid: None,
                        }),
                        ..Default::default()
                    };
                    self.api.delete(&name, &dp).await.map(|_| None)
                }
            }
        };
        match tokio::time::timeout(self.write_timeout, call).await {
            Ok(Ok(Some(lease))) => {
                self.store(&lease);
                Ok(())
            }
            Ok(Ok(None)) => {
                self.cache().remove(&name);
                Ok(())
            }
            Ok(Err(e)) => {
                let lost_race = api_error(&e)
                    .is_some_and(|s| s.is_conflict() || s.is_already_exists() || s.is_not_found());
                if lost_race {
                    self.refresh(&name).await?;
                    Err(ReserveError::Conflict(format!("{}/{name}", self.namespace)))
                } else {
                    Err(ReserveError::Unavailable(format!(
                        "writing Lease {name}: {}",
                        one_line(&e)
                    )))
                }
            }
            Err(_) => Err(ReserveError::Unavailable(format!(
                "writing Lease {name} timed out after {:?}",
                self.write_timeout
            ))),
        }
    }

    /// Record `pod` on each claim in `claims` (name, read-only). All or
    /// nothing: when a later claim fails, the entries already written are
    /// taken back (in the background; at worst they expire).
    ///
    /// `seen` is what the decision read ([`Self::entries_seen`]); a Lease
    /// that changed since is a [`ReserveError::Conflict`]: decide again.
    pub async fn reserve(
        self: &Arc<Self>,
        pod: &objects::Pod,
        namespace: &str,
        claims: &[(String, bool)],
        seen: &Seen,
    ) -> Result<(), ReserveError> {
        // The API server sets the uid before admission; a review without one
        // (hand-made) is keyed by name and simply lives to its deadline.
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("{namespace}/{}", pod.metadata.name));
        let deadline = Timestamp::now()
            .checked_add(self.hold)
            .unwrap_or_else(|_| Timestamp::now());
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let mut seen = seen.clone();
        for (i, (claim, read_only)) in claims.iter().enumerate() {
            let entry = Entry {
                namespace: namespace.to_string(),
                claim: claim.clone(),
                pod: pod.metadata.name.clone(),
                node: node.clone(),
                read_only: *read_only,
                deadline: deadline.to_string(),
                replica: self.identity.clone(),
            };
            let written = self
                .write(namespace, claim, &uid, Some(entry), Some(&seen))
                .await;
            if written.is_ok() {
                // Two claims whose names hash alike share a Lease: the next
                // write goes over the version this one made.
                let name = lease_name(namespace, claim);
                let now = self.cache().get(&name).map(|c| c.rv.clone());
                seen.versions.insert(name, now);
            }
            if let Err(e) = written {
                let done: Vec<String> = claims[..i].iter().map(|(c, _)| c.clone()).collect();
                if !done.is_empty() {
                    let book = Arc::clone(self);
                    let (ns, uid) = (namespace.to_string(), uid.clone());
                    tokio::spawn(async move {
                        for c in done {
                            for _ in 0..3 {
                                match book.write(&ns, &c, &uid, None, None).await {
                                    Err(ReserveError::Conflict(_)) => continue,
                                    _ => break,
                                }
                            }
                        }
                    });
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drop dead entries (deadline passed, or `seen` says the pod watch has
    /// shown the pod) from every cached Lease, and delete Leases left empty.
    /// Conflicts are left for the next round. Returns the entries removed.
    pub async fn prune(&self, seen: impl Fn(&str) -> bool) -> usize {
        let now = Timestamp::now();
        let work: Vec<(String, Cached)> = self
            .cache()
            .iter()
            .filter(|(_, c)| {
                c.entries.is_empty() || c.entries.iter().any(|(u, e)| e.expired(now) || seen(u))
            })
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        let mut removed = 0;
        for (name, c) in work {
            let mut entries = c.entries.clone();
            entries.retain(|u, e| !(e.expired(now) || seen(u)));
            let n = c.entries.len() - entries.len();
            let claim_key = entries
                .values()
                .next()
                .map(|e| format!("{}/{}", e.namespace, e.claim))
                .unwrap_or_default();
            let call = async {
                if entries.is_empty() {
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions {
                            resource_version: Some(c.rv.clone()),
                            uid: None,
                        }),
                        ..Default::default()
                    };
                    self.api.delete(&name, &dp).await.map(|_| None)
                } else {
                    self.api
                        .replace(
                            &name,
                            &PostParams::default(),
                            &self.lease(&name, &claim_key, Some(c.rv.clone()), &entries),
                        )
                        .await
                        .map(Some)
                }
            };
            match tokio::time::timeout(self.write_timeout, call).await {
                Ok(Ok(Some(lease))) => {
                    self.store(&lease);
                    removed += n;
                }
                Ok(Ok(None)) => {
                    self.forget(&name, None);
                    removed += n;
                }
                Ok(Err(e)) if api_error(&e).is_some_and(|s| s.is_not_found()) => {
                    self.forget(&name, None);
                }
                Ok(Err(e)) => {
                    tracing::debug!(lease = %name, error = %one_line(&e), "pruning reservations: will retry");
                }
                Err(_) => {
                    tracing::debug!(lease = %name, "pruning reservations timed out; will retry")
                }
            }
        }
        removed
    }

    fn apply_event(&self, ev: Event<Lease>, relist: &mut Option<Vec<String>>) {
        match ev {
            Event::Init => *relist = Some(Vec::new()),
            Event::InitApply(l) => {
                if let Some(seen) = relist.as_mut() {
                    if let Some(n) = &l.metadata.name {
                        seen.push(n.clone());
                    }
                }
                self.store(&l);
            }
            Event::InitDone => {
                if let Some(seen) = relist.take() {
                    self.cache().retain(|n, _| seen.contains(n));
                }
            }
            Event::Apply(l) => self.store(&l),
            Event::Delete(l) => {
                if let Some(n) = &l.metadata.name {
                    self.forget(n, l.metadata.resource_version.as_deref());
                }
            }
        }
    }
}

/// A short, one-line account of a failed call: it ends up in a warning,
/// which must stay under 256 bytes with the rest of the message.
fn one_line(e: &kube::Error) -> String {
    let text = match api_error(e) {
        Some(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        None => e.to_string(),
    };
    let mut text = text.replace(['\r', '\n'], " ");
    if text.len() > 80 {
        let mut cut = 77;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Pod uids the pod watch has shown recently: an entry whose pod was seen is
/// dead (the pod counts itself while stored, and is gone after). Kept for
/// `keep` after the last sighting, longer than any entry lives.
#[derive(Debug)]
pub struct SeenUids {
    keep: Duration,
    seen: HashMap<Box<str>, Instant>,
    last_prune: Instant,
}

impl SeenUids {
    pub fn new(keep: Duration) -> Self {
        SeenUids {
            keep,
            seen: HashMap::new(),
            last_prune: Instant::now(),
        }
    }

    /// A pod event: remembered when the pod uses a claim.
    pub fn note(&mut self, pod: &objects::Pod) {
        let uses_claim = pod.spec.as_ref().is_some_and(|s| {
            s.volumes
                .iter()
                .any(|v| v.persistent_volume_claim.is_some())
        });
        let Some(uid) = pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
            return;
        };
        if !uses_claim {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last_prune) > Duration::from_secs(10) {
            let keep = self.keep;
            self.seen.retain(|_, at| now.duration_since(*at) < keep);
            self.last_prune = now;
        }
        match self.seen.get_mut(uid) {
            Some(at) => *at = now,
            None => {
                self.seen.insert(uid.into(), now);
            }
        }
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.seen.contains_key(uid)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Tuning of the reservation feeders.
#[derive(Debug, Clone)]
pub struct ReservationOptions {
    /// How often dead entries are pruned.
    pub prune_interval: Duration,
}

impl Default for ReservationOptions {
    fn default() -> Self {
        ReservationOptions {
            prune_interval: Duration::from_secs(1),
        }
    }
}

/// The running Lease watch and pruner. Dropping it stops them.
pub struct ReservationHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ReservationHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Install `book` on the cluster (every decision then reads and writes the
/// Leases), start tracking seen pod uids, and start the Lease watch and the
/// pruner. Must run inside a tokio runtime.
pub fn start(
    cluster: Arc<SharedCluster>,
    book: Arc<ReservationBook>,
    opts: ReservationOptions,
) -> ReservationHandle {
    cluster
        .write()
        .track_seen_uids(book.hold + Duration::from_secs(30));
    cluster.set_reservations(book.clone());
    let watch_book = book.clone();
    let watch = tokio::spawn(async move {
        let cfg = watcher::Config::default().labels(&format!("{RESERVATION_LABEL}=true"));
        let stream = watcher::watcher(watch_book.api.clone(), cfg).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut relist = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => watch_book.apply_event(ev, &mut relist),
                Err(e) => {
                    tracing::warn!(error = %e, "reservation Lease watch error; retrying with backoff")
                }
            }
        }
        tracing::error!("reservation Lease watch ended");
    });
    let prune_book = book;
    let pruner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(opts.prune_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let seen = {
                let state = cluster.read();
                let uids: Vec<String> = prune_book
                    .cache()
                    .values()
                    .flat_map(|c| c.entries.keys())
                    .filter(|u| state.seen_uid(u))
                    .cloned()
                    .collect();
                uids
            };
            let n = prune_book.prune(|u| seen.iter().any(|s| s == u)).await;
            prune_book.metrics.pruned.inc_by(n as u64);
            if n > 0 {
                tracing::debug!(removed = n, "reservation entries pruned");
            }
        }
    });
    ReservationHandle {
        tasks: vec![watch, pruner],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_stable_and_valid() {
        let a = lease_name("default", "data");
        assert_eq!(a, lease_name("default", "data"));
        assert_ne!(a, lease_name("default", "data2"));
        assert_ne!(
            lease_name("a", "b/c"),
            lease_name("a/b", "c").replace('x', "y") + "z"
        );
        assert!(a.starts_with(LEASE_PREFIX));
        assert_eq!(a.len(), LEASE_PREFIX.len() + 16);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn entries_round_trip_and_expire() {
        let e = Entry {
            namespace: "default".into(),
            claim: "data".into(),
            pod: "web-0".into(),
            node: None,
            read_only: false,
            deadline: "2026-12-01T20:00:00Z".into(),
            replica: "r1".into(),
        };
        let mut m = BTreeMap::new();
        m.insert("uid-1".to_string(), e.clone());
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(
            s,
            r#"{"uid-1":{"namespace":"default","claim":"data","pod":"web-0","readOnly":false,"deadline":"2026-12-01T20:00:00Z","replica":"r1"}}"#
        );
        let back: BTreeMap<String, Entry> = serde_json::from_str(&s).unwrap();
        assert_eq!(back["uid-1"], e);
        let before: Timestamp = "2026-12-01T19:59:59Z".parse().unwrap();
        let after: Timestamp = "2026-12-01T20:00:01Z".parse().unwrap();
        assert!(!e.expired(before));
        assert!(e.expired(after));
        let bad = Entry {
            deadline: "soon".into(),
            ..e
        };
        assert!(bad.expired(before), "an unreadable deadline is past");
    }

    #[test]
    fn resource_versions_compare_as_numbers() {
        assert!(not_older("1000", "999"));
        assert!(!not_older("999", "1000"));
        assert!(not_older("abc", "1000"));
    }
}
