//! A chunked slab: stable indexes, no reallocation of what is already stored.

/// The pod slab, in fixed chunks: a `Vec` doubles, so 100,000 pods would sit
/// in room for 131,072 and a quarter of the slab would be empty.
#[derive(Debug)]
pub(super) struct Slab<T> {
    pub(super) chunks: Vec<Box<[Option<T>]>>,
    pub(super) len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

pub(super) const SLAB_CHUNK: usize = 1024;

impl<T> Slab<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }
    pub(super) fn push(&mut self, entry: Option<T>) {
        if self.len == self.chunks.len() * SLAB_CHUNK {
            self.chunks.push((0..SLAB_CHUNK).map(|_| None).collect());
        }
        self.chunks[self.len / SLAB_CHUNK][self.len % SLAB_CHUNK] = entry;
        self.len += 1;
    }
    pub(super) fn iter(&self) -> impl Iterator<Item = &Option<T>> {
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
