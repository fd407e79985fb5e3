//! Pachyderm's own record of the objects it wrote, read so that the paused
//! pass of a backup need not list the bucket.
//!
//! Pachyderm writes a chunk object in three steps (its `chunk` package):
//! insert a row into `storage.chunk_objects` (`uploaded = false`), PUT the
//! object `chunk/<hex chunk_id>.<gen as %016x>`, then set `uploaded =
//! true`. Objects are never rewritten: a new write of the same chunk gets a
//! new `gen`, hence a new key. So a row whose `uploaded = true` version a
//! transaction snapshot sees names an object that was in the bucket when
//! that snapshot was taken.
//!
//! The two-phase backup takes a [`Mark`] (the oldest transaction still
//! running, `txid_current_snapshot()`'s xmin) just before each live round
//! lists the bucket: every row version written by a transaction older than
//! the mark was committed before the listing began, so its object was
//! listed. While paused, [`uploaded_since`] reads, in the exported snapshot
//! the dump shows, the rows marked uploaded by a transaction at or after
//! the mark: the objects the live round may have missed. Copying exactly
//! those (and listing the keys outside `chunk/`) gives the snapshot every
//! object the paused database references, without listing the bucket.
//!
//! A row version's writer is its `xmin`, a 32-bit transaction id; it is
//! compared with the mark modulo 2³², counting back from the exported
//! snapshot's xmax (so rows frozen long ago may count as new: a few objects
//! copied twice, never one missed).

use tokio_postgres::Client;

use crate::config::PgConn;
use crate::error::{PgError, Result};
use crate::shape::query_err;

/// The table Pachyderm records its chunk objects in.
pub const CHUNK_TABLE: &str = "storage.chunk_objects";

/// The directory of the bucket its chunk objects are under.
pub const CHUNK_DIR: &str = "chunk/";

/// A moment just before a live pass listed the bucket: the oldest
/// transaction then running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub xmin: u64,
}

/// Transactions between a mark and the paused snapshot, at most: beyond,
/// 32-bit transaction ids cannot be compared.
const MAX_SPAN: u64 = 1 << 31;

/// Checks that the database is Pachyderm's: it has [`CHUNK_TABLE`].
pub async fn check(client: &Client, name: &str, conn: &PgConn) -> Result<()> {
    let found: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&CHUNK_TABLE])
        .await
        .map_err(query_err(
            name,
            conn,
            "looking for Pachyderm's chunk table".into(),
        ))?
        .get(0);
    if found {
        return Ok(());
    }
    Err(PgError::Journal {
        name: name.to_owned(),
        server: conn.server(),
        reason: format!(
            "no table {CHUNK_TABLE} in database {}: --final-pass pachyderm reads Pachyderm's record \
             of its chunk objects there (is this Pachyderm's database, 2.x?); use --final-pass list \
             to list the bucket instead",
            conn.dbname
        ),
    })
}

/// Takes a mark: call it before a live pass starts listing.
pub async fn mark(client: &Client, name: &str, conn: &PgConn) -> Result<Mark> {
    let text: String = client
        .query_one("SELECT txid_current_snapshot()::text", &[])
        .await
        .map_err(query_err(
            name,
            conn,
            "reading the transaction snapshot".into(),
        ))?
        .get(0);
    parse_mark(&text).ok_or_else(|| PgError::Journal {
        name: name.to_owned(),
        server: conn.server(),
        reason: format!("unexpected transaction snapshot {text:?} (expected xmin:xmax:xip)"),
    })
}

fn parse_mark(text: &str) -> Option<Mark> {
    let xmin = text.split(':').next()?.parse().ok()?;
    Some(Mark { xmin })
}

/// The keys (relative to the bucket, under [`CHUNK_DIR`]) of the chunk
/// objects marked uploaded, and not deleted, by a transaction at or after
/// `mark`, as the snapshot `client`'s open transaction holds shows them.
/// Unsorted.
pub async fn uploaded_since(
    client: &Client,
    name: &str,
    conn: &PgConn,
    mark: Mark,
) -> Result<Vec<String>> {
    let xmax: i64 = client
        .query_one("SELECT txid_snapshot_xmax(txid_current_snapshot())", &[])
        .await
        .map_err(query_err(
            name,
            conn,
            "reading the transaction snapshot".into(),
        ))?
        .get(0);
    let xmax = xmax as u64;
    let span = xmax.saturating_sub(mark.xmin);
    if span >= MAX_SPAN {
        return Err(PgError::Journal {
            name: name.to_owned(),
            server: conn.server(),
            reason: format!(
                "{span} transactions ran since the last live round began: too many to tell new \
                 rows of {CHUNK_TABLE} from old ones; use --final-pass list"
            ),
        });
    }
    let low = (xmax & 0xffff_ffff) as i64;
    let rows = client
        .query(
            "SELECT $3 || encode(chunk_id, 'hex') || '.' || lpad(to_hex(gen), 16, '0') \
             FROM storage.chunk_objects \
             WHERE uploaded AND NOT tombstone AND xmin::text::bigint > 2 \
               AND (($1::bigint - xmin::text::bigint + 4294967296) % 4294967296) <= $2::bigint",
            &[&low, &(span as i64), &CHUNK_DIR],
        )
        .await
        .map_err(query_err(
            name,
            conn,
            "reading the chunk objects written since the last live round".into(),
        ))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_the_snapshots_xmin() {
        assert_eq!(parse_mark("754:760:754,757"), Some(Mark { xmin: 754 }));
        assert_eq!(
            parse_mark("5000000000:5000000001:"),
            Some(Mark {
                xmin: 5_000_000_000
            })
        );
        assert_eq!(parse_mark("garbage"), None);
    }
}
