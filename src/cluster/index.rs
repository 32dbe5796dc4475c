//! The claim index: `(namespace, claim) → consumer pods`, plus PVC, PV,
//! StorageClass and Namespace facts — small projections, never whole objects.
//!
//! Pods live in a slab and claims point at slab slots, so a lookup is one
//! hash probe plus one slab read per consumer. Pods that use no claim are not
//! stored at all: most pods in most clusters cost the index nothing.
//! Namespace, node, claim and class names are interned: thousands of pods
//! share one allocation for "default" or "worker-1".

use super::{AccessModes, ClaimFacts, ClusterView, LookupError, NamespaceMode, StorageClassFacts};
use crate::objects::{self, Kind, Object};
use hashbrown::{DefaultHashBuilder, Equivalent, HashMap, HashSet, HashTable};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    ns: Arc<str>,
    name: Arc<str>,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.ns.hash(h);
        self.name.hash(h);
    }
}

/// Borrowed form of `Key` so lookups never allocate.
struct KeyRef<'a> {
    ns: &'a str,
    name: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.ns.hash(h);
        self.name.hash(h);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, k: &Key) -> bool {
        *k.ns == *self.ns && *k.name == *self.name
    }
}

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

/// A pod uid as stored: the API server's canonical UUIDs in 16 bytes
/// (instead of 36 bytes of text plus an allocation), anything else as text.
#[derive(Debug)]
enum StoredUid {
    None,
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl StoredUid {
    fn of(uid: Option<&str>) -> StoredUid {
        match uid.filter(|u| !u.is_empty()) {
            None => StoredUid::None,
            Some(u) => match parse_uuid(u) {
                Some(b) => StoredUid::Uuid(b),
                None => StoredUid::Text(u.into()),
            },
        }
    }

    fn as_uid(&self) -> Option<PodUid<'_>> {
        match self {
            StoredUid::None => None,
            StoredUid::Uuid(b) => Some(PodUid::Uuid(*b)),
            StoredUid::Text(t) => Some(PodUid::Text(t)),
        }
    }
}

/// A consumer's uid, borrowed from the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodUid<'a> {
    Uuid([u8; 16]),
    Text(&'a str),
}

impl PodUid<'_> {
    /// Is this the uid written as `s`?
    pub fn matches(&self, s: &str) -> bool {
        match self {
            PodUid::Uuid(b) => parse_uuid(s) == Some(*b),
            PodUid::Text(t) => *t == s,
        }
    }
}

impl std::fmt::Display for PodUid<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PodUid::Text(t) => f.write_str(t),
            PodUid::Uuid(u) => {
                for (i, b) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
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

#[derive(Debug, Default)]
struct ClaimEntry {
    pvc: Option<PvcEntry>,
    consumers: Slots,
}

/// Slab slots of a claim's consumers. Most claims have at most three
/// consumers, so those live inline in the 24 bytes a `Vec` header takes.
#[derive(Debug, Clone)]
enum Slots {
    Inline { len: u8, items: [u32; 3] },
    Heap(Vec<u32>),
}

impl Default for Slots {
    fn default() -> Self {
        Slots::Inline {
            len: 0,
            items: [0; 3],
        }
    }
}

impl Slots {
    fn as_slice(&self) -> &[u32] {
        match self {
            Slots::Inline { len, items } => &items[..*len as usize],
            Slots::Heap(v) => v,
        }
    }
    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
    fn iter(&self) -> std::slice::Iter<'_, u32> {
        self.as_slice().iter()
    }
    fn contains(&self, slot: &u32) -> bool {
        self.as_slice().contains(slot)
    }
    fn push(&mut self, slot: u32) {
        match self {
            Slots::Inline { len, items } if (*len as usize) < items.len() => {
                items[*len as usize] = slot;
                *len += 1;
            }
            Slots::Inline { len, items } => {
                let mut v = items[..*len as usize].to_vec();
                v.push(slot);
                *self = Slots::Heap(v);
            }
            Slots::Heap(v) => v.push(slot),
        }
    }
    fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        match self {
            Slots::Inline { len, items } => {
                let mut n = 0;
                for i in 0..*len as usize {
                    if keep(items[i]) {
                        items[n] = items[i];
                        n += 1;
                    }
                }
                *len = n as u8;
            }
            Slots::Heap(v) => v.retain(|s| keep(*s)),
        }
    }
}

/// The pod slab, in fixed chunks: a `Vec` doubles, so 100,000 pods would sit
/// in room for 131,072 and a quarter of the slab would be empty.
#[derive(Debug)]
struct Slab<T> {
    chunks: Vec<Box<[Option<T>]>>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

const SLAB_CHUNK: usize = 1024;

impl<T> Slab<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn push(&mut self, entry: Option<T>) {
        if self.len == self.chunks.len() * SLAB_CHUNK {
            self.chunks.push((0..SLAB_CHUNK).map(|_| None).collect());
        }
        self.chunks[self.len / SLAB_CHUNK][self.len % SLAB_CHUNK] = entry;
        self.len += 1;
    }
    fn iter(&self) -> impl Iterator<Item = &Option<T>> {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }
}

impl<T> std::ops::Index<usize> for Slab<T> {
    type Output = Option<T>;
    fn index(&self, i: usize) -> &Option<T> {
        &self.chunks[i / SLAB_CHUNK][i % SLAB_CHUNK]
    }
}

impl<T> std::ops::IndexMut<usize> for Slab<T> {
    fn index_mut(&mut self, i: usize) -> &mut Option<T> {
        &mut self.chunks[i / SLAB_CHUNK][i % SLAB_CHUNK]
    }
}

/// `(namespace, claim) → ClaimEntry`, with the same layout as the pods: the
/// entries in a chunked slab, the hash table holding 4-byte slab indexes. A
/// `HashMap` of 80-byte entries sat at 131,072 slots for 100,000 PVCs.
#[derive(Debug, Default)]
struct ClaimTable {
    slab: Slab<(Key, ClaimEntry)>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl ClaimTable {
    fn find(&self, k: &KeyRef<'_>) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(self.hasher.hash_one(k), |&s| {
                slab[s as usize]
                    .as_ref()
                    .is_some_and(|(key, _)| k.equivalent(key))
            })
            .copied()
    }

    fn get_key_value(&self, k: &KeyRef<'_>) -> Option<(&Key, &ClaimEntry)> {
        let slot = self.find(k)?;
        self.slab[slot as usize].as_ref().map(|(k, e)| (k, e))
    }

    fn get(&self, k: &KeyRef<'_>) -> Option<&ClaimEntry> {
        self.get_key_value(k).map(|(_, e)| e)
    }

    fn get_mut(&mut self, k: &KeyRef<'_>) -> Option<&mut ClaimEntry> {
        let slot = self.find(k)?;
        self.slab[slot as usize].as_mut().map(|(_, e)| e)
    }

    /// The entry for `key`, created empty if there is none.
    fn entry_or_default(&mut self, key: Key) -> &mut ClaimEntry {
        let k = KeyRef {
            ns: &key.ns,
            name: &key.name,
        };
        let slot = match self.find(&k) {
            Some(slot) => slot,
            None => {
                let hash = self.hasher.hash_one(&k);
                let slot = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slab.push(None);
                        (self.slab.len() - 1) as u32
                    }
                };
                // A resize rehashes the slots already in the table, never
                // this one, whose entry is filled below.
                let (slab, hasher) = (&self.slab, &self.hasher);
                self.index
                    .insert_unique(hash, slot, |&s| match &slab[s as usize] {
                        Some((key, _)) => hasher.hash_one(KeyRef {
                            ns: &key.ns,
                            name: &key.name,
                        }),
                        None => 0,
                    });
                slot
            }
        };
        &mut self.slab[slot as usize]
            .get_or_insert_with(|| (key, ClaimEntry::default()))
            .1
    }

    fn remove(&mut self, k: &KeyRef<'_>) {
        let slab = &self.slab;
        if let Ok(found) = self.index.find_entry(self.hasher.hash_one(k), |&s| {
            slab[s as usize]
                .as_ref()
                .is_some_and(|(key, _)| k.equivalent(key))
        }) {
            let (slot, _) = found.remove();
            self.slab[slot as usize] = None;
            self.free.push(slot);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Key, &ClaimEntry)> {
        self.slab.iter().flatten().map(|(k, e)| (k, e))
    }

    fn values(&self) -> impl Iterator<Item = &ClaimEntry> {
        self.iter().map(|(_, e)| e)
    }
}

/// What the index keeps of a PVC: its own access modes and the PV it is
/// bound to. CSI provisioners name volumes `pvc-<uid>`; such a name is kept
/// as its 16 UUID bytes, so the whole entry fits in 24 bytes.
#[derive(Debug, Clone)]
enum PvcEntry {
    Unbound(AccessModes),
    PvcUuid(AccessModes, [u8; 16]),
    Named(AccessModes, Box<str>),
}

impl PvcEntry {
    fn new(modes: AccessModes, volume: Option<&str>) -> PvcEntry {
        match volume {
            None => PvcEntry::Unbound(modes),
            Some(v) => match VolumeRef::of(v) {
                VolumeRef::PvcUuid(u) => PvcEntry::PvcUuid(modes, u),
                VolumeRef::Named(n) => PvcEntry::Named(modes, n.into()),
            },
        }
    }
    fn modes(&self) -> AccessModes {
        match self {
            PvcEntry::Unbound(m) | PvcEntry::PvcUuid(m, _) | PvcEntry::Named(m, _) => *m,
        }
    }
    fn volume(&self) -> Option<VolumeRef<'_>> {
        match self {
            PvcEntry::Unbound(_) => None,
            PvcEntry::PvcUuid(_, u) => Some(VolumeRef::PvcUuid(*u)),
            PvcEntry::Named(_, n) => Some(VolumeRef::Named(n)),
        }
    }
}

/// A PersistentVolume name, `pvc-<uuid>` kept as 16 bytes. Only the
/// canonical lowercase form is compacted, so printing it gives back exactly
/// the name that came in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum VolumeName {
    PvcUuid([u8; 16]),
    Named(Box<str>),
}

#[derive(Debug, Clone, Copy)]
enum VolumeRef<'a> {
    PvcUuid([u8; 16]),
    Named(&'a str),
}

impl<'a> VolumeRef<'a> {
    fn of(name: &'a str) -> VolumeRef<'a> {
        match name.strip_prefix("pvc-").and_then(parse_uuid) {
            Some(u) => VolumeRef::PvcUuid(u),
            None => VolumeRef::Named(name),
        }
    }
}

impl VolumeName {
    fn as_ref(&self) -> VolumeRef<'_> {
        match self {
            VolumeName::PvcUuid(u) => VolumeRef::PvcUuid(*u),
            VolumeName::Named(n) => VolumeRef::Named(n),
        }
    }
}

impl Hash for VolumeName {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_ref().hash(h)
    }
}

impl Hash for VolumeRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            VolumeRef::PvcUuid(u) => {
                0u8.hash(h);
                u.hash(h);
            }
            VolumeRef::Named(n) => {
                1u8.hash(h);
                n.hash(h);
            }
        }
    }
}

impl Equivalent<VolumeName> for VolumeRef<'_> {
    fn equivalent(&self, k: &VolumeName) -> bool {
        match (self, k) {
            (VolumeRef::PvcUuid(a), VolumeName::PvcUuid(b)) => a == b,
            (VolumeRef::Named(a), VolumeName::Named(b)) => *a == &**b,
            _ => false,
        }
    }
}

impl From<VolumeRef<'_>> for VolumeName {
    fn from(r: VolumeRef<'_>) -> VolumeName {
        match r {
            VolumeRef::PvcUuid(u) => VolumeName::PvcUuid(u),
            VolumeRef::Named(n) => VolumeName::Named(n.into()),
        }
    }
}

impl std::fmt::Display for VolumeRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VolumeRef::Named(n) => f.write_str(n),
            VolumeRef::PvcUuid(u) => {
                f.write_str("pvc-")?;
                for (i, b) in u.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Display for VolumeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// `8-4-4-4-12` lowercase hex, exactly; anything else is kept as text.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hex = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[n] = (hex(b[i])? << 4) | hex(b[i + 1])?;
        n += 1;
        i += 2;
    }
    Some(out)
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
    /// Node name → `kubernetes.io/hostname` label.
    nodes: super::nodes::NodeTable,
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
            Object::Workload(k, w) => self.workloads.apply(*k, w),
        }
    }

    /// Sorted, one line per projection and per claim link: two indexes built
    /// by different event orders are equal exactly when their dumps are.
    pub fn canonical_dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.nodes.dump(&mut out);
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
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, node: Option<&str>, claims: &[(&str, bool)]) -> objects::Pod {
        let v = serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
            "spec": {
                "nodeName": node,
                "containers": [{"volumeMounts": claims.iter().enumerate().map(|(i, (_, ro))| serde_json::json!({"name": format!("v{i}"), "readOnly": ro})).collect::<Vec<_>>()}],
                "volumes": claims.iter().enumerate().map(|(i, (c, _))| serde_json::json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>(),
            }
        });
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn consumers_follow_pod_lifecycle() {
        let mut s = ClusterState::new();
        s.apply_pod(&pod("default", "a", Some("n1"), &[("data", false)]));
        s.apply_pod(&pod(
            "default",
            "b",
            None,
            &[("data", true), ("logs", false)],
        ));
        s.apply_pod(&pod("other", "c", Some("n2"), &[("data", false)]));
        let c = s.consumers("default", "data").unwrap();
        assert_eq!(c.len(), 2);
        assert!(c
            .iter()
            .any(|c| c.name == "b" && c.read_only && c.node.is_none()));
        // node assigned
        s.apply_pod(&pod(
            "default",
            "b",
            Some("n3"),
            &[("data", true), ("logs", false)],
        ));
        let c = s.consumers("default", "data").unwrap();
        assert!(c.iter().any(|c| c.name == "b" && c.node == Some("n3")));
        // finished pods release their claims
        let mut done = pod("default", "a", Some("n1"), &[("data", false)]);
        done.status = Some(objects::PodStatus {
            phase: Some("Succeeded".into()),
        });
        s.apply_pod(&done);
        assert_eq!(s.consumers("default", "data").unwrap().len(), 1);
        s.delete_pod("default", "b");
        assert!(s.consumers("default", "data").unwrap().is_empty());
        assert!(s.consumers("default", "logs").unwrap().is_empty());
        assert_eq!(s.pod_count(), 1);
        // slot reuse keeps links right
        s.apply_pod(&pod("default", "d", Some("n1"), &[("logs", false)]));
        assert_eq!(s.consumers("default", "logs").unwrap()[0].name, "d");
        assert_eq!(s.consumers("other", "data").unwrap()[0].name, "c");
    }

    #[test]
    fn pods_without_claims_cost_nothing() {
        let mut s = ClusterState::new();
        s.apply_pod(&pod("default", "a", Some("n1"), &[]));
        assert_eq!(s.pod_count(), 0);
    }

    #[test]
    fn effective_modes_prefer_bound_pv() {
        let mut s = ClusterState::new();
        let pvc: objects::PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-1"}
        }))
        .unwrap();
        s.apply_pvc(&pvc);
        assert_eq!(
            s.claim("default", "data").unwrap().unwrap().effective,
            AccessModes::RWO
        );
        let pv: objects::PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv-1"}, "spec": {"accessModes": ["ReadWriteOncePod"]}
        }))
        .unwrap();
        s.apply_pv(&pv);
        assert!(s
            .claim("default", "data")
            .unwrap()
            .unwrap()
            .effective
            .is_rwop());
        assert_eq!(s.claim("default", "nope").unwrap(), None);
        s.delete_pvc("default", "data");
        assert_eq!(s.claim("default", "data").unwrap(), None);
    }

    #[test]
    fn uids_are_kept_exactly() {
        let mut s = ClusterState::new();
        let mut a = pod("default", "a", Some("n1"), &[("data", false)]);
        a.metadata.uid = Some("7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60".into());
        let mut b = pod("default", "b", Some("n1"), &[("data", false)]);
        b.metadata.uid = Some("7D3C1A52-8F0E-4B8E-9A57-1C2D3E4F5A61".into());
        s.apply_pod(&a);
        s.apply_pod(&b);
        let cs = s.consumers("default", "data").unwrap();
        let ua = cs.iter().find(|c| c.name == "a").unwrap().uid.unwrap();
        let ub = cs.iter().find(|c| c.name == "b").unwrap().uid.unwrap();
        assert!(matches!(ua, PodUid::Uuid(_)));
        assert!(ua.matches("7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60"));
        assert!(!ua.matches("7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a61"));
        assert_eq!(ua.to_string(), "7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60");
        // Not canonical lowercase: kept as the text it was.
        assert!(matches!(ub, PodUid::Text(_)));
        assert_eq!(
            s.pod("default", "b").unwrap().uid.as_deref(),
            Some("7D3C1A52-8F0E-4B8E-9A57-1C2D3E4F5A61")
        );
        assert!(s
            .canonical_dump()
            .iter()
            .any(|l| l.contains("uid=7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60 ")));
    }

    #[test]
    fn an_old_queue_entry_does_not_end_a_newer_reservation() {
        let mut s = ClusterState::new();
        let t0 = Instant::now();
        let secs = std::time::Duration::from_secs;
        let p = pod("default", "web-0", None, &[("data", false)]);
        s.reserve_pod(&p, t0 + secs(15));
        s.apply_pod(&pod("default", "web-0", Some("n1"), &[("data", false)]));
        s.delete_pod("default", "web-0");
        s.reserve_pod(&p, t0 + secs(25));
        assert_eq!(s.expire_reservations(t0 + secs(16)), 0);
        assert_eq!(s.consumers("default", "data").unwrap().len(), 1);
        assert_eq!(s.expire_reservations(t0 + secs(26)), 1);
        assert!(s.consumers("default", "data").unwrap().is_empty());
    }

    #[test]
    fn reservations_expire_unless_the_watch_shows_the_pod() {
        let mut s = ClusterState::new();
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_secs(10);
        s.reserve_pod(&pod("default", "a", None, &[("data", false)]), later);
        s.reserve_pod(&pod("default", "b", None, &[("data", false)]), later);
        assert_eq!(s.consumers("default", "data").unwrap().len(), 2);
        assert!(s.pod_keys().is_empty());
        s.apply_pod(&pod("default", "a", Some("n1"), &[("data", false)]));
        assert_eq!(s.expire_reservations(t0), 0);
        assert_eq!(s.expire_reservations(later), 1);
        let c = s.consumers("default", "data").unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "a");
    }

    #[test]
    fn volume_names_round_trip() {
        let canonical = "pvc-0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f";
        assert!(matches!(VolumeRef::of(canonical), VolumeRef::PvcUuid(_)));
        assert_eq!(VolumeRef::of(canonical).to_string(), canonical);
        // Not canonical: kept as text so it prints back unchanged.
        for name in [
            "pvc-0B6F0C3E-1B7E-4B43-9F4E-6A1D2C3B4A5F",
            "pvc-0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5",
            "pvc-0b6f0c3e+1b7e-4b43-9f4e-6a1d2c3b4a5f",
            "0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f",
            "pv-nfs-1",
        ] {
            assert!(matches!(VolumeRef::of(name), VolumeRef::Named(_)), "{name}");
            assert_eq!(VolumeRef::of(name).to_string(), name);
        }
        let mut s = ClusterState::new();
        for (pvc, pv, pv_modes) in [
            ("a", canonical, "ReadWriteOncePod"),
            ("b", "pv-nfs-1", "ReadWriteMany"),
        ] {
            s.apply_pvc(
                &serde_json::from_value(serde_json::json!({
                    "metadata": {"name": pvc, "namespace": "default"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": pv}
                }))
                .unwrap(),
            );
            s.apply_pv(
                &serde_json::from_value(serde_json::json!({
                    "metadata": {"name": pv}, "spec": {"accessModes": [pv_modes]}
                }))
                .unwrap(),
            );
        }
        assert!(s
            .claim("default", "a")
            .unwrap()
            .unwrap()
            .effective
            .is_rwop());
        assert_eq!(
            s.claim("default", "b").unwrap().unwrap().effective,
            AccessModes::RWX
        );
        let dump = s.canonical_dump();
        assert!(dump.contains(&format!(
            "pvc default/a modes=ReadWriteOnce volume={canonical}"
        )));
        assert!(dump.contains(&format!("pv {canonical} modes=ReadWriteOncePod")));
        assert!(dump.contains(&"pvc default/b modes=ReadWriteOnce volume=pv-nfs-1".to_string()));
        let mut names = s.pv_names();
        names.sort();
        assert_eq!(names, vec!["pv-nfs-1".to_string(), canonical.to_string()]);
        s.delete_pv(canonical);
        assert_eq!(
            s.claim("default", "a").unwrap().unwrap().effective,
            AccessModes::RWO
        );
    }

    #[test]
    fn many_consumers_and_many_claims() {
        let mut s = ClusterState::new();
        let names: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        for n in &names {
            s.apply_pod(&pod(
                "default",
                n,
                Some("n1"),
                &[("shared", false), ("logs", true)],
            ));
        }
        let c = s.consumers("default", "shared").unwrap();
        assert_eq!(c.len(), 7);
        assert!(s
            .consumers("default", "logs")
            .unwrap()
            .iter()
            .all(|c| c.read_only));
        for n in &names[..5] {
            s.delete_pod("default", n);
        }
        let mut left: Vec<&str> = s
            .consumers("default", "shared")
            .unwrap()
            .iter()
            .map(|c| c.name)
            .collect();
        left.sort();
        assert_eq!(left, vec!["p5", "p6"]);
        // Re-adding after removals reuses slots and keeps every link right.
        for n in &names[..5] {
            s.apply_pod(&pod("default", n, None, &[("shared", true)]));
        }
        assert_eq!(s.consumers("default", "shared").unwrap().len(), 7);
        assert_eq!(s.consumers("default", "logs").unwrap().len(), 2);
        assert_eq!(s.pod_count(), 7);
        assert_eq!(
            s.pod("default", "p0").unwrap().claims,
            vec![("shared".to_string(), true)]
        );
        for n in &names {
            s.delete_pod("default", n);
        }
        assert_eq!(s.pod_count(), 0);
        assert!(s.canonical_dump().is_empty());
    }

    /// Random churn against a plain model: slot and claim-entry reuse in the
    /// slabs and hash tables must never mix up who uses what.
    #[test]
    fn churn_matches_a_plain_model() {
        use std::collections::BTreeMap;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let claim_names = ["a", "b", "c", "d", "e", "f"];
        let mut s = ClusterState::new();
        let mut pods: BTreeMap<(String, String), Vec<(&str, bool)>> = BTreeMap::new();
        let mut pvcs: BTreeMap<(String, String), ()> = BTreeMap::new();
        for step in 0..4000 {
            let ns = format!("ns{}", rnd(2));
            match rnd(10) {
                0..=4 => {
                    let name = format!("p{}", rnd(40));
                    let mut claims: Vec<(&str, bool)> = Vec::new();
                    for c in claim_names {
                        if rnd(4) == 0 {
                            claims.push((c, rnd(2) == 0));
                        }
                    }
                    s.apply_pod(&pod(&ns, &name, Some("n1"), &claims));
                    if claims.is_empty() {
                        pods.remove(&(ns, name));
                    } else {
                        pods.insert((ns, name), claims);
                    }
                }
                5..=6 => {
                    let name = format!("p{}", rnd(40));
                    s.delete_pod(&ns, &name);
                    pods.remove(&(ns, name));
                }
                7..=8 => {
                    let name = claim_names[rnd(6) as usize];
                    s.apply_pvc(
                        &serde_json::from_value(serde_json::json!({
                            "metadata": {"name": name, "namespace": ns},
                            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": format!("pvc-0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a{:02x}", rnd(256))}
                        }))
                        .unwrap(),
                    );
                    pvcs.insert((ns, name.to_string()), ());
                }
                _ => {
                    let name = claim_names[rnd(6) as usize];
                    s.delete_pvc(&ns, name);
                    pvcs.remove(&(ns, name.to_string()));
                }
            }
            assert_eq!(s.pod_count(), pods.len(), "step {step}");
            assert_eq!(s.pvc_count(), pvcs.len(), "step {step}");
            for ns in ["ns0", "ns1"] {
                for c in claim_names {
                    let mut got: Vec<(String, bool)> = s
                        .consumers(ns, c)
                        .unwrap()
                        .iter()
                        .map(|u| (u.name.to_string(), u.read_only))
                        .collect();
                    got.sort();
                    let want: Vec<(String, bool)> = pods
                        .iter()
                        .filter(|((pns, _), _)| pns == ns)
                        .filter_map(|((_, name), cl)| {
                            cl.iter()
                                .find(|(x, _)| *x == c)
                                .map(|(_, ro)| (name.clone(), *ro))
                        })
                        .collect();
                    assert_eq!(got, want, "step {step}: consumers of {ns}/{c}");
                    assert_eq!(
                        s.claim(ns, c).unwrap().is_some(),
                        pvcs.contains_key(&(ns.to_string(), c.to_string())),
                        "step {step}: claim {ns}/{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn dump_is_order_independent() {
        let mut a = ClusterState::new();
        let mut b = ClusterState::new();
        let p1 = pod("default", "a", Some("n1"), &[("data", false)]);
        let p2 = pod("default", "b", Some("n2"), &[("data", true)]);
        a.apply_pod(&p1);
        a.apply_pod(&p2);
        b.apply_pod(&p2);
        b.apply_pod(&pod("default", "zz", None, &[("x", false)]));
        b.apply_pod(&p1);
        b.delete_pod("default", "zz");
        assert_eq!(a.canonical_dump(), b.canonical_dump());
    }
}
