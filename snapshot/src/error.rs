use haul_mover::MoverError;

/// What can go wrong in a procedure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error(transparent)]
    Mover(#[from] MoverError),

    #[error("nothing to back up: give --source (a bucket)")]
    NothingToBackUp,

    #[error("snapshot {id} has no bucket to restore")]
    NoBucket { id: String },
}

impl SnapshotError {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Mover(e) => e.hint(),
            _ => None,
        }
    }
}
