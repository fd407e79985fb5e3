//! Which snapshots a retention policy keeps (issue 18's `haul forget`).
//!
//! Pure: snapshots in, a decision per snapshot out, with the reasons a kept
//! one is kept. The rules are restic's, which operators know: a snapshot is
//! kept when any rule keeps it.
//!
//! - `keep_last N`: the N newest.
//! - `keep_hourly/daily/weekly/monthly/yearly N`: for each of the N newest
//!   hours (days, ISO weeks, months, years, in UTC) that hold a snapshot,
//!   the newest snapshot of that period.
//! - `keep_within D`: every snapshot at most D older than the newest.
//! - `keep_labels`: every snapshot carrying one of these `KEY=VALUE` labels.
//!
//! The policy applies to each source on its own ([`source_of`]: the bucket
//! URL and the set of databases), so backing up a second cluster into the
//! same repository never makes the first one's snapshots go. An empty
//! policy keeps nothing, so it is refused: forgetting everything is said
//! with snapshot ids, never by leaving the policy out.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Duration, Utc};
use haul_manifest::{Snapshot, SnapshotId};

/// A retention policy (`[retention]` in the config file, `--keep-*` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
    pub within: Option<Duration>,
    /// `(key, value)` pairs: a snapshot with any of them is kept.
    pub labels: Vec<(String, String)>,
}

impl Policy {
    /// A policy that keeps nothing (every count 0, no duration, no label).
    pub fn is_empty(&self) -> bool {
        self.last + self.hourly + self.daily + self.weekly + self.monthly + self.yearly == 0
            && self.within.is_none()
            && self.labels.is_empty()
    }
}

/// What the policy says of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
    pub source: String,
    /// Why it is kept (`last 3`, `daily 2026-12-01`, ...); empty: it goes.
    pub reasons: Vec<String>,
}

impl Decision {
    pub fn kept(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The source a snapshot is of: its bucket's URL and its databases.
pub fn source_of(s: &Snapshot) -> String {
    let mut dbs: Vec<&str> = s.databases.iter().map(|d| d.name.as_str()).collect();
    dbs.sort_unstable();
    let bucket = s.bucket.as_ref().map_or("(no bucket)", |b| b.url.as_str());
    if dbs.is_empty() {
        bucket.to_owned()
    } else {
        format!("{bucket} [{}]", dbs.join(", "))
    }
}

/// The decision for every snapshot, newest first within each source,
/// sources in name order.
pub fn apply(policy: &Policy, snapshots: &[Snapshot]) -> Vec<Decision> {
    let mut by_source: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        by_source.entry(source_of(s)).or_default().push(s);
    }
    let mut out = Vec::new();
    for (source, mut snaps) in by_source {
        // Newest first; ties by id so the result never depends on input order.
        snaps.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
        for (i, r) in reasons.iter_mut().enumerate().take(policy.last) {
            r.push(format!("last {}", i + 1));
        }
        let periods: [(usize, &str, PeriodOf); 5] = [
            (policy.hourly, "hourly", |t| {
                t.format("%Y-%m-%d %H:00").to_string()
            }),
            (policy.daily, "daily", |t| t.format("%Y-%m-%d").to_string()),
            (policy.weekly, "weekly", |t| {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }),
            (policy.monthly, "monthly", |t| t.format("%Y-%m").to_string()),
            (policy.yearly, "yearly", |t| t.year().to_string()),
        ];
        for (n, name, period) in periods {
            let mut seen = HashSet::new();
            for (i, s) in snaps.iter().enumerate() {
                if seen.len() >= n {
                    break;
                }
                let p = period(&s.time);
                if seen.insert(p.clone()) {
                    reasons[i].push(format!("{name} {p}"));
                }
            }
        }
        if let (Some(d), Some(newest)) = (policy.within, snaps.first()) {
            let since = newest.time - d;
            for (i, s) in snaps.iter().enumerate() {
                if s.time >= since {
                    reasons[i].push(format!("within {} of the newest", human(d)));
                }
            }
        }
        for (i, s) in snaps.iter().enumerate() {
            for (k, v) in &policy.labels {
                if s.labels.get(k) == Some(v) {
                    reasons[i].push(format!("label {k}={v}"));
                }
            }
        }
        for (s, r) in snaps.iter().zip(reasons) {
            out.push(Decision {
                id: s.id,
                time: s.time,
                source: source.clone(),
                reasons: r,
            });
        }
    }
    out
}

/// The period a time falls in, as the reason names it.
type PeriodOf = fn(&DateTime<Utc>) -> String;

fn human(d: Duration) -> String {
    let s = d.num_seconds();
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else {
        format!("{}s", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn snap(n: u64, time: DateTime<Utc>, bucket: &str, labels: &[(&str, &str)]) -> Snapshot {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        serde_json::from_value(serde_json::json!({
            "version": 2,
            "id": format!("{n:016x}"),
            "time": time,
            "tool": "test",
            "bucket": {"url": bucket, "objects": 0, "bytes": 0, "segments": []},
            "labels": labels,
        }))
        .expect("a snapshot")
    }

    fn day(m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, m, d, 2, 0, 0)
            .single()
            .expect("date")
    }

    /// A year of daily snapshots (2026: 1 January is a Thursday, so the
    /// year has 53 ISO weeks, the last from 28 December).
    fn year() -> Vec<Snapshot> {
        let mut out = Vec::new();
        let mut t = day(1, 1);
        let mut n = 0;
        while t.year() == 2026 {
            n += 1;
            out.push(snap(n, t, "s3://prod", &[]));
            t += Duration::days(1);
        }
        out
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        let mut k: Vec<String> = d
            .iter()
            .filter(|d| d.kept())
            .map(|d| d.time.format("%m-%d").to_string())
            .collect();
        k.sort();
        k
    }

    #[test]
    fn a_year_of_dailies_keeps_what_the_policy_says() {
        let snaps = year();
        assert_eq!(snaps.len(), 365);
        let policy = Policy {
            daily: 7,
            weekly: 4,
            monthly: 12,
            yearly: 2,
            ..Policy::default()
        };
        let d = apply(&policy, &snaps);
        assert_eq!(d.len(), 365);
        let mut want: Vec<String> = (25..=31).map(|d| format!("12-{d}")).collect();
        // Weeks 52, 51, 50 end on Sundays 27, 20, 13 December (27 is a daily).
        want.extend(["12-20".into(), "12-13".into()]);
        // The last day of January to November (December's is a daily).
        for (m, last) in [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30]
            .iter()
            .enumerate()
        {
            want.push(format!("{:02}-{last}", m + 1));
        }
        want.sort();
        assert_eq!(kept(&d), want);
        let dec31 = d.iter().find(|x| x.time == day(12, 31)).expect("31 Dec");
        assert_eq!(
            dec31.reasons,
            [
                "daily 2026-12-31",
                "weekly 2026-W53",
                "monthly 2026-12",
                "yearly 2026"
            ]
        );
    }

    #[test]
    fn last_within_and_labels_add_up() {
        let snaps = year();
        let policy = Policy {
            last: 3,
            within: Some(Duration::days(10)),
            labels: vec![("release".into(), "2.12".into())],
            ..Policy::default()
        };
        let mut labelled = snaps.clone();
        labelled[99] = snap(1000, day(4, 10), "s3://prod", &[("release", "2.12")]);
        let d = apply(&policy, &labelled);
        // Within 10 days of 31 December: 21..31 (11 snapshots, the last 3 among them).
        let mut want: Vec<String> = (21..=31).map(|d| format!("12-{d}")).collect();
        want.push("04-10".into());
        want.sort();
        assert_eq!(kept(&d), want);
    }

    #[test]
    fn each_source_keeps_its_own() {
        let mut snaps = year();
        snaps.push(snap(5000, day(3, 1), "s3://staging", &[]));
        let d = apply(
            &Policy {
                last: 1,
                ..Policy::default()
            },
            &snaps,
        );
        let kept: Vec<(&str, String)> = d
            .iter()
            .filter(|d| d.kept())
            .map(|d| (d.source.as_str(), d.time.format("%m-%d").to_string()))
            .collect();
        assert_eq!(
            kept,
            [
                ("s3://prod", "12-31".to_owned()),
                ("s3://staging", "03-01".to_owned())
            ]
        );
        assert!(Policy::default().is_empty());
        assert!(
            !Policy {
                within: Some(Duration::hours(1)),
                ..Policy::default()
            }
            .is_empty()
        );
    }
}
