//! Golden files: the expected output of a test, kept under
//! `tests/snapshots/` and compared whole, so a change in what the operator
//! reads shows up in review as a diff of plain text.
//!
//! `HAUL_BLESS=1 cargo test -p haul-cli --test integration NAME` writes what
//! the code prints now instead of comparing; read the change in `git diff`
//! before committing it.

use std::path::PathBuf;

/// Compares `actual` with the golden file `rel` (under `tests/snapshots/`),
/// or rewrites the file when `HAUL_BLESS=1`.
#[track_caller]
pub fn check(rel: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/snapshots")
        .join(rel);
    if std::env::var("HAUL_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("a golden file is in a folder"))
            .expect("create the golden folder");
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden file {} ({e}); run with HAUL_BLESS=1 to create it. Output:\n{actual}",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "output differs from {} (- golden, + now):\n{}\n\
             If the new output is right, rerun with HAUL_BLESS=1 and review the diff.",
            path.display(),
            diff(&expected, actual)
        );
    }
}

/// The lines between the common head and the common tail, with a little context.
fn diff(expected: &str, actual: &str) -> String {
    const CONTEXT: usize = 3;
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let head = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    let tail = e[head..]
        .iter()
        .rev()
        .zip(a[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = format!("@@ line {}\n", head + 1);
    let line = |out: &mut String, mark: &str, l: &str| {
        out.push_str(mark);
        out.push_str(l);
        out.push('\n');
    };
    for l in &e[head.saturating_sub(CONTEXT)..head] {
        line(&mut out, "  ", l);
    }
    for l in &e[head..e.len() - tail] {
        line(&mut out, "- ", l);
    }
    for l in &a[head..a.len() - tail] {
        line(&mut out, "+ ", l);
    }
    for l in e[e.len() - tail..].iter().take(CONTEXT) {
        line(&mut out, "  ", l);
    }
    out
}

#[test]
fn diff_shows_the_changed_lines_in_context() {
    let d = diff("a\nb\nc\nd\n", "a\nB\nc\nd\n");
    assert_eq!(d, "@@ line 2\n  a\n- b\n+ B\n  c\n  d\n");
    assert_eq!(diff("a\n", "a\nb\n"), "@@ line 2\n  a\n+ b\n");
}
