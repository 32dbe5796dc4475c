//! `claimguard audit` as a process: exit codes and outputs.

use std::process::Command;

fn claimguard(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_claimguard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CLAIMGUARD_SNAPSHOT")
        .env_remove("CLAIMGUARD_OUTPUT")
        .output()
        .unwrap()
}

#[test]
fn violations_exit_1_with_the_expected_table() {
    let out = claimguard(&["audit", "--snapshot", "tests/fixtures/audit/cluster.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let want = std::fs::read_to_string("tests/fixtures/audit/cluster.expected.txt").unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn json_and_policyreport_outputs() {
    let out = claimguard(&[
        "audit",
        "--snapshot",
        "tests/fixtures/audit/cluster.yaml",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["summary"]["violations"].as_u64().unwrap() > 0);

    let out = claimguard(&[
        "audit",
        "--snapshot",
        "tests/fixtures/audit/cluster.yaml",
        "--output",
        "policyreport",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut n = 0;
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        assert_eq!(v["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(v["kind"], "PolicyReport");
        assert!(v["results"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["policy"] == "claimguard")));
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn a_clean_cluster_exits_0() {
    let out = claimguard(&["audit", "--snapshot", "examples/cluster.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Pod\nmetadata: {name: [\n").unwrap();
    let out = claimguard(&["audit", "--snapshot", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("bad.yaml") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn the_shipped_example_dump_has_violations() {
    let out = claimguard(&["audit", "--snapshot", "examples/audit-dump.json"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for rule in [
        "rwop-exclusive",
        "rwo-cross-node",
        "workload-rwo-replicas",
        "rollout-deadlock",
    ] {
        assert!(text.contains(rule), "{rule} missing:\n{text}");
    }
    assert!(text.ends_with("4 violations (2 fail, 2 warn)\n"), "{text}");
}

#[test]
fn no_cluster_is_one_short_line_that_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_claimguard"))
        .arg("audit")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CLAIMGUARD_SNAPSHOT")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "error: cannot read the cluster (audit a dump instead with --snapshot FILE)"
        ),
        "{err}"
    );
    // Each cause once.
    assert_eq!(err.matches("failed to read kubeconfig").count(), 1, "{err}");
    assert!(err.len() < 400, "{} characters: {err}", err.len());
}
