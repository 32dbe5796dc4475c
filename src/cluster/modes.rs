//! Access modes as a bit set: four bits instead of a `Vec<String>` per claim.

use std::fmt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AccessModes(u8);

impl AccessModes {
    pub const RWO: AccessModes = AccessModes(1);
    pub const ROX: AccessModes = AccessModes(2);
    pub const RWX: AccessModes = AccessModes(4);
    pub const RWOP: AccessModes = AccessModes(8);

    pub fn from_names<S: AsRef<str>>(names: &[S]) -> AccessModes {
        let mut m = 0;
        for n in names {
            m |= match n.as_ref() {
                "ReadWriteOnce" => 1,
                "ReadOnlyMany" => 2,
                "ReadWriteMany" => 4,
                "ReadWriteOncePod" => 8,
                _ => 0,
            };
        }
        AccessModes(m)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: AccessModes) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn without(self, other: AccessModes) -> AccessModes {
        AccessModes(self.0 & !other.0)
    }

    pub fn union(self, other: AccessModes) -> AccessModes {
        AccessModes(self.0 | other.0)
    }

    /// ReadWriteOncePod: one pod in the whole cluster.
    pub fn is_rwop(self) -> bool {
        self.contains(Self::RWOP)
    }

    /// ReadWriteOnce without a multi-node mode: the attach/detach controller
    /// attaches it to one node only.
    pub fn is_single_node(self) -> bool {
        self.contains(Self::RWO) && !self.contains(Self::RWX) && !self.contains(Self::ROX)
    }

    /// Multi-node modes a claim asks for (what a block-only provisioner cannot serve).
    pub fn multi_node(self) -> AccessModes {
        AccessModes(self.0 & (Self::RWX.0 | Self::ROX.0))
    }

    /// The name that explains the rule that fired: RWOP first, then RWO.
    pub fn headline(self) -> &'static str {
        if self.is_rwop() {
            "ReadWriteOncePod"
        } else if self.is_single_node() {
            "ReadWriteOnce"
        } else if self.contains(Self::RWX) {
            "ReadWriteMany"
        } else if self.contains(Self::ROX) {
            "ReadOnlyMany"
        } else {
            "no access mode"
        }
    }
}

impl fmt::Display for AccessModes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::RWOP, "ReadWriteOncePod"),
            (Self::RWO, "ReadWriteOnce"),
            (Self::RWX, "ReadWriteMany"),
            (Self::ROX, "ReadOnlyMany"),
        ];
        let mut first = true;
        for (m, n) in names {
            if self.contains(m) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        let m = |v: &[&str]| AccessModes::from_names(v);
        assert!(m(&["ReadWriteOncePod"]).is_rwop());
        assert!(m(&["ReadWriteOnce"]).is_single_node());
        assert!(!m(&["ReadWriteOnce", "ReadOnlyMany"]).is_single_node());
        assert!(!m(&["ReadWriteOnce", "ReadWriteMany"]).is_single_node());
        assert!(!m(&["ReadWriteMany"]).is_single_node());
        assert!(m(&[]).is_empty());
        assert_eq!(
            m(&["ReadWriteMany", "ReadOnlyMany"]).to_string(),
            "ReadWriteMany,ReadOnlyMany"
        );
        assert_eq!(m(&["ReadWriteOnce"]).headline(), "ReadWriteOnce");
    }
}
