//! The habits every command shares (DESIGN.md, *Binary and commands*), with
//! the real binary: help on every flag and a `CLAIMGUARD_<FLAG>` for each,
//! `-o`/`-n`/`--context` wherever their long forms belong, a `--snapshot`
//! without a document refused by every command (an empty `kind: List` is an
//! empty cluster), `check --warnings-as-errors`, decode errors that name the
//! field, and `serve --dev` stopping at once while `serve` keeps its grace.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_claimguard");
const SVC: &str = "claimguard.claimguard-system.svc";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with no `CLAIMGUARD_*` variable from the test's environment.
fn command(args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLAIMGUARD_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(args: &[&str], cwd: &Path) -> Output {
    command(args, cwd).output().expect("run claimguard")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit 2 and exactly one line on stderr, `error: …` containing `want`.
fn assert_one_line_error(out: &Output, want: &str, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert!(err.contains(want), "{what}: {err:?} lacks {want:?}");
}

// ---------------------------------------------------------------- help

/// The subcommands `claimguard --help` lists.
fn commands() -> Vec<String> {
    let help = text(&run(&["--help"], root()).stdout);
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap().to_string();
            if name != "help" {
                out.push(name);
            }
        }
    }
    out
}

/// One option or argument of a help page: its spec (`-o, --output <OUTPUT>`)
/// and everything said about it.
#[derive(Debug)]
struct Entry {
    spec: String,
    text: String,
}

impl Entry {
    fn long(&self) -> Option<&str> {
        self.spec
            .split([' ', ','])
            .find_map(|t| t.strip_prefix("--"))
    }

    fn short(&self) -> Option<&str> {
        self.spec
            .split([' ', ','])
            .find(|t| t.len() == 2 && t.starts_with('-'))
    }

    /// The description without clap's bracketed notes.
    fn description(&self) -> String {
        let mut d = self.text.clone();
        for note in ["[env: ", "[default: ", "[possible values: ", "[aliases: "] {
            while let Some(i) = d.find(note) {
                let end = d[i..].find(']').map_or(d.len(), |j| i + j + 1);
                d.replace_range(i..end, "");
            }
        }
        d.trim().to_string()
    }
}

/// The entries of the `Arguments:` and `Options:` sections, in either of
/// clap's layouts (description beside the spec, or on the lines below it).
fn entries(help: &str) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Arguments:" || line == "Options:" {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if !line.is_empty() && !line.starts_with(' ') {
            inside = false;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if (2..=6).contains(&indent)
            && (t.starts_with('-') || t.starts_with('<') || t.starts_with('['))
        {
            let (spec, rest) = t.split_once("  ").unwrap_or((t, ""));
            out.push(Entry {
                spec: spec.trim().to_string(),
                text: rest.trim().to_string(),
            });
        } else if let Some(e) = out.last_mut() {
            e.text.push(' ');
            e.text.push_str(t);
        }
    }
    out
}

#[test]
fn every_flag_of_every_command_has_help_and_reads_its_environment_variable() {
    let commands = commands();
    for want in ["serve", "check", "audit", "certs", "explain"] {
        assert!(commands.iter().any(|c| c == want), "{want} in {commands:?}");
    }
    // The top level too (its global flags), as `claimguard --help`.
    for cmd in std::iter::once("").chain(commands.iter().map(String::as_str)) {
        let args: Vec<&str> = [cmd, "--help"]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let out = run(&args, root());
        assert!(out.status.success(), "{cmd} --help");
        let help = text(&out.stdout);
        let entries = entries(&help);
        assert!(entries.len() >= 3, "{cmd}: {entries:?}");
        for e in &entries {
            assert!(
                !e.description().is_empty(),
                "claimguard {cmd}: `{}` has no description:\n{help}",
                e.spec
            );
            let Some(long) = e.long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let var = format!("CLAIMGUARD_{}", long.to_uppercase().replace('-', "_"));
            assert!(
                e.text.contains(&format!("[env: {var}=")),
                "claimguard {cmd} --{long} reads {var}: {}",
                e.text
            );
        }
    }
}

#[test]
fn short_flags_and_context_wherever_kubectl_has_them() {
    for cmd in commands() {
        let help = text(&run(&[&cmd, "--help"], root()).stdout);
        let entries = entries(&help);
        let find = |long: &str| entries.iter().find(|e| e.long() == Some(long));
        if let Some(e) = find("output") {
            assert_eq!(e.short(), Some("-o"), "{cmd}: {}", e.spec);
        }
        if let Some(e) = find("namespace") {
            assert_eq!(e.short(), Some("-n"), "{cmd}: {}", e.spec);
        }
        if find("kubeconfig").is_some() {
            assert!(
                find("context").is_some(),
                "{cmd} has --kubeconfig but no --context"
            );
        }
    }
    // The commands that must have them at all.
    for (cmd, flags) in [
        (
            "check",
            &[
                "-o, --output",
                "--snapshot",
                "--policy",
                "--warnings-as-errors",
            ][..],
        ),
        (
            "audit",
            &[
                "-o, --output",
                "-n, --namespace",
                "--snapshot",
                "--policy",
                "--kubeconfig",
                "--context",
            ],
        ),
        (
            "explain",
            &[
                "-o, --output",
                "-n, --namespace",
                "--snapshot",
                "--kubeconfig",
                "--context",
            ],
        ),
        ("certs", &["-n, --namespace"]),
        (
            "serve",
            &["--snapshot", "--policy", "--kubeconfig", "--context"],
        ),
    ] {
        let help = text(&run(&[cmd, "--help"], root()).stdout);
        let specs: Vec<String> = entries(&help).into_iter().map(|e| e.spec).collect();
        for f in flags {
            assert!(
                specs.iter().any(|s| s.starts_with(f)),
                "claimguard {cmd} lacks {f}: {specs:?}"
            );
        }
    }
}

#[test]
fn check_help_says_that_without_a_snapshot_the_cluster_is_empty() {
    let help = text(&run(&["check", "--help"], root()).stdout);
    let snapshot = entries(&help)
        .into_iter()
        .find(|e| e.long() == Some("snapshot"))
        .unwrap();
    assert!(
        snapshot
            .text
            .contains("Without --snapshot the cluster is empty"),
        "{}",
        snapshot.text
    );
    assert!(
        snapshot.text.contains("empty `kind: List`"),
        "{}",
        snapshot.text
    );
}

// ----------------------------------------------------- empty snapshots

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  containers: [{name: c, image: nginx}]\n  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]\n";

/// Files that hold no object, by what they look like.
fn empty_snapshots(dir: &Path) -> Vec<String> {
    let mut out = vec!["/dev/null".to_string()];
    for (name, body) in [
        ("empty.yaml", ""),
        ("dashes.yaml", "---\n"),
        (
            "comments.yaml",
            "# kubectl get failed\n---\n# nothing\n---\n",
        ),
        ("blank.json", "  \n"),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
        out.push(name.to_string());
    }
    out
}

#[test]
fn a_snapshot_without_an_object_is_refused_by_check_audit_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pod.yaml"), POD).unwrap();
    for snap in empty_snapshots(d) {
        let want =
            format!("error: {snap}: holds no object (an empty cluster is an empty `kind: List`)");
        for args in [
            vec!["check", "--snapshot", &snap, "pod.yaml"],
            vec!["audit", "--snapshot", &snap],
            vec!["explain", "pod/web", "-n", "shop", "--snapshot", &snap],
        ] {
            let out = run(&args, d);
            assert_one_line_error(&out, &want, &format!("{args:?}"));
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
}

#[test]
fn an_empty_list_is_an_empty_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pod.yaml"), POD).unwrap();
    std::fs::write(
        d.join("empty.yaml"),
        "apiVersion: v1\nkind: List\nitems: []\n",
    )
    .unwrap();
    std::fs::write(
        d.join("empty.json"),
        r#"{"apiVersion":"v1","kind":"List","items":[]}"#,
    )
    .unwrap();
    for snap in ["empty.yaml", "empty.json"] {
        let out = run(&["check", "--snapshot", snap, "pod.yaml"], d);
        assert_eq!(text(&out.stdout), "pod/web created\n", "{snap}");
        // The claim does not exist in an empty cluster: a warning, exit 0.
        assert!(
            text(&out.stderr).starts_with("Warning: [claim-not-found] "),
            "{snap}"
        );
        assert_eq!(out.status.code(), Some(0));
        let out = run(&["audit", "--snapshot", snap], d);
        assert_eq!(
            (out.status.code(), text(&out.stdout).as_str()),
            (Some(0), "No violations found.\n"),
            "{snap}"
        );
    }
}

// ------------------------------------------------- warnings as errors

#[test]
fn warnings_as_errors_makes_any_warning_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pod.yaml"), POD).unwrap();
    let cluster = root().join("examples/cluster.yaml");
    let cluster = cluster.to_str().unwrap();
    let scenario = |n: &str| {
        root()
            .join("examples/scenarios")
            .join(n)
            .to_str()
            .unwrap()
            .to_string()
    };
    let warns = scenario("01-rwo-same-node.yaml");
    let denied = scenario("03-rwop-second-pod.yaml");
    let clean = scenario("06-recreate.yaml");

    let out = run(&["check", "--snapshot", cluster, &warns], d);
    assert_eq!(out.status.code(), Some(0), "a warning alone passes");
    let out = run(
        &[
            "check",
            "--snapshot",
            cluster,
            "--warnings-as-errors",
            &warns,
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("Warning: [rwo-shared-writer] "));
    assert!(
        text(&out.stdout).ends_with(" created\n"),
        "still applied: {}",
        text(&out.stdout)
    );
    // Through the environment too.
    let out = command(&["check", "--snapshot", cluster, &warns], d)
        .env("CLAIMGUARD_WARNINGS_AS_ERRORS", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // No warning: 0; a denial: still 1; bad input: still 2.
    let out = run(
        &[
            "check",
            "--snapshot",
            cluster,
            "--warnings-as-errors",
            &clean,
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(
        &[
            "check",
            "--snapshot",
            cluster,
            "--warnings-as-errors",
            &denied,
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    let out = run(
        &[
            "check",
            "--warnings-as-errors",
            "--snapshot",
            "/dev/null",
            &warns,
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    // json: the same exit status, the report on stdout.
    let out = run(
        &[
            "check",
            "--snapshot",
            cluster,
            "-o",
            "json",
            "--warnings-as-errors",
            &warns,
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["warnings"].as_u64().unwrap() >= 1);
}

// ---------------------------------------------- decode errors, by path

#[test]
fn a_decode_error_names_the_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  containers: [{name: c, image: nginx}]\n  volumes: \"data\"\n";
    std::fs::write(d.join("pod.yaml"), bad).unwrap();
    let out = run(&["check", "pod.yaml"], d);
    assert_eq!(
        text(&out.stderr),
        "error: pod.yaml: spec.volumes: invalid type: string \"data\", expected a sequence\n"
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());

    // In a snapshot: a List item by its index, for check, audit and serve.
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}",
        bad.replace('\n', "\n  ").trim_end()
    );
    std::fs::write(d.join("cluster.yaml"), list).unwrap();
    std::fs::write(d.join("ok.yaml"), POD).unwrap();
    let want = "error: cluster.yaml: items[0].spec.volumes: invalid type: string \"data\", expected a sequence";
    for args in [
        vec!["check", "--snapshot", "cluster.yaml", "ok.yaml"],
        vec!["audit", "--snapshot", "cluster.yaml"],
        vec![
            "serve",
            "--snapshot",
            "cluster.yaml",
            "--tls-cert",
            "none",
            "--tls-key",
            "none",
        ],
    ] {
        let out = run(&args, d);
        assert_one_line_error(&out, want, &format!("{args:?}"));
    }
    // The second document of a file of several is numbered.
    std::fs::write(d.join("two.yaml"), format!("{POD}---\n{bad}")).unwrap();
    let out = run(&["check", "two.yaml"], d);
    assert_one_line_error(
        &out,
        "error: two.yaml: document 2: spec.volumes: invalid type",
        "two",
    );
}

// --------------------------------------------------------- --context

#[test]
fn context_selects_the_kubeconfig_context() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kubeconfig = "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: a\n  cluster: {server: \"https://127.0.0.1:1\"}\ncontexts:\n- name: a\n  context: {cluster: a, user: u}\nusers:\n- name: u\n  user: {token: t}\n";
    std::fs::write(d.join("kubeconfig"), kubeconfig).unwrap();
    for args in [
        vec![
            "audit",
            "--kubeconfig",
            "kubeconfig",
            "--context",
            "nowhere",
        ],
        vec![
            "serve",
            "--kubeconfig",
            "kubeconfig",
            "--context",
            "nowhere",
            "--tls-cert",
            "x",
            "--tls-key",
            "y",
        ],
    ] {
        let out = run(&args, d);
        assert_one_line_error(&out, "nowhere", &format!("{args:?}"));
    }
    let out = command(&["audit", "--kubeconfig", "kubeconfig"], d)
        .env("CLAIMGUARD_CONTEXT", "elsewhere")
        .output()
        .unwrap();
    assert_one_line_error(&out, "elsewhere", "CLAIMGUARD_CONTEXT");
    // The current context, whose server refuses: one line too.
    let out = run(&["audit", "--kubeconfig", "kubeconfig"], d);
    assert_one_line_error(&out, "cannot read the cluster", "unreachable");
}

#[test]
fn audit_namespace_reports_only_that_namespace() {
    let fixture = "tests/fixtures/audit/cluster.yaml";
    let namespaces = |args: &[&str]| -> Vec<String> {
        let out = run(args, root());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["namespace"].as_str().unwrap().to_string())
            .collect()
    };
    let all = namespaces(&["audit", "--snapshot", fixture, "-o", "json"]);
    assert!(all.iter().any(|n| n == "staging") && all.iter().any(|n| n == "shop"));
    let shop = namespaces(&["audit", "--snapshot", fixture, "-o", "json", "-n", "shop"]);
    assert!(
        !shop.is_empty() && shop.iter().all(|n| n == "shop"),
        "{shop:?}"
    );
    assert_eq!(shop.len(), all.iter().filter(|n| *n == "shop").count());
    let out = run(
        &["audit", "--snapshot", fixture, "--namespace", "quiet"],
        root(),
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "No violations found.\n")
    );
}

// -------------------------------------------------------------- serve

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn https_client(ca_pem: &[u8], addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .resolve(SVC, addr)
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://{SVC}:{}{path}", addr.port())
}

async fn wait_healthy(c: &reqwest::Client, addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = c.get(url(addr, "/healthz")).send().await {
            if r.status().as_u16() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited early: {status}");
        }
        assert!(Instant::now() < deadline, "serve never came up on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the process to exit; its exit code and how long that took.
async fn exit_within(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), start.elapsed());
        }
        assert!(start.elapsed() < limit, "still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn serve_dev_stops_at_once_on_ctrl_c_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    for sig in ["INT", "TERM"] {
        let addr = free_addr();
        let mut server = Killed(
            command(
                &["serve", "--dev", "--listen", &addr.to_string()],
                dir.path(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        );
        // The dev CA appears before the server listens.
        let ca_path = dir.path().join("certs/dev/ca.crt");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ca_path.is_file() {
            assert!(Instant::now() < deadline, "no dev CA");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = https_client(&std::fs::read(&ca_path).unwrap(), addr);
        wait_healthy(&c, addr, &mut server.0).await;
        // A keep-alive connection left open does not hold it either.
        assert_eq!(
            c.get(url(addr, "/readyz")).send().await.unwrap().status(),
            200
        );
        signal(&server.0, sig);
        let (code, took) = exit_within(&mut server.0, Duration::from_secs(10)).await;
        assert_eq!(code, Some(0), "SIG{sig}: clean exit");
        assert!(took < Duration::from_secs(1), "SIG{sig}: took {took:?}");
    }
}

#[tokio::test]
async fn serve_keeps_serving_through_its_grace_period_on_an_empty_list_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(&["certs", "--out", "certs"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(
        d.join("cluster.yaml"),
        "apiVersion: v1\nkind: List\nitems: []\n",
    )
    .unwrap();
    let addr = free_addr();
    let mut server = Killed(
        command(
            &[
                "serve",
                "--snapshot",
                "cluster.yaml",
                "--tls-cert",
                "certs/tls.crt",
                "--tls-key",
                "certs/tls.key",
                "--listen",
                &addr.to_string(),
                "--shutdown-grace",
                "2s",
            ],
            d,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let c = https_client(&std::fs::read(d.join("certs/ca.crt")).unwrap(), addr);
    wait_healthy(&c, addr, &mut server.0).await;
    assert_eq!(
        c.get(url(addr, "/readyz")).send().await.unwrap().status(),
        200
    );
    signal(&server.0, "INT");
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // In the grace period: not ready, still answering.
    assert_eq!(
        c.get(url(addr, "/readyz")).send().await.unwrap().status(),
        503
    );
    assert_eq!(
        c.get(url(addr, "/healthz")).send().await.unwrap().status(),
        200
    );
    let (code, _) = exit_within(&mut server.0, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0));
    assert!(
        start.elapsed() >= Duration::from_millis(1800),
        "grace kept: {:?}",
        start.elapsed()
    );
}

#[test]
fn serve_refuses_a_snapshot_without_an_object() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for snap in empty_snapshots(d) {
        let out = run(
            &[
                "serve",
                "--snapshot",
                &snap,
                "--tls-cert",
                "none",
                "--tls-key",
                "none",
            ],
            d,
        );
        assert_one_line_error(
            &out,
            &format!("error: {snap}: holds no object (an empty cluster is an empty `kind: List`)"),
            &snap,
        );
    }
}
