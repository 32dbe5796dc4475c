//! `claimguard check` as a process, against the examples and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn claimguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claimguard"))
        .args(args)
        .current_dir(root())
        .env_remove("CLAIMGUARD_SNAPSHOT")
        .env_remove("CLAIMGUARD_POLICY")
        .output()
        .expect("run claimguard")
}

/// Both streams through one pipe, as a terminal (or `2>&1`) shows them.
fn claimguard_merged(args: &[&str]) -> (String, i32) {
    use std::io::Read;
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_claimguard"))
        .args(args)
        .current_dir(root())
        .env_remove("CLAIMGUARD_SNAPSHOT")
        .env_remove("CLAIMGUARD_POLICY")
        .stdout(writer.try_clone().expect("clone pipe"))
        .stderr(writer)
        .spawn()
        .expect("run claimguard");
    let mut text = String::new();
    reader.read_to_string(&mut text).expect("read output");
    let code = child.wait().expect("wait").code().unwrap_or(-1);
    (text, code)
}

/// kubectl's streams: `Warning:` and `Error from server` lines on stderr,
/// the rest on stdout.
fn is_stderr_line(line: &str) -> bool {
    line.starts_with("Warning: ") || line.starts_with("Error from server")
}

/// `text` (a terminal transcript) split as kubectl splits it.
fn split_streams(text: &str) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    for line in text.lines() {
        let s = if is_stderr_line(line) {
            &mut err
        } else {
            &mut out
        };
        s.push_str(line);
        s.push('\n');
    }
    (out, err)
}

/// The run prints `text` as kubectl would: each line on its stream, and in
/// this order when both streams go to one terminal.
fn assert_prints(args: &[&str], text: &str, code: i32, what: &str) {
    let out = claimguard(args);
    let (stdout, stderr) = split_streams(text);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        stdout,
        "{what}: stdout"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        stderr,
        "{what}: stderr"
    );
    assert_eq!(out.status.code(), Some(code), "{what}");
    let (merged, merged_code) = claimguard_merged(args);
    assert_eq!(merged, text, "{what}: both streams in order");
    assert_eq!(merged_code, code, "{what}");
}

/// `examples/expected/NAME.txt` is the transcript of a terminal (stdout and
/// stderr in order); `NAME.exit` the exit status.
fn expected(name: &str) -> (String, i32) {
    let dir = root().join("examples/expected");
    let text = std::fs::read_to_string(dir.join(format!("{name}.txt"))).unwrap();
    let code = std::fs::read_to_string(dir.join(format!("{name}.exit"))).unwrap();
    (text, code.trim().parse().unwrap())
}

#[test]
fn every_scenario_prints_what_kubectl_would() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("examples/scenarios")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let rel = format!("examples/scenarios/{name}.yaml");
        let (text, code) = expected(&name);
        assert_prints(
            &["check", "--snapshot", "examples/cluster.yaml", &rel],
            &text,
            code,
            &name,
        );
        n += 1;
    }
    assert!(n >= 9);
}

#[test]
fn a_directory_is_applied_in_order_and_state_carries_over() {
    let (text, code) = expected("all");
    assert_prints(
        &[
            "check",
            "--snapshot",
            "examples/cluster.yaml",
            "examples/scenarios/",
        ],
        &text,
        code,
        "all",
    );
    assert_eq!(code, 1);
    // writer-b, admitted first, is named in writer-c's denial.
    assert!(
        text.contains("shop/writer-b on node worker-1, but this pod is pinned to node worker-2")
    );
}

#[test]
fn expected_verdicts_of_the_examples() {
    let line = |name: &str| expected(name).0;
    assert!(line("01-rwo-same-node").starts_with("Warning: [rwo-shared-writer] "));
    assert!(line("02-rwo-other-node").contains("denied the request: [rwo-cross-node] "));
    assert!(line("03-rwop-second-pod").contains("[rwop-exclusive] PersistentVolumeClaim \"pg-data\" is ReadWriteOncePod and already used by pod shop/postgres-0 on node worker-1"));
    assert!(
        line("04-deployment-replicas").contains("denied the request: [workload-rwop-replicas] ")
    );
    assert!(line("05-rolling-update").starts_with("Warning: [rollout-deadlock] "));
    assert_eq!(line("06-recreate"), "deployment.apps/ledger created\n");
    assert_eq!(line("07-statefulset"), "statefulset.apps/pg created\n");
    assert!(
        line("08-rwx-on-ebs").contains("[pvc-mode-unsupported]")
            && line("08-rwx-on-ebs").contains("ebs.csi.aws.com")
    );
    assert!(line("09-audit-namespace")
        .starts_with("Warning: [rwop-exclusive] not enforced (audit mode): "));
}

#[test]
fn json_output() {
    let out = claimguard(&[
        "check",
        "--snapshot",
        "examples/cluster.yaml",
        "--output",
        "json",
        "examples/scenarios/03-rwop-second-pod.yaml",
        "examples/scenarios/08-rwx-on-ebs.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["denied"], 1);
    assert_eq!(v["objects"][0]["allowed"], false);
    assert_eq!(v["objects"][0]["findings"][0]["rule"], "rwop-exclusive");
    assert_eq!(v["objects"][0]["findings"][0]["effect"], "deny");
    assert_eq!(
        v["objects"][1]["result"],
        "persistentvolumeclaim/uploads created"
    );
    assert_eq!(
        v["objects"][1]["findings"][0]["rule"],
        "pvc-mode-unsupported"
    );
}

#[test]
fn policy_file_changes_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "mode: audit\n").unwrap();
    let out = claimguard(&[
        "check",
        "--snapshot",
        "examples/cluster.yaml",
        "--policy",
        policy.to_str().unwrap(),
        "examples/scenarios/03-rwop-second-pod.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("Warning: [rwop-exclusive] not enforced (audit mode): "));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod/pg-debug created\n"
    );
}

fn assert_bad_input(args: &[&str], want: &str) {
    let out = claimguard(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        out.stdout.is_empty(),
        "nothing judged before the input is read: {args:?}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(want), "{err:?} lacks {want:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn bad_input_is_exit_2_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let good = "examples/scenarios/03-rwop-second-pod.yaml";
    let cases = [
        (write(d, "bad.yaml", "kind: Pod\nmetadata: {name: [x\n"), "invalid YAML"),
        (write(d, "bad.json", "{\"kind\": \"Pod\", "), "invalid JSON"),
        (write(d, "nokind.yaml", "apiVersion: v1\nmetadata: {name: a}\n"), "document 1: has no kind"),
        (write(d, "nospec.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"), "Pod a has no spec"),
        (write(d, "scalar.yaml", "just a string\n"), "expected a mapping"),
        (
            write(d, "deep.json", &format!("{{\"kind\":\"Pod\",\"x\":{}1{}}}", "[".repeat(50_000), "]".repeat(50_000))),
            "nested deeper than",
        ),
        (write(d, "deep.yaml", &format!("kind: Pod\nx: {}1{}\n", "[".repeat(50_000), "]".repeat(50_000))), "nested deeper than"),
        (
            write(d, "wrongtype.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {replicas: many}\n"),
            "wrongtype.yaml: spec.replicas: invalid type: string \"many\", expected i64",
        ),
        (d.join("missing.yaml").to_str().unwrap().to_string(), "missing.yaml"),
    ];
    for (file, want) in &cases {
        assert_bad_input(&["check", file], want);
        // A bad file after a good one still fails before anything is printed.
        assert_bad_input(&["check", good, file], want);
    }
    assert_bad_input(&["check", "--snapshot", &cases[0].0, good], "invalid YAML");
    let policy = write(d, "policy.yaml", "rules: {rwop-exclusiv: warn}\n");
    assert_bad_input(&["check", "--policy", &policy, good], "unknown rule id");
}

#[test]
fn huge_input_is_handled() {
    // 20k pods in one List: read and judged in one go, no crash.
    let d = tempfile::tempdir().unwrap();
    let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..20_000 {
        text.push_str(&format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata: {{name: p{i}, namespace: default}}\n  spec: {{containers: [{{name: c}}], volumes: [{{name: v, persistentVolumeClaim: {{claimName: c{i}}}}}]}}\n"
        ));
    }
    let f = write(d.path(), "big.yaml", &text);
    let out = claimguard(&["check", "--output", "json", &f]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["objects"].as_array().unwrap().len(), 20_000);
}

#[test]
fn a_denial_names_its_file_and_the_webhook_as_kubectl_does() {
    let out = claimguard(&[
        "check",
        "--snapshot",
        "examples/cluster.yaml",
        "examples/scenarios/03-rwop-second-pod.yaml",
        "examples/scenarios/04-deployment-replicas.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "denials go to stderr");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Error from server (Forbidden): error when creating \"examples/scenarios/03-rwop-second-pod.yaml\": admission webhook \"pods.claimguard.io\" denied the request: [rwop-exclusive] "), "{text}");
    assert!(text.contains("Error from server (Forbidden): error when creating \"examples/scenarios/04-deployment-replicas.yaml\": admission webhook \"workloads.claimguard.io\" denied the request: [workload-rwop-replicas] "), "{text}");
}

#[test]
fn applying_the_same_object_again_prints_configured() {
    let d = tempfile::tempdir().unwrap();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {a: b}\n";
    let deploy = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: shop}}\nspec:\n  replicas: {replicas}\n  strategy: {{type: Recreate}}\n  template:\n    spec:\n      containers: [{{name: c, image: nginx}}]\n"
        )
    };
    let a = write(d.path(), "a.yaml", &format!("{cm}---\n{}", deploy(1)));
    let b = write(d.path(), "b.yaml", &format!("{cm}---\n{}", deploy(2)));
    let out = claimguard(&["check", &a, &b]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configmap/settings created\ndeployment.apps/web created\nconfigmap/settings configured\ndeployment.apps/web configured\n"
    );
    // A pod already in the snapshot is not created a second time either.
    let pod = write(
        d.path(),
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: postgres-0, namespace: shop}\nspec:\n  containers: [{name: c, image: postgres}]\n  volumes: [{name: d, persistentVolumeClaim: {claimName: pg-data}}]\n",
    );
    let out = claimguard(&["check", "--snapshot", "examples/cluster.yaml", &pod]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod/postgres-0 configured\n"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_denied_update_is_judged_against_the_old_object() {
    // An RWOP Deployment scaled from 1 to 3 by a second apply: denied, and
    // kubectl's words for an update say `patching`.
    let d = tempfile::tempdir().unwrap();
    let deploy = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: pg, namespace: shop}}\nspec:\n  replicas: {replicas}\n  strategy: {{type: Recreate}}\n  template:\n    spec:\n      containers: [{{name: c, image: postgres}}]\n      volumes: [{{name: d, persistentVolumeClaim: {{claimName: pg-data}}}}]\n"
        )
    };
    let one = write(d.path(), "one.yaml", &deploy(1));
    let three = write(d.path(), "three.yaml", &deploy(3));
    let (text, code) =
        claimguard_merged(&["check", "--snapshot", "examples/cluster.yaml", &one, &three]);
    assert_eq!(code, 1, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "deployment.apps/pg created");
    assert!(
        lines[1].starts_with(&format!("Error from server (Forbidden): error when patching \"{three}\": admission webhook \"workloads.claimguard.io\" denied the request: [workload-rwop-replicas] ")),
        "{text}"
    );
}

#[test]
fn a_dash_reads_standard_input() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_claimguard"))
        .args(["check", "--snapshot", "examples/cluster.yaml", "-"])
        .current_dir(root())
        .env_remove("CLAIMGUARD_SNAPSHOT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let manifest =
        std::fs::read(root().join("examples/scenarios/03-rwop-second-pod.yaml")).unwrap();
    child.stdin.take().unwrap().write_all(&manifest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(
        "Error from server (Forbidden): error when creating \"STDIN\": admission webhook \"pods.claimguard.io\" denied the request: [rwop-exclusive] "
    ));
}

#[test]
fn nothing_to_check_is_bad_input_not_a_pass() {
    let d = tempfile::tempdir().unwrap();
    let empty_dir = d.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    std::fs::write(empty_dir.join("README.md"), "not a manifest").unwrap();
    assert_bad_input(
        &["check", empty_dir.to_str().unwrap()],
        "no .yaml, .yml or .json files in this directory",
    );
    for (name, text) in [
        ("empty.yaml", ""),
        ("comments.yaml", "# nothing\n---\n"),
        (
            "list.json",
            "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[]}",
        ),
    ] {
        let f = write(d.path(), name, text);
        assert_bad_input(&["check", &f], "no Kubernetes objects in this file");
    }
}
