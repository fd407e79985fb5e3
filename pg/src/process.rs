//! Running a client program: its stderr kept (the tail, secrets removed) for
//! the error message, its exit judged.

use std::process::ExitStatus;

use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use crate::config::Secret;
use crate::error::PgError;

/// A running client program whose stderr is being collected.
#[derive(Debug)]
pub struct Running {
    pub tool: &'static str,
    pub name: String,
    pub child: tokio::process::Child,
    stderr: Option<JoinHandle<String>>,
}

/// Bytes of stderr kept for messages: the end, where the reason is.
const STDERR_TAIL: usize = 4096;

impl Running {
    pub fn spawn(
        mut cmd: tokio::process::Command,
        tool: &'static str,
        name: &str,
        secret: Option<Secret>,
    ) -> Result<Self, PgError> {
        cmd.stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| PgError::ToolSpawn {
            tool,
            name: name.to_owned(),
            source,
        })?;
        let stderr = child.stderr.take().map(|mut err| {
            tokio::spawn(async move {
                let mut tail: Vec<u8> = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                let start = tail.len().saturating_sub(STDERR_TAIL);
                let text = String::from_utf8_lossy(&tail[start..]).into_owned();
                match &secret {
                    Some(s) if !s.expose().is_empty() => text.replace(s.expose(), "***"),
                    _ => text,
                }
            })
        });
        Ok(Self {
            tool,
            name: name.to_owned(),
            child,
            stderr,
        })
    }

    /// Spawns a program whose stdout haul reads, as a blocking `File` (the
    /// chunker reads it on a blocking thread). `what` names the stream in errors.
    pub fn spawn_reading(
        mut cmd: tokio::process::Command,
        tool: &'static str,
        name: &str,
        secret: Option<Secret>,
        what: &str,
    ) -> Result<(Self, std::fs::File), PgError> {
        cmd.stdout(std::process::Stdio::piped());
        let mut run = Self::spawn(cmd, tool, name, secret)?;
        let stdout = run
            .child
            .stdout
            .take()
            .and_then(|s| s.into_owned_fd().ok())
            .map(std::fs::File::from)
            .ok_or_else(|| PgError::Stream {
                what: what.to_owned(),
                reason: "its output could not be read".into(),
            })?;
        Ok((run, stdout))
    }

    /// Spawns a program that haul feeds on stdin; its stdout is discarded.
    pub fn spawn_writing(
        mut cmd: tokio::process::Command,
        tool: &'static str,
        name: &str,
        secret: Option<Secret>,
        what: &str,
    ) -> Result<(Self, tokio::process::ChildStdin), PgError> {
        cmd.stdin(std::process::Stdio::piped());
        cmd.stdout(std::process::Stdio::null());
        let mut run = Self::spawn(cmd, tool, name, secret)?;
        let stdin = run.child.stdin.take().ok_or_else(|| PgError::Stream {
            what: what.to_owned(),
            reason: "its input could not be opened".into(),
        })?;
        Ok((run, stdin))
    }

    /// What the program wrote on stderr (waits briefly for it to be closed).
    pub async fn stderr(&mut self) -> String {
        match self.stderr.take() {
            Some(h) => tokio::time::timeout(std::time::Duration::from_secs(5), h)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Ends a program whose input could not be fed. When it stopped reading
    /// (a write failed), it exited on its own and its error says why; when
    /// our side failed (a damaged chunk...), it is killed before it sees the
    /// end of its input, so it never acts on a partial stream.
    pub async fn abandon(&mut self, stdin: tokio::process::ChildStdin, fed: PgError) -> PgError {
        let stopped_reading = matches!(fed, PgError::StreamWrite { .. });
        if !stopped_reading {
            let _ = self.child.start_kill();
        }
        drop(stdin);
        match tokio::time::timeout(std::time::Duration::from_secs(30), self.finish()).await {
            Ok(Err(own)) if stopped_reading => own,
            _ => fed,
        }
    }

    /// Waits for the exit; anything but success is an error with the stderr tail.
    pub async fn finish(&mut self) -> Result<String, PgError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|source| PgError::ToolSpawn {
                tool: self.tool,
                name: self.name.clone(),
                source,
            })?;
        let stderr = self.stderr().await;
        if status.success() {
            Ok(stderr)
        } else {
            Err(PgError::ToolFailed {
                tool: self.tool,
                name: self.name.clone(),
                status: describe(status),
                stderr,
            })
        }
    }
}

/// `exit code 1`, `killed by signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(9) => "killed by signal 9 (SIGKILL)".into(),
        Some(15) => "killed by signal 15 (SIGTERM)".into(),
        Some(s) => format!("killed by signal {s}"),
        None => status.to_string(),
    }
}
