//! The claim index: `(namespace, claim) → consumer pods`, plus PVC, PV,
//! StorageClass and Namespace facts — small projections, never whole objects.
//!
//! Pods live in a slab and claims point at slab slots, so a lookup is one
//! hash probe plus one slab read per consumer. Pods that use no claim are not
//! stored at all: most pods in most clusters cost the index nothing.
//! Namespace, node, claim and class names are interned: thousands of pods
//! share one allocation for "default" or "worker-1".

use super::nodes::NodeHealth;
use super::{AccessModes, ClaimFacts, ClusterView, LookupError, NamespaceMode, StorageClassFacts};
use crate::objects::{self, Kind, Object};
use hashbrown::{DefaultHashBuilder, Equivalent, HashMap, HashSet, HashTable};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

mod attachments;
mod claims;
mod keys;
mod slab;
mod slots;
mod uid;
mod volumes;

pub use self::attachments::Attachment;
use self::attachments::AttachmentTable;
use self::claims::*;
use self::keys::*;
use self::slab::*;
use self::slots::*;
pub use self::uid::PodUid;
use self::uid::*;
use self::volumes::*;

/// What the index keeps of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProjection {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub node: Option<String>,
    pub terminating: bool,
    pub reserved: bool,
    /// (claim name, mounted read-only)
    pub claims: Vec<(String, bool)>,
}

#[derive(Debug)]
struct PodEntry {
    key: Key,
    uid: StoredUid,
    node: Option<Arc<str>>,
    terminating: bool,
    reserved: bool,
    /// The pod annotation `claimguard.io/allow-shared-writers: "true"`: the
    /// audit needs it to judge existing pods as admission judged them.
    allow_shared_writers: bool,
    claims: PodClaims,
}

/// A pod's claims with their read-only flags. Almost every pod that uses a
/// claim uses exactly one, so that one lives inline: no allocation.
#[derive(Debug)]
enum PodClaims {
    One(Arc<str>, bool),
    Many(Box<[(Arc<str>, bool)]>),
}

impl PodClaims {
    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, bool)> {
        let (one, many) = match self {
            PodClaims::One(c, ro) => (Some((c, *ro)), &[][..]),
            PodClaims::Many(m) => (None, &m[..]),
        };
        one.into_iter().chain(many.iter().map(|(c, ro)| (c, *ro)))
    }
}

#[derive(Debug, Clone)]
struct ClassEntry {
    provisioner: Arc<str>,
    is_default: bool,
}

/// A pod that uses a claim, as the policy core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<PodUid<'a>>,
    pub node: Option<&'a str>,
    pub terminating: bool,
    pub read_only: bool,
}

/// A stuck attachment, the access modes of its volume and the claim
/// (namespace, name) bound to it when the index knows one.
pub type StuckAttachment<'a> = (Attachment<'a>, AccessModes, Option<(&'a str, &'a str)>);

/// Memory layout, for 100,000 pods and PVCs (docs/performance.md): claim
/// names are not interned (a claim name is shared only between its claim
/// entry and its consumers, which clone the entry's `Arc`); only namespace,
/// node and provisioner names, which thousands of objects share, are.
/// `pod_slots` holds bare slab indexes hashed by the pod's (namespace, name)
/// stored in the slab, so a pod's key is stored once.
#[derive(Debug, Default)]
pub struct ClusterState {
    interned: HashSet<Arc<str>>,
    pods: Slab<PodEntry>,
    free: Vec<u32>,
    hasher: DefaultHashBuilder,
    pod_slots: HashTable<u32>,
    claims: ClaimTable,
    volumes: HashMap<VolumeName, AccessModes>,
    classes: HashMap<Box<str>, ClassEntry>,
    namespaces: HashMap<Box<str>, Option<NamespaceMode>>,
    /// Namespaces labelled `claimguard.io/colocate: "true"` (usually few).
    colocate_namespaces: HashSet<Box<str>>,
    reservations: VecDeque<(Instant, Key)>,
    /// The live deadline of each reserved pod. A queue entry ends a
    /// reservation only when its deadline is this one: a pod reserved, shown
    /// by the watch, deleted and reserved again must not lose its new
    /// reservation to the first one's queue entry.
    reservation_deadlines: HashMap<Key, Instant>,
    removals_since_gc: usize,
    /// Node name → `kubernetes.io/hostname` label and health.
    nodes: super::nodes::NodeTable,
    /// Where each PersistentVolume is attached.
    attachments: AttachmentTable,
    /// Hostname pins of unscheduled pods, by slab slot (rare: most pods are
    /// scheduled, and their node is their pin).
    pins: HashMap<u32, Box<objects::PodSpec>>,
    /// Workloads of a snapshot, for scale requests (never fed live).
    workloads: super::workloads::WorkloadTable,
    /// Uids of claim-using pods the watch has shown, when reservations live
    /// in the API server (`cluster::reservations`).
    seen_uids: Option<super::reservations::SeenUids>,
}

const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// The claims a pod spec uses, with whether every use is read-only.
/// A volume is read-only when its source says so, or when no container uses
/// it as a raw block device (`volumeDevices`: always read-write) and every
/// container that mounts it mounts it read-only. Ephemeral volumes are the
/// pod's own.
pub fn pod_claims(spec: &objects::PodSpec) -> Vec<(&str, bool)> {
    let mut out: Vec<(&str, bool)> = Vec::new();
    for v in &spec.volumes {
        let Some(src) = &v.persistent_volume_claim else {
            continue;
        };
        if src.claim_name.is_empty() {
            continue;
        }
        let containers = || spec.containers.iter().chain(spec.init_containers.iter());
        let raw_block = containers()
            .flat_map(|c| c.volume_devices.iter())
            .any(|d| d.name == v.name);
        let read_only = src.read_only
            || !raw_block
                && containers()
                    .flat_map(|c| c.volume_mounts.iter())
                    .filter(|m| m.name == v.name)
                    .all(|m| m.read_only);
        match out.iter_mut().find(|(c, _)| *c == src.claim_name) {
            Some(existing) => existing.1 &= read_only,
            None => out.push((src.claim_name.as_str(), read_only)),
        }
    }
    out
}

fn is_finished(pod: &objects::Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn namespace_of(meta: &objects::ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

impl ClusterState {
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(a.clone());
        a
    }

    /// Drop interned names nothing refers to any more, now and then, so pod
    /// and claim churn does not grow the interner forever.
    fn note_removal(&mut self) {
        self.removals_since_gc += 1;
        if self.removals_since_gc > 4096 && self.removals_since_gc > self.interned.len() {
            self.interned.retain(|a| Arc::strong_count(a) > 1);
            self.removals_since_gc = 0;
        }
    }

    fn slot_hash(hasher: &DefaultHashBuilder, ns: &str, name: &str) -> u64 {
        hasher.hash_one(KeyRef { ns, name })
    }

    fn find_slot(&self, ns: &str, name: &str) -> Option<u32> {
        let pods = &self.pods;
        self.pod_slots
            .find(Self::slot_hash(&self.hasher, ns, name), |&s| {
                pods[s as usize]
                    .as_ref()
                    .is_some_and(|p| *p.key.ns == *ns && *p.key.name == *name)
            })
            .copied()
    }

    // ---- pods -------------------------------------------------------------

    pub fn apply_pod(&mut self, pod: &objects::Pod) {
        self.end_reservation(namespace_of(&pod.metadata), &pod.metadata.name);
        if let Some(seen) = self.seen_uids.as_mut() {
            seen.note(pod);
        }
        self.upsert_pod(pod, false);
    }

    /// From now on remember the uids of claim-using pods the watch shows, for
    /// `keep` after their last event (see `cluster::reservations`).
    pub fn track_seen_uids(&mut self, keep: std::time::Duration) {
        self.seen_uids = Some(super::reservations::SeenUids::new(keep));
    }

    /// Has the watch shown the pod with this uid (stored, or since gone)?
    pub fn seen_uid(&self, uid: &str) -> bool {
        self.seen_uids.as_ref().is_some_and(|s| s.contains(uid))
    }

    fn end_reservation(&mut self, ns: &str, name: &str) {
        if !self.reservation_deadlines.is_empty() {
            self.reservation_deadlines.remove(&KeyRef { ns, name });
        }
    }

    /// An admitted pod the watch has not shown yet: it holds its claims until
    /// the watch shows it (then it is an ordinary pod) or `deadline` passes.
    pub fn reserve_pod(&mut self, pod: &objects::Pod, deadline: Instant) {
        let ns = namespace_of(&pod.metadata);
        if let Some(slot) = self.find_slot(ns, &pod.metadata.name) {
            if let Some(e) = &self.pods[slot as usize] {
                if !e.reserved {
                    // The watch was faster than us: the real pod is there.
                    return;
                }
            }
        }
        if let Some(key) = self.upsert_pod(pod, true) {
            self.reservation_deadlines.insert(key.clone(), deadline);
            self.reservations.push_back((deadline, key));
        }
    }

    /// Ends reservations whose deadline passed and whose pod the watch never
    /// showed (its creation failed later in admission). Returns how many.
    pub fn expire_reservations(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some((deadline, _)) = self.reservations.front() {
            if *deadline > now {
                break;
            }
            let Some((deadline, key)) = self.reservations.pop_front() else {
                break;
            };
            let current = self.reservation_deadlines.get(&key) == Some(&deadline);
            let still_reserved = current
                && self
                    .find_slot(&key.ns, &key.name)
                    .and_then(|s| self.pods[s as usize].as_ref())
                    .is_some_and(|e| e.reserved);
            if still_reserved {
                self.delete_pod(&key.ns, &key.name);
                n += 1;
            }
        }
        n
    }

    pub fn reservation_count(&self) -> usize {
        self.pods.iter().flatten().filter(|p| p.reserved).count()
    }

    fn upsert_pod(&mut self, pod: &objects::Pod, reserved: bool) -> Option<Key> {
        let ns = namespace_of(&pod.metadata);
        let name = pod.metadata.name.as_str();
        let claims = pod.spec.as_ref().map(pod_claims).unwrap_or_default();
        if is_finished(pod) || claims.is_empty() || name.is_empty() {
            // Pod volumes are immutable, so a pod without claims never gains one;
            // a finished pod no longer holds its claims.
            self.delete_pod(ns, name);
            return None;
        }
        let ns_arc = self.intern(ns);
        // Share the claim entry's name when there is one.
        let mut linked: Vec<(Arc<str>, bool)> = claims
            .iter()
            .map(|(c, ro)| {
                let name = match self.claims.get_key_value(&KeyRef { ns, name: c }) {
                    Some((k, _)) => k.name.clone(),
                    None => Arc::from(*c),
                };
                (name, *ro)
            })
            .collect();
        let claims = match linked.pop() {
            Some((c, ro)) if linked.is_empty() => PodClaims::One(c, ro),
            Some(last) => {
                linked.push(last);
                PodClaims::Many(linked.into_boxed_slice())
            }
            None => PodClaims::Many(Box::default()),
        };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
            .map(|n| self.intern(n));
        let uid = StoredUid::of(pod.metadata.uid.as_deref());
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let allow_shared_writers = pod
            .metadata
            .annotations
            .get(crate::policy::ALLOW_SHARED_WRITERS)
            .map(String::as_str)
            == Some("true");

        let existing = self.find_slot(ns, name);
        let slot = match existing {
            Some(slot) => {
                self.unlink(slot);
                slot
            }
            None => match self.free.pop() {
                Some(s) => s,
                None => {
                    self.pods.push(None);
                    (self.pods.len() - 1) as u32
                }
            },
        };
        let key = match &self.pods[slot as usize] {
            Some(old) => old.key.clone(),
            None => Key {
                ns: ns_arc.clone(),
                name: Arc::from(name),
            },
        };
        for (claim, _) in claims.iter() {
            let entry = self.claims.entry_or_default(Key {
                ns: ns_arc.clone(),
                name: claim.clone(),
            });
            if !entry.consumers.contains(&slot) {
                entry.consumers.push(slot);
            }
        }
        self.pins.remove(&slot);
        if let Some(pin) = pod.spec.as_ref().and_then(super::nodes::pod_pin) {
            self.pins.insert(slot, Box::new(pin));
        }
        self.pods[slot as usize] = Some(PodEntry {
            key: key.clone(),
            uid,
            node,
            terminating,
            reserved,
            allow_shared_writers,
            claims,
        });
        if existing.is_none() {
            // The slab entry is in place before the table can rehash over it.
            let (pods, hasher) = (&self.pods, &self.hasher);
            self.pod_slots
                .insert_unique(Self::slot_hash(hasher, ns, name), slot, |&s| {
                    match &pods[s as usize] {
                        Some(p) => Self::slot_hash(hasher, &p.key.ns, &p.key.name),
                        None => 0,
                    }
                });
        }
        Some(key)
    }

    /// Remove a slot's pod from its claims' consumer lists.
    fn unlink(&mut self, slot: u32) {
        let Some(entry) = &self.pods[slot as usize] else {
            return;
        };
        for (claim, _) in entry.claims.iter() {
            let k = KeyRef {
                ns: &entry.key.ns,
                name: claim,
            };
            if let Some(c) = self.claims.get_mut(&k) {
                c.consumers.retain(|s| s != slot);
                if c.consumers.is_empty() && c.pvc.is_none() {
                    self.claims.remove(&k);
                }
            }
        }
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.end_reservation(namespace, name);
        let pods = &self.pods;
        let Ok(found) =
            self.pod_slots
                .find_entry(Self::slot_hash(&self.hasher, namespace, name), |&s| {
                    pods[s as usize]
                        .as_ref()
                        .is_some_and(|p| *p.key.ns == *namespace && *p.key.name == *name)
                })
        else {
            return;
        };
        let (slot, _) = found.remove();
        self.unlink(slot);
        self.pins.remove(&slot);
        self.pods[slot as usize] = None;
        self.free.push(slot);
        self.note_removal();
    }

    pub fn pod_count(&self) -> usize {
        self.pod_slots.len()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodProjection> {
        let slot = self.find_slot(namespace, name)?;
        self.pods[slot as usize].as_ref().map(project)
    }

    /// Every stored pod, in no particular order.
    pub fn pods(&self) -> impl Iterator<Item = PodProjection> + '_ {
        self.pods.iter().flatten().map(project)
    }

    /// Whether the stored pod carries `claimguard.io/allow-shared-writers: "true"`.
    pub fn allows_shared_writers(&self, namespace: &str, name: &str) -> bool {
        self.find_slot(namespace, name)
            .and_then(|s| self.pods[s as usize].as_ref())
            .is_some_and(|p| p.allow_shared_writers)
    }

    /// The hostname pin of a stored pod that is not scheduled yet
    /// (`nodes::pod_pin`): what the audit judges its placement by.
    pub fn pod_pin(&self, namespace: &str, name: &str) -> Option<&objects::PodSpec> {
        self.find_slot(namespace, name)
            .and_then(|s| self.pins.get(&s))
            .map(|p| &**p)
    }

    /// Keys of the pods a watch has shown (reservations excluded): what a
    /// re-list compares against to remove pods deleted during an outage.
    pub fn pod_keys(&self) -> Vec<(String, String)> {
        self.pods
            .iter()
            .flatten()
            .filter(|p| !p.reserved)
            .map(|p| (p.key.ns.to_string(), p.key.name.to_string()))
            .collect()
    }

    // ---- claims -----------------------------------------------------------

    pub fn apply_pvc(&mut self, pvc: &objects::PersistentVolumeClaim) {
        let ns = namespace_of(&pvc.metadata);
        if pvc.metadata.name.is_empty() {
            return;
        }
        let name = pvc.metadata.name.as_str();
        let spec = pvc.spec.as_ref();
        let facts = PvcEntry::new(
            spec.map(|s| AccessModes::from_names(&s.access_modes))
                .unwrap_or_default(),
            spec.and_then(|s| s.volume_name.as_deref())
                .filter(|v| !v.is_empty()),
        );
        match self.claims.get_mut(&KeyRef { ns, name }) {
            Some(c) => c.pvc = Some(facts),
            None => {
                let key = Key {
                    ns: self.intern(ns),
                    name: Arc::from(name),
                };
                self.claims.entry_or_default(key).pvc = Some(facts);
            }
        }
    }

    /// The facts of a claim the index does not hold (a live GET's answer),
    /// resolved against the volumes the index knows.
    pub fn facts_of(&self, pvc: &objects::PersistentVolumeClaim) -> ClaimFacts {
        let spec = pvc.spec.as_ref();
        let own = spec
            .map(|s| AccessModes::from_names(&s.access_modes))
            .unwrap_or_default();
        let effective = spec
            .and_then(|s| s.volume_name.as_deref())
            .and_then(|v| self.volumes.get(&VolumeRef::of(v)))
            .filter(|m| !m.is_empty())
            .copied()
            .unwrap_or(own);
        ClaimFacts { effective }
    }

    pub fn delete_pvc(&mut self, namespace: &str, name: &str) {
        let k = KeyRef {
            ns: namespace,
            name,
        };
        if let Some(c) = self.claims.get_mut(&k) {
            c.pvc = None;
            if c.consumers.is_empty() {
                self.claims.remove(&k);
            }
            self.note_removal();
        }
    }

    pub fn pvc_keys(&self) -> Vec<(String, String)> {
        self.claims
            .iter()
            .filter(|(_, c)| c.pvc.is_some())
            .map(|(k, _)| (k.ns.to_string(), k.name.to_string()))
            .collect()
    }

    pub fn pvc_count(&self) -> usize {
        self.claims.values().filter(|c| c.pvc.is_some()).count()
    }

    /// Claim keys that have at least one consumer: what an audit walks.
    pub fn used_claims(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.claims
            .iter()
            .filter(|(_, c)| !c.consumers.is_empty())
            .map(|(k, _)| (&*k.ns, &*k.name))
    }

    pub fn apply_pv(&mut self, pv: &objects::PersistentVolume) {
        if pv.metadata.name.is_empty() {
            return;
        }
        let modes = pv
            .spec
            .as_ref()
            .map(|s| AccessModes::from_names(&s.access_modes))
            .unwrap_or_default();
        self.volumes
            .insert(VolumeRef::of(&pv.metadata.name).into(), modes);
    }

    pub fn delete_pv(&mut self, name: &str) {
        self.volumes.remove(&VolumeRef::of(name));
    }

    pub fn pv_names(&self) -> Vec<String> {
        self.volumes.keys().map(|k| k.to_string()).collect()
    }

    pub fn apply_storage_class(&mut self, sc: &objects::StorageClass) {
        if sc.metadata.name.is_empty() {
            return;
        }
        let ann = &sc.metadata.annotations;
        let is_default = ann.get(DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true")
            || ann.get(BETA_DEFAULT_CLASS_ANNOTATION).map(String::as_str) == Some("true");
        let provisioner = self.intern(&sc.provisioner);
        self.classes.insert(
            sc.metadata.name.as_str().into(),
            ClassEntry {
                provisioner,
                is_default,
            },
        );
    }

    pub fn delete_storage_class(&mut self, name: &str) {
        self.classes.remove(name);
    }

    pub fn storage_class_names(&self) -> Vec<String> {
        self.classes.keys().map(|k| k.to_string()).collect()
    }

    pub fn apply_namespace(&mut self, ns: &objects::Namespace) {
        if ns.metadata.name.is_empty() {
            return;
        }
        let mode = ns
            .metadata
            .labels
            .get(super::MODE_LABEL)
            .and_then(|v| NamespaceMode::from_label(v));
        self.namespaces
            .insert(ns.metadata.name.as_str().into(), mode);
        if ns
            .metadata
            .labels
            .get(super::COLOCATE_LABEL)
            .map(String::as_str)
            == Some("true")
        {
            self.colocate_namespaces
                .insert(ns.metadata.name.as_str().into());
        } else {
            self.colocate_namespaces.remove(ns.metadata.name.as_str());
        }
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
        self.colocate_namespaces.remove(name);
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().map(|k| k.to_string()).collect()
    }

    // ---- nodes --------------------------------------------------------------

    pub fn apply_node(&mut self, node: &objects::Node) {
        self.nodes.apply(node);
    }

    pub fn delete_node(&mut self, name: &str) {
        self.nodes.delete(name);
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.names()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    // ---- volume attachments -------------------------------------------------

    pub fn apply_volume_attachment(&mut self, va: &objects::VolumeAttachment) {
        let Some(spec) = va.spec.as_ref() else { return };
        if attachments::key_of(va).is_none() {
            return;
        }
        let node = self.intern(&spec.node_name);
        self.attachments.apply(va, node);
    }

    /// `volume` is the attachment's PersistentVolume (its key in the index).
    pub fn delete_volume_attachment(&mut self, volume: &str, name: &str) {
        self.attachments.delete(volume, name);
    }

    /// (volume, name) of every attachment.
    pub fn volume_attachment_keys(&self) -> Vec<(String, String)> {
        self.attachments.keys()
    }

    pub fn volume_attachment_count(&self) -> usize {
        self.attachments.len()
    }

    fn with_health<'a>(&'a self, mut a: Attachment<'a>) -> Attachment<'a> {
        a.node_health = self.nodes.health(a.node);
        a
    }

    /// Every stuck attachment of a ReadWriteOncePod or single-node volume,
    /// with the claim bound to it when the index knows one: what the audit
    /// reports as `stale-attachment` and `serve` counts in a gauge. O(attachments).
    pub fn stuck_attachments(&self) -> Vec<StuckAttachment<'_>> {
        let mut stuck: Vec<(VolumeRef<'_>, Attachment<'_>)> = self
            .attachments
            .all()
            .map(|(v, a)| (v, self.with_health(a)))
            .filter(|(_, a)| a.is_stuck())
            .collect();
        if stuck.is_empty() {
            return Vec::new();
        }
        // Volume -> bound claim, only for the few stuck volumes.
        let wanted: HashSet<VolumeName> = stuck.iter().map(|(v, _)| (*v).into()).collect();
        let mut bound: HashMap<String, (&str, &str, AccessModes)> = HashMap::new();
        for (k, c) in self.claims.iter() {
            let Some(pvc) = &c.pvc else { continue };
            let Some(v) = pvc.volume() else { continue };
            if wanted.contains(&v) {
                bound.insert(v.to_string(), (&*k.ns, &*k.name, pvc.modes()));
            }
        }
        stuck.sort_by(|a, b| (&a.1.volume, &a.1.name).cmp(&(&b.1.volume, &b.1.name)));
        stuck
            .into_iter()
            .filter_map(|(v, a)| {
                let claim = bound.get(&a.volume);
                let modes = self
                    .volumes
                    .get(&v)
                    .filter(|m| !m.is_empty())
                    .copied()
                    .or(claim.map(|c| c.2))?;
                (modes.is_rwop() || modes.is_single_node())
                    .then(|| (a, modes, claim.map(|c| (c.0, c.1))))
            })
            .collect()
    }

    /// A workload of the snapshot (or admitted since), for a scale request.
    pub fn workload(&self, kind: Kind, namespace: &str, name: &str) -> Option<&objects::Workload> {
        self.workloads.get(kind, namespace, name)
    }

    pub fn workload_count(&self) -> usize {
        self.workloads.len()
    }

    /// Store any object of a kind the index keeps; others are ignored.
    pub fn apply_object(&mut self, obj: &Object) {
        match obj {
            Object::Pod(p) => self.apply_pod(p),
            Object::PersistentVolumeClaim(p) => self.apply_pvc(p),
            Object::PersistentVolume(p) => self.apply_pv(p),
            Object::StorageClass(s) => self.apply_storage_class(s),
            Object::Namespace(n) => self.apply_namespace(n),
            Object::Node(n) => self.apply_node(n),
            Object::VolumeAttachment(v) => self.apply_volume_attachment(v),
            Object::Workload(k, w) => self.workloads.apply(*k, w),
        }
    }

    /// Sorted, one line per projection and per claim link: two indexes built
    /// by different event orders are equal exactly when their dumps are.
    pub fn canonical_dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.nodes.dump(&mut out);
        self.attachments.dump(&mut out);
        for (slot, p) in self.pods.iter().enumerate() {
            let Some(p) = p else { continue };
            if let Some(pin) = self.pins.get(&(slot as u32)) {
                out.push(format!(
                    "pin {}/{} {}",
                    p.key.ns,
                    p.key.name,
                    super::nodes::describe_pin(pin)
                ));
            }
            let mut claims: Vec<String> = p
                .claims
                .iter()
                .map(|(c, ro)| format!("{c}:{}", if ro { "ro" } else { "rw" }))
                .collect();
            claims.sort();
            out.push(format!(
                "pod {}/{} uid={} node={} terminating={} reserved={} claims={}",
                p.key.ns,
                p.key.name,
                p.uid
                    .as_uid()
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.node.as_deref().unwrap_or("-"),
                p.terminating,
                p.reserved,
                claims.join(",")
            ));
        }
        for (k, c) in self.claims.iter() {
            if let Some(pvc) = &c.pvc {
                out.push(format!(
                    "pvc {}/{} modes={} volume={}",
                    k.ns,
                    k.name,
                    pvc.modes(),
                    pvc.volume()
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into())
                ));
            }
            let mut users: Vec<&str> = c
                .consumers
                .iter()
                .filter_map(|s| self.pods[*s as usize].as_ref())
                .map(|p| &*p.key.name)
                .collect();
            users.sort();
            if !users.is_empty() {
                out.push(format!(
                    "claim {}/{} used-by={}",
                    k.ns,
                    k.name,
                    users.join(",")
                ));
            }
        }
        for (name, modes) in &self.volumes {
            out.push(format!("pv {name} modes={modes}"));
        }
        for (name, c) in &self.classes {
            out.push(format!(
                "storageclass {name} provisioner={} default={}",
                c.provisioner, c.is_default
            ));
        }
        for (name, mode) in &self.namespaces {
            out.push(format!(
                "namespace {name} mode={}",
                mode.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
            ));
        }
        out.sort();
        out
    }
}

fn project(p: &PodEntry) -> PodProjection {
    PodProjection {
        namespace: p.key.ns.to_string(),
        name: p.key.name.to_string(),
        uid: p.uid.as_uid().map(|u| u.to_string()),
        node: p.node.as_deref().map(str::to_string),
        terminating: p.terminating,
        reserved: p.reserved,
        claims: p.claims.iter().map(|(c, ro)| (c.to_string(), ro)).collect(),
    }
}

impl ClusterView for ClusterState {
    fn claim(&self, namespace: &str, name: &str) -> Result<Option<ClaimFacts>, LookupError> {
        let Some(pvc) = self
            .claims
            .get(&KeyRef {
                ns: namespace,
                name,
            })
            .and_then(|c| c.pvc.as_ref())
        else {
            return Ok(None);
        };
        let effective = pvc
            .volume()
            .and_then(|v| self.volumes.get(&v))
            .filter(|m| !m.is_empty())
            .copied()
            .unwrap_or(pvc.modes());
        Ok(Some(ClaimFacts { effective }))
    }

    fn consumers(&self, namespace: &str, claim: &str) -> Result<Vec<Consumer<'_>>, LookupError> {
        let Some(entry) = self.claims.get(&KeyRef {
            ns: namespace,
            name: claim,
        }) else {
            return Ok(Vec::new());
        };
        Ok(entry
            .consumers
            .iter()
            .filter_map(|s| self.pods[*s as usize].as_ref())
            .map(|p| Consumer {
                namespace: &p.key.ns,
                name: &p.key.name,
                uid: p.uid.as_uid(),
                node: p.node.as_deref(),
                terminating: p.terminating,
                read_only: p
                    .claims
                    .iter()
                    .find(|(c, _)| &***c == claim)
                    .is_some_and(|(_, ro)| ro),
            })
            .collect())
    }

    fn namespace_mode(&self, namespace: &str) -> Result<Option<NamespaceMode>, LookupError> {
        Ok(self.namespaces.get(namespace).copied().flatten())
    }

    fn node_hostname(&self, node: &str) -> Option<&str> {
        self.nodes.hostname(node)
    }

    fn node_health(&self, node: &str) -> Option<NodeHealth<'_>> {
        self.nodes.health(node)
    }

    fn attachments(&self, namespace: &str, claim: &str) -> Vec<Attachment<'_>> {
        let Some(volume) = self
            .claims
            .get(&KeyRef {
                ns: namespace,
                name: claim,
            })
            .and_then(|c| c.pvc.as_ref())
            .and_then(|p| p.volume())
        else {
            return Vec::new();
        };
        self.attachments
            .of_volume(volume)
            .into_iter()
            .map(|a| self.with_health(a))
            .collect()
    }

    fn namespace_colocates(&self, namespace: &str) -> Result<bool, LookupError> {
        Ok(self.colocate_namespaces.contains(namespace))
    }

    fn storage_class(&self, name: &str) -> Option<StorageClassFacts<'_>> {
        self.classes
            .get_key_value(name)
            .map(|(k, c)| StorageClassFacts {
                name: k,
                provisioner: &c.provisioner,
            })
    }

    fn default_storage_class(&self) -> Option<StorageClassFacts<'_>> {
        // Kubernetes picks the newest default when several are marked; the
        // snapshot does not keep timestamps, so take the first by name.
        self.classes
            .iter()
            .filter(|(_, c)| c.is_default)
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(k, c)| StorageClassFacts {
                name: k,
                provisioner: &c.provisioner,
            })
    }
}

#[cfg(test)]
mod tests;
