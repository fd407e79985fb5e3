//! PostgreSQL's client programs (pg_dump, pg_restore, pg_dumpall):
//! where they are and which version they are.
//!
//! A pg_dump older than the server refuses to dump it, and a pg_restore
//! older than the pg_dump that wrote an archive cannot read it, so haul picks
//! the newest program it can find and says which versions clash when even
//! that one is too old. `HAUL_PG_BIN` (a directory) overrides the search;
//! otherwise `PATH` and the per-version directories of Debian
//! (`/usr/lib/postgresql/<major>/bin`) and RHEL (`/usr/pgsql-<major>/bin`)
//! are searched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{PgError, Result};

pub use crate::error::PG_BIN_ENV;

/// `--version` of a program that does not answer within this time is an error.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// A PostgreSQL version: `15.18` is major 15; `9.6.24` is major 9.6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgVersion {
    /// `(15, 0)` for 15.x, `(9, 6)` for 9.6.x: what compatibility depends on.
    pub major: (u32, u32),
    /// As the program or server printed it, e.g. `15.18`.
    pub text: String,
}

impl PgVersion {
    /// Parses `15.18`, `16beta2`, `9.6.24`, or a `--version` line such as
    /// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
    pub fn parse(s: &str) -> Option<Self> {
        let word = s
            .split_whitespace()
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
        let nums: Vec<u32> = word
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .take(2)
            .filter_map(|p| p.parse().ok())
            .collect();
        let first = *nums.first()?;
        let major = if first >= 10 {
            (first, 0)
        } else {
            (first, *nums.get(1)?)
        };
        Some(Self {
            major,
            text: word.to_owned(),
        })
    }

    /// From `server_version_num` (150018, 90624).
    pub fn from_num(num: u32, text: &str) -> Self {
        let major = if num >= 100_000 {
            (num / 10_000, 0)
        } else {
            (num / 10_000, num / 100 % 100)
        };
        Self {
            major,
            text: text.split_whitespace().next().unwrap_or(text).to_owned(),
        }
    }

    /// `15`, or `9.6`.
    pub fn major_text(&self) -> String {
        match self.major {
            (m, 0) if m >= 10 => m.to_string(),
            (a, b) => format!("{a}.{b}"),
        }
    }
}

/// A client program found on this machine.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: &'static str,
    pub path: PathBuf,
    pub version: PgVersion,
}

/// Candidate paths for `name`, best guesses first.
fn candidates(name: &str) -> (Vec<PathBuf>, String) {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        let dir = PathBuf::from(dir);
        let searched = format!("{PG_BIN_ENV}={}", dir.display());
        return (vec![dir.join(name)], searched);
    }
    let mut out: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    for root in ["/usr/lib/postgresql", "/usr/pgsql-*"] {
        let (parent, prefix) = match root.strip_suffix('*') {
            Some(p) => p.rsplit_once('/').map_or(("/", p), |(a, b)| (a, b)),
            None => (root, ""),
        };
        let Ok(rd) = std::fs::read_dir(if prefix.is_empty() { root } else { parent }) else {
            continue;
        };
        for e in rd.flatten() {
            let fname = e.file_name().to_string_lossy().into_owned();
            if fname.starts_with(prefix) {
                out.push(e.path().join("bin").join(name));
            }
        }
    }
    (
        out,
        "PATH, /usr/lib/postgresql/*/bin and /usr/pgsql-*/bin".into(),
    )
}

async fn version_of(name: &'static str, path: &Path) -> Result<PgVersion> {
    let run = tokio::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(VERSION_TIMEOUT, run)
        .await
        .map_err(|_| PgError::ToolBroken {
            tool: name,
            path: path.display().to_string(),
            reason: format!(
                "`--version` did not answer within {}s",
                VERSION_TIMEOUT.as_secs()
            ),
        })?
        .map_err(|e| PgError::ToolBroken {
            tool: name,
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    PgVersion::parse(text.trim())
        .filter(|_| out.status.success())
        .ok_or_else(|| PgError::ToolBroken {
            tool: name,
            path: path.display().to_string(),
            reason: format!("`--version` printed {:?} ({})", text.trim(), out.status),
        })
}

/// Finds the newest `name` on this machine.
pub async fn find(name: &'static str) -> Result<Tool> {
    let (paths, searched) = candidates(name);
    let mut seen = std::collections::HashSet::new();
    let mut best: Option<Tool> = None;
    let mut first_error = None;
    for p in paths {
        if !p.is_file() {
            continue;
        }
        let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if !seen.insert(canon) {
            continue;
        }
        match version_of(name, &p).await {
            Ok(version) => {
                if best
                    .as_ref()
                    .is_none_or(|b| version.major > b.version.major)
                {
                    best = Some(Tool {
                        name,
                        path: p,
                        version,
                    });
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (best, first_error) {
        (Some(t), _) => Ok(t),
        (None, Some(e)) => Err(e),
        (None, None) => Err(PgError::ToolMissing {
            tool: name,
            searched,
        }),
    }
}

impl Tool {
    /// Refuses a program older than a server (or than the pg_dump of an archive).
    pub fn check_not_older(&self, than: &PgVersion, what: &str, name: &str) -> Result<()> {
        if self.version.major < than.major {
            return Err(PgError::ToolTooOld {
                tool: self.name,
                found: format!("{} ({})", self.version.text, self.path.display()),
                needed: than.major_text(),
                than: format!("{what} {}", than.text),
                name: name.to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare_by_major() {
        let v = PgVersion::parse("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)").unwrap();
        assert_eq!((v.major, v.text.as_str()), ((15, 0), "15.18"));
        assert_eq!(v.major_text(), "15");
        let old = PgVersion::parse("pg_dump (PostgreSQL) 9.6.24").unwrap();
        assert_eq!(old.major, (9, 6));
        assert_eq!(old.major_text(), "9.6");
        assert!(old.major < v.major);
        assert_eq!(PgVersion::parse("16beta2").unwrap().major, (16, 0));
        assert_eq!(PgVersion::from_num(150018, "15.18 (Debian)").text, "15.18");
        assert_eq!(PgVersion::from_num(90624, "9.6.24").major, (9, 6));
        assert_eq!(PgVersion::from_num(170002, "17.2").major, (17, 0));
        assert!(PgVersion::parse("no digits here").is_none());
    }
}
