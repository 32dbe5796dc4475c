//! The `claimguard` binary: argument parsing and exit codes. Everything else
//! lives in the library.

use anyhow::Context;
use claimguard::admission::Engine;
use claimguard::cluster::{self, live, ClusterState, SharedCluster};
use claimguard::server::{self, ServeConfig};
use claimguard::{audit, certs, check, policy::Policy};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

// Every admission request allocates a few hundred small, short-lived values
// (the parsed review, messages, the response); mimalloc's thread-local free
// lists serve them at a fraction of glibc malloc's cost under load
// (docs/performance.md, issue 14).
#[global_allocator]
static GLOBAL: claimguard::alloc::MiMalloc = claimguard::alloc::MiMalloc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "claimguard",
    version,
    about = "Stops pods from fighting over PersistentVolumeClaims: a validating admission webhook, an offline checker and an auditor."
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CLAIMGUARD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum CheckOutput {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum AuditOutput {
    Text,
    Json,
    Policyreport,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ExplainOutput {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// What to explain: pod/NAME, pvc/NAME, persistentvolumeclaim/NAME, or `pod NAME`.
    #[arg(required = true, num_args = 1..=2, value_name = "TARGET")]
    target: Vec<String>,
    /// Namespace of the target; else the kubeconfig context's, else `default`.
    #[arg(short = 'n', long, env = "CLAIMGUARD_NAMESPACE")]
    namespace: Option<String>,
    #[arg(long, env = "CLAIMGUARD_SNAPSHOT", value_delimiter = ',', help = concat!(
        "Explain from a cluster dump instead of the cluster (repeatable): `",
        claimguard::dump_command!(), "`"))]
    snapshot: Vec<PathBuf>,
    /// Kubeconfig file; else in-cluster config, else $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "CLAIMGUARD_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; else its current context.
    #[arg(long, env = "CLAIMGUARD_CONTEXT")]
    context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ExplainOutput::Text, env = "CLAIMGUARD_OUTPUT")]
    output: ExplainOutput,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum MigrateOutput {
    Text,
    Json,
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// The claim to migrate: pvc/NAME, persistentvolumeclaim/NAME or `pvc NAME`
    /// (not with --list).
    #[arg(num_args = 0..=2, value_name = "TARGET", required_unless_present = "list")]
    target: Vec<String>,
    /// List the candidates instead: bound claims on a CSI volume that is
    /// ReadWriteOnce only, used by at most one pod, and by no workload that
    /// can run two pods.
    #[arg(long, env = "CLAIMGUARD_LIST", conflicts_with_all = ["target", "apply"])]
    list: bool,
    /// With --list: every namespace.
    #[arg(
        short = 'A',
        long,
        env = "CLAIMGUARD_ALL_NAMESPACES",
        requires = "list"
    )]
    all_namespaces: bool,
    /// Namespace of the claim (or of --list); else the kubeconfig context's, else `default`.
    #[arg(short = 'n', long, env = "CLAIMGUARD_NAMESPACE")]
    namespace: Option<String>,
    /// Carry out the plan through the API server, checking each step; a
    /// re-run resumes where an interrupted one stopped. Without it the plan
    /// is printed and nothing is written.
    #[arg(long, env = "CLAIMGUARD_APPLY")]
    apply: bool,
    #[arg(long, env = "CLAIMGUARD_SNAPSHOT", value_delimiter = ',', help = concat!(
        "Read a cluster dump instead of the cluster (repeatable): `",
        claimguard::dump_command!(),
        "`. Read only: not with --apply."))]
    snapshot: Vec<PathBuf>,
    /// Kubeconfig file; else in-cluster config, else $KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "CLAIMGUARD_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; else its current context.
    #[arg(long, env = "CLAIMGUARD_CONTEXT")]
    context: Option<String>,
    /// Output format of --list and of the plan (--apply prints its steps as text).
    #[arg(short = 'o', long, value_enum, default_value_t = MigrateOutput::Text, env = "CLAIMGUARD_OUTPUT")]
    output: MigrateOutput,
    /// With --list: also say why the other claims are not candidates.
    #[arg(short = 'v', long, env = "CLAIMGUARD_VERBOSE")]
    verbose: bool,
    /// With --apply: how long each wait may take (the old claim gone, the
    /// volume released, the new claim bound), e.g. 30s, 5m.
    #[arg(long, env = "CLAIMGUARD_TIMEOUT", value_parser = parse_duration, default_value = "5m")]
    timeout: Duration,
}

#[derive(Subcommand)]
enum Command {
    /// The webhook server: AdmissionReview v1 on POST /validate over TLS,
    /// the opt-in co-location webhook on POST /mutate, /healthz, /readyz and /metrics.
    Serve(ServeArgs),
    /// Evaluate manifests offline, in order, as if applied one by one to the
    /// cluster state, and print what `kubectl apply` would print.
    /// Exit 0: no denial; 1: a denial; 2: bad input.
    Check {
        #[arg(long, env = "CLAIMGUARD_SNAPSHOT", value_delimiter = ',', help = concat!(
            "Cluster state the manifests are applied to (repeatable): `",
            claimguard::dump_command!(),
            "`. Without --snapshot the cluster is empty: only the manifests given \
             exist. A file that is empty or holds no object is refused; write an \
             empty cluster as an empty `kind: List`."))]
        snapshot: Vec<PathBuf>,
        /// Policy file (YAML); the built-in defaults otherwise.
        #[arg(long, env = "CLAIMGUARD_POLICY")]
        policy: Option<PathBuf>,
        /// Output format. text: what `kubectl apply` prints, `created` and
        /// `configured` lines on stdout, `Warning:` and `Error from server`
        /// lines on stderr; json: one report on stdout.
        #[arg(short = 'o', long, value_enum, default_value_t = CheckOutput::Text, env = "CLAIMGUARD_OUTPUT")]
        output: CheckOutput,
        /// Exit 1 when any warning is printed, as for a denial (bad input is still 2).
        #[arg(long, env = "CLAIMGUARD_WARNINGS_AS_ERRORS")]
        warnings_as_errors: bool,
        /// Manifest files or directories (`-` for standard input), applied in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Scan the cluster (or --snapshot) for violations that already exist.
    /// Exit 0: none; 1: some; 2: error.
    Audit {
        #[arg(long, env = "CLAIMGUARD_SNAPSHOT", value_delimiter = ',', help = concat!(
            "Audit a cluster dump instead of the cluster (repeatable; directories allowed): `",
            claimguard::dump_command!(),
            "`. A file that is empty or holds no object is refused; write an empty \
             cluster as an empty `kind: List`."))]
        snapshot: Vec<PathBuf>,
        /// Kubeconfig for the API server [default: in-cluster, then $KUBECONFIG / ~/.kube/config].
        #[arg(long, env = "CLAIMGUARD_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use; else its current context.
        #[arg(long, env = "CLAIMGUARD_CONTEXT")]
        context: Option<String>,
        /// Report only violations in this namespace [default: every namespace].
        #[arg(short = 'n', long, env = "CLAIMGUARD_NAMESPACE")]
        namespace: Option<String>,
        /// Policy file (YAML); the built-in defaults otherwise.
        #[arg(long, env = "CLAIMGUARD_POLICY")]
        policy: Option<PathBuf>,
        /// Output format: text (a table), json, or policyreport
        /// (wgpolicyk8s.io/v1alpha2 PolicyReports, YAML, one per namespace).
        #[arg(short = 'o', long, value_enum, default_value_t = AuditOutput::Text, env = "CLAIMGUARD_OUTPUT")]
        output: AuditOutput,
    },
    /// Why is this pod stuck? Its claims, their other users, where their
    /// volumes are attached and whether those nodes are up, the findings,
    /// the pod's Warning Events and the command that fixes it.
    /// Exit 0: nothing found; 1: findings; 2: error.
    Explain(ExplainArgs),
    /// Move a ReadWriteOnce claim to ReadWriteOncePod without losing its
    /// volume: --list the candidates, print the plan as kubectl commands, or
    /// --apply it (Retain first, each step checked, resumable).
    /// Exit 0: done or plan printed; 1: refused; 2: error.
    Migrate(MigrateArgs),
    /// Write a CA, a serving certificate for the Service's DNS names, a Secret
    /// manifest and a JSON Patch that sets caBundle on every webhook — for
    /// clusters without cert-manager.
    Certs {
        /// Namespace of the webhook's Service: the certificate is for
        /// `<service>.<namespace>.svc` (and the shorter names).
        #[arg(short = 'n', long, default_value = certs::DEFAULT_NAMESPACE, env = "CLAIMGUARD_NAMESPACE")]
        namespace: String,
        /// Name of the webhook's Service.
        #[arg(long, default_value = certs::DEFAULT_SERVICE, env = "CLAIMGUARD_SERVICE")]
        service: String,
        /// Directory to write into (created if missing).
        #[arg(long, default_value = "certs", env = "CLAIMGUARD_OUT")]
        out: PathBuf,
        /// Validity of the CA and the serving certificate, in days.
        #[arg(long, default_value_t = certs::DEFAULT_DAYS, env = "CLAIMGUARD_DAYS")]
        days: u32,
        /// Replace certificates already in --out (they may hold the CA the
        /// cluster trusts: patch the caBundle again afterwards).
        #[arg(long, env = "CLAIMGUARD_FORCE")]
        force: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 0.0.0.0:8443; 127.0.0.1:8443 with --dev].
    #[arg(long, env = "CLAIMGUARD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Serving certificate (PEM, chain allowed); reloaded when the file changes.
    #[arg(long, env = "CLAIMGUARD_TLS_CERT", required_unless_present = "dev")]
    tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "CLAIMGUARD_TLS_KEY", required_unless_present = "dev")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) of the API server's client certificate: POST /validate and
    /// /mutate then require a client certificate that chains to it; probes
    /// and /metrics need none. Reloaded when the file changes.
    #[arg(long, env = "CLAIMGUARD_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Also serve /metrics, /healthz and /readyz over plain HTTP on this
    /// address (e.g. 0.0.0.0:9090), so Prometheus needs no webhook CA.
    #[arg(long, env = "CLAIMGUARD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Use snapshot files as the cluster instead of the API server (repeatable).
    /// Admitted objects join the in-memory state. A file that is empty or
    /// holds no object is refused; an empty cluster is an empty `kind: List`.
    #[arg(long, env = "CLAIMGUARD_SNAPSHOT", value_delimiter = ',')]
    snapshot: Vec<PathBuf>,
    /// Policy file (YAML), reloaded when it changes; the built-in defaults otherwise.
    #[arg(long, env = "CLAIMGUARD_POLICY")]
    policy: Option<PathBuf>,
    /// Kubeconfig for the API server [default: in-cluster, then $KUBECONFIG / ~/.kube/config].
    #[arg(long, env = "CLAIMGUARD_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (live mode); else its current context.
    #[arg(long, env = "CLAIMGUARD_CONTEXT")]
    context: Option<String>,
    /// Development mode: 127.0.0.1:8443, certificates in certs/dev/ (made if
    /// missing), the built-in example cluster (examples/cluster.yaml) unless
    /// --snapshot is given; Ctrl-C or SIGTERM stops it at once.
    #[arg(long, env = "CLAIMGUARD_DEV")]
    dev: bool,
    /// After SIGTERM or SIGINT, keep serving this long (the API server reuses
    /// keep-alive connections), then drain [default: 5s; 0s with --dev].
    #[arg(long, env = "CLAIMGUARD_SHUTDOWN_GRACE", value_parser = parse_duration)]
    shutdown_grace: Option<Duration>,
    /// Audit the live view this often and write PolicyReports (wgpolicyk8s.io/v1alpha2)
    /// per namespace, e.g. 10m. Off by default; needs the API server (not --snapshot).
    #[arg(long, env = "CLAIMGUARD_AUDIT_INTERVAL", value_parser = parse_duration)]
    audit_interval: Option<Duration>,
    /// Live mode: budget for recording a reservation in the API server (a
    /// Lease write, retries included); past it, onLookupError decides.
    #[arg(long, env = "CLAIMGUARD_RESERVATION_TIMEOUT", value_parser = parse_duration, default_value = "1s")]
    reservation_timeout: Duration,
    /// Worker threads serving the webhook (default: the CPUs this process
    /// may use, cgroup quota included).
    #[arg(long, env = "CLAIMGUARD_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 1h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration like 30s, 5m or 1h")),
    }
}

fn load_policy(path: Option<&PathBuf>) -> anyhow::Result<Policy> {
    match path {
        Some(p) => Ok(Policy::load(p)?),
        None => Ok(Policy::default()),
    }
}

/// With `background`, lines are written to stderr in batches by a thread of
/// their own (`serve`: a request's worker only formats its decision line and
/// appends it; see `claimguard::log_batch`); the guard writes what is left
/// when dropped at the end of `main`. Never lossy: a full buffer makes the
/// logging call wait.
fn init_logging(
    format: LogFormat,
    background: bool,
    default_level: &str,
) -> Option<claimguard::log_batch::BatchGuard> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAIMGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal;
    let batched = if background {
        // Only a thread that cannot start lands here; log unbatched then.
        claimguard::log_batch::batched(std::io::stderr(), "claimguard-log").ok()
    } else {
        None
    };
    let ansi = std::io::stderr().is_terminal();
    if let (LogFormat::Text, false, Some((w, _))) = (format, ansi, &batched) {
        // serve's text log: decision lines by their own layer
        // (`claimguard::log_line`), the same bytes at a fraction of the cost;
        // everything else by the fmt layer.
        use claimguard::log_line::{DecisionLines, DECISION_TARGET};
        use tracing_subscriber::prelude::*;
        let decisions = DecisionLines::new(w.clone());
        let rest = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(w.clone())
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target() != DECISION_TARGET
            }));
        tracing_subscriber::registry()
            .with(filter)
            .with(decisions)
            .with(rest)
            .init();
        return batched.map(|(_, guard)| guard);
    }
    let (writer, guard) = match batched {
        Some((w, guard)) => (BoxMakeWriter::new(w), Some(guard)),
        None => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // explain is read by a person at a terminal: its one-line error says it
    // all, without the client library's own log lines (CLAIMGUARD_LOG=info
    // brings them back).
    let level = match cli.command {
        Command::Explain(_) | Command::Migrate(_) => "off",
        // audit's error is one line too; its own warnings (a kind it may
        // not list) stay.
        Command::Audit { .. } => "warn,kube_client=off",
        _ => "info",
    };
    let _log_guard = init_logging(
        cli.log_format,
        matches!(cli.command, Command::Serve(_)),
        level,
    );
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// One line, no backtrace: the chain of causes joined by `: `, leaving out a
/// cause whose text the line already holds (thiserror messages often quote
/// their source, and kube's errors nest the same reason several times).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
            rt.block_on(serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            snapshot,
            policy,
            output,
            warnings_as_errors,
            files,
        } => {
            let policy = load_policy(policy.as_ref())?;
            let report = check::run(&snapshot, &policy, &files)?;
            match output {
                CheckOutput::Text => print_check_text(&report)?,
                CheckOutput::Json => print!("{}", check::render_json(&report)),
            }
            Ok(
                if report.denied > 0 || (warnings_as_errors && report.warnings > 0) {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Command::Audit {
            snapshot,
            kubeconfig,
            context,
            namespace,
            policy,
            output,
        } => {
            let policy = load_policy(policy.as_ref())?;
            let (state, objects) = if !snapshot.is_empty() {
                let files = check::expand_paths(&snapshot)?;
                audit::load_for_audit(&files)?
            } else {
                let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
                rt.block_on(async {
                    let client =
                        live::client_from(kubeconfig.as_deref(), context.as_deref()).await?;
                    anyhow::Ok(audit::reporter::load_from_cluster(&client).await?)
                })
                .context("cannot read the cluster (audit a dump instead with --snapshot FILE)")?
            };
            let mut report = audit::audit_state(&state, &objects, &policy);
            if let Some(ns) = &namespace {
                report.violations.retain(|v| &v.namespace == ns);
            }
            let text = match output {
                AuditOutput::Text => audit::render_text(&report),
                AuditOutput::Json => audit::render_json(&report),
                AuditOutput::Policyreport => {
                    audit::render_policy_reports(&report, std::time::SystemTime::now())
                }
            };
            print!("{text}");
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Explain(args) => explain(args),
        Command::Migrate(args) => migrate(args),
        Command::Certs {
            namespace,
            service,
            out,
            days,
            force,
        } => {
            let mut opts = certs::CertsOptions::new(out);
            opts.namespace = namespace.clone();
            opts.service = service;
            opts.days = days;
            opts.force = force;
            let w = certs::write_bundle(&opts)?;
            println!("wrote {}", w.ca_cert.display());
            println!("wrote {}", w.tls_cert.display());
            println!("wrote {}", w.tls_key.display());
            println!("wrote {}", w.secret.display());
            println!("wrote {}", w.cabundle_patch.display());
            println!("wrote {}", w.cabundle_patch_colocate.display());
            println!();
            println!("next:");
            println!(
                "  kubectl create namespace {namespace} --dry-run=client -o yaml | kubectl apply -f -"
            );
            println!("  kubectl apply -f {}", w.secret.display());
            println!("  kubectl apply -k manifests/");
            println!(
                "  kubectl patch validatingwebhookconfiguration claimguard --type=json --patch-file {}",
                w.cabundle_patch.display()
            );
            println!(
                "with co-location (kubectl apply -k manifests/colocate/ instead of manifests/):"
            );
            println!(
                "  kubectl patch mutatingwebhookconfiguration claimguard-colocate --type=json --patch-file {}",
                w.cabundle_patch_colocate.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `check`'s text output where kubectl writes it: `created`/`configured` on
/// stdout, `Warning:` and `Error from server` lines on stderr, in order.
fn print_check_text(report: &check::CheckReport) -> anyhow::Result<()> {
    use std::io::Write;
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    for (stream, line) in check::text_lines(report) {
        match stream {
            check::Stream::Stdout => writeln!(out, "{line}")?,
            check::Stream::Stderr => {
                // What came before on stdout first, as a terminal shows it.
                out.flush()?;
                writeln!(err, "{line}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The replica's namespace: `POD_NAMESPACE` (downward API), else claimguard-system.
fn replica_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| cluster::reservations::DEFAULT_NAMESPACE.to_string())
}

/// The replica's identity: `POD_NAME` (downward API), else the hostname.
fn replica_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("claimguard-{}", std::process::id()))
}

/// The Lease whose holder runs the periodic audit.
const AUDIT_LEASE: &str = "claimguard-audit";

/// `serve --dev` works from any directory: its example cluster and the review
/// its curl line sends are built in, and written next to the dev certificates.
const DEV_DIR: &str = "certs/dev";
const DEV_SNAPSHOT: (&str, &str) = ("cluster.yaml", include_str!("../examples/cluster.yaml"));
const DEV_REVIEW: (&str, &str) = (
    "pg-debug-denied.json",
    include_str!("../examples/admission/pg-debug-denied.json"),
);

/// Writes a built-in example file into the dev directory (kept if unchanged).
fn write_dev_file(dir: &std::path::Path, (name, text): (&str, &str)) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(path)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or_else(|| {
        if args.dev {
            SocketAddr::from(([127, 0, 0, 1], 8443))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 8443))
        }
    });
    let (tls_cert, tls_key, ca) = match (args.tls_cert.clone(), args.tls_key.clone()) {
        (Some(c), Some(k)) => (c, k, None),
        _ => {
            let dev = certs::ensure_dev_certs(std::path::Path::new(DEV_DIR))
                .context("dev certificates")?;
            if dev.created {
                tracing::info!(
                    dir = DEV_DIR,
                    "wrote a development CA and serving certificate"
                );
            }
            (dev.tls_cert, dev.tls_key, Some(dev.ca_cert))
        }
    };
    let mut snapshot = args.snapshot.clone();
    let mut dev_review = None;
    if args.dev {
        let dir = std::path::Path::new(DEV_DIR);
        std::fs::create_dir_all(dir).with_context(|| format!("create {DEV_DIR}"))?;
        if snapshot.is_empty() {
            snapshot.push(write_dev_file(dir, DEV_SNAPSHOT)?);
        }
        dev_review = Some(write_dev_file(dir, DEV_REVIEW)?);
    }
    let policy = load_policy(args.policy.as_ref())?;
    let metrics = Arc::new(server::Metrics::new());
    // Both feeders live as long as the server: dropping the handle stops the watchers.
    let mut _live = None;
    let mut _reservations = None;
    // Dropped last: a clean stop releases the audit Lease for the next replica.
    let mut election_handle = None;
    let mut client = None;
    let cluster = if snapshot.is_empty() {
        let c = live::client_from(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let cluster = Arc::new(SharedCluster::new(ClusterState::new(), false));
        let restarts = metrics.register_counter(
            "claimguard_watch_restarts",
            "Watch errors after which a watcher retried or re-listed",
        );
        let opts = live::LiveOptions {
            restarts_metric: Some(restarts),
            ..Default::default()
        };
        let (namespace, identity) = (replica_namespace(), replica_identity());
        let counters = cluster::reservations::ReservationMetrics {
            recorded: metrics.register_counter(
                "claimguard_reservations_recorded",
                "Claim reservations written to the API server (Leases) before an allowed answer",
            ),
            conflicts: metrics.register_counter(
                "claimguard_reservation_conflicts",
                "Reservation writes that lost a race (409) and were decided again",
            ),
            unrecorded: metrics.register_counter(
                "claimguard_reservations_unrecorded",
                "Admissions whose reservation could not be written, answered per onLookupError",
            ),
            pruned: metrics.register_counter(
                "claimguard_reservations_pruned",
                "Reservation entries removed once their pod was seen or their deadline passed",
            ),
        };
        let book = cluster::reservations::ReservationBook::new(c.clone(), &namespace, &identity)
            .with_write_timeout(args.reservation_timeout)
            .with_metrics(counters);
        _reservations = Some(cluster::reservations::start(
            cluster.clone(),
            Arc::new(book),
            Default::default(),
        ));
        tracing::info!(%namespace, %identity, "claim reservations are Leases in the API server");
        // After the reservations: the pods of the initial list must count as
        // seen, or a reservation whose pod was stored and is deleted later
        // would hold its claim until its deadline.
        _live = Some(live::start(c.clone(), cluster.clone(), opts).await?);
        tracing::info!("watching pods, claims, volumes, storage classes, namespaces and nodes; /readyz turns 200 once synced");
        client = Some(c);
        cluster
    } else {
        if args.audit_interval.is_some() {
            anyhow::bail!("--audit-interval needs the API server; use `claimguard audit --snapshot` for files");
        }
        let state = cluster::load_snapshot(&check::expand_paths(&snapshot)?)?;
        cluster::release_freed_heap();
        tracing::info!(
            pods = state.pod_count(),
            claims = state.pvc_count(),
            "snapshot loaded"
        );
        Arc::new(SharedCluster::stored(state))
    };
    let engine = Arc::new(Engine::new(policy, cluster));
    if let Some(c) = &client {
        // Findings on controller-made pods also become Events on their owner.
        let instance = std::env::var("POD_NAME").ok();
        engine.set_event_sink(claimguard::events::EventSink::start(c.clone(), instance));
    }
    if let Some(p) = &args.policy {
        claimguard::reload::spawn_policy_reloader(
            p.clone(),
            engine.clone(),
            Duration::from_secs(2),
        );
    }
    if let (Some(interval), Some(client)) = (args.audit_interval, client) {
        let gauges = Arc::new(audit::reporter::AuditGauges::new());
        metrics.register(
            "claimguard_audit_violations",
            "Violations found by the last periodic audit, by rule",
            gauges.family(),
        );
        // One replica writes the reports: the holder of the Lease claimguard-audit.
        let election = cluster::leader::elect(
            client.clone(),
            &replica_namespace(),
            AUDIT_LEASE,
            &replica_identity(),
            Default::default(),
        );
        let (e, view) = (engine.clone(), engine.cluster().clone());
        tokio::spawn(cluster::leader::run_while_leader(
            election.subscribe(),
            move || {
                let e = e.clone();
                audit::reporter::run_periodic(
                    client.clone(),
                    view.clone(),
                    move || e.policy(),
                    interval,
                    gauges.clone(),
                )
            },
        ));
        election_handle = Some(election);
        tracing::info!(
            ?interval,
            lease = AUDIT_LEASE,
            "periodic audit writes PolicyReports while this replica holds the Lease"
        );
    }
    let mut config = ServeConfig::new(listen, tls_cert, tls_key);
    match (args.shutdown_grace, args.dev) {
        (Some(grace), _) => config.shutdown_grace = grace,
        // A dev server has no API server holding connections to it and no
        // traffic worth a drain: Ctrl-C stops it at once.
        (None, true) => {
            config.shutdown_grace = Duration::ZERO;
            config.drain_timeout = Duration::ZERO;
        }
        (None, false) => {}
    }
    config.workers = args.workers.map(usize::from);
    config.client_ca = args.client_ca.clone();
    config.metrics_listen = args.metrics_listen;
    if let Some(ca) = ca {
        let port = listen.port();
        eprintln!(
            "claimguard (dev) on https://{listen} with the cluster in {}",
            snapshot[0].display()
        );
        eprintln!("try a denial:");
        let review = dev_review.as_deref().unwrap_or(std::path::Path::new(""));
        eprintln!(
            "  curl -sS --cacert {} --resolve claimguard.claimguard-system.svc:{port}:127.0.0.1 -H 'Content-Type: application/json' --data @{} https://claimguard.claimguard-system.svc:{port}/validate",
            ca.display(),
            review.display()
        );
    }
    let served = server::run_with_metrics(config, engine, metrics).await;
    if let Some(e) = election_handle.take() {
        e.stop().await;
    }
    served?;
    Ok(())
}

fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    use claimguard::explain::{self, Source};
    let target = explain::parse_target(&args.target)?;
    let source = if args.snapshot.is_empty() {
        Source::Live {
            kubeconfig: args.kubeconfig,
            context: args.context,
        }
    } else {
        Source::Snapshot(check::expand_paths(&args.snapshot)?)
    };
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let e = rt.block_on(explain::run(&source, &target, args.namespace.as_deref()))?;
    let text = match args.output {
        ExplainOutput::Text => explain::render_text(&e),
        ExplainOutput::Json => explain::render_json(&e),
    };
    print!("{text}");
    Ok(if e.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    use claimguard::migrate::{self, Applied, ApplyOptions, MigrateError, Scope, Source};
    let source = if args.snapshot.is_empty() {
        Source::Live {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
        }
    } else {
        if args.apply {
            anyhow::bail!(MigrateError::Usage(
                "--apply needs the API server: a --snapshot is a copy of the cluster and cannot be written to (drop --snapshot, or drop --apply to print the plan)".into()
            ));
        }
        Source::Snapshot(check::expand_paths(&args.snapshot)?)
    };
    let json = args.output == MigrateOutput::Json;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    if args.list {
        let scope = if args.all_namespaces {
            Scope::All
        } else {
            Scope::Namespace(args.namespace.clone())
        };
        let listing = rt.block_on(migrate::list(&source, &scope))?;
        print!(
            "{}",
            if json {
                migrate::render_list_json(&listing)
            } else {
                migrate::render_list_text(&listing, args.verbose)
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let name = migrate::parse_target(&args.target)?;
    if args.apply {
        if json {
            anyhow::bail!(MigrateError::Usage(
                "--apply prints its steps as text: drop -o json (without --apply, -o json prints the plan)".into()
            ));
        }
        let opts = ApplyOptions {
            timeout: args.timeout,
        };
        let mut stdout = std::io::stdout();
        let applied = rt.block_on(migrate::apply(
            &args.kubeconfig,
            &args.context,
            &name,
            args.namespace.as_deref(),
            &opts,
            &mut stdout,
        ))?;
        return Ok(match applied {
            Applied::Done { .. } => ExitCode::SUCCESS,
            Applied::Refused(r) => {
                eprintln!("refused: {}", r.message);
                ExitCode::from(1)
            }
        });
    }
    let plan = rt.block_on(migrate::plan(&source, &name, args.namespace.as_deref()))?;
    print!(
        "{}",
        if json {
            migrate::render_plan_json(&plan)
        } else {
            migrate::render_plan_text(&plan)
        }
    );
    Ok(match &plan.refused {
        Some(r) => {
            eprintln!("refused: {}", r.message);
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    })
}
