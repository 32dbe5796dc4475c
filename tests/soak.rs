//! Soak: the whole serving path under load for minutes, with pod churn
//! through the fake API server, dropped and cut watches, `410 Gone`,
//! certificate rotation and policy reloads. Reports RSS, errors and p99 per
//! window, and ends with the live index compared to a fresh build.
//!
//! `soak_short` (15 s) runs in CI. The long run is `bash bench/soak.sh`
//! (`SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture`).
//!
//! Everything runs in this one process (the fake API server, the live view,
//! the TLS server and the load clients), so the RSS reported is the sum: what
//! matters is that it stays flat.

mod common;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claimguard::admission::Engine;
use claimguard::cluster::live::{self, LiveOptions};
use claimguard::cluster::{ClusterState, SharedCluster};
use claimguard::policy::Policy;
use claimguard::server::{self, ServeConfig};
use common::{client, pod_review, url, write_pair, Ca};
use support::fake_apiserver::{FakeApiServer, Kind};
use support::k8s;

const NAMESPACES: [&str; 3] = ["team-a", "team-b", "team-c"];
const CLAIMS: usize = 200;
const MAX_CHURN_PODS: usize = 400;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn seed(server: &FakeApiServer) {
    for ns in NAMESPACES {
        server.add(Kind::Namespace, k8s::namespace(ns, &[]));
    }
    server.add(
        Kind::StorageClass,
        k8s::storage_class("gp3", "ebs.csi.aws.com"),
    );
    for i in 0..CLAIMS {
        let ns = NAMESPACES[i % NAMESPACES.len()];
        let mode = if i % 4 == 0 {
            "ReadWriteOncePod"
        } else {
            "ReadWriteOnce"
        };
        let pv = format!("pv-{i}");
        let claim = format!("data-{i}");
        server.add(Kind::Pv, k8s::pv(&pv, &[mode], Some((ns, &claim)), "gp3"));
        server.add(Kind::Pvc, k8s::pvc(ns, &claim, &[mode], "gp3", Some(&pv)));
    }
}

#[derive(Default)]
struct Window {
    latencies_us: Vec<u64>,
}

async fn soak(duration: Duration) {
    let fake = Arc::new(FakeApiServer::start().await);
    seed(&fake);
    let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
    let _live = live::start(
        fake.client(),
        cluster.clone(),
        LiveOptions {
            page_size: 100,
            ..LiveOptions::default()
        },
    )
    .await
    .expect("live view");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.is_synced() {
        assert!(Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("soak CA");
    let (cert, key) = write_pair(dir.path(), &ca.issue("pair-0"));
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, "mode: enforce\n").unwrap();
    let engine = Arc::new(Engine::new(Policy::default(), cluster.clone()));
    let reloader = claimguard::reload::spawn_policy_reloader(
        policy_path.clone(),
        engine.clone(),
        Duration::from_millis(500),
    );
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), cert.clone(), key.clone());
    config.workers = Some(2);
    config.reload_interval = Duration::from_millis(500);
    config.shutdown_grace = Duration::from_millis(100);
    let running = server::start(config, engine).await.expect("server");
    let addr = running.local_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let window = Arc::new(Mutex::new(Window::default()));
    let first_error = Arc::new(Mutex::new(None::<String>));

    // Load: 8 keep-alive clients, reviews of pods on random claims; one in
    // ten is not a dry run (it reserves its claims until the reservation expires).
    let mut load = Vec::new();
    for worker in 0..8u64 {
        let (stop, errors, requests, window, first_error) = (
            stop.clone(),
            errors.clone(),
            requests.clone(),
            window.clone(),
            first_error.clone(),
        );
        let ca_pem = ca.pem();
        load.push(tokio::spawn(async move {
            let http = client(&[&ca_pem], addr);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let i = (worker * 7919 + n * 104_729) as usize;
                let ns = NAMESPACES[i % NAMESPACES.len()];
                let mut review = pod_review(
                    &format!("{worker:08x}-0000-4000-8000-{n:012x}"),
                    &format!("load-{worker}-{n}"),
                    &format!("data-{}", i % CLAIMS),
                );
                review["request"]["namespace"] = ns.into();
                review["request"]["object"]["metadata"]["namespace"] = ns.into();
                review["request"]["dryRun"] = (!n.is_multiple_of(10)).into();
                let started = Instant::now();
                let res = http
                    .post(url(addr, "/validate"))
                    .header("content-type", "application/json")
                    .body(review.to_string())
                    .send()
                    .await;
                let ok = match res {
                    Ok(r) if r.status() == 200 => r.text().await.is_ok(),
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert(format!("{status}: {text}"));
                        false
                    }
                    Err(e) => {
                        first_error.lock().unwrap().get_or_insert(e.to_string());
                        false
                    }
                };
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                window
                    .lock()
                    .unwrap()
                    .latencies_us
                    .push(started.elapsed().as_micros() as u64);
            }
        }));
    }

    // Churn: pods created, moved to Succeeded, deleted.
    let churn = {
        let (stop, fake) = (stop.clone(), fake.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            let mut live_pods: std::collections::VecDeque<(String, String)> = Default::default();
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let ns = NAMESPACES[n % NAMESPACES.len()];
                let name = format!("churn-{n}");
                let claim = format!("data-{}", (n * 31) % CLAIMS);
                fake.add(
                    Kind::Pod,
                    k8s::pod(
                        ns,
                        &name,
                        &[(&claim, n.is_multiple_of(3))],
                        Some(&format!("node-{}", n % 5)),
                        "Running",
                    ),
                );
                live_pods.push_back((ns.to_string(), name));
                if n.is_multiple_of(7) {
                    if let Some((ns, name)) = live_pods.get(live_pods.len() / 2).cloned() {
                        if let Some(mut p) = fake.get(Kind::Pod, &ns, &name) {
                            k8s::set_phase(&mut p, "Succeeded");
                            fake.modify(Kind::Pod, p);
                        }
                    }
                }
                while live_pods.len() > MAX_CHURN_PODS {
                    let (ns, name) = live_pods.pop_front().unwrap();
                    fake.delete(Kind::Pod, &ns, &name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Faults and reloads, in turn; the long run does a full round every minute.
    let faults = {
        let (stop, fake) = (stop.clone(), fake.clone());
        let (cert, key, policy_path) = (cert.clone(), key.clone(), policy_path.clone());
        let ca_pairs: Vec<_> = (1..=64).map(|i| ca.issue(&format!("pair-{i}"))).collect();
        let step = if duration >= Duration::from_secs(120) {
            Duration::from_secs(12)
        } else {
            Duration::from_secs(2)
        };
        tokio::spawn(async move {
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(step).await;
                round += 1;
                match round % 5 {
                    0 => {
                        fake.drop_watches();
                    }
                    1 => {
                        fake.abort_watches();
                    }
                    2 => {
                        fake.expire_history();
                        fake.gone_next_watches(5);
                        fake.drop_watches();
                    }
                    3 => {
                        let pair = &ca_pairs[round % ca_pairs.len()];
                        // Key and certificate replaced together, as a Secret update does.
                        let tmp = cert.with_extension("tmp");
                        std::fs::write(&tmp, &pair.cert_pem).unwrap();
                        std::fs::write(&key, &pair.key_pem).unwrap();
                        std::fs::rename(&tmp, &cert).unwrap();
                    }
                    _ => {
                        let text = if round.is_multiple_of(2) {
                            "mode: enforce\nrules: {rwo-shared-writer: deny}\n"
                        } else {
                            "mode: audit\n"
                        };
                        std::fs::write(&policy_path, text).unwrap();
                    }
                }
            }
        })
    };

    // Report every window: RSS, requests, errors, p99.
    let started = Instant::now();
    let report_every = if duration >= Duration::from_secs(120) {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    };
    let mut rss = Vec::new();
    eprintln!(
        "soak: {:?}, {} claims, up to {} churning pods",
        duration, CLAIMS, MAX_CHURN_PODS
    );
    eprintln!(
        "{:>6} {:>9} {:>9} {:>7} {:>9} {:>8}",
        "t(s)", "rss(MiB)", "requests", "errors", "p99(ms)", "pods"
    );
    let mut last_requests = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(
            report_every
                .min(duration.saturating_sub(started.elapsed()))
                .max(Duration::from_millis(10)),
        )
        .await;
        let mut lat = std::mem::take(&mut window.lock().unwrap().latencies_us);
        lat.sort_unstable();
        let p99 = lat
            .get(lat.len().saturating_sub(1).min(lat.len() * 99 / 100))
            .copied()
            .unwrap_or(0);
        let total = requests.load(Ordering::Relaxed);
        let r = rss_mib();
        rss.push(r);
        eprintln!(
            "{:>6.0} {:>9.1} {:>9} {:>7} {:>9.2} {:>8}",
            started.elapsed().as_secs_f64(),
            r,
            total - last_requests,
            errors.load(Ordering::Relaxed),
            p99 as f64 / 1000.0,
            fake.count(Kind::Pod)
        );
        last_requests = total;
    }
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.await.unwrap();
    }
    churn.await.unwrap();
    faults.abort();
    reloader.abort();

    let total = requests.load(Ordering::Relaxed);
    let errs = errors.load(Ordering::Relaxed);
    eprintln!("soak: {total} requests, {errs} errors");
    assert!(total > 0);
    assert_eq!(errs, 0, "first error: {:?}", first_error.lock().unwrap());

    // The index ends equal to a fresh build of what the server holds, once
    // the reservations made by the non-dry-run requests have expired.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let want = fake.fresh_state().canonical_dump();
        let got = cluster.read().canonical_dump();
        if got == want {
            break;
        }
        if Instant::now() > deadline {
            let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).take(5).collect();
            let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).take(5).collect();
            panic!(
                "index differs from a fresh build\n  extra: {extra:#?}\n  missing: {missing:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("soak: final index equals a fresh build");
    // Flat: the last window's RSS within 50 % (plus slack for the allocator)
    // of the first one's.
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        assert!(
            *last <= first * 1.5 + 32.0,
            "RSS grew from {first:.1} MiB to {last:.1} MiB"
        );
    }
    running.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    soak(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: bash bench/soak.sh"]
async fn soak_long() {
    let secs = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    soak(Duration::from_secs(secs)).await;
}
