//! Holding dumps back while a cluster is paused.
//!
//! A two-phase backup starts `pg_dump --snapshot` while the cluster is
//! paused: pg_dump then takes its table locks before the application can
//! run DDL (a migration at start-up), so the dump shows the exported
//! snapshot whatever happens after the resume. Its data, though, can wait:
//! until the gate opens, a dump reads pg_dump's first bytes and no more
//! (pg_dump's custom format writes nothing before it holds every table's
//! lock), and counts no rows, so the final bucket pass has the machine to
//! itself while the cluster is down.

use std::io::Read;

use tokio::sync::watch;

/// Opens the gate; dropping it opens it too, so nothing waits forever.
#[derive(Debug)]
pub struct Gate {
    tx: watch::Sender<bool>,
}

/// The waiting side, handed to each dump.
#[derive(Debug, Clone)]
pub struct GateWait {
    rx: watch::Receiver<bool>,
}

impl Gate {
    /// A closed gate and its waiting side.
    pub fn closed() -> (Self, GateWait) {
        let (tx, rx) = watch::channel(false);
        (Self { tx }, GateWait { rx })
    }

    pub fn open(&self) {
        self.tx.send_replace(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

impl GateWait {
    /// A gate that never held anything back (a backup that pauses nothing).
    pub fn open() -> Self {
        let (gate, wait) = Gate::closed();
        drop(gate);
        wait
    }

    /// Waits until the gate opens (or its opener is gone).
    pub async fn wait(&mut self) {
        // An error means the opener was dropped: open.
        let _ = self.rx.wait_for(|open| *open).await;
    }
}

/// Reads pg_dump's first bytes (up to 64 KiB), then waits for the gate,
/// unless the stream ended at once (pg_dump failed: its exit status says
/// why, without waiting). Returns the stream whole again.
pub(crate) async fn first_bytes_then_wait(
    mut stdout: std::fs::File,
    mut gate: GateWait,
) -> std::io::Result<impl Read + Send + 'static> {
    let (first, stdout) = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 64 << 10];
        let n = loop {
            match stdout.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        }?;
        buf.truncate(n);
        Ok::<_, std::io::Error>((buf, stdout))
    })
    .await
    .map_err(std::io::Error::other)??;
    if !first.is_empty() {
        gate.wait().await;
    }
    Ok(std::io::Cursor::new(first).chain(stdout))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn pipe() -> (std::fs::File, std::fs::File) {
        let (r, w) = std::io::pipe().unwrap();
        (
            std::fs::File::from(std::os::fd::OwnedFd::from(r)),
            std::fs::File::from(std::os::fd::OwnedFd::from(w)),
        )
    }

    #[tokio::test]
    async fn the_first_bytes_pass_then_the_gate_holds_until_opened() {
        let (r, mut w) = pipe();
        w.write_all(b"PGDMP").unwrap();
        let (gate, wait) = Gate::closed();
        let held = tokio::spawn(first_bytes_then_wait(r, wait));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!held.is_finished(), "held while closed");
        gate.open();
        let mut stream = held.await.unwrap().unwrap();
        w.write_all(b" rest").unwrap();
        drop(w);
        let mut all = String::new();
        stream.read_to_string(&mut all).unwrap();
        assert_eq!(all, "PGDMP rest");
    }

    #[tokio::test]
    async fn an_empty_stream_or_a_dropped_opener_does_not_wait() {
        let (r, w) = pipe();
        drop(w);
        let (_gate, wait) = Gate::closed();
        let mut s = first_bytes_then_wait(r, wait).await.unwrap();
        assert_eq!(s.read(&mut [0u8; 4]).unwrap(), 0);
        let (gate, mut wait) = Gate::closed();
        drop(gate);
        wait.wait().await;
        GateWait::open().wait().await;
    }
}
