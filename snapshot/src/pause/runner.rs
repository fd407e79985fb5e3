//! Running the cluster's tools (`kubectl`, `pachctl`): the one place a pause
//! touches the outside world, behind a trait so the guard's waits, retries
//! and timeouts can be tested against a fake cluster on tokio's paused clock.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::spec::Program;
use crate::error::{Result, SnapshotError};

/// How long one kubectl/pachctl call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs cluster tools.
pub trait Runner: Send + Sync + std::fmt::Debug {
    /// Runs `program args`: its stdout, or an error with its stderr.
    fn run<'a>(&'a self, program: Program, args: &'a [String]) -> BoxFuture<'a, Result<String>>;

    /// The same, blocking, for the guard's `Drop` (no runtime to rely on
    /// there). Bounded by `CALL_TIMEOUT` like `run`.
    fn run_blocking(&self, program: Program, args: &[String]) -> std::result::Result<(), String>;
}

/// The real tools, found on `PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Processes;

impl Runner for Processes {
    fn run<'a>(&'a self, program: Program, args: &'a [String]) -> BoxFuture<'a, Result<String>> {
        Box::pin(call(program, args))
    }

    fn run_blocking(&self, program: Program, args: &[String]) -> std::result::Result<(), String> {
        let mut child = std::process::Command::new(program.name())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            match child.try_wait().map_err(|e| e.to_string())? {
                Some(status) if status.success() => return Ok(()),
                Some(status) => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(format!("{} ({status})", err.trim()));
                }
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("no answer within {}s", CALL_TIMEOUT.as_secs()));
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// `program args...` as a shell would take it, for messages and for the
/// operator to copy.
pub fn command_line(program: Program, args: &[String]) -> String {
    std::iter::once(program.name().to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs a cluster tool; its stdout, or an error with its stderr.
async fn call(program: Program, args: &[String]) -> Result<String> {
    let line = command_line(program, args);
    tracing::info!("running {line}");
    let child = tokio::process::Command::new(program.name())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(CALL_TIMEOUT, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotError::ClusterToolMissing {
                tool: program.name(),
            });
        }
        Ok(Err(e)) => {
            return Err(SnapshotError::Pause {
                step: line,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(SnapshotError::Pause {
                step: line,
                reason: format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            });
        }
    };
    if !out.status.success() {
        return Err(SnapshotError::Pause {
            step: line,
            reason: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let args = vec![
            "--context".to_owned(),
            "prod cluster".to_owned(),
            "it's".to_owned(),
        ];
        assert_eq!(
            command_line(Program::Kubectl, &args),
            r"kubectl --context 'prod cluster' 'it'\''s'"
        );
    }
}
