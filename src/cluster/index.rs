//! The claim index: `(namespace, claim) → consumer pods`, plus PVC, PV,
//! StorageClass and Namespace facts — small projections, never whole objects.
//!
//! Pods live in a slab and claims point at slab slots, so a lookup is one
//! hash probe plus one slab read per consumer. Pods that use no claim are not
//! stored at all: most pods in most clusters cost the index nothing.
//! Namespace, node, claim and class names are interned: thousands of pods
//! share one allocation for "default" or "worker-1".

use super::{AccessModes, ClaimFacts, ClusterView, LookupError, NamespaceMode, StorageClassFacts};
use crate::objects::{self, Object};
use hashbrown::{Equivalent, HashMap, HashSet};
use std::collections::VecDeque;
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

#[derive(Debug)]
struct PodEntry {
    key: Key,
    uid: Option<Box<str>>,
    node: Option<Arc<str>>,
    terminating: bool,
    reserved: bool,
    /// The pod annotation `claimguard.io/allow-shared-writers: "true"`: the
    /// audit needs it to judge existing pods as admission judged them.
    allow_shared_writers: bool,
    claims: Box<[(Arc<str>, bool)]>,
}

#[derive(Debug, Default)]
struct ClaimEntry {
    pvc: Option<PvcEntry>,
    consumers: Vec<u32>,
}

#[derive(Debug, Clone)]
struct PvcEntry {
    modes: AccessModes,
    volume: Option<Arc<str>>,
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
    pub uid: Option<&'a str>,
    pub node: Option<&'a str>,
    pub terminating: bool,
    pub read_only: bool,
}

#[derive(Debug, Default)]
pub struct ClusterState {
    interned: HashSet<Arc<str>>,
    pods: Vec<Option<PodEntry>>,
    free: Vec<u32>,
    pod_slots: HashMap<Key, u32>,
    claims: HashMap<Key, ClaimEntry>,
    volumes: HashMap<Box<str>, AccessModes>,
    classes: HashMap<Box<str>, ClassEntry>,
    namespaces: HashMap<Box<str>, Option<NamespaceMode>>,
    reservations: VecDeque<(Instant, Key)>,
    removals_since_gc: usize,
}

const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// The claims a pod spec uses, with whether every use is read-only.
/// A volume is read-only when its source says so or when every container
/// that mounts it mounts it read-only. Ephemeral volumes are the pod's own.
pub fn pod_claims(spec: &objects::PodSpec) -> Vec<(&str, bool)> {
    let mut out: Vec<(&str, bool)> = Vec::new();
    for v in &spec.volumes {
        let Some(src) = &v.persistent_volume_claim else {
            continue;
        };
        if src.claim_name.is_empty() {
            continue;
        }
        let read_only = src.read_only
            || spec
                .containers
                .iter()
                .chain(spec.init_containers.iter())
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

    // ---- pods -------------------------------------------------------------

    pub fn apply_pod(&mut self, pod: &objects::Pod) {
        self.upsert_pod(pod, false);
    }

    /// An admitted pod the watch has not shown yet: it holds its claims until
    /// the watch shows it (then it is an ordinary pod) or `deadline` passes.
    pub fn reserve_pod(&mut self, pod: &objects::Pod, deadline: Instant) {
        let ns = namespace_of(&pod.metadata);
        if let Some(&slot) = self.pod_slots.get(&KeyRef {
            ns,
            name: &pod.metadata.name,
        }) {
            if let Some(e) = &self.pods[slot as usize] {
                if !e.reserved {
                    // The watch was faster than us: the real pod is there.
                    return;
                }
            }
        }
        if let Some(key) = self.upsert_pod(pod, true) {
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
            let Some((_, key)) = self.reservations.pop_front() else {
                break;
            };
            let still_reserved = self
                .pod_slots
                .get(&key)
                .and_then(|&s| self.pods[s as usize].as_ref())
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
        let claims: Box<[(Arc<str>, bool)]> =
            claims.iter().map(|(c, ro)| (self.intern(c), *ro)).collect();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
            .map(|n| self.intern(n));
        let uid = pod
            .metadata
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(Box::from);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let allow_shared_writers = pod
            .metadata
            .annotations
            .get(crate::policy::ALLOW_SHARED_WRITERS)
            .map(String::as_str)
            == Some("true");

        let existing = self.pod_slots.get(&KeyRef { ns, name }).copied();
        let slot = match existing {
            Some(slot) => {
                self.unlink(slot);
                slot
            }
            None => {
                let key = Key {
                    ns: ns_arc.clone(),
                    name: Arc::from(name),
                };
                let slot = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.pods.push(None);
                        (self.pods.len() - 1) as u32
                    }
                };
                self.pod_slots.insert(key, slot);
                slot
            }
        };
        let key = match &self.pods[slot as usize] {
            Some(old) => old.key.clone(),
            None => Key {
                ns: ns_arc.clone(),
                name: self
                    .pod_slots
                    .get_key_value(&KeyRef { ns, name })
                    .map(|(k, _)| k.name.clone())
                    .unwrap_or_else(|| Arc::from(name)),
            },
        };
        for (claim, _) in claims.iter() {
            let entry = self
                .claims
                .entry(Key {
                    ns: ns_arc.clone(),
                    name: claim.clone(),
                })
                .or_default();
            if !entry.consumers.contains(&slot) {
                entry.consumers.push(slot);
            }
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
                c.consumers.retain(|s| *s != slot);
                if c.consumers.is_empty() && c.pvc.is_none() {
                    self.claims.remove(&k);
                }
            }
        }
    }

    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let Some(slot) = self.pod_slots.remove(&KeyRef {
            ns: namespace,
            name,
        }) else {
            return;
        };
        self.unlink(slot);
        self.pods[slot as usize] = None;
        self.free.push(slot);
        self.note_removal();
    }

    pub fn pod_count(&self) -> usize {
        self.pod_slots.len()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodProjection> {
        let slot = *self.pod_slots.get(&KeyRef {
            ns: namespace,
            name,
        })?;
        self.pods[slot as usize].as_ref().map(project)
    }

    /// Every stored pod, in no particular order.
    pub fn pods(&self) -> impl Iterator<Item = PodProjection> + '_ {
        self.pods.iter().flatten().map(project)
    }

    /// Whether the stored pod carries `claimguard.io/allow-shared-writers: "true"`.
    pub fn allows_shared_writers(&self, namespace: &str, name: &str) -> bool {
        self.pod_slots
            .get(&KeyRef {
                ns: namespace,
                name,
            })
            .and_then(|&s| self.pods[s as usize].as_ref())
            .is_some_and(|p| p.allow_shared_writers)
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
        let spec = pvc.spec.clone().unwrap_or_default();
        let volume = spec
            .volume_name
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| self.intern(v));
        let facts = PvcEntry {
            modes: AccessModes::from_names(&spec.access_modes),
            volume,
        };
        let key = Key {
            ns: self.intern(ns),
            name: self.intern(&pvc.metadata.name),
        };
        self.claims.entry(key).or_default().pvc = Some(facts);
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
            .and_then(|v| self.volumes.get(v))
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
        self.volumes.insert(pv.metadata.name.as_str().into(), modes);
    }

    pub fn delete_pv(&mut self, name: &str) {
        self.volumes.remove(name);
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
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().map(|k| k.to_string()).collect()
    }

    /// Store any object of a kind the index keeps; others are ignored.
    pub fn apply_object(&mut self, obj: &Object) {
        match obj {
            Object::Pod(p) => self.apply_pod(p),
            Object::PersistentVolumeClaim(p) => self.apply_pvc(p),
            Object::PersistentVolume(p) => self.apply_pv(p),
            Object::StorageClass(s) => self.apply_storage_class(s),
            Object::Namespace(n) => self.apply_namespace(n),
            Object::Workload(..) => {}
        }
    }

    /// Sorted, one line per projection and per claim link: two indexes built
    /// by different event orders are equal exactly when their dumps are.
    pub fn canonical_dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.pods.iter().flatten() {
            let mut claims: Vec<String> = p
                .claims
                .iter()
                .map(|(c, ro)| format!("{c}:{}", if *ro { "ro" } else { "rw" }))
                .collect();
            claims.sort();
            out.push(format!(
                "pod {}/{} uid={} node={} terminating={} reserved={} claims={}",
                p.key.ns,
                p.key.name,
                p.uid.as_deref().unwrap_or("-"),
                p.node.as_deref().unwrap_or("-"),
                p.terminating,
                p.reserved,
                claims.join(",")
            ));
        }
        for (k, c) in &self.claims {
            if let Some(pvc) = &c.pvc {
                out.push(format!(
                    "pvc {}/{} modes={} volume={}",
                    k.ns,
                    k.name,
                    pvc.modes,
                    pvc.volume.as_deref().unwrap_or("-")
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
        uid: p.uid.as_deref().map(str::to_string),
        node: p.node.as_deref().map(str::to_string),
        terminating: p.terminating,
        reserved: p.reserved,
        claims: p
            .claims
            .iter()
            .map(|(c, ro)| (c.to_string(), *ro))
            .collect(),
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
            .volume
            .as_deref()
            .and_then(|v| self.volumes.get(v))
            .filter(|m| !m.is_empty())
            .copied()
            .unwrap_or(pvc.modes);
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
                uid: p.uid.as_deref(),
                node: p.node.as_deref(),
                terminating: p.terminating,
                read_only: p
                    .claims
                    .iter()
                    .find(|(c, _)| &**c == claim)
                    .is_some_and(|(_, ro)| *ro),
            })
            .collect())
    }

    fn namespace_mode(&self, namespace: &str) -> Result<Option<NamespaceMode>, LookupError> {
        Ok(self.namespaces.get(namespace).copied().flatten())
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
