use crate::id::ChunkId;

/// Why bytes read from a repository are not what the format says they should be.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("chunk {id} is corrupt: {reason}")]
    CorruptChunk { id: ChunkId, reason: String },
    #[error(
        "chunk {id} does not match its hash (found {actual}): the repository holds damaged data"
    )]
    HashMismatch { id: ChunkId, actual: ChunkId },
    #[error("`{what}` is not valid: {reason}")]
    Invalid { what: String, reason: String },
    #[error(
        "{what} uses format version {found}, newer than this haul understands ({supported}); upgrade haul"
    )]
    TooNew {
        what: String,
        found: u32,
        supported: u32,
    },
    #[error("{what} is refused: {reason}")]
    Unauthentic { what: String, reason: String },
    #[error("cannot parse {what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}
