//! The binary owns the signals: SIGINT, SIGTERM, SIGHUP (an SSH session
//! dropping must not kill haul while a cluster is paused) and SIGQUIT all
//! cancel the running command, which stops cleanly, resuming a paused
//! cluster first. Their default action (dying at once) is replaced from the
//! start of every command.

use haul_snapshot::Cancel;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::{CliError, Result};

/// Installs the handlers; the returned [`Cancel`] fires, with the signal's
/// name, at the first of them.
pub fn install() -> Result<Cancel> {
    let cancel = Cancel::new();
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
    ] {
        let mut stream = signal(kind)
            .map_err(|e| CliError::Usage(format!("cannot install the {name} handler: {e}")))?;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                tracing::warn!("{name} received: stopping");
                cancel.cancel(name);
            }
        });
    }
    Ok(cancel)
}
