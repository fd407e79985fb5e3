//! What the operator sees: progress on stderr, results on stdout (text or JSON).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use haul_mover::Progress;
use haul_snapshot::ComponentOutcome;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Human size: 1.5 GiB.
pub use haul_snapshot::human_bytes as bytes;

/// Prints a result: JSON on stdout, or the text the closure writes.
pub fn emit<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) {
    let mut out = std::io::stdout().lock();
    let r = if json {
        serde_json::to_writer_pretty(&mut out, value)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out))
    } else {
        text(&mut out)
    };
    // A closed pipe (haul ... | head) is not an error worth a message.
    let _ = r;
}

/// Prints a procedure's events on stderr as `haul: ...`, also with `--json`
/// (a paused cluster concerns whoever is watching). A closed stderr (the
/// terminal went away) must not stop the command: write errors are ignored.
#[derive(Debug, Clone, Copy)]
pub struct PrintEvents;

impl haul_snapshot::EventSink for PrintEvents {
    fn emit(&self, event: haul_snapshot::Event) {
        let _ = writeln!(std::io::stderr(), "haul: {event}");
    }
}

/// One line for the operator on stderr. A closed stderr (the terminal or
/// SSH session went away) must not turn a finished command into a panic:
/// write errors are ignored, unlike `eprintln!`.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Prints a failed command's error and hint on stderr (write errors ignored).
pub fn say_error(chain: &str, hint: Option<&str>, components: &[ComponentOutcome]) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {chain}");
    for c in components {
        let _ = match &c.error {
            None => writeln!(err, "  {}: done: {}", c.component, c.done),
            Some(e) => writeln!(err, "  {}: FAILED: {e}; {}", c.component, c.done),
        };
    }
    if let Some(h) = hint {
        let _ = writeln!(err, "hint: {h}");
    }
}

/// With `--json`, a failed command's one document on stdout.
pub fn emit_error(chain: &str, hint: Option<&str>, exit_code: u8, components: &[ComponentOutcome]) {
    #[derive(Serialize)]
    struct Failed<'a> {
        error: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<&'a str>,
        exit_code: u8,
        /// A run that partly failed: what happened to each component.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        components: &'a [ComponentOutcome],
    }
    let failed = Failed {
        error: chain,
        hint,
        exit_code,
        components,
    };
    emit(true, &failed, |_| Ok(()));
}

/// Draws the engine's progress counters while a command runs.
#[derive(Debug)]
pub struct ProgressView {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressView {
    /// Starts drawing if stderr is a terminal and progress is wanted.
    pub fn start(progress: Arc<Progress>, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self {
                stop: None,
                task: None,
            };
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let mut phase = String::new();
            loop {
                let p = progress.phase();
                let total_bytes = progress.total_bytes.load(Ordering::Relaxed);
                let total_objects = progress.total_objects.load(Ordering::Relaxed);
                if p != phase {
                    phase = p.clone();
                    bar.reset();
                    let style = if total_bytes > 0 {
                        bar.set_length(total_bytes);
                        "{spinner} {prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
                    } else {
                        bar.unset_length();
                        "{spinner} {prefix:>8} {bytes} {bytes_per_sec} {elapsed} {msg}"
                    };
                    bar.set_style(
                        ProgressStyle::with_template(style)
                            .expect("valid template")
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(phase.clone());
                }
                bar.set_position(progress.bytes.load(Ordering::Relaxed));
                let done = progress.objects.load(Ordering::Relaxed);
                bar.set_message(if total_objects > 0 {
                    format!("{done}/{total_objects} objects")
                } else {
                    format!("{done} objects")
                });
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(150)) => {}
                }
            }
            bar.finish_and_clear();
        });
        Self {
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops drawing and clears the bar.
    pub async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
