//! What a claim entry holds: the slab slots of its consumer pods, inline when few.

use super::*;

#[derive(Debug, Default)]
pub(super) struct ClaimEntry {
    pub(super) pvc: Option<PvcEntry>,
    pub(super) consumers: Slots,
}

/// Slab slots of a claim's consumers. Most claims have at most three
/// consumers, so those live inline in the 24 bytes a `Vec` header takes.
#[derive(Debug, Clone)]
pub(super) enum Slots {
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
    pub(super) fn as_slice(&self) -> &[u32] {
        match self {
            Slots::Inline { len, items } => &items[..*len as usize],
            Slots::Heap(v) => v,
        }
    }
    pub(super) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
    pub(super) fn iter(&self) -> std::slice::Iter<'_, u32> {
        self.as_slice().iter()
    }
    pub(super) fn contains(&self, slot: &u32) -> bool {
        self.as_slice().contains(slot)
    }
    pub(super) fn push(&mut self, slot: u32) {
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
    pub(super) fn retain(&mut self, keep: impl Fn(u32) -> bool) {
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
