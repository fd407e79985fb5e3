//! Bad input gets a clear error, a non-zero exit, and writes nothing.

use crate::common::{Haul, S3, keys, noise, put};

#[tokio::test]
async fn repository_overlapping_the_source_is_refused() {
    let Some(s3) = S3::from_env() else { return };
    let b = s3.bucket("overlap");
    put(&*s3.store(&b), "data/x", noise(10, 1)).await;
    for (source, repo) in [
        (format!("s3://{b}/data"), format!("s3://{b}/data/backup")),
        (format!("s3://{b}/data"), format!("s3://{b}")),
        (format!("s3://{b}"), format!("s3://{b}/repo")),
    ] {
        s3.haul()
            .run(["backup", "--source", &source, "--repo", &repo])
            .fails_with(1, "overlaps");
    }
    // Neither refusal wrote anything.
    assert_eq!(keys(&*s3.store(&b), "").await, vec!["data/x".to_owned()]);
    // A sibling prefix is not an overlap.
    let ok_repo = format!("s3://{b}/data-backup");
    s3.haul().run(["init", &ok_repo]).ok();
    s3.haul()
        .run([
            "backup",
            "--source",
            &format!("s3://{b}/data"),
            "--repo",
            &ok_repo,
        ])
        .ok();
}

#[test]
fn unknown_scheme_and_malformed_urls_are_refused() {
    Haul::new()
        .run(["init", "ftp://host/x"])
        .fails_with(1, "unknown scheme \"ftp\"");
    Haul::new()
        .run(["init", "bucket/prefix"])
        .fails_with(1, "expected SCHEME://");
    Haul::new()
        .run(["init", "file://relative/path"])
        .fails_with(1, "absolute path");
    let r = Haul::new()
        .run(["init", "s3://AKIAXXXX:hunter2secret@bucket/p"])
        .fails_with(1, "credentials");
    assert!(!r.stderr.contains("hunter2secret"), "{}", r.stderr);
}

#[tokio::test]
async fn missing_bucket_wrong_credentials_and_non_repositories() {
    let Some(s3) = S3::from_env() else { return };
    let repo_bucket = s3.bucket("errs");
    let repo = format!("s3://{repo_bucket}/repo");
    s3.haul().run(["init", &repo]).ok();

    // A source bucket that does not exist: clear error, no snapshot.
    s3.haul()
        .run([
            "backup",
            "--source",
            "s3://no-such-bucket-haul-test/x",
            "--repo",
            &repo,
        ])
        .fails_with(1, "does not exist");
    let snaps = s3
        .haul()
        .run(["--json", "snapshots", "--repo", &repo])
        .ok()
        .json();
    assert_eq!(snaps.as_array().map(Vec::len), Some(0));

    // Wrong credentials: access denied, and the secret is never printed.
    let secret = "wrong-secret-value-7f3a9c";
    let r = s3
        .haul()
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .run(["snapshots", "--repo", &repo])
        .fails_with(1, "access denied");
    assert!(!r.stderr.contains(secret) && !r.stdout.contains(secret));
    assert!(!r.stderr.contains(&s3.secret));

    // A location that holds no repository.
    s3.haul()
        .run([
            "snapshots",
            "--repo",
            &format!("s3://{repo_bucket}/elsewhere"),
        ])
        .fails_with(1, "is not a haul repository")
        .fails_with(1, "haul init");
    let dir = tempfile::tempdir().expect("tempdir");
    Haul::new()
        .run([
            "snapshots",
            "--repo",
            &format!("file://{}", dir.path().display()),
        ])
        .fails_with(1, "not a haul repository");

    // init refuses a location that holds data, or a repository already.
    s3.haul().run(["init", &repo]).fails_with(1, "already");
    let data_bucket = s3.bucket("full");
    put(&*s3.store(&data_bucket), "something", noise(3, 3)).await;
    s3.haul()
        .run(["init", &format!("s3://{data_bucket}")])
        .fails_with(1, "not empty");

    // Unknown snapshot ids, for restore and verify; nothing restored.
    let target = s3.bucket("tgt");
    s3.haul()
        .run([
            "restore",
            "0123456789abcdef",
            "--repo",
            &repo,
            "--to",
            &format!("s3://{target}"),
        ])
        .fails_with(1, "no snapshot \"0123456789abcdef\"");
    s3.haul()
        .run([
            "restore",
            "latest",
            "--repo",
            &repo,
            "--to",
            &format!("s3://{target}"),
        ])
        .fails_with(1, "no snapshot");
    s3.haul()
        .run(["verify", "beef", "--repo", &repo])
        .fails_with(1, "no snapshot");
    assert!(keys(&*s3.store(&target), "").await.is_empty());
}

#[test]
fn unreachable_endpoint_fails_fast_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}/repo", dir.path().display());
    Haul::new().run(["init", &repo]).ok();
    // Port 9 (discard) is closed on loopback: connection refused.
    Haul::new()
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .run(["backup", "--source", "s3://bucket/x", "--repo", &repo])
        .fails_with(1, "did not answer");
}

/// A local file named like object_store's temporary files (`report#2`) was
/// silently left out of every backup. Now it is listed, and since the local
/// store cannot read it, the backup fails naming it and commits nothing.
#[test]
fn a_local_file_no_store_can_read_is_named_not_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    std::fs::write(src.join("ok"), b"fine").expect("write");
    std::fs::write(src.join("d/report#2"), b"odd").expect("write");
    let repo = format!("file://{}/repo", dir.path().display());
    Haul::new().run(["init", &repo]).ok();
    let source = format!("file://{}", src.display());
    Haul::new()
        .run(["backup", "--source", &source, "--repo", &repo])
        .fails_with(1, "d/report#2");
    let snaps = Haul::new()
        .run(["--json", "snapshots", "--repo", &repo])
        .ok()
        .json();
    assert_eq!(snaps.as_array().map(Vec::len), Some(0), "{snaps}");
}

/// Symbolic links never take haul out of a local folder: a source link out
/// of the folder fails the backup by name (one inside it is followed), and
/// a restore never writes through a link in its target.
#[test]
fn symbolic_links_never_lead_out_of_a_local_folder() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"not yours").expect("write");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("ln")).expect("mkdir");
    std::fs::write(src.join("ln/x"), b"data").expect("write");
    std::fs::write(src.join("real"), b"real").expect("write");
    symlink(src.join("real"), src.join("inside-link")).expect("symlink");
    let repo = format!("file://{}/repo", dir.path().display());
    let source = format!("file://{}", src.display());
    Haul::new().run(["init", &repo]).ok();
    let ok = Haul::new()
        .run(["--json", "backup", "--source", &source, "--repo", &repo])
        .ok()
        .json();
    assert_eq!(
        ok["objects"], 3,
        "a link inside the folder is followed: {ok}"
    );

    // A link out of the source folder.
    symlink(&outside, src.join("away")).expect("symlink");
    Haul::new()
        .run(["backup", "--source", &source, "--repo", &repo])
        .fails_with(1, "a symbolic link out of the folder listed");
    std::fs::remove_file(src.join("away")).expect("rm");

    // A target whose `ln` leads out: the snapshot's ln/x is not written
    // through it, and nothing outside changes.
    let target = dir.path().join("target");
    std::fs::create_dir_all(&target).expect("mkdir");
    symlink(&outside, target.join("ln")).expect("symlink");
    let r = Haul::new().run([
        "restore",
        "latest",
        "--repo",
        &repo,
        "--to",
        &format!("file://{}", target.display()),
    ]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    let mut left: Vec<String> = std::fs::read_dir(&outside)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["secret"], "nothing written outside");

    // A link inside the target is listed through, but never written
    // through: the object's key fails, by name.
    std::fs::remove_file(target.join("ln")).expect("rm");
    std::fs::create_dir_all(target.join("elsewhere")).expect("mkdir");
    symlink(target.join("elsewhere"), target.join("ln")).expect("symlink");
    let r = Haul::new().run([
        "restore",
        "latest",
        "--repo",
        &repo,
        "--to",
        &format!("file://{}", target.display()),
    ]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("ln/x") && r.stderr.contains("refusing to write or delete through it"),
        "{}",
        r.stderr
    );
    assert!(!target.join("elsewhere/x").exists());
}

/// Secrets put where they do not belong are never echoed: a secret key in a
/// `[[store]]` section (the config error names the line, not its text) and
/// a PostgreSQL password with an unencoded `/` or `?`.
#[test]
fn misplaced_secrets_are_not_echoed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("haul.toml");
    std::fs::write(
        &cfg,
        "[[store]]\nurl = \"s3://b\"\nsecret_access_key = \"hunter2-secret\"\n",
    )
    .expect("write");
    let r = Haul::new()
        .run(["-c", cfg.to_str().expect("utf-8"), "snapshots"])
        .fails_with(1, "line 3");
    assert!(r.stderr.contains("secret_access_key"), "{}", r.stderr);
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);

    let repo = format!("file://{}/repo", dir.path().display());
    Haul::new().run(["init", &repo]).ok();
    for url in [
        "postgresql://app:hunter2/x@127.0.0.1/db",
        "postgresql://app:hunter2?x@127.0.0.1/db",
    ] {
        let r = Haul::new()
            .run(["backup", "--repo", &repo, "--db", &format!("app={url}")])
            .fails_with(1, "percent-encoded");
        assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    }
}

/// A password on the command line is visible to every user of the machine:
/// haul says so (once), and not when there is none.
#[test]
fn a_password_on_the_command_line_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}/repo", dir.path().display());
    Haul::new().run(["init", &repo]).ok();
    let run =
        |url: &str| Haul::new().run(["backup", "--repo", &repo, "--db", &format!("app={url}")]);
    let with = run("postgresql://app:hunter2@127.0.0.1:1/db");
    assert_ne!(with.code, 0);
    assert_eq!(
        with.stderr
            .matches("a password is on the command line")
            .count(),
        1,
        "{}",
        with.stderr
    );
    assert!(!with.stderr.contains("hunter2"), "{}", with.stderr);
    let without = run("postgresql://app@127.0.0.1:1/db");
    assert!(
        !without.stderr.contains("password is on the command line"),
        "{}",
        without.stderr
    );
}

/// A plain-http endpoint off this machine is warned about (once); one on
/// loopback is not.
#[test]
fn a_plain_http_endpoint_off_this_machine_is_warned_about() {
    let run = |endpoint: &str| {
        Haul::new()
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "k")
            .env("AWS_SECRET_ACCESS_KEY", "s")
            .run(["snapshots", "--repo", "s3://bucket/repo"])
    };
    let far = run("http://haul-test.invalid:9");
    assert_ne!(far.code, 0);
    assert_eq!(
        far.stderr.matches("is plain http").count(),
        1,
        "{}",
        far.stderr
    );
    let near = run("http://127.0.0.1:9");
    assert!(!near.stderr.contains("plain http"), "{}", near.stderr);
}

/// No credentials at all: haul asks the instance metadata service (as the
/// AWS tools do), which refuses here; the hint says that no credentials
/// were found, not "access denied".
#[test]
fn no_credentials_at_all_is_said_so() {
    let r = Haul::new()
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .run(["snapshots", "--repo", "s3://bucket/repo"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("no credentials were found for s3://bucket/repo"),
        "{}",
        r.stderr
    );
}
