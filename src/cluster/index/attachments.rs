//! VolumeAttachments: where each PersistentVolume is attached (or being
//! attached or detached), by volume.
//!
//! Kubernetes enforces ReadWriteOnce at attachment: a single-node volume
//! attached to a dead node blocks every pod elsewhere until it is detached.
//! The index keeps one small entry per attachment of a PersistentVolume
//! (inline volumes are no claim's and are skipped), in a slab with a hash
//! table of slab slots keyed by volume — the same layout as the pods — so a
//! claim's attachments cost one probe, and 100,000 attachments stay under
//! 100 bytes each. Detach errors are rare and live beside the entries.
//!
//! A watch event or re-list deletes an attachment by (volume, name): the
//! watch's key for this kind carries the volume (`live.rs`), so a deletion
//! never walks the table.

use super::*;
use crate::cluster::nodes::NodeHealth;

/// A VolumeAttachment's name. The CSI attacher names them `csi-<sha256>`
/// (64 lowercase hex digits): such a name is kept as its 32 bytes in the
/// entry; any other name (rare) beside the entries, by slot.
fn csi_sha(name: &str) -> Option<[u8; 32]> {
    name.strip_prefix("csi-").and_then(parse_sha)
}

fn csi_name(b: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(68);
    s.push_str("csi-");
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// 64 lowercase hex digits, exactly (so printing gives the name back).
fn parse_sha(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

#[derive(Debug)]
struct AttachmentEntry {
    /// The name's sha256 when `csi`; else the name is in `other_names`.
    sha: [u8; 32],
    volume: VolumeName,
    /// Index into the table's node names: every attachment of a node shares it.
    node: u32,
    csi: bool,
    attached: bool,
    /// `metadata.deletionTimestamp` is set: a detach is in progress.
    deleting: bool,
}

/// Node names, interned with a count of the attachments that use each, so a
/// node's name is dropped with its last attachment (autoscaled nodes come
/// and go) and an entry holds 4 bytes instead of a 16-byte `Arc<str>`.
#[derive(Debug, Default)]
struct NodeNames {
    names: Vec<Option<(Arc<str>, u32)>>,
    ids: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl NodeNames {
    fn acquire(&mut self, node: Arc<str>) -> u32 {
        if let Some(&id) = self.ids.get(&node) {
            if let Some((_, n)) = &mut self.names[id as usize] {
                *n += 1;
            }
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.names.push(None);
                (self.names.len() - 1) as u32
            }
        };
        self.names[id as usize] = Some((node.clone(), 1));
        self.ids.insert(node, id);
        id
    }

    fn release(&mut self, id: u32) {
        let Some((name, n)) = &mut self.names[id as usize] else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.ids.remove(&**name);
            self.names[id as usize] = None;
            self.free.push(id);
        }
    }

    fn name(&self, id: u32) -> &str {
        self.names[id as usize].as_ref().map_or("", |(n, _)| n)
    }
}

/// One attachment as the view answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment<'a> {
    /// The VolumeAttachment's name (`kubectl describe volumeattachment NAME`).
    pub name: String,
    /// The PersistentVolume's name.
    pub volume: String,
    pub node: &'a str,
    pub attached: bool,
    /// Being deleted: a detach is in progress.
    pub deleting: bool,
    /// `status.detachError.message`.
    pub detach_error: Option<&'a str>,
    /// The node's health; `None` when the view does not know the node.
    pub node_health: Option<NodeHealth<'a>>,
}

impl Attachment<'_> {
    /// Stuck: its node is down and not declared out of service (nothing
    /// will detach it for minutes), or its detach fails.
    pub fn is_stuck(&self) -> bool {
        self.detach_error.is_some()
            || self
                .node_health
                .is_some_and(|h| h.is_down() && !h.out_of_service)
    }
}

#[derive(Debug, Default)]
pub(super) struct AttachmentTable {
    slab: Slab<AttachmentEntry>,
    free: Vec<u32>,
    by_volume: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Detach errors by slot: rare, so not a field of every entry.
    detach_errors: HashMap<u32, Box<str>>,
    /// Names that are not `csi-<sha256>`, by slot: rare too.
    other_names: HashMap<u32, Box<str>>,
    nodes: NodeNames,
}

/// Whether the entry in `slot` is named `name`.
fn named(e: &AttachmentEntry, other: &HashMap<u32, Box<str>>, slot: u32, name: &str) -> bool {
    if e.csi {
        csi_sha(name).is_some_and(|b| b == e.sha)
    } else {
        other.get(&slot).is_some_and(|n| **n == *name)
    }
}

impl AttachmentTable {
    fn hash(&self, v: VolumeRef<'_>) -> u64 {
        self.hasher.hash_one(v)
    }

    fn find(&self, volume: VolumeRef<'_>, name: &str) -> Option<u32> {
        let (slab, other) = (&self.slab, &self.other_names);
        self.by_volume
            .find(self.hash(volume), |&s| {
                slab[s as usize]
                    .as_ref()
                    .is_some_and(|e| volume.equivalent(&e.volume) && named(e, other, s, name))
            })
            .copied()
    }

    pub(super) fn apply(&mut self, va: &objects::VolumeAttachment, node: Arc<str>) {
        let Some((volume, name)) = key_of(va) else {
            return;
        };
        let volume = VolumeRef::of(volume);
        let status = va.status.as_ref();
        let detach_error = status
            .and_then(|s| s.detach_error.as_ref())
            .map(|e| e.message.as_deref().unwrap_or("detach failed"));
        let sha = csi_sha(name);
        let node = self.nodes.acquire(node);
        let entry = AttachmentEntry {
            sha: sha.unwrap_or_default(),
            volume: volume.into(),
            node,
            csi: sha.is_some(),
            attached: status.is_some_and(|s| s.attached),
            deleting: va.metadata.deletion_timestamp.is_some(),
        };
        let slot = match self.find(volume, name) {
            Some(slot) => {
                if let Some(old) = self.slab[slot as usize].replace(entry) {
                    self.nodes.release(old.node);
                }
                slot
            }
            None => {
                let slot = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slab.push(None);
                        (self.slab.len() - 1) as u32
                    }
                };
                self.slab[slot as usize] = Some(entry);
                let hash = self.hash(volume);
                let (slab, hasher) = (&self.slab, &self.hasher);
                self.by_volume
                    .insert_unique(hash, slot, |&s| match &slab[s as usize] {
                        Some(e) => hasher.hash_one(e.volume.as_ref()),
                        None => 0,
                    });
                slot
            }
        };
        if sha.is_none() {
            self.other_names.insert(slot, name.into());
        }
        match detach_error {
            Some(e) => {
                self.detach_errors.insert(slot, e.into());
            }
            None => {
                self.detach_errors.remove(&slot);
            }
        }
    }

    pub(super) fn delete(&mut self, volume: &str, name: &str) {
        let volume = VolumeRef::of(volume);
        let hash = self.hash(volume);
        let (slab, other) = (&self.slab, &self.other_names);
        let Ok(found) = self.by_volume.find_entry(hash, |&s| {
            slab[s as usize]
                .as_ref()
                .is_some_and(|e| volume.equivalent(&e.volume) && named(e, other, s, name))
        }) else {
            return;
        };
        let (slot, _) = found.remove();
        if let Some(old) = self.slab[slot as usize].take() {
            self.nodes.release(old.node);
        }
        self.detach_errors.remove(&slot);
        self.other_names.remove(&slot);
        self.free.push(slot);
    }

    pub(super) fn len(&self) -> usize {
        self.by_volume.len()
    }

    /// (volume, name) of every attachment: the watch's keys for this kind.
    pub(super) fn keys(&self) -> Vec<(String, String)> {
        (0..self.slab.len() as u32)
            .filter_map(|s| {
                let e = self.slab[s as usize].as_ref()?;
                Some((e.volume.to_string(), self.name_of(s, e)))
            })
            .collect()
    }

    fn name_of(&self, slot: u32, e: &AttachmentEntry) -> String {
        if e.csi {
            csi_name(&e.sha)
        } else {
            self.other_names
                .get(&slot)
                .map(|n| n.to_string())
                .unwrap_or_default()
        }
    }

    fn facts(&self, slot: u32) -> Option<Attachment<'_>> {
        let e = self.slab[slot as usize].as_ref()?;
        Some(Attachment {
            name: self.name_of(slot, e),
            volume: e.volume.to_string(),
            node: self.nodes.name(e.node),
            attached: e.attached,
            deleting: e.deleting,
            detach_error: self.detach_errors.get(&slot).map(|m| &**m),
            node_health: None,
        })
    }

    /// The attachments of one volume, by name.
    pub(super) fn of_volume(&self, volume: VolumeRef<'_>) -> Vec<Attachment<'_>> {
        let mut out: Vec<Attachment<'_>> = self
            .by_volume
            .iter_hash(self.hash(volume))
            .filter(|&&s| {
                self.slab[s as usize]
                    .as_ref()
                    .is_some_and(|e| volume.equivalent(&e.volume))
            })
            .filter_map(|&s| self.facts(s))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every attachment, with its volume as the index keys it.
    pub(super) fn all(&self) -> impl Iterator<Item = (VolumeRef<'_>, Attachment<'_>)> + '_ {
        (0..self.slab.len() as u32).filter_map(move |s| {
            let e = self.slab[s as usize].as_ref()?;
            Some((e.volume.as_ref(), self.facts(s)?))
        })
    }

    pub(super) fn dump(&self, out: &mut Vec<String>) {
        for (_, a) in self.all() {
            out.push(format!(
                "attachment {} volume={} node={} attached={} deleting={} detach-error={}",
                a.name,
                a.volume,
                a.node,
                a.attached,
                a.deleting,
                a.detach_error.unwrap_or("-")
            ));
        }
    }
}

/// (PV name, attachment name) of a VolumeAttachment the index keeps; `None`
/// for an inline volume or an attachment without a name or node.
pub(crate) fn key_of(va: &objects::VolumeAttachment) -> Option<(&str, &str)> {
    let spec = va.spec.as_ref()?;
    let volume = spec
        .source
        .persistent_volume_name
        .as_deref()
        .filter(|v| !v.is_empty())?;
    if va.metadata.name.is_empty() || spec.node_name.is_empty() {
        return None;
    }
    Some((volume, &va.metadata.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csi_names_are_compact_and_print_back() {
        let name = format!("csi-{}", "0123456789abcdef".repeat(4));
        let b = csi_sha(&name).expect("a csi name");
        assert_eq!(csi_name(&b), name);
        for other in [
            "va-1".to_string(),
            format!("csi-{}", "0123456789ABCDEF".repeat(4)),
            format!("csi-{}0", "0123456789abcdef".repeat(4)),
        ] {
            assert!(csi_sha(&other).is_none(), "{other}");
        }
    }

    fn va(name: &str, volume: &str, node: &str) -> objects::VolumeAttachment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"attacher": "x", "nodeName": node, "source": {"persistentVolumeName": volume}},
            "status": {"attached": true}
        }))
        .expect("va")
    }

    #[test]
    fn names_and_nodes_round_trip_and_are_released() {
        let csi = format!("csi-{}", "ab".repeat(32));
        let mut t = AttachmentTable::default();
        t.apply(&va(&csi, "pv-1", "n1"), "n1".into());
        t.apply(&va("va-other", "pv-1", "n2"), "n2".into());
        t.apply(&va("va-3", "pv-2", "n1"), "n1".into());
        let names: Vec<(String, String)> = t
            .of_volume(VolumeRef::of("pv-1"))
            .into_iter()
            .map(|a| (a.name, a.node.to_string()))
            .collect();
        assert_eq!(
            names,
            vec![(csi.clone(), "n1".into()), ("va-other".into(), "n2".into())]
        );
        // Moving an attachment to another node releases the old name.
        t.apply(&va("va-other", "pv-1", "n3"), "n3".into());
        assert!(!t.nodes.ids.contains_key("n2"));
        t.delete("pv-1", &csi);
        t.delete("pv-1", "va-other");
        assert_eq!(t.len(), 1);
        assert!(t.other_names.len() == 1, "{:?}", t.other_names);
        assert!(!t.nodes.ids.contains_key("n3"));
        t.delete("pv-2", "va-3");
        assert!(t.nodes.ids.is_empty() && t.other_names.is_empty());
        assert_eq!(t.keys(), Vec::<(String, String)>::new());
    }

    #[test]
    fn an_entry_stays_small() {
        // The budget is 100 bytes an attachment, table slots included.
        assert!(
            std::mem::size_of::<Option<AttachmentEntry>>() <= 64,
            "{}",
            std::mem::size_of::<Option<AttachmentEntry>>()
        );
    }
}
