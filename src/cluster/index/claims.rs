//! The claim table: `(namespace, claim)` → consumers, behind a `HashTable<u32>`.

use super::*;

/// `(namespace, claim) → ClaimEntry`, with the same layout as the pods: the
/// entries in a chunked slab, the hash table holding 4-byte slab indexes. A
/// `HashMap` of 80-byte entries sat at 131,072 slots for 100,000 PVCs.
#[derive(Debug, Default)]
pub(super) struct ClaimTable {
    pub(super) slab: Slab<(Key, ClaimEntry)>,
    pub(super) free: Vec<u32>,
    pub(super) index: HashTable<u32>,
    pub(super) hasher: DefaultHashBuilder,
}

impl ClaimTable {
    pub(super) fn find(&self, k: &KeyRef<'_>) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(self.hasher.hash_one(k), |&s| {
                slab[s as usize]
                    .as_ref()
                    .is_some_and(|(key, _)| k.equivalent(key))
            })
            .copied()
    }

    pub(super) fn get_key_value(&self, k: &KeyRef<'_>) -> Option<(&Key, &ClaimEntry)> {
        let slot = self.find(k)?;
        self.slab[slot as usize].as_ref().map(|(k, e)| (k, e))
    }

    pub(super) fn get(&self, k: &KeyRef<'_>) -> Option<&ClaimEntry> {
        self.get_key_value(k).map(|(_, e)| e)
    }

    pub(super) fn get_mut(&mut self, k: &KeyRef<'_>) -> Option<&mut ClaimEntry> {
        let slot = self.find(k)?;
        self.slab[slot as usize].as_mut().map(|(_, e)| e)
    }

    /// The entry for `key`, created empty if there is none.
    pub(super) fn entry_or_default(&mut self, key: Key) -> &mut ClaimEntry {
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

    pub(super) fn remove(&mut self, k: &KeyRef<'_>) {
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

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &ClaimEntry)> {
        self.slab.iter().flatten().map(|(k, e)| (k, e))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &ClaimEntry> {
        self.iter().map(|(_, e)| e)
    }
}
