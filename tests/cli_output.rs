//! The CLI's teaching surface: help texts and exit codes.

use crate::common::Haul;

#[test]
fn help_teaches_the_commands() {
    let h = Haul::new().run(["--help"]).ok();
    for word in [
        "init",
        "backup",
        "snapshots",
        "restore",
        "resume",
        "verify",
        "AWS_PROFILE",
        "--config",
        "Examples:",
    ] {
        assert!(
            h.stdout.contains(word),
            "--help lacks {word}:\n{}",
            h.stdout
        );
    }
    let r = Haul::new().run(["restore", "--help"]).ok();
    for word in [
        "--delete-extraneous",
        "--dry-run",
        "missing",
        "extraneous",
        "latest",
    ] {
        assert!(
            r.stdout.contains(word),
            "restore --help lacks {word}:\n{}",
            r.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let r = Haul::new().run(["backup", "--source"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = Haul::new().run(["frobnicate"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// `--json` prints one JSON document even when the command fails.
#[test]
fn a_failed_command_prints_a_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}/none", dir.path().display());
    let r = Haul::new().run(["--json", "snapshots", "--repo", &repo]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON document");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert_eq!(v["exit_code"], 1);
}

/// Limits that cannot work are refused before `init` writes anything.
#[test]
fn init_with_refused_limits_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}/repo", dir.path().display());
    let r = Haul::new().run(["--list-lanes", "0", "init", &repo]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        !dir.path().join("repo/haul-repo.json").exists(),
        "a refused init left a repository behind"
    );
    Haul::new().run(["init", &repo]).ok();
}
