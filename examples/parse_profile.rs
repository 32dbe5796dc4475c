//! A fixed amount of AdmissionReview parsing, for instruction counts under
//! callgrind (wall time on a shared 2-core machine is too noisy to compare
//! two versions of the parser):
//!
//! `cargo build --profile profiling --example parse_profile && valgrind --tool=callgrind target/profiling/examples/parse_profile 2000`
//! (the profiling profile is the release build with symbols, so callgrind names functions)

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let node = common::node_name(7);
    let body = common::pod_review_json(
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        &common::namespace_name(0),
        "orders-service-7d4b9c8f6d-x2x9k",
        "0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f",
        &[
            ("shared-config", true),
            ("uploads", false),
            ("ledger-wal", false),
        ],
        Some(&node),
        false,
    );
    let mut volumes = 0;
    for _ in 0..n {
        let r = claimguard::admission::parse_request(std::hint::black_box(body.as_bytes()))
            .expect("valid review");
        if let Some(claimguard::objects::Object::Pod(p)) = &r.object {
            volumes += p.spec.as_ref().map_or(0, |s| s.volumes.len());
        }
    }
    println!("{n} parses of {} bytes, {volumes} volumes", body.len());
}
