//! Predicting the paused phase of a backup from the repository's run
//! history and from the rounds of the current run.
//!
//! The model is deliberately small:
//!
//! - a bucket pass (list + copy what changed) takes `a·listed + b·bytes`
//!   seconds, `a` and `b` fitted by least squares over past passes;
//! - while the cluster runs, the bucket changes at `r` bytes per second,
//!   measured as what round k found changed over the time round k-1 took;
//! - the paused phase is `pause + export + final pass + resume`, the final
//!   pass copying what changed during the last pre-copy round. The dumps
//!   and the commit run after the resume (only the export of each
//!   database's snapshot is paused), so neither counts.
//!
//! Pre-copy rounds repeat like the rounds of a live VM migration: each one
//! copies what changed during the previous one, so with `r·b < 1` they
//! converge towards `r·a·listed / (1 - r·b)` bytes.

use haul_manifest::{PhaseKind, RunRecord};
use serde::Serialize;

/// Seconds per listed object when no history says better (S3 lists about
/// 20,000 keys a second).
const DEFAULT_PER_OBJECT: f64 = 50e-6;
/// Seconds per byte copied when no history says better (100 MiB/s).
const DEFAULT_PER_BYTE: f64 = 1.0 / (100.0 * 1048576.0);
/// Pausing and resuming through kubectl waits for pods to stop.
const DEFAULT_PAUSE_S: f64 = 10.0;
/// Pre-copy rounds stop once copying the next delta would take less than this.
const SMALL_DELTA_S: f64 = 1.0;

/// Costs learnt from past runs, or defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// Seconds per listed object (`a`).
    pub per_object_s: f64,
    /// Seconds per byte read (`b`).
    pub per_byte_s: f64,
    pub pause_s: f64,
    pub resume_s: f64,
    /// Exporting the databases' snapshots (all of them, concurrently).
    pub export_s: f64,
    /// Bytes per second the bucket changed while the cluster ran, if measured.
    pub change_bps: Option<f64>,
    /// Past bucket passes the costs were fitted on (0: defaults).
    pub samples: usize,
    #[serde(skip)]
    passes: Vec<(f64, f64, f64)>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

impl Model {
    /// Learns from past backups (oldest first); `pausing` says whether the
    /// coming run pauses a cluster (for the default pause cost).
    pub fn from_history(runs: &[RunRecord], pausing: bool) -> Self {
        let phases = || runs.iter().flat_map(|r| r.phases.iter());
        let seconds_of = |kind: PhaseKind| {
            median(
                phases()
                    .filter(|p| p.name == kind)
                    .map(|p| p.seconds)
                    .collect(),
            )
        };
        let default_pause = if pausing { DEFAULT_PAUSE_S } else { 0.0 };
        let mut m = Self {
            per_object_s: DEFAULT_PER_OBJECT,
            per_byte_s: DEFAULT_PER_BYTE,
            pause_s: if pausing {
                seconds_of(PhaseKind::Pause).unwrap_or(default_pause)
            } else {
                0.0
            },
            resume_s: if pausing {
                seconds_of(PhaseKind::Resume).unwrap_or(0.0)
            } else {
                0.0
            },
            export_s: seconds_of(PhaseKind::Export).unwrap_or(0.0),
            change_bps: median(runs.iter().filter_map(|r| r.stats.change_bps).collect()),
            samples: 0,
            passes: Vec::new(),
        };
        // A bucket pass that listed the bucket prices listing and copying.
        for p in phases().filter(|p| p.listed > 0 && p.name.is_bucket_pass()) {
            m.passes.push((p.listed as f64, p.bytes as f64, p.seconds));
        }
        m.fit();
        m
    }

    /// Adds a pass of the current run and refits.
    pub fn observe(&mut self, listed: u64, bytes: u64, seconds: f64) {
        if listed > 0 {
            self.passes.push((listed as f64, bytes as f64, seconds));
            self.fit();
        }
    }

    /// Least squares for `t = a·n + b·B` (no intercept); when the passes do
    /// not pin both down (all alike, or a negative coefficient), `a` keeps
    /// its default and `b` is the median of what remains per byte.
    fn fit(&mut self) {
        self.samples = self.passes.len();
        let (mut snn, mut snb, mut sbb, mut snt, mut sbt) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &(n, b, t) in &self.passes {
            snn += n * n;
            snb += n * b;
            sbb += b * b;
            snt += n * t;
            sbt += b * t;
        }
        let det = snn * sbb - snb * snb;
        if det > 1e-9 * snn * sbb && self.passes.len() >= 2 {
            let a = (snt * sbb - sbt * snb) / det;
            let b = (sbt * snn - snt * snb) / det;
            if a > 0.0 && b > 0.0 {
                self.per_object_s = a;
                self.per_byte_s = b;
                return;
            }
        }
        // Listing-bound passes (little read) say what a listed object costs.
        if let Some(a) = median(
            self.passes
                .iter()
                .filter(|&&(_, b, t)| b * DEFAULT_PER_BYTE < 0.2 * t)
                .map(|&(n, _, t)| t / n)
                .collect(),
        ) {
            self.per_object_s = a;
        }
        let a = self.per_object_s;
        if let Some(b) = median(
            self.passes
                .iter()
                .filter(|&&(n, b, t)| b > 0.0 && t > a * n)
                .map(|&(n, b, t)| (t - a * n) / b)
                .collect(),
        ) {
            self.per_byte_s = b;
        }
    }

    /// Seconds for a pass over `listed` objects that reads `bytes`.
    pub fn pass_seconds(&self, listed: u64, bytes: f64) -> f64 {
        self.per_object_s * listed as f64 + self.per_byte_s * bytes
    }

    /// Seconds the cluster is paused when the final pass reads `bytes`.
    pub fn paused_seconds(&self, listed: u64, bytes: f64) -> f64 {
        self.pause_s + self.export_s + self.pass_seconds(listed, bytes) + self.resume_s
    }
}

/// One pre-copy round, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub seconds: f64,
    /// Objects in the bucket when it was listed.
    pub objects: u64,
    pub objects_read: u64,
    pub bytes_read: u64,
    /// The paused phase predicted after this round.
    pub predicted_downtime_s: f64,
}

/// What to do after a pre-copy round.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Another live round.
    Precopy,
    /// Pause now.
    Pause,
    /// The budget cannot be met: why, for the operator.
    GiveUp(String),
}

/// The change rate a round measures: the `bytes_read` it found changed,
/// over the time the round before it (the last of `before`) took.
pub fn change_rate(before: &[Round], bytes_read: u64) -> Option<f64> {
    before
        .last()
        .filter(|prev| prev.seconds > 0.0)
        .map(|prev| bytes_read as f64 / prev.seconds)
}

/// The paused phase predicted if the cluster is paused after a round that
/// listed `objects` and took `seconds`, the bucket changing at `rate`
/// (else the history's rate, else not at all).
pub fn predict_after(model: &Model, objects: u64, seconds: f64, rate: Option<f64>) -> f64 {
    let rate = rate.or(model.change_bps).unwrap_or(0.0);
    let delta = rate * (seconds + model.pause_s);
    model.paused_seconds(objects, delta)
}

/// The rule that ends pre-copy. Without a budget, rounds go on while each
/// delta is at most half the one before and would still take a while to
/// copy. With one, they go on until the predicted paused phase fits, and
/// give up when the deltas stop shrinking or `max_rounds` is reached.
pub fn decide(model: &Model, rounds: &[Round], budget: Option<f64>, max_rounds: u32) -> Next {
    let Some(last) = rounds.last() else {
        return Next::Precopy;
    };
    let k = rounds.len() as u32;
    let predicted = last.predicted_downtime_s;
    let moved = last.objects_read > 0 || last.bytes_read > 0;
    if k == 1 {
        // The second round measures how fast the bucket changes.
        return if moved && max_rounds > 1 {
            Next::Precopy
        } else if budget.is_some_and(|b| predicted > b) {
            give_up(rounds, predicted, budget, "the first round")
        } else {
            Next::Pause
        };
    }
    let prev = &rounds[rounds.len() - 2];
    let shrinking = |factor: f64| (last.bytes_read as f64) <= factor * prev.bytes_read as f64;
    match budget {
        Some(b) if predicted <= b => Next::Pause,
        Some(_) if k >= max_rounds => give_up(rounds, predicted, budget, "the last allowed round"),
        Some(_) if !shrinking(0.8) => {
            give_up(rounds, predicted, budget, "the deltas stopped shrinking")
        }
        Some(_) => Next::Precopy,
        None if k >= max_rounds || !moved || !shrinking(0.5) => Next::Pause,
        None if model.per_byte_s * (last.bytes_read as f64) < SMALL_DELTA_S => Next::Pause,
        None => Next::Precopy,
    }
}

fn give_up(rounds: &[Round], predicted: f64, budget: Option<f64>, why: &str) -> Next {
    let deltas: Vec<String> = rounds
        .iter()
        .map(|r| crate::units::human_bytes(r.bytes_read))
        .collect();
    Next::GiveUp(format!(
        "after {} pre-copy round(s) the paused phase is predicted at {:.1}s, over the {:.1}s allowed ({why}; bytes changed per round: {})",
        rounds.len(),
        predicted,
        budget.unwrap_or(0.0),
        deltas.join(", ")
    ))
}

/// A plan of the rounds a backup would run, from the history and the delta
/// the first round would read (for `--dry-run`).
#[derive(Debug, Clone, Serialize)]
pub struct Forecast {
    pub precopy_rounds: u32,
    pub precopy_s: f64,
    pub predicted_downtime_s: f64,
    /// Whether `--max-downtime` would be met.
    pub fits: Option<bool>,
    pub model: Model,
    /// What the forecast could not know.
    pub notes: Vec<String>,
}

/// Simulates the rounds with the model, using the same stopping rule as a
/// real run.
pub fn forecast(
    model: &Model,
    listed: u64,
    first_bytes: u64,
    budget: Option<f64>,
    max_rounds: u32,
) -> Forecast {
    let mut notes = Vec::new();
    if model.samples == 0 {
        notes.push(
            "no past backups in this repository: listing and copy speeds are defaults".into(),
        );
    }
    if model.change_bps.is_none() {
        notes.push(
            "no past paused backup: the bucket's change rate is unknown and taken as zero".into(),
        );
    }
    let rate = model.change_bps.unwrap_or(0.0);
    let mut rounds: Vec<Round> = Vec::new();
    let mut bytes = first_bytes as f64;
    let fits;
    loop {
        let seconds = model.pass_seconds(listed, bytes);
        rounds.push(Round {
            round: rounds.len() as u32 + 1,
            seconds,
            objects: listed,
            objects_read: u64::from(bytes > 0.0),
            bytes_read: bytes as u64,
            predicted_downtime_s: predict_after(model, listed, seconds, Some(rate)),
        });
        match decide(model, &rounds, budget, max_rounds) {
            Next::Precopy => bytes = rate * seconds,
            Next::Pause => {
                fits = budget.map(|_| true);
                break;
            }
            Next::GiveUp(why) => {
                fits = Some(false);
                notes.push(why);
                break;
            }
        }
    }
    let last = rounds.last().expect("one round at least");
    Forecast {
        precopy_rounds: rounds.len() as u32,
        precopy_s: rounds.iter().map(|r| r.seconds).sum(),
        predicted_downtime_s: last.predicted_downtime_s,
        fits,
        model: model.clone(),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use haul_manifest::{Phase, RunKind, RunStats};

    use super::*;

    fn pass(name: &str, listed: u64, bytes: u64, seconds: f64) -> Phase {
        Phase {
            name: name.parse().unwrap(),
            seconds,
            objects: 0,
            bytes,
            listed,
            paused: false,
        }
    }

    fn run(phases: Vec<Phase>, change_bps: Option<f64>) -> RunRecord {
        RunRecord {
            kind: RunKind::Backup,
            snapshot: "0123456789abcdef".parse().expect("id"),
            started: chrono::Utc::now(),
            seconds: phases.iter().map(|p| p.seconds).sum(),
            phases,
            stats: RunStats {
                change_bps,
                ..RunStats::default()
            },
        }
    }

    #[test]
    fn fits_listing_and_copy_costs() {
        // a = 1e-4 s/object, b = 1e-8 s/byte, exactly.
        let runs = vec![
            run(vec![pass("copy", 10_000, 1_000_000_000, 11.0)], None),
            run(
                vec![
                    pass("precopy-1", 20_000, 0, 2.0),
                    pass("final-copy", 20_000, 100_000_000, 3.0),
                ],
                None,
            ),
        ];
        let m = Model::from_history(&runs, true);
        assert!((m.per_object_s - 1e-4).abs() < 1e-9, "{m:?}");
        assert!((m.per_byte_s - 1e-8).abs() < 1e-12, "{m:?}");
        assert_eq!(m.samples, 3);
        assert!((m.pass_seconds(1000, 1e9) - 10.1).abs() < 1e-6);
    }

    #[test]
    fn defaults_without_history_and_fallback_when_degenerate() {
        let m = Model::from_history(&[], true);
        assert_eq!(m.samples, 0);
        assert_eq!(m.pause_s, DEFAULT_PAUSE_S);
        // One pass cannot pin two costs: `a` stays default, `b` takes the rest.
        let mut m = Model::from_history(&[], false);
        m.observe(1000, 1_000_000_000, 10.05);
        assert_eq!(m.per_object_s, DEFAULT_PER_OBJECT);
        assert!((m.per_byte_s - 1e-8).abs() < 1e-12, "{m:?}");
        // A pass that read little is listing-bound: it prices a listed object.
        m.observe(100_000, 1_000_000, 2.0);
        assert!((m.per_object_s - 2e-5).abs() < 5e-7, "{m:?}");
    }

    fn round(k: u32, seconds: f64, bytes: u64, predicted: f64) -> Round {
        Round {
            round: k,
            seconds,
            objects: 1000,
            objects_read: u64::from(bytes > 0),
            bytes_read: bytes,
            predicted_downtime_s: predicted,
        }
    }

    #[test]
    fn rounds_go_on_while_the_delta_halves() {
        let m = Model::from_history(&[], true);
        let mut rounds = vec![round(1, 100.0, 10 << 30, 50.0)];
        assert_eq!(decide(&m, &rounds, None, 8), Next::Precopy);
        rounds.push(round(2, 20.0, 2 << 30, 12.0));
        assert_eq!(decide(&m, &rounds, None, 8), Next::Precopy);
        rounds.push(round(3, 15.0, 1500 << 20, 11.0));
        assert_eq!(decide(&m, &rounds, None, 8), Next::Pause, "not halving");
        // A quiet bucket pauses after the first round.
        assert_eq!(decide(&m, &[round(1, 1.0, 0, 11.0)], None, 8), Next::Pause);
    }

    #[test]
    fn a_budget_pauses_when_it_fits_and_gives_up_when_deltas_stop_shrinking() {
        let m = Model::from_history(&[], true);
        let rounds = vec![
            round(1, 100.0, 10 << 30, 90.0),
            round(2, 30.0, 3 << 30, 20.0),
        ];
        assert_eq!(decide(&m, &rounds, Some(25.0), 8), Next::Pause);
        assert_eq!(decide(&m, &rounds, Some(15.0), 8), Next::Precopy);
        let stuck = vec![
            round(1, 100.0, 1 << 30, 90.0),
            round(2, 100.0, 1 << 30, 90.0),
        ];
        assert!(
            matches!(decide(&m, &stuck, Some(15.0), 8), Next::GiveUp(w) if w.contains("stopped shrinking"))
        );
        assert!(matches!(
            decide(&m, &rounds, Some(15.0), 2),
            Next::GiveUp(_)
        ));
    }

    #[test]
    fn the_change_rate_comes_from_consecutive_rounds() {
        let rounds = [
            round(1, 100.0, 10 << 30, 0.0),
            round(2, 10.0, 100 << 20, 0.0),
        ];
        assert_eq!(
            change_rate(&rounds[..1], rounds[1].bytes_read),
            Some((100u64 << 20) as f64 / 100.0)
        );
        assert_eq!(change_rate(&[], rounds[0].bytes_read), None);
    }

    #[test]
    fn forecast_converges_and_reports_unknowns() {
        let mut m = Model::from_history(&[], true);
        m.change_bps = Some(1e6);
        let f = forecast(&m, 100_000, 50 << 30, None, 8);
        assert!(f.precopy_rounds >= 2, "{f:?}");
        // Paused: pause + listing 100k objects + what changes during the last round.
        assert!(
            f.predicted_downtime_s > DEFAULT_PAUSE_S + 5.0 && f.predicted_downtime_s < 60.0,
            "{f:?}"
        );
        let quiet = forecast(&Model::from_history(&[], true), 1000, 0, Some(5.0), 8);
        assert_eq!(quiet.fits, Some(false), "{quiet:?}");
        assert_eq!(quiet.notes.len(), 3, "{quiet:?}");
    }
}
