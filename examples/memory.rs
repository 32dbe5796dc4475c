//! Index memory: bytes the claim index holds per pod, counted by a global
//! allocator, and the process RSS, for a synthetic cluster shaped like a real
//! one (50 namespaces, 500 nodes, `web-7d4b9c8f6d-x2x9k` names, UUID uids,
//! CSI volume names).
//!
//! `cargo run --release --example memory -- [PODS] [PVCS]` (default 100000 each).
//! Objects are generated and applied one at a time and dropped at once, so
//! the live-byte delta is the index alone.

#[path = "../benches/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn note(delta: isize, blocks: isize) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
    BLOCKS.fetch_add(blocks, Ordering::Relaxed);
    if now > 0 {
        PEAK.fetch_max(now as usize, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize, 1);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize), -1);
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize, 1);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as isize - l.size() as isize, 0);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Measured {
    bytes: isize,
    blocks: isize,
    stored: usize,
    pvcs: usize,
    state: claimguard::cluster::ClusterState,
}

fn measure(pods: usize, pvcs: usize, share: f64, pvs: bool) -> Measured {
    let before = LIVE.load(Ordering::Relaxed);
    let blocks_before = BLOCKS.load(Ordering::Relaxed);
    let mut state = claimguard::cluster::ClusterState::new();
    common::stream_cluster(pods, pvcs, share, pvs, |item| item.apply(&mut state));
    // The index's hash tables grow by doubling; shrinking is not something a
    // long-running server does, so measure as built.
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let blocks = BLOCKS.load(Ordering::Relaxed) - blocks_before;
    Measured {
        bytes,
        blocks,
        stored: state.pod_count(),
        pvcs: state.pvc_count(),
        state,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pods: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let pvcs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(pods);
    let rss_start = rss_kib();
    println!("index memory, {pods} pods, {pvcs} PVCs, 50 namespaces, 500 nodes");
    println!(
        "{:<44} {:>12} {:>10} {:>12} {:>10}",
        "cluster", "index bytes", "bytes/pod", "allocations", "stored"
    );
    let mut keep = None;
    let mut rss = 0;
    for (label, share, pvs) in [
        ("40% of pods use one claim", 0.4, false),
        ("40% of pods use one claim, + a PV per PVC", 0.4, true),
        ("every pod uses one claim", 1.0, false),
    ] {
        let m = measure(pods, pvcs, share, pvs);
        println!(
            "{:<44} {:>12} {:>10.0} {:>12} {:>10}",
            label,
            m.bytes,
            m.bytes as f64 / pods as f64,
            m.blocks,
            format!("{}p/{}c", m.stored, m.pvcs),
        );
        if keep.is_none() {
            // RSS with only the first index built: what a server with this cluster holds.
            rss = rss_kib();
            keep = Some(m.state);
        }
    }
    println!(
        "process RSS with the 40% index loaded: {:.1} MB (at start {:.1} MB); peak live heap {:.1} MB",
        rss as f64 / 1024.0,
        rss_start as f64 / 1024.0,
        PEAK.load(Ordering::Relaxed) as f64 / 1e6
    );
    drop(keep);
}
