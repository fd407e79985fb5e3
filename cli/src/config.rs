//! The config file (`-c FILE`): besides the `[[store]]` sections the mover
//! reads, a `[cluster]` section describes a cluster to back up and a
//! `[restore]` section where to restore it, so the operator types
//! `haul backup -c prod.toml` and `haul restore latest -c prod.toml`.
//! Flags override the file; `--db NAME=URL` overrides the database of that
//! name and keeps the others.
//!
//! ```toml
//! [cluster]
//! repo = "s3://backups/pachyderm"
//! source = "s3://pachyderm-data"
//! pause = "kubectl"                # pachctl | kubectl | enterprise | enterprise-pachctl | none
//! context = "prod"
//! namespace = "pachyderm"
//! max_downtime = "2m"
//! final_pass = "pachyderm"         # list | pachyderm (read storage.chunk_objects, don't list chunk/ while paused)
//! helm_values = "values.yaml"      # relative to this file
//! [cluster.databases]
//! pachyderm = "postgresql://pachyderm@pg.internal/pachyderm?sslmode=verify-full"
//! dex = "postgresql://pachyderm@pg.internal/dex?sslmode=verify-full"
//!
//! [restore]
//! to = "s3://pachyderm-data-restored"
//! helm_values_out = "restored-values.yaml"
//! [restore.databases]
//! pachyderm = "postgresql://postgres@pg-new/pachyderm"
//! dex = "postgresql://postgres@pg-new/dex"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::CliError;

/// `[cluster]`: what `haul backup` backs up.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub repo: Option<String>,
    pub source: Option<String>,
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    pub db_globals: Option<String>,
    /// `--no-role-passwords`.
    #[serde(default)]
    pub no_role_passwords: bool,
    pub pause: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub pause_timeout: Option<String>,
    pub max_downtime: Option<String>,
    pub precopy_rounds: Option<u32>,
    /// `--final-pass`: list | pachyderm.
    pub final_pass: Option<String>,
    pub helm_values: Option<PathBuf>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `[restore]`: where `haul restore` puts a snapshot.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSection {
    pub repo: Option<String>,
    pub to: Option<String>,
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    pub db_globals: Option<String>,
    #[serde(default)]
    pub clean: bool,
    #[serde(default)]
    pub no_owner: bool,
    #[serde(default)]
    pub delete_extraneous: bool,
    pub helm_values_out: Option<PathBuf>,
    /// A running cluster to refresh (as `haul restore --pause`).
    pub pause: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub pause_timeout: Option<String>,
    #[serde(default)]
    pub drop_previous: bool,
}

/// `[retention]`: what `haul forget` keeps (the `--keep-*` flags replace it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    pub keep_last: Option<usize>,
    pub keep_hourly: Option<usize>,
    pub keep_daily: Option<usize>,
    pub keep_weekly: Option<usize>,
    pub keep_monthly: Option<usize>,
    pub keep_yearly: Option<usize>,
    pub keep_within: Option<String>,
    #[serde(default)]
    pub keep_labels: BTreeMap<String, String>,
}

/// The sections of the config file haul-cli reads itself.
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub restore: RestoreSection,
    #[serde(default)]
    pub retention: RetentionSection,
    /// Read by the mover (`StoreConfig`).
    #[serde(default, rename = "store")]
    _store: Vec<toml::Value>,
}

impl FileConfig {
    pub fn parse(text: &str, path: &Path) -> Result<Self, CliError> {
        let mut c: Self = toml::from_str(text).map_err(|e| {
            CliError::Usage(format!(
                "config file {}: {}",
                path.display(),
                haul_mover::toml_error(text, &e)
            ))
        })?;
        // Paths in the file are relative to the file.
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.cluster.helm_values, &mut c.restore.helm_values_out]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(c)
    }
}

/// Merges `--db NAME=URL` flags over the file's databases: a flag replaces
/// the file's database of its name. Flags keep their order (a name given
/// twice is left for the parser to refuse).
pub fn merge_databases(file: &BTreeMap<String, String>, flags: &[String]) -> Vec<String> {
    let flagged = |name: &str| {
        flags
            .iter()
            .any(|f| f.split_once('=').is_some_and(|(n, _)| n == name))
    };
    file.iter()
        .filter(|(name, _)| !flagged(name))
        .map(|(n, u)| format!("{n}={u}"))
        .chain(flags.iter().cloned())
        .collect()
}

/// `90s`, `5m`, `1h30m`, `2m30s`, `500ms`, `30d`, `2w`, or plain seconds (`45`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration: write e.g. 90s, 5m, 1h30m, 30d");
    if let Ok(secs) = s.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(bad())
        };
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..letters] {
            "w" => 7.0 * 86400.0,
            "d" => 86400.0,
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += n * unit;
        rest = &rest[letters..];
    }
    if s.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("2w1d"), Ok(Duration::from_secs(15 * 86400)));
        for bad in ["", "5x", "m", "5m3", "-1", "1y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_override_the_file_by_name() {
        let file: BTreeMap<String, String> = [
            ("pachyderm".to_owned(), "postgresql://a/p".to_owned()),
            ("dex".to_owned(), "postgresql://a/d".to_owned()),
        ]
        .into();
        let merged = merge_databases(&file, &["dex=postgresql://b/d".to_owned()]);
        assert_eq!(
            merged,
            vec!["pachyderm=postgresql://a/p", "dex=postgresql://b/d"]
        );
        let flags = [
            "b=postgresql://x/b".to_owned(),
            "a=postgresql://x/a".to_owned(),
        ];
        assert_eq!(merge_databases(&BTreeMap::new(), &flags), flags.to_vec());
    }

    #[test]
    fn the_file_is_checked_and_paths_are_relative_to_it() {
        let c = FileConfig::parse(
            "[[store]]\nurl = \"s3://x\"\n[cluster]\nrepo = \"s3://r\"\nhelm_values = \"v.yaml\"\n[cluster.databases]\ndex = \"postgresql://h/dex\"\n",
            Path::new("/etc/haul/prod.toml"),
        )
        .unwrap();
        assert_eq!(
            c.cluster.helm_values,
            Some(PathBuf::from("/etc/haul/v.yaml"))
        );
        assert_eq!(c.cluster.databases.len(), 1);
        let e =
            FileConfig::parse("[cluster]\nsorce = \"s3://x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("sorce"), "{e}");
    }
}
