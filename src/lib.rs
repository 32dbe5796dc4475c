//! claimguard: a validating admission webhook that stops pods from fighting
//! over PersistentVolumeClaims.

pub mod certs;
