//! Load generator, null server and fixtures for the throughput figures.
//!
//! ```text
//! loadgen --write-certs DIR                  dev CA + serving cert (ca.pem, tls.crt, tls.key)
//! loadgen --write-snapshot FILE [--pods N]   a JSON List cluster: N pods, N PVCs, the load's claims
//! loadgen --write-reviews DIR                 claims.json (a dry-run pod review using two of the
//!                                            load's claims) and noclaims.json (a pod CREATE using
//!                                            none), fixed bodies for wrk (bench/run.sh)
//! loadgen --null-server --listen ADDR --tls-cert F --tls-key F [--workers N]
//!                                            actix-web + rustls answering a fixed allowed review
//! loadgen --engine-server --snapshot F --listen ADDR --tls-cert F --tls-key F [--workers N]
//!                                            the same stack calling claimguard's Engine::review
//!                                            (a stand-in for `claimguard serve --snapshot`)
//! loadgen --url https://127.0.0.1:PORT/validate[,URL2] --ca F [--label A[,B]] [--pid P[,P2]]
//!         [--connections 32] [--duration 10] [--rounds 1] [--rate R]
//!                                            POST varied pod reviews, print req/s and latency;
//!                                            with --rate, R requests/s in all on a fixed
//!                                            schedule, latency counted from the scheduled
//!                                            send (no coordinated omission): the tail below
//!                                            saturation;
//!                                            several targets are loaded in turn, `rounds` times,
//!                                            `duration` seconds each in all; with --pid, the
//!                                            server's CPU time per request
//! loadgen --scrape https://127.0.0.1:PORT/metrics --ca F
//!                                            server-side p50/p99 from the duration histogram
//! ```
//! The client verifies the server for `claimguard.claimguard-system.svc`
//! (resolved to the URL's address), as the API server does, over HTTP/1.1
//! keep-alive. Only loopback addresses are accepted.

#[path = "../benches/common/mod.rs"]
mod common;

use anyhow::{bail, Context, Result};
use common::Rng;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The same allocator as `claimguard serve`, so that the null and engine-only
// servers stay fair ceilings for it.
#[global_allocator]
static GLOBAL: claimguard::alloc::MiMalloc = claimguard::alloc::MiMalloc;

const SERVICE_DNS: &str = "claimguard.claimguard-system.svc";
/// Distinct pods the load cycles through; allowed ones are stored by a
/// snapshot-mode server, so a bounded pool keeps its index bounded.
const POOL: usize = 4096;
/// Claims per namespace the load uses (created by `--write-snapshot`).
const LOAD_CLAIMS: usize = 20;

#[derive(Debug)]
struct Args {
    write_certs: Option<PathBuf>,
    write_snapshot: Option<PathBuf>,
    write_reviews: Option<PathBuf>,
    pods: usize,
    null_server: bool,
    engine_server: bool,
    snapshot: Option<PathBuf>,
    listen: String,
    /// Worker threads of `--null-server` / `--engine-server` (default: one per CPU).
    workers: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    url: Option<String>,
    scrape: Option<String>,
    ca: Option<PathBuf>,
    connections: usize,
    duration: f64,
    rounds: usize,
    pid: Option<String>,
    warmup: f64,
    /// Requests per second in all (`--rate`); 0 = as fast as answers come.
    rate: f64,
    threads: usize,
    label: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        write_certs: None,
        write_snapshot: None,
        write_reviews: None,
        pods: 100_000,
        null_server: false,
        engine_server: false,
        snapshot: None,
        listen: "127.0.0.1:8443".into(),
        workers: None,
        tls_cert: None,
        tls_key: None,
        url: None,
        scrape: None,
        ca: None,
        connections: 32,
        duration: 10.0,
        rounds: 1,
        pid: None,
        warmup: 1.0,
        rate: 0.0,
        threads: 2,
        label: "server".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--write-certs" => a.write_certs = Some(val()?.into()),
            "--write-snapshot" => a.write_snapshot = Some(val()?.into()),
            "--write-reviews" => a.write_reviews = Some(val()?.into()),
            "--pods" => a.pods = val()?.parse()?,
            "--null-server" => a.null_server = true,
            "--engine-server" => a.engine_server = true,
            "--snapshot" => a.snapshot = Some(val()?.into()),
            "--listen" => a.listen = val()?,
            "--workers" => a.workers = Some(val()?.parse().context("--workers N")?),
            "--tls-cert" => a.tls_cert = Some(val()?.into()),
            "--tls-key" => a.tls_key = Some(val()?.into()),
            "--url" => a.url = Some(val()?),
            "--scrape" => a.scrape = Some(val()?),
            "--ca" => a.ca = Some(val()?.into()),
            "--connections" => a.connections = val()?.parse()?,
            "--duration" => a.duration = val()?.parse()?,
            "--rounds" => a.rounds = val()?.parse()?,
            "--pid" => a.pid = Some(val()?),
            "--warmup" => a.warmup = val()?.parse()?,
            "--rate" => a.rate = val()?.parse()?,
            "--threads" => a.threads = val()?.parse()?,
            "--label" => a.label = val()?,
            "-h" | "--help" => {
                println!("see the header of examples/loadgen.rs");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !(a.rate >= 0.0 && a.rate.is_finite()) {
        bail!("--rate must be a number of requests per second >= 0");
    }
    if a.connections == 0 || a.threads == 0 || !(a.duration > 0.0 && a.duration <= 600.0) {
        bail!("--connections and --threads must be > 0 and --duration in (0, 600] seconds");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(dir) = &args.write_certs {
        return write_certs(dir);
    }
    if let Some(file) = &args.write_snapshot {
        return write_snapshot(file, args.pods);
    }
    if let Some(dir) = &args.write_reviews {
        return write_reviews(dir);
    }
    if args.null_server || args.engine_server {
        return server(&args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    if let Some(url) = &args.scrape {
        return rt.block_on(scrape(url, &args));
    }
    match &args.url {
        Some(_) => rt.block_on(load(&args)),
        None => bail!(
            "nothing to do: give --url, --null-server, --scrape, --write-certs or --write-snapshot"
        ),
    }
}

// ---- fixtures ---------------------------------------------------------------

/// Two fixed review bodies for wrk: the issue's dry-run pod review using two
/// of the load's claims, and the same pod using none (the cheap path).
fn write_reviews(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let ns = common::namespace_name(0);
    let name = "orders-service-7d9f8b6c4d-x2k9p";
    let claims = [("uploads-0", false), ("config-1", true)];
    for (file, claims, dry_run) in [
        ("claims.json", &claims[..], true),
        ("noclaims.json", &[][..], false),
    ] {
        let body = common::pod_review_json(
            "6f1c1a52-3d1e-4a8e-9d1c-2b7f0e8a9c01",
            &ns,
            name,
            "0b9e5f3a-8c2d-4f7e-a1b6-3c5d7e9f1a2b",
            claims,
            None,
            dry_run,
        );
        let path = dir.join(file);
        std::fs::write(&path, &body)?;
        println!("wrote {} ({} bytes)", path.display(), body.len());
    }
    Ok(())
}

fn write_certs(dir: &Path) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "claimguard loadgen CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![
        SERVICE_DNS.to_string(),
        "claimguard.claimguard-system.svc.cluster.local".to_string(),
    ])?;
    leaf.distinguished_name
        .push(DnType::CommonName, SERVICE_DNS);
    let cert = leaf.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    println!("wrote {}/{{ca.pem,tls.crt,tls.key}}", dir.display());
    Ok(())
}

/// The claims the load uses in namespace `ns`, and who holds them:
/// `uploads-k` RWX shared by two writers, `config-k` RWO read by one pod,
/// `scratch-k` RWO written by one pod (a second writer gets a warning),
/// `wal-k` RWOP held by `ledger-k` (a second pod is denied).
fn load_objects(ns: &str, rng: &mut Rng, out: &mut Vec<serde_json::Value>) {
    let node = common::node_name(3);
    for k in 0..LOAD_CLAIMS {
        for (claim, mode, holders) in [
            (
                format!("uploads-{k}"),
                "ReadWriteMany",
                vec![
                    (format!("uploader-{k}-a"), false),
                    (format!("uploader-{k}-b"), false),
                ],
            ),
            (
                format!("config-{k}"),
                "ReadWriteOnce",
                vec![(format!("config-reader-{k}"), true)],
            ),
            (
                format!("scratch-{k}"),
                "ReadWriteOnce",
                vec![(format!("scratch-writer-{k}"), false)],
            ),
            (
                format!("wal-{k}"),
                "ReadWriteOncePod",
                vec![(format!("ledger-{k}"), false)],
            ),
        ] {
            out.push(pvc_json(ns, &claim, mode, rng));
            for (pod, ro) in holders {
                out.push(pod_json(
                    ns,
                    &pod,
                    &rng.uuid(),
                    &node,
                    &[(claim.as_str(), ro)],
                ));
            }
        }
    }
}

fn pvc_json(ns: &str, name: &str, mode: &str, rng: &mut Rng) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns, "uid": rng.uuid()},
        "spec": {"accessModes": [mode], "storageClassName": "gp3", "volumeName": format!("pvc-{}", rng.uuid()),
                 "resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": "Bound", "accessModes": [mode]}
    })
}

fn pod_json(
    ns: &str,
    name: &str,
    uid: &str,
    node: &str,
    claims: &[(&str, bool)],
) -> serde_json::Value {
    let volumes: Vec<_> = claims
        .iter()
        .enumerate()
        .map(|(i, (c, _))| serde_json::json!({"name": format!("vol-{i}"), "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    let mounts: Vec<_> = claims
        .iter()
        .enumerate()
        .map(|(i, (_, ro))| serde_json::json!({"name": format!("vol-{i}"), "mountPath": format!("/data/{i}"), "readOnly": ro}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "spec": {"nodeName": node, "volumes": volumes,
                 "containers": [{"name": "app", "image": "registry.example.com/app:1.0", "volumeMounts": mounts}]},
        "status": {"phase": "Running"}
    })
}

/// A JSON List like `kubectl get ns,pods,pvc -A -o json`, with the fields
/// claimguard reads (a full dump of 100k pods would be ~500 MB of JSON).
fn write_snapshot(file: &Path, pods: usize) -> Result<()> {
    let mut items = Vec::with_capacity(2 * pods + 6000);
    let mut rng = Rng::new(11);
    for i in 0..common::NAMESPACES {
        let ns = common::namespace_name(i);
        items.push(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
        load_objects(&ns, &mut rng, &mut items);
    }
    let mut pvc_rng = Rng::new(12);
    common::stream_cluster(pods, pods, 0.4, false, |item| match item {
        common::Item::Pod(p) => {
            let claims: Vec<(&str, bool)> = p
                .spec
                .as_ref()
                .map(|s| {
                    s.volumes
                        .iter()
                        .filter_map(|v| v.persistent_volume_claim.as_ref())
                        .map(|c| (c.claim_name.as_str(), false))
                        .collect()
                })
                .unwrap_or_default();
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            items.push(pod_json(
                p.metadata.namespace.as_deref().unwrap_or("default"),
                &p.metadata.name,
                p.metadata.uid.as_deref().unwrap_or(""),
                &node,
                &claims,
            ));
        }
        common::Item::Pvc(p) => items.push(pvc_json(
            p.metadata.namespace.as_deref().unwrap_or("default"),
            &p.metadata.name,
            "ReadWriteOnce",
            &mut pvc_rng,
        )),
        common::Item::Pv(_) | common::Item::Namespace(_) => {}
    });
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    let f = std::io::BufWriter::new(std::fs::File::create(file)?);
    serde_json::to_writer(f, &list)?;
    println!(
        "wrote {} ({} objects, {:.1} MB)",
        file.display(),
        list["items"].as_array().map_or(0, Vec::len),
        std::fs::metadata(file)?.len() as f64 / 1e6
    );
    Ok(())
}

/// The load: POOL distinct pod reviews. 85% allowed without comment (RWX
/// writer + RWO reader), 10% allowed with a `rwo-shared-writer` warning,
/// 5% denied by `rwop-exclusive`.
fn request_pool() -> Vec<actix_web::web::Bytes> {
    let mut rng = Rng::new(21);
    (0..POOL)
        .map(|i| {
            let ns = common::namespace_name(i % common::NAMESPACES);
            let k = rng.below(LOAD_CLAIMS as u64);
            let uploads = format!("uploads-{k}");
            let config = format!("config-{}", (k + 1) % LOAD_CLAIMS as u64);
            let scratch = format!("scratch-{k}");
            let wal = format!("wal-{k}");
            let roll = rng.below(100);
            let claims: Vec<(&str, bool)> = if roll < 5 {
                vec![(wal.as_str(), false)]
            } else if roll < 15 {
                vec![(scratch.as_str(), false), (config.as_str(), true)]
            } else {
                vec![(uploads.as_str(), false), (config.as_str(), true)]
            };
            let name = format!(
                "orders-service-{}-{}",
                rng.kube_suffix(10),
                rng.kube_suffix(5)
            );
            actix_web::web::Bytes::from(common::pod_review_json(
                &rng.uuid(),
                &ns,
                &name,
                &rng.uuid(),
                &claims,
                None,
                false,
            ))
        })
        .collect()
}

// ---- client -----------------------------------------------------------------

fn loopback(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url
        .strip_prefix("https://")
        .context("the URL must be https://127.0.0.1:PORT/…")?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: SocketAddr = hostport
        .parse()
        .context("the URL host must be an IP:port")?;
    if !addr.ip().is_loopback() {
        bail!("only loopback addresses are allowed, not {}", addr.ip());
    }
    Ok((
        addr,
        format!("https://{SERVICE_DNS}:{}/{path}", addr.port()),
    ))
}

fn client(args: &Args, addr: SocketAddr) -> Result<reqwest::Client> {
    let ca_path = args.ca.as_ref().context("--ca FILE is required")?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_path)?)?;
    Ok(reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .resolve(SERVICE_DNS, addr)
        .http1_only()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(10))
        .build()?)
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    allowed: u64,
    denied: u64,
    errors: u64,
    first_error: Option<String>,
    /// Seconds of measured load.
    window: f64,
    /// Server CPU ticks (user + system) spent during the measured windows.
    server_ticks: u64,
}

impl Tally {
    fn absorb(&mut self, t: Tally) {
        self.latencies_us.extend(t.latencies_us);
        self.allowed += t.allowed;
        self.denied += t.denied;
        self.errors += t.errors;
        if self.first_error.is_none() {
            self.first_error = t.first_error;
        }
        self.window += t.window;
        self.server_ticks += t.server_ticks;
    }
}

struct Target {
    label: String,
    url: String,
    client: reqwest::Client,
    pid: Option<u32>,
    tally: Tally,
}

/// utime + stime of a process, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Load every target in turn, `rounds` times, so that whatever else runs on
/// the machine weighs on each target alike; the figures of a target are over
/// all its windows.
async fn load(args: &Args) -> Result<()> {
    let labels: Vec<&str> = args.label.split(',').collect();
    let pids: Vec<&str> = args
        .pid
        .as_deref()
        .map_or(Vec::new(), |p| p.split(',').collect());
    let mut targets = Vec::new();
    for (i, url) in args.url.as_deref().unwrap_or("").split(',').enumerate() {
        let (addr, url) = loopback(url)?;
        targets.push(Target {
            label: labels.get(i).copied().unwrap_or("server").to_string(),
            url,
            client: client(args, addr)?,
            pid: pids.get(i).and_then(|p| p.parse().ok()),
            tally: Tally::default(),
        });
    }
    let pool = Arc::new(request_pool());
    let avg = pool.iter().map(|b| b.len()).sum::<usize>() / pool.len();
    let rounds = args.rounds.max(1);
    let slice = args.duration / rounds as f64;
    for round in 0..rounds {
        for t in &mut targets {
            // Warm-up (new connections, TLS handshakes) before the first window only.
            let warmup = if round == 0 { args.warmup } else { 0.2 };
            let w = window(
                &t.client,
                &t.url,
                &pool,
                args.connections,
                warmup,
                slice,
                t.pid,
                args.rate,
            )
            .await;
            t.tally.absorb(w);
        }
    }
    let mut failed = false;
    for t in &mut targets {
        let all = &mut t.tally;
        all.latencies_us.sort_unstable();
        let n = all.latencies_us.len();
        let lat = &all.latencies_us;
        let q = |p: f64| -> f64 {
            if n == 0 {
                return f64::NAN;
            }
            let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            lat[idx] as f64 / 1000.0
        };
        let rps = n as f64 / all.window;
        let cpu_us = t
            .pid
            .map(|_| all.server_ticks as f64 * 10_000.0 / n.max(1) as f64);
        println!(
            "{}: {} connections, {:.0} s in {} windows, {} B avg request: {:.0} req/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; allowed {} denied {} errors {}{}",
            t.label, args.connections, all.window, rounds, avg, rps, q(0.5), q(0.99), q(0.999), q(1.0),
            all.allowed, all.denied, all.errors,
            cpu_us.map_or(String::new(), |c| format!("; server CPU {c:.1} us/request"))
        );
        println!(
            "RESULT label={} rps={:.0} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} allowed={} denied={} errors={} server_cpu_us={:.1}",
            t.label, rps, q(0.5), q(0.99), q(0.999), all.allowed, all.denied, all.errors,
            cpu_us.unwrap_or(f64::NAN)
        );
        if let Some(e) = &all.first_error {
            eprintln!("{}: first error: {e}", t.label);
        }
        failed |= n == 0;
    }
    if failed {
        bail!("a target answered no request");
    }
    Ok(())
}

/// One window of load on one target: `connections` tasks each sending one
/// request at a time, for `warmup` + `secs` seconds; only the part after the
/// warm-up counts.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn window(
    client: &reqwest::Client,
    url: &str,
    pool: &Arc<Vec<actix_web::web::Bytes>>,
    connections: usize,
    warmup: f64,
    secs: f64,
    pid: Option<u32>,
    rate: f64,
) -> Tally {
    // With a rate, each connection sends on its own fixed schedule, the
    // connections staggered evenly across one interval.
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(connections as f64 / rate));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = client.clone();
        let pool = pool.clone();
        let stop = stop.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut i = c * (POOL / 32 + 1) + (start.elapsed().as_nanos() as usize % POOL);
            let mut next = interval.map(|iv| start + iv * c as u32 / connections as u32);
            while !stop.load(Ordering::Relaxed) {
                let body = pool[i % pool.len()].clone();
                i += 1;
                // Scheduled: the latency counts from when the request was
                // due, so a slow answer also charges the requests it delayed.
                let sent = match (next.as_mut(), interval) {
                    (Some(due), Some(iv)) => {
                        tokio::time::sleep_until((*due).into()).await;
                        let at = *due;
                        *due += iv;
                        at
                    }
                    _ => Instant::now(),
                };
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let outcome = match res {
                    Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                let done = Instant::now();
                if sent < measure_from {
                    continue;
                }
                match outcome {
                    Ok(b) => {
                        t.latencies_us
                            .push((done - sent).as_micros().min(u32::MAX as u128) as u32);
                        if memchr(&b, b"\"allowed\":true") {
                            t.allowed += 1;
                        } else {
                            t.denied += 1;
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e);
                    }
                }
            }
            t
        }));
    }
    tokio::time::sleep_until((measure_from).into()).await;
    let cpu0 = pid.and_then(cpu_ticks);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let cpu1 = pid.and_then(cpu_ticks);
    let end = Instant::now();
    let mut all = Tally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            all.absorb(t);
        }
    }
    // Requests that finished after `stop` still count: they were in flight
    // during the window, and leaving them out would bias the tail.
    all.window = (end - measure_from).as_secs_f64();
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        all.server_ticks = b.saturating_sub(a);
    }
    all
}

fn memchr(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Server-side latency from `claimguard_admission_duration_seconds`
/// (cumulative buckets summed over every label set): each quantile is the
/// upper bound of the first bucket that reaches it, so it is an upper bound
/// at the resolution of the server's buckets.
async fn scrape(url: &str, args: &Args) -> Result<()> {
    let (addr, url) = loopback(url)?;
    let text = client(args, addr)?
        .get(&url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut count = 0.0;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("claimguard_admission_duration_seconds") else {
            continue;
        };
        let value: f64 = match line.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()) {
            Some(v) => v,
            None => continue,
        };
        if rest.starts_with("_bucket") {
            let le = rest
                .split_once("le=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(le, _)| {
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    }
                });
            if let Some(le) = le.filter(|l| !l.is_nan()) {
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some(b) => b.1 += value,
                    None => buckets.push((le, value)),
                }
            }
        } else if rest.starts_with("_count") {
            count += value;
        } else if rest.starts_with("_sum") {
            sum += value;
        }
    }
    if count == 0.0 || buckets.is_empty() {
        bail!("{url} has no claimguard_admission_duration_seconds samples");
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let bound = |p: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= p * count)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    let fmt = |s: f64| {
        if s.is_infinite() {
            "+Inf".to_string()
        } else {
            format!("{:.3} ms", s * 1000.0)
        }
    };
    println!(
        "server-side decision ({count:.0} requests): mean {:.3} ms, p50 <= {}, p99 <= {}, p99.9 <= {}",
        sum / count * 1000.0,
        fmt(bound(0.5)),
        fmt(bound(0.99)),
        fmt(bound(0.999))
    );
    println!(
        "RESULT label=server-side count={count:.0} mean_ms={:.4} p99_le_ms={:.3}",
        sum / count * 1000.0,
        bound(0.99) * 1000.0
    );
    Ok(())
}

// ---- null server ------------------------------------------------------------

const NULL_BODY: &[u8] =
    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}"#;

fn server(args: &Args) -> Result<()> {
    use actix_web::{web, App, HttpResponse};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let addr: SocketAddr = args.listen.parse().context("--listen must be IP:port")?;
    if !addr.ip().is_loopback() {
        bail!("the null server listens on loopback only");
    }
    let cert_path = args
        .tls_cert
        .as_ref()
        .context("--tls-cert FILE is required")?;
    let key_path = args
        .tls_key
        .as_ref()
        .context("--tls-key FILE is required")?;
    let certs = CertificateDer::pem_file_iter(cert_path)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key_path)?;
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let engine = match (&args.snapshot, args.engine_server) {
        (Some(snap), true) => {
            let state = claimguard::cluster::load_snapshot(std::slice::from_ref(snap))?;
            println!(
                "snapshot loaded: {} pods in the index; RSS {}",
                state.pod_count(),
                rss()
            );
            if std::env::var_os("LOADGEN_MALLOC_TRIM").is_some_and(|v| !v.is_empty()) {
                trim();
                println!("after malloc_trim: RSS {}", rss());
            }
            let cluster = Arc::new(claimguard::cluster::SharedCluster::stored(state));
            Some(web::Data::new(claimguard::admission::Engine::new(
                claimguard::policy::Policy::default(),
                cluster,
            )))
        }
        (None, true) => bail!("--engine-server needs --snapshot FILE"),
        _ => None,
    };
    // The same listener as `claimguard serve` (transport, timeouts, workers).
    let mut config =
        claimguard::server::ServeConfig::new(addr, cert_path.clone(), key_path.clone());
    config.workers = args.workers;
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    actix_web::rt::System::new().block_on(async move {
        let app = move || {
            match &engine {
                    Some(engine) => {
                        App::new().app_data(engine.clone()).route(
                            "/validate",
                            web::post().to(
                                |engine: web::Data<claimguard::admission::Engine>,
                                 body: web::Bytes| async move {
                                    match engine.review(&body).await {
                                        Ok(r) => HttpResponse::Ok()
                                            .content_type("application/json")
                                            .body(r.body),
                                        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
                                    }
                                },
                            ),
                        )
                    }
                    None => App::new().app_data(web::Data::new(())).route(
                        "/validate",
                        // Reads the body (the real server must too) and answers
                        // without looking at it.
                        web::post().to(|_body: web::Bytes| async {
                            HttpResponse::Ok()
                                .content_type("application/json")
                                .body(NULL_BODY)
                        }),
                    ),
                }
        };
        let server = claimguard::server::tls_listener(listener, tls, &config, app)?.run();
        println!("listening on https://{addr}/validate");
        server.await
    })?;
    Ok(())
}

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1} MB", kb / 1024.0))
}

/// Hand freed heap back to the OS: glibc keeps what the snapshot parse
/// freed, which is most of the peak.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only walks glibc's own arenas; no Rust invariants involved.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
