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
/// (64 lowercase hex digits): such a name is kept as its 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AttachmentName {
    Csi([u8; 32]),
    Other(Box<str>),
}

impl AttachmentName {
    fn of(name: &str) -> AttachmentName {
        match name.strip_prefix("csi-").and_then(parse_sha) {
            Some(b) => AttachmentName::Csi(b),
            None => AttachmentName::Other(name.into()),
        }
    }

    fn is(&self, name: &str) -> bool {
        match self {
            AttachmentName::Other(n) => **n == *name,
            AttachmentName::Csi(b) => name
                .strip_prefix("csi-")
                .and_then(parse_sha)
                .is_some_and(|o| o == *b),
        }
    }
}

impl std::fmt::Display for AttachmentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachmentName::Other(n) => f.write_str(n),
            AttachmentName::Csi(b) => {
                f.write_str("csi-")?;
                for x in b {
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
        }
    }
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
    name: AttachmentName,
    volume: VolumeName,
    /// Interned: every attachment of a node shares its name.
    node: Arc<str>,
    attached: bool,
    /// `metadata.deletionTimestamp` is set: a detach is in progress.
    deleting: bool,
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
}

impl AttachmentTable {
    fn hash(&self, v: VolumeRef<'_>) -> u64 {
        self.hasher.hash_one(v)
    }

    fn find(&self, volume: VolumeRef<'_>, name: &str) -> Option<u32> {
        let slab = &self.slab;
        self.by_volume
            .find(self.hash(volume), |&s| {
                slab[s as usize]
                    .as_ref()
                    .is_some_and(|e| volume.equivalent(&e.volume) && e.name.is(name))
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
        let entry = AttachmentEntry {
            name: AttachmentName::of(name),
            volume: volume.into(),
            node,
            attached: status.is_some_and(|s| s.attached),
            deleting: va.metadata.deletion_timestamp.is_some(),
        };
        let slot = match self.find(volume, name) {
            Some(slot) => {
                self.slab[slot as usize] = Some(entry);
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
        let slab = &self.slab;
        let Ok(found) = self.by_volume.find_entry(hash, |&s| {
            slab[s as usize]
                .as_ref()
                .is_some_and(|e| volume.equivalent(&e.volume) && e.name.is(name))
        }) else {
            return;
        };
        let (slot, _) = found.remove();
        self.slab[slot as usize] = None;
        self.detach_errors.remove(&slot);
        self.free.push(slot);
    }

    pub(super) fn len(&self) -> usize {
        self.by_volume.len()
    }

    /// (volume, name) of every attachment: the watch's keys for this kind.
    pub(super) fn keys(&self) -> Vec<(String, String)> {
        self.slab
            .iter()
            .flatten()
            .map(|e| (e.volume.to_string(), e.name.to_string()))
            .collect()
    }

    fn facts(&self, slot: u32) -> Option<Attachment<'_>> {
        let e = self.slab[slot as usize].as_ref()?;
        Some(Attachment {
            name: e.name.to_string(),
            volume: e.volume.to_string(),
            node: &e.node,
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
        let n = AttachmentName::of(&name);
        assert!(matches!(n, AttachmentName::Csi(_)));
        assert_eq!(n.to_string(), name);
        assert!(n.is(&name));
        assert!(!n.is(&name.to_uppercase()));
        for other in [
            "va-1".to_string(),
            format!("csi-{}", "0123456789ABCDEF".repeat(4)),
            format!("csi-{}0", "0123456789abcdef".repeat(4)),
        ] {
            let n = AttachmentName::of(&other);
            assert!(matches!(n, AttachmentName::Other(_)), "{other}");
            assert_eq!(n.to_string(), other);
        }
    }

    #[test]
    fn an_entry_stays_small() {
        // The budget is 100 bytes an attachment, table slots included.
        assert!(
            std::mem::size_of::<Option<AttachmentEntry>>() <= 88,
            "{}",
            std::mem::size_of::<Option<AttachmentEntry>>()
        );
    }
}
