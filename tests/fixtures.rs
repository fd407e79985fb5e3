//! Damaged repositories through `verify --read-data` and `restore`: the exit
//! code and what the operator reads are kept in golden files under
//! `tests/snapshots/fixtures/` (see `golden`; `HAUL_BLESS=1` rewrites them).
//!
//! Each fixture is a real repository, made by `haul init` and `haul backup`
//! from a small folder, then broken in one way. Hermetic: local files in a
//! temporary folder, no S3 server, no PostgreSQL. Outputs are normalised
//! before comparison: the temporary folder, the snapshot id, timestamps,
//! durations and the bytes verify read vary from run to run; chunk ids are
//! replaced by what they are (`[chunk of chunk/b.0]`, `[segment]`) because
//! segment ids vary too (a segment records the source files' ETags and
//! modification times).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use haul_manifest::segment::{self, SegmentWriter};
use haul_manifest::{ChunkId, FORMAT_VERSION, RepoConfig, SNAPSHOT_VERSION, chunk};
use serde_json::Value;

use crate::common::{Haul, Run, noise};
use crate::golden;

/// The source folder: two incompressible objects (stored raw), a
/// compressible one (stored with zstd), an empty one (no chunk at all).
fn source_data() -> BTreeMap<&'static str, Vec<u8>> {
    BTreeMap::from([
        ("chunk/a.0", noise(3000, 1)),
        ("chunk/b.0", noise(5000, 2)),
        ("meta/empty", Vec::new()),
        ("meta/text", b"pachyderm metadata ".repeat(1000)),
    ])
}

/// A repository holding one snapshot of [`source_data`], ready to be
/// damaged, and the transcript of the commands run on it.
struct Fixture {
    dir: tempfile::TempDir,
    /// `file://` URL of the repository.
    repo: String,
    snapshot: String,
    /// Hex ids the outputs may print, and what to print instead.
    names: Vec<(String, String)>,
    transcript: String,
}

impl Fixture {
    /// Backs up the source folder; `damage` says, for the golden file, what
    /// the test is about to break.
    fn new(damage: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("source");
        let mut names = Vec::new();
        for (key, data) in source_data() {
            let p = src.join(key);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, &data).expect("write");
            names.push((ChunkId::of(&data).to_hex(), format!("[chunk of {key}]")));
        }
        let repo = format!("file://{}/repo", dir.path().display());
        Haul::insecure()
            // Loose chunks: the damage below is done to one chunk's file.
            .run([
                "init",
                "--insecure-no-encryption",
                "--pack-size",
                "0",
                &repo,
            ])
            .ok();
        let backup = Haul::insecure()
            .run([
                "--json",
                "backup",
                "--source",
                &format!("file://{}", src.display()),
                "--repo",
                &repo,
            ])
            .ok()
            .json();
        let snapshot = backup["snapshot"].as_str().expect("snapshot id").to_owned();
        let mut f = Self {
            dir,
            repo,
            snapshot,
            names,
            transcript: format!("# {damage}\n"),
        };
        let segment = f.segment_id();
        f.names.push((segment, "[segment]".into()));
        f
    }

    /// A file of the repository.
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("repo").join(rel)
    }

    fn chunk_path(&self, id: &str) -> PathBuf {
        self.path(&format!("chunks/{}/{id}", &id[..2]))
    }

    fn root_path(&self) -> PathBuf {
        self.path(&format!("snapshots/{}.json", self.snapshot))
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
    }

    fn write_json(path: &Path, v: &Value) {
        std::fs::write(path, serde_json::to_vec_pretty(v).expect("JSON")).expect("write");
    }

    /// The id of the snapshot's only manifest segment.
    fn segment_id(&self) -> String {
        let root = Self::read_json(&self.root_path());
        let segments = root["bucket"]["segments"].as_array().expect("segments");
        assert_eq!(segments.len(), 1, "the fixture's manifest is one segment");
        segments[0]["id"].as_str().expect("segment id").to_owned()
    }

    /// Runs `haul args` and records it in the transcript.
    fn run(&mut self, args: &[&str]) -> Run {
        let run = Haul::insecure().run(args);
        let shown = |text: &str| {
            if text.is_empty() {
                " (empty)\n".to_owned()
            } else {
                let body = self.normalise(text);
                format!(
                    "\n{}",
                    body.lines()
                        .map(|l| format!("    {l}\n"))
                        .collect::<String>()
                )
            }
        };
        let line = format!(
            "\n$ haul {}\nexit: {}\nstdout:{}stderr:{}",
            self.normalise(&args.join(" ")).trim_end(),
            run.code,
            shown(&run.stdout),
            shown(&run.stderr)
        );
        self.transcript.push_str(&line);
        run
    }

    fn verify(&mut self, json: bool) -> Run {
        let repo = self.repo.clone();
        let mut args = vec!["verify", "--repo", &repo, "--read-data"];
        if json {
            args.insert(0, "--json");
        }
        self.run(&args)
    }

    /// Restores the latest snapshot into a fresh folder `name`, and records
    /// which files the folder then holds.
    fn restore(&mut self, name: &str, json: bool) -> (Run, Vec<String>) {
        let target = self.dir.path().join(name);
        let (repo, to) = (self.repo.clone(), format!("file://{}", target.display()));
        let mut args = vec!["restore", "latest", "--repo", &repo, "--to", &to];
        if json {
            args.insert(0, "--json");
        }
        let run = self.run(&args);
        let files = files(&target);
        self.transcript.push_str(&format!(
            "# {name} holds: {}\n",
            if files.is_empty() {
                "nothing".to_owned()
            } else {
                files.join(", ")
            }
        ));
        (run, files)
    }

    /// What varies from run to run, replaced by a name for it.
    fn normalise(&self, text: &str) -> String {
        let mut s = strip_ansi(text).replace(&self.dir.path().display().to_string(), "[TMP]");
        s = s.replace(&self.snapshot, "[SNAPSHOT]");
        for (hex, name) in &self.names {
            s = s.replace(hex, name);
        }
        let s = mask_hex_runs(&s, 64, "[HASH]");
        s.lines()
            .map(|l| mask_numbers(&mask_timestamp(l)) + "\n")
            .collect()
    }

    /// Compares the transcript with `tests/snapshots/fixtures/NAME.txt`.
    #[track_caller]
    fn check(self, name: &str) {
        golden::check(&format!("fixtures/{name}.txt"), &self.transcript);
    }
}

#[track_caller]
fn exits(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

/// Every file under `dir`, relative and sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).expect("under base");
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Removes terminal colour codes (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

/// Replaces every run of exactly `len` hex digits with `with`.
fn mask_hex_runs(s: &str, len: usize, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(|c: char| c.is_ascii_hexdigit()) {
        let run = rest[start..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .map_or(rest.len(), |n| start + n);
        out.push_str(&rest[..start]);
        out.push_str(if run - start == len {
            with
        } else {
            &rest[start..run]
        });
        rest = &rest[run..];
    }
    out.push_str(rest);
    out
}

/// A log line's leading `2026-01-02T03:04:05.678901Z` becomes `[TIME]`.
fn mask_timestamp(line: &str) -> String {
    let Some((first, rest)) = line.split_once(' ') else {
        return line.to_owned();
    };
    let b = first.as_bytes();
    let is_time = b.len() >= 20
        && b[4] == b'-'
        && b[10] == b'T'
        && first.ends_with('Z')
        && first
            .chars()
            .all(|c| c.is_ascii_digit() || "-:.TZ".contains(c));
    if is_time {
        format!("[TIME] {rest}")
    } else {
        line.to_owned()
    }
}

/// Numbers that vary: durations (`(0.1s)` in text, `"duration_s"` and
/// `"seconds"` in JSON), and the bytes verify read, which include the
/// manifest segment: its lines record the source files' ETags and
/// modification times, whose length varies from run to run.
fn mask_numbers(line: &str) -> String {
    for (key, with) in [
        ("\"duration_s\": ", "[SECONDS]"),
        ("\"seconds\": ", "[SECONDS]"),
        ("\"bytes_read\": ", "[BYTES]"),
    ] {
        if let Some(at) = line.find(key) {
            let value = at + key.len();
            let end = line[value..]
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
                .map_or(line.len(), |n| value + n);
            return format!("{}{with}{}", &line[..value], &line[end..]);
        }
    }
    // verify: "checked …, read 3 (22.2 KiB)".
    if let Some(at) = line.find(", read ")
        && let Some(open) = line[at..].find(" (").map(|n| at + n)
        && line.ends_with(')')
    {
        return format!("{} ([SIZE])", &line[..open]);
    }
    if let Some(open) = line.rfind('(')
        && let Some(len) = line[open..].find("s)")
        && len > 1
        && line[open + 1..open + len]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
    {
        return format!("{}([SECONDS]s){}", &line[..open], &line[open + len + 2..]);
    }
    line.to_owned()
}

#[test]
fn normalising_masks_what_varies() {
    assert_eq!(
        strip_ansi("\x1b[2mt\x1b[0m \x1b[31mERROR\x1b[0m x"),
        "t ERROR x"
    );
    let id = "ab".repeat(32);
    assert_eq!(
        mask_hex_runs(
            &format!("chunk {id}: added {}", "c".repeat(63)),
            64,
            "[HASH]"
        ),
        format!("chunk [HASH]: added {}", "c".repeat(63))
    );
    assert_eq!(
        mask_timestamp("2026-12-03T08:04:18.475207Z ERROR boom"),
        "[TIME] ERROR boom"
    );
    assert_eq!(
        mask_numbers("restored snapshot x (0.3s)"),
        "restored snapshot x ([SECONDS]s)"
    );
    assert_eq!(
        mask_numbers("  \"duration_s\": 0.0029,"),
        "  \"duration_s\": [SECONDS],"
    );
    assert_eq!(
        mask_numbers("checked 1 snapshot(s), 4 objects, 4 chunks, read 3 (22.2 KiB)"),
        "checked 1 snapshot(s), 4 objects, 4 chunks, read 3 ([SIZE])"
    );
    assert_eq!(
        mask_numbers("copied: 3 objects (26.4 KiB)"),
        "copied: 3 objects (26.4 KiB)"
    );
}

/// (a) A chunk of one object is gone (deleted by hand, or by a broken
/// lifecycle rule). verify names it; restore writes every other object,
/// never the one it cannot read, and exits 3.
#[test]
fn missing_chunk() {
    let mut f = Fixture::new("fixture: the chunk of chunk/b.0 is deleted from the repository");
    let b = ChunkId::of(&source_data()["chunk/b.0"]).to_hex();
    std::fs::remove_file(f.chunk_path(&b)).expect("delete the chunk");
    exits(&f.verify(false), 3);
    exits(&f.verify(true), 3);
    let (run, restored) = f.restore("restored", false);
    exits(&run, 3);
    assert_eq!(restored, ["chunk/a.0", "meta/empty", "meta/text"]);
    // --json: does the operator's script learn what was restored?
    exits(&f.restore("restored-json", true).0, 3);
    f.check("missing_chunk");
}

/// (b) The manifest segment is cut short (an upload or a copy of the
/// repository that stopped midway). Segments are chunks: verify finds it
/// damaged; restore cannot plan without it, and writes nothing.
#[test]
fn truncated_segment() {
    let mut f = Fixture::new("fixture: the snapshot's manifest segment is cut to half its length");
    let seg = f.chunk_path(&f.segment_id());
    let len = std::fs::metadata(&seg).expect("segment").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|file| file.set_len(len / 2))
        .expect("truncate the segment");
    exits(&f.verify(false), 3);
    exits(&f.verify(true), 3);
    let (run, restored) = f.restore("restored", false);
    exits(&run, 3);
    assert!(restored.is_empty(), "{restored:?}");
    f.check("truncated_segment");
}

/// (c) The repository was written by a newer haul. Nothing can be read;
/// the operator must be told to upgrade, and nothing is written.
#[test]
fn future_format_version() {
    let mut f =
        Fixture::new("fixture: haul-repo.json says a format version newer than this haul's");
    let config = f.path("haul-repo.json");
    let mut v = Fixture::read_json(&config);
    v["version"] = (FORMAT_VERSION + 1).into();
    Fixture::write_json(&config, &v);
    let verify = f.verify(false);
    // A newer format is no damage (3): a plain failure with a reason to upgrade.
    assert_eq!(verify.code, 1, "{}", verify.stderr);
    assert!(verify.stderr.contains("upgrade haul"), "{}", verify.stderr);
    let (run, restored) = f.restore("restored", false);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(restored.is_empty(), "{restored:?}");
    f.check("future_format_version");
}

/// (c') A snapshot root written by a newer haul (its own version is newer
/// than the roots this haul reads): refused with a reason to upgrade, never
/// read as if it held what an older root holds.
#[test]
fn future_snapshot_version() {
    let mut f = Fixture::new("fixture: the snapshot root says a version newer than this haul's");
    let mut root = Fixture::read_json(&f.root_path());
    root["version"] = (SNAPSHOT_VERSION + 1).into();
    Fixture::write_json(&f.root_path(), &root);
    let verify = f.verify(false);
    assert_eq!(verify.code, 1, "{}", verify.stderr);
    assert!(verify.stderr.contains("upgrade haul"), "{}", verify.stderr);
    let (run, restored) = f.restore("restored", false);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(restored.is_empty(), "{restored:?}");
    f.check("future_snapshot_version");
}

/// (d) Wrong counts in the snapshot root. The root is the one file of a
/// repository that no hash protects (chunks and segments are named by
/// theirs), so a count can only go wrong there unnoticed by the format:
/// this models a root whose counts are off by one — one object counted
/// that its segment does not hold — as a commit that miscounts would
/// write it (DESIGN: sharded backups concatenate segment lists into one
/// root), or as damage to the root itself would leave it.
#[test]
fn wrong_count_in_root() {
    let mut f = Fixture::new(
        "fixture: the snapshot root says its segment holds 5 entries (and the bucket 5 objects); the segment holds 4",
    );
    let mut root = Fixture::read_json(&f.root_path());
    let bump = |v: &mut Value| *v = (v.as_u64().expect("a count") + 1).into();
    bump(&mut root["bucket"]["objects"]);
    bump(&mut root["bucket"]["segments"][0]["entries"]);
    Fixture::write_json(&f.root_path(), &root);
    exits(&f.verify(false), 3);
    exits(&f.verify(true), 3);
    let (run, restored) = f.restore("restored", false);
    exits(&run, 3);
    assert!(restored.is_empty(), "{restored:?}");
    f.check("wrong_count_in_root");
}

/// (d') An object whose recorded size disagrees with its chunks, in a
/// segment that is itself sound: rewritten, re-hashed and named by the
/// root, as a writer with a bug would leave it (say, one that kept the
/// listed size of an object that changed while it was read). Every chunk
/// reads back with the right hash, so only comparing sizes can find it.
#[test]
fn wrong_size_in_segment() {
    let mut f = Fixture::new(
        "fixture: the manifest says chunk/b.0 is 5001 bytes long; its chunk holds 5000 (segment re-hashed, root re-pointed)",
    );
    let old: ChunkId = f.segment_id().parse().expect("chunk id");
    let blob = std::fs::read(f.chunk_path(&old.to_hex())).expect("segment");
    let plain = chunk::decode(&old, &blob).expect("a sound segment");
    let mut entries = segment::parse(&plain, "segment").expect("entries");
    let b = entries
        .iter_mut()
        .find(|e| e.key == "chunk/b.0")
        .expect("chunk/b.0");
    b.size += 1;
    let mut writer = SegmentWriter::new(RepoConfig::DEFAULT_SEGMENT_ENTRIES);
    assert!(
        entries.iter().all(|e| writer.push(e).is_none()),
        "one segment"
    );
    let seg = writer.finish().expect("a segment");
    let enc = chunk::encode(&seg.plain, RepoConfig::DEFAULT_ZSTD_LEVEL);
    let new = enc.id.to_hex();
    let path = f.chunk_path(&new);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, enc.to_blob(&seg.plain)).expect("write the segment");
    let mut root = Fixture::read_json(&f.root_path());
    root["bucket"]["segments"][0]["id"] = new.clone().into();
    root["bucket"]["segments"][0]["bytes"] = seg.bytes.into();
    root["bucket"]["bytes"] = seg.bytes.into();
    Fixture::write_json(&f.root_path(), &root);
    f.names.push((new, "[rewritten segment]".into()));

    // verify --read-data compares each entry's size with its chunks' total
    // (without reading, chunk ids say nothing of sizes).
    let text = f.verify(false);
    exits(&text, 3);
    assert!(text.stdout.contains("WRONG SIZE"), "{}", text.stdout);
    exits(&f.verify(true), 3);
    let (run, restored) = f.restore("restored", false);
    exits(&run, 3);
    assert_eq!(restored, ["chunk/a.0", "meta/empty", "meta/text"]);
    f.check("wrong_size_in_segment");
}
