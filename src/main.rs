//! The `claimguard` binary: argument parsing and exit codes. Everything else
//! lives in the library.

use anyhow::Context;
use claimguard::{check, policy::Policy};
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
    }
}
