//! The `claimguard` binary: argument parsing and exit codes. Everything else
//! lives in the library.

use anyhow::Context;
use claimguard::{certs, check, policy::Policy};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

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

#[derive(Subcommand)]
enum Command {
    /// Evaluate manifests offline, in order, as if applied one by one to the
    /// cluster state, and print what `kubectl apply` would print.
    /// Exit 0: no denial; 1: a denial; 2: bad input.
    Check {
        /// Cluster state: `kubectl get pods,pvc,pv,storageclass,namespaces -A -o yaml` output (repeatable).
        #[arg(long, env = "CLAIMGUARD_SNAPSHOT", value_delimiter = ',')]
        snapshot: Vec<PathBuf>,
        /// Policy file (YAML); the built-in defaults otherwise.
        #[arg(long, env = "CLAIMGUARD_POLICY")]
        policy: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = CheckOutput::Text, env = "CLAIMGUARD_OUTPUT")]
        output: CheckOutput,
        /// Manifest files or directories, applied in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write a CA, a serving certificate for the Service's DNS names, a Secret
    /// manifest and a JSON Patch that sets caBundle on every webhook — for
    /// clusters without cert-manager.
    Certs {
        #[arg(long, default_value = certs::DEFAULT_NAMESPACE, env = "CLAIMGUARD_NAMESPACE")]
        namespace: String,
        #[arg(long, default_value = certs::DEFAULT_SERVICE, env = "CLAIMGUARD_SERVICE")]
        service: String,
        /// Directory to write into (created if missing).
        #[arg(long, default_value = "certs", env = "CLAIMGUARD_OUT")]
        out: PathBuf,
        /// Validity of the CA and the serving certificate, in days.
        #[arg(long, default_value_t = certs::DEFAULT_DAYS, env = "CLAIMGUARD_DAYS")]
        days: u32,
    },
}

fn load_policy(path: Option<&PathBuf>) -> anyhow::Result<Policy> {
    match path {
        Some(p) => Ok(Policy::load(p)?),
        None => Ok(Policy::default()),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAIMGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // One line, no backtrace: the chain of causes joined.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check {
            snapshot,
            policy,
            output,
            files,
        } => {
            let policy = load_policy(policy.as_ref())?;
            let report = check::run(&snapshot, &policy, &files).context("check")?;
            let text = match output {
                CheckOutput::Text => check::render_text(&report),
                CheckOutput::Json => check::render_json(&report),
            };
            print!("{text}");
            Ok(if report.denied > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Certs {
            namespace,
            service,
            out,
            days,
        } => {
            let mut opts = certs::CertsOptions::new(out);
            opts.namespace = namespace;
            opts.service = service;
            opts.days = days;
            let w = certs::write_bundle(&opts)?;
            println!("wrote {}", w.ca_cert.display());
            println!("wrote {}", w.tls_cert.display());
            println!("wrote {}", w.tls_key.display());
            println!("wrote {}", w.secret.display());
            println!("wrote {}", w.cabundle_patch.display());
            println!();
            println!("next:");
            println!("  kubectl apply -f {}", w.secret.display());
            println!("  kubectl apply -k manifests/");
            println!(
                "  kubectl patch validatingwebhookconfiguration claimguard --type=json --patch-file {}",
                w.cabundle_patch.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
