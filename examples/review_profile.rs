//! `Engine::review` of one body file against a snapshot, N times, for
//! instruction counts under callgrind and a wall-time figure per review:
//!
//! `cargo build --profile profiling --example review_profile && valgrind --tool=callgrind target/profiling/examples/review_profile SNAPSHOT BODY 2000`
//! (the profiling profile is the release build with symbols)
//!
//! (`loadgen --write-snapshot` and `loadgen --write-reviews` write the
//! inputs the load runs use.)

#[global_allocator]
static GLOBAL: claimguard::alloc::MiMalloc = claimguard::alloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: review_profile SNAPSHOT BODY [N]";
    let snapshot = std::path::PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!(usage))?);
    let body = std::fs::read(args.next().ok_or_else(|| anyhow::anyhow!(usage))?)?;
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let state = claimguard::cluster::load_snapshot(std::slice::from_ref(&snapshot))?;
    let cluster = Arc::new(claimguard::cluster::SharedCluster::stored(state));
    let engine = claimguard::admission::Engine::new(claimguard::policy::Policy::default(), cluster);
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut bytes = 0;
    let start = Instant::now();
    for _ in 0..n {
        let r = rt.block_on(engine.review(std::hint::black_box(&body)))?;
        bytes += r.body.len();
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "{n} reviews of {} bytes: {per:.2} us each ({bytes} response bytes)",
        body.len()
    );
    Ok(())
}
