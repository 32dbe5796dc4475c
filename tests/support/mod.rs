//! Shared test support: `mod support;` from a test file.
// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod fake_apiserver;
pub mod fake_leases;
pub mod fake_storage;
pub mod k8s;
