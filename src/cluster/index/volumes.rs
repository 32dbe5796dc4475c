//! PVC facts and PersistentVolume names (`pvc-<uuid>` kept as 16 bytes).

use super::*;

/// What the index keeps of a PVC: its own access modes and the PV it is
/// bound to. CSI provisioners name volumes `pvc-<uid>`; such a name is kept
/// as its 16 UUID bytes, so the whole entry fits in 24 bytes.
#[derive(Debug, Clone)]
pub(super) enum PvcEntry {
    Unbound(AccessModes),
    PvcUuid(AccessModes, [u8; 16]),
    Named(AccessModes, Box<str>),
}

impl PvcEntry {
    pub(super) fn new(modes: AccessModes, volume: Option<&str>) -> PvcEntry {
        match volume {
            None => PvcEntry::Unbound(modes),
            Some(v) => match VolumeRef::of(v) {
                VolumeRef::PvcUuid(u) => PvcEntry::PvcUuid(modes, u),
                VolumeRef::Named(n) => PvcEntry::Named(modes, n.into()),
            },
        }
    }
    pub(super) fn modes(&self) -> AccessModes {
        match self {
            PvcEntry::Unbound(m) | PvcEntry::PvcUuid(m, _) | PvcEntry::Named(m, _) => *m,
        }
    }
    pub(super) fn volume(&self) -> Option<VolumeRef<'_>> {
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
pub(super) enum VolumeName {
    PvcUuid([u8; 16]),
    Named(Box<str>),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum VolumeRef<'a> {
    PvcUuid([u8; 16]),
    Named(&'a str),
}

impl<'a> VolumeRef<'a> {
    pub(super) fn of(name: &'a str) -> VolumeRef<'a> {
        match name.strip_prefix("pvc-").and_then(parse_uuid) {
            Some(u) => VolumeRef::PvcUuid(u),
            None => VolumeRef::Named(name),
        }
    }
}

impl VolumeName {
    pub(super) fn as_ref(&self) -> VolumeRef<'_> {
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
/// A table look-up per digit: every admitted pod's uid is compared with the
/// claim's consumers through this, and every pod of a snapshot goes through
/// it once.
pub(super) fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    /// The value of each lowercase hex digit, 0xff for any other byte.
    const HEX: [u8; 256] = {
        let mut t = [0xff; 256];
        let mut c = 0;
        while c < 16 {
            t[b"0123456789abcdef"[c] as usize] = c as u8;
            c += 1;
        }
        t
    };
    /// Where each byte's two digits start.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let b: &[u8; 36] = s.as_bytes().try_into().ok()?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut bad = 0;
    for (o, &i) in out.iter_mut().zip(&AT) {
        let (hi, lo) = (HEX[b[i] as usize], HEX[b[i + 1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    (bad < 16).then_some(out)
}
