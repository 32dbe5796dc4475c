//! One cluster-dump command, everywhere: every `kubectl get ... -A -o ...` that dumps
//! pods or claims in the docs, and the `--snapshot` help of every command that reads
//! a dump, is `claimguard::cluster::snapshot::DUMP_COMMAND` (every kind the tools read).

use std::path::{Path, PathBuf};
use std::process::Command;

use claimguard::cluster::snapshot::DUMP_COMMAND;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn user_docs() -> Vec<PathBuf> {
    let mut files = vec![
        repo().join("README.md"),
        repo().join("certs/README.md"),
        repo().join("charts/claimguard/README.md"),
    ];
    for e in std::fs::read_dir(repo().join("docs")).expect("docs/") {
        let p = e.expect("entry").path();
        // performance.md records how figures were taken, with the dumps of those runs.
        if p.extension().is_some_and(|x| x == "md") && !p.ends_with("performance.md") {
            files.push(p);
        }
    }
    files
}

#[test]
fn the_docs_dump_a_cluster_one_way() {
    let wanted = DUMP_COMMAND.split(" >").next().unwrap();
    let mut seen = 0;
    for f in user_docs() {
        let text = std::fs::read_to_string(&f).expect("read doc");
        for (n, line) in text.lines().enumerate() {
            let Some(at) = line.find("kubectl get ") else {
                continue;
            };
            let cmd = &line[at..];
            let dumps = cmd.contains(" -A") && cmd.contains(" -o ") && cmd.contains("pods");
            if !dumps {
                continue;
            }
            seen += 1;
            assert!(
                cmd.starts_with(wanted),
                "{}:{}: a cluster dump other than the one command:\n  {cmd}\nwant:\n  {DUMP_COMMAND}",
                f.display(),
                n + 1
            );
        }
    }
    assert!(
        seen >= 3,
        "the README and docs show the dump command ({seen} found)"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(DUMP_COMMAND),
        "README shows the whole command"
    );
}

#[test]
fn every_snapshot_flag_names_the_dump_command() {
    for cmd in ["check", "audit", "explain", "migrate"] {
        let out = Command::new(env!("CARGO_BIN_EXE_claimguard"))
            .args([cmd, "--help"])
            .output()
            .expect("run claimguard");
        assert!(out.status.success(), "{cmd} --help");
        let help = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            help.contains(DUMP_COMMAND),
            "claimguard {cmd} --help does not show the dump command:\n{help}"
        );
    }
}
