//! `(namespace, name)` keys, owned and borrowed, so lookups never allocate.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) ns: Arc<str>,
    pub(super) name: Arc<str>,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.ns.hash(h);
        self.name.hash(h);
    }
}

/// Borrowed form of `Key` so lookups never allocate.
pub(super) struct KeyRef<'a> {
    pub(super) ns: &'a str,
    pub(super) name: &'a str,
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
