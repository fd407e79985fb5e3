//! How a command ends: its outcome, or an error with a hint and an exit code.

use haul_mover::{MoverError, error_chain};
use haul_pg::PgError;
use haul_snapshot::SnapshotError;

/// Exit code for damaged data (see the crate doc).
pub const EXIT_DAMAGED: u8 = 3;

/// Exit code for a repository key that is missing or wrong.
pub const EXIT_KEY: u8 = 5;

/// How a command ended when it did not fail outright.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// It ran to the end but found damaged data.
    Damaged,
}

/// Any error of a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Mover(#[from] MoverError),
    #[error(transparent)]
    Pg(Box<PgError>),
    #[error("{0}")]
    Usage(String),
}

impl From<PgError> for CliError {
    fn from(e: PgError) -> Self {
        Self::Pg(Box::new(e))
    }
}

impl CliError {
    pub fn chain(&self) -> String {
        error_chain(self)
    }

    /// Each component's outcome, when the run partly failed.
    pub fn components(&self) -> &[haul_snapshot::ComponentOutcome] {
        match self {
            Self::Snapshot(SnapshotError::Partial { outcomes, .. }) => outcomes,
            _ => &[],
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Snapshot(e) => e.hint(),
            Self::Mover(e) => e.hint(),
            Self::Pg(e) => e.hint(),
            Self::Usage(_) => Some("see `haul --help`".into()),
        }
    }

    /// The exit code (see main's doc).
    pub fn exit_code(&self) -> u8 {
        /// The code a snapshot error asks for itself, through a partial run
        /// to its first failure.
        fn own(e: &SnapshotError) -> Option<u8> {
            match e {
                SnapshotError::ResumeFailed { .. } => Some(4),
                SnapshotError::Interrupted { signal } => Some(128 + signal_number(signal)),
                SnapshotError::Partial { source, .. } => own(source),
                _ => None,
            }
        }
        let mover = match self {
            Self::Snapshot(e) => e.mover(),
            Self::Mover(m) => Some(m),
            _ => None,
        };
        if let Self::Snapshot(e) = self
            && let Some(code) = own(e)
        {
            code
        } else if matches!(mover, Some(MoverError::Key { .. })) {
            EXIT_KEY
        } else if self.is_damage() {
            EXIT_DAMAGED
        } else {
            1
        }
    }

    pub fn is_damage(&self) -> bool {
        let m = match self {
            Self::Snapshot(e) => match e.mover() {
                Some(m) => m,
                None => return false,
            },
            Self::Mover(m) => m,
            _ => return false,
        };
        matches!(
            m,
            MoverError::Corrupt { .. } | MoverError::ObjectsFailed { .. }
        )
    }
}

pub type Result<T> = std::result::Result<T, CliError>;

/// The number of a signal haul handles (for the `128 + n` exit code).
fn signal_number(name: &str) -> u8 {
    match name {
        "SIGHUP" => 1,
        "SIGINT" => 2,
        "SIGQUIT" => 3,
        _ => 15,
    }
}
