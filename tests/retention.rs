//! `haul forget` (issue 18): retention policies through the binary.

use crate::common::Haul;

fn backup(haul: &dyn Fn() -> Haul, source: &str, repo: &str) -> String {
    haul()
        .run(["--json", "backup", "--source", source, "--repo", repo])
        .ok()
        .json()["snapshot"]
        .as_str()
        .expect("id")
        .to_owned()
}

fn count(haul: &dyn Fn() -> Haul, repo: &str) -> usize {
    haul()
        .run(["--json", "snapshots", "--repo", repo])
        .ok()
        .json()
        .as_array()
        .map_or(0, Vec::len)
}

/// An encrypted repository with real backups: a dry run removes nothing and
/// says why each kept snapshot is kept; --keep-last and the config file's
/// [retention] section forget the rest; a snapshot named by prefix goes
/// alone; what is kept still restores and verifies.
#[test]
fn forget_keeps_what_the_policy_says_and_the_rest_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let repo = format!("file://{}/repo", dir.path().display());
    let source = format!("file://{}", src.display());
    Haul::new().run(["init", &repo]).ok();
    let mut ids = Vec::new();
    for i in 0..4 {
        std::fs::write(src.join("a"), format!("version {i}").repeat(50)).expect("write");
        ids.push(backup(&Haul::new, &source, &repo));
    }
    Haul::new()
        .run(["forget", "--repo", &repo])
        .fails_with(1, "no retention policy");
    Haul::new()
        .run(["forget", "--repo", &repo, "--keep-last", "1", &ids[0]])
        .fails_with(1, "not both");

    let dry = Haul::new()
        .run([
            "--json",
            "forget",
            "--repo",
            &repo,
            "--keep-last",
            "3",
            "--dry-run",
        ])
        .ok()
        .json();
    assert_eq!(dry["snapshots_removed"], 0, "{dry:#}");
    assert_eq!(dry["snapshots_kept"], 3, "{dry:#}");
    let rows = dry["snapshots"].as_array().expect("rows");
    assert_eq!(rows[0]["id"], ids[3].as_str());
    assert_eq!(rows[0]["reasons"][0], "last 1");
    assert_eq!(rows[3]["keep"], false);
    assert_eq!(count(&Haul::new, &repo), 4);

    // The config file's [retention] section.
    let config = dir.path().join("haul.toml");
    std::fs::write(&config, "[retention]\nkeep_last = 3\n").expect("config");
    let r = Haul::new()
        .run([
            "--json",
            "-c",
            config.to_str().expect("utf-8"),
            "forget",
            "--repo",
            &repo,
        ])
        .ok()
        .json();
    assert_eq!(r["snapshots_removed"], 1, "{r:#}");
    assert_eq!(count(&Haul::new, &repo), 3);

    // One by prefix.
    let r = Haul::new()
        .run(["--json", "forget", "--repo", &repo, &ids[1][..8]])
        .ok()
        .json();
    assert_eq!(r["snapshots_removed"], 1, "{r:#}");
    let left = Haul::new()
        .run(["--json", "snapshots", "--repo", &repo])
        .ok()
        .json();
    let left: Vec<&str> = left
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(left, [ids[2].as_str(), ids[3].as_str()]);

    Haul::new()
        .run(["verify", "--repo", &repo, "--read-data"])
        .ok();
    let to = dir.path().join("out");
    Haul::new()
        .run([
            "restore",
            &ids[2],
            "--repo",
            &repo,
            "--to",
            &format!("file://{}", to.display()),
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(to.join("a")).expect("restored"),
        "version 2".repeat(50)
    );
}

/// A year of daily snapshots (synthetic times, in an unencrypted
/// repository whose roots the test writes): daily 7, weekly 4, monthly 12,
/// yearly 2 keep exactly 20, the other 345 go, and a kept one restores.
#[test]
fn a_year_of_dailies_is_thinned_to_the_policy() {
    use chrono::{Duration, TimeZone, Utc};
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a"), "daily data").expect("write");
    let repo_dir = dir.path().join("repo");
    let repo = format!("file://{}", repo_dir.display());
    Haul::insecure()
        .run(["init", "--insecure-no-encryption", &repo])
        .ok();
    let first = backup(&Haul::insecure, &format!("file://{}", src.display()), &repo);
    let root_path = repo_dir.join(format!("snapshots/{first}.json"));
    let template: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&root_path).expect("root")).expect("json");
    std::fs::remove_file(&root_path).expect("rm");
    let mut t = Utc
        .with_ymd_and_hms(2026, 1, 1, 2, 0, 0)
        .single()
        .expect("date");
    let mut n = 0u64;
    let mut jan31 = String::new();
    while t < Utc
        .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
        .single()
        .expect("date")
    {
        n += 1;
        let id = format!("{:016x}", 0xda1_0000 + n);
        if t.format("%m-%d").to_string() == "01-31" {
            jan31.clone_from(&id);
        }
        let mut root = template.clone();
        root["id"] = id.clone().into();
        root["time"] = t.to_rfc3339().into();
        std::fs::write(
            repo_dir.join(format!("snapshots/{id}.json")),
            serde_json::to_vec(&root).expect("json"),
        )
        .expect("write a root");
        t += Duration::days(1);
    }
    assert_eq!(count(&Haul::insecure, &repo), 365);
    let r = Haul::insecure()
        .run([
            "--json",
            "forget",
            "--repo",
            &repo,
            "--keep-daily",
            "7",
            "--keep-weekly",
            "4",
            "--keep-monthly",
            "12",
            "--keep-yearly",
            "2",
        ])
        .ok()
        .json();
    assert_eq!(
        (
            r["snapshots_removed"].as_u64(),
            r["snapshots_kept"].as_u64()
        ),
        (Some(345), Some(20)),
        "{r:#}"
    );
    assert_eq!(count(&Haul::insecure, &repo), 20);
    let to = dir.path().join("out");
    Haul::insecure()
        .run([
            "restore",
            &jan31,
            "--repo",
            &repo,
            "--to",
            &format!("file://{}", to.display()),
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(to.join("a")).expect("restored"),
        "daily data"
    );
}
