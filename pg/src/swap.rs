//! Refreshing a database under a running application: the snapshot is
//! restored into a side database (`<name>_haul_next`) created like the live
//! one, and, while the application is paused, the two swap names by rename
//! (`<name>` → `<name>_haul_prev`, `<name>_haul_next` → `<name>`). Renames
//! are transactional in PostgreSQL: every swap on one server happens in one
//! transaction, so it happens whole or not at all.

use tokio_postgres::Client;

use crate::config::PgConn;
use crate::error::{PgError, Result};
use crate::reload::maintenance;
use crate::shape::{query_err, quote_ident};

/// PostgreSQL's longest identifier, in bytes.
const MAX_IDENT: usize = 63;

/// The side database a refresh restores into.
pub fn next_name(db: &str) -> String {
    format!("{db}_haul_next")
}

/// The name the live database keeps after a swap, until the next refresh.
pub fn prev_name(db: &str) -> String {
    format!("{db}_haul_prev")
}

/// The side and previous names of `db`, checked against PostgreSQL's limit.
pub fn names(name: &str, conn: &PgConn) -> Result<(String, String)> {
    let (next, prev) = (next_name(&conn.dbname), prev_name(&conn.dbname));
    if prev.len() > MAX_IDENT || next.len() > MAX_IDENT {
        return Err(PgError::Url {
            url: conn.display_url(),
            reason: format!(
                "database {name}: {next} would be longer than PostgreSQL's {MAX_IDENT}-byte names; \
                 a refresh needs room for the _haul_next and _haul_prev suffixes"
            ),
        });
    }
    Ok((next, prev))
}

/// A client on the server's maintenance database (to create, drop, rename).
pub async fn admin(conn: &PgConn, name: &str) -> Result<Client> {
    Ok(maintenance(conn, name).await?.0)
}

/// Whether database `db` exists on the server `c` is connected to.
pub async fn exists(c: &Client, name: &str, conn: &PgConn, db: &str) -> Result<bool> {
    Ok(
        c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(query_err(name, conn, format!("looking for database {db}")))?
            .is_some(),
    )
}

/// Drops `db` if it exists, ending its sessions first (PostgreSQL 13+).
pub async fn drop_if_exists(c: &Client, name: &str, conn: &PgConn, db: &str) -> Result<()> {
    c.batch_execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(db)
    ))
    .await
    .map_err(query_err(name, conn, format!("dropping database {db}")))
}

/// One database's swap: its live, side and previous names.
#[derive(Debug, Clone)]
pub struct Swap {
    pub name: String,
    pub live: String,
    pub next: String,
    pub prev: String,
}

/// Ends every session on `dbs` (the paused application's leftovers).
async fn end_sessions(c: &Client, name: &str, conn: &PgConn, dbs: &[&str]) -> Result<()> {
    let dbs: Vec<String> = dbs.iter().map(|s| (*s).to_owned()).collect();
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = ANY($1) AND pid <> pg_backend_pid()",
        &[&dbs],
    )
    .await
    .map_err(query_err(
        name,
        conn,
        "ending the sessions on the databases to swap".into(),
    ))?;
    Ok(())
}

/// Swaps every database of `swaps` (all on the server `c` is connected
/// to) in one transaction: `live` → `prev`, `next` → `live`.
pub async fn swap(c: &mut Client, conn: &PgConn, swaps: &[Swap]) -> Result<()> {
    rename_all(c, conn, swaps, |s| {
        vec![
            (s.live.clone(), s.prev.clone()),
            (s.next.clone(), s.live.clone()),
        ]
    })
    .await
}

/// Undoes [`swap`] (in one transaction): `live` → `next`, `prev` → `live`.
pub async fn swap_back(c: &mut Client, conn: &PgConn, swaps: &[Swap]) -> Result<()> {
    rename_all(c, conn, swaps, |s| {
        vec![
            (s.live.clone(), s.next.clone()),
            (s.prev.clone(), s.live.clone()),
        ]
    })
    .await
}

async fn rename_all(
    c: &mut Client,
    conn: &PgConn,
    swaps: &[Swap],
    renames: impl Fn(&Swap) -> Vec<(String, String)>,
) -> Result<()> {
    let name = swaps.first().map_or("", |s| s.name.as_str());
    let all: Vec<&str> = swaps
        .iter()
        .flat_map(|s| [s.live.as_str(), s.next.as_str(), s.prev.as_str()])
        .collect();
    // A session that slipped in between ending the sessions and renaming
    // makes the rename fail ("being accessed by other users"): try again.
    let mut last = None;
    for _ in 0..3 {
        end_sessions(c, name, conn, &all).await?;
        let tx =
            c.transaction()
                .await
                .map_err(query_err(name, conn, "starting the swap".into()))?;
        let mut failed = None;
        for s in swaps {
            for (from, to) in renames(s) {
                let sql = format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote_ident(&from),
                    quote_ident(&to)
                );
                if let Err(e) = tx.batch_execute(&sql).await {
                    failed = Some((sql, e));
                    break;
                }
            }
            if failed.is_some() {
                break;
            }
        }
        match failed {
            None => {
                return tx.commit().await.map_err(query_err(
                    name,
                    conn,
                    "committing the swap".into(),
                ));
            }
            Some((sql, e)) => {
                let _ = tx.rollback().await;
                last = Some((sql, e));
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    let (sql, e) = last.expect("three attempts");
    Err(query_err(name, conn, format!("swapping databases ({sql})"))(e))
}
