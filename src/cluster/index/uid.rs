//! Pod uids: 16 bytes when they are canonical UUIDs, the text otherwise.

use super::*;

/// A pod uid as stored: the API server's canonical UUIDs in 16 bytes
/// (instead of 36 bytes of text plus an allocation), anything else as text.
#[derive(Debug)]
pub(super) enum StoredUid {
    None,
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl StoredUid {
    pub(super) fn of(uid: Option<&str>) -> StoredUid {
        match uid.filter(|u| !u.is_empty()) {
            None => StoredUid::None,
            Some(u) => match parse_uuid(u) {
                Some(b) => StoredUid::Uuid(b),
                None => StoredUid::Text(u.into()),
            },
        }
    }

    pub(super) fn as_uid(&self) -> Option<PodUid<'_>> {
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
