//! Backing up one database: check it, then stream pg_dump into the
//! repository while its rows are counted in the same MVCC snapshot.
//!
//! A REPEATABLE READ transaction exports its snapshot
//! (`pg_export_snapshot()`), pg_dump adopts it (`--snapshot`), and the same
//! transaction counts every table while pg_dump runs; it stays open until
//! pg_dump exits, as the exported snapshot requires.
//!
//! The two steps are apart ([`Prepared::export`], then [`Exported::dump`])
//! so that a paused cluster need only wait for the export: the moment the
//! snapshot is exported is the moment the dump shows, however long pg_dump
//! runs after the cluster has resumed.

use haul_manifest::chunklist::ListEntry;
use haul_manifest::{DatabaseRecord, DatabaseShape};
use haul_mover::Repository;
use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::config::PgConn;
use crate::conn;
use crate::error::{PgError, Result};
use crate::gate::{self, GateWait};
use crate::limits::DbLimits;
use crate::process::Running;
use crate::shape;
use crate::tools::{PgVersion, Tool};
use crate::{stream, tables};

/// The pg_dump options that shape the archive, recorded in the snapshot.
/// Custom format: pg_restore can read it from a pipe. No compression:
/// compressed output would defeat deduplication; zstd runs on each chunk.
pub const DUMP_OPTIONS: &[&str] = &["--format=custom", "--compress=0"];

/// A database to back up: the operator's name for it and where it is.
#[derive(Debug, Clone)]
pub struct DbSource {
    pub name: String,
    pub conn: PgConn,
}

/// A database that answered, with a pg_dump able to dump it.
#[derive(Debug)]
pub struct Prepared {
    pub source: DbSource,
    client: Client,
    pub server: PgVersion,
    /// `SHOW server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    pub tool: Tool,
    /// Owner, encoding, locale, settings, privileges: for a restore to
    /// create the database like this one.
    shape: DatabaseShape,
}

/// One database of a backup, as `haul backup --json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct DbBackupReport {
    pub name: String,
    pub database: String,
    pub url: String,
    pub server_version: String,
    pub pg_dump_version: String,
    /// Length of the dump.
    pub bytes: u64,
    /// Bytes written to the repository (compressed; 0 for chunks it had).
    pub bytes_uploaded: u64,
    pub chunks: u64,
    pub chunks_uploaded: u64,
    /// Tables counted, and their rows in total.
    pub tables: u64,
    pub rows: u64,
    pub duration_s: f64,
}

/// What a dry run shows about a database.
#[derive(Debug, Clone, Serialize)]
pub struct DbPreview {
    pub name: String,
    pub database: String,
    pub url: String,
    pub server_version: String,
    pub pg_dump: String,
    pub tables: u64,
    /// `pg_database_size`: on-disk size, indexes included (the dump is smaller).
    pub size: u64,
}

/// Server version: `server_version_num` decides, `server_version` is shown.
pub async fn server_version(c: &Client, name: &str, conn: &PgConn) -> Result<(PgVersion, String)> {
    let row = c
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await
        .map_err(|source| PgError::Query {
            name: name.to_owned(),
            server: conn.server(),
            what: "reading the server version".into(),
            source,
        })?;
    let text: String = row.get(1);
    Ok((
        PgVersion::from_num(row.get::<_, i32>(0) as u32, &text),
        text,
    ))
}

/// Connects, reads the server version and checks pg_dump against it.
pub async fn prepare(source: DbSource, tool: &Tool) -> Result<Prepared> {
    let client = conn::connect(&source.conn, &source.name).await?;
    let (server, server_version) = server_version(&client, &source.name, &source.conn).await?;
    tool.check_not_older(&server, "the server", &source.name)?;
    let shape = shape::read(&client, &source.name, &source.conn, &source.conn.dbname).await?;
    Ok(Prepared {
        source,
        client,
        server,
        server_version,
        tool: tool.clone(),
        shape,
    })
}

impl Prepared {
    pub async fn preview(&self) -> Result<DbPreview> {
        let (name, conn) = (&self.source.name, &self.source.conn);
        let t = tables::list(&self.client, name, &conn.server()).await?;
        let size: i64 = self
            .client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(|source| PgError::Query {
                name: name.clone(),
                server: conn.server(),
                what: "reading the database size".into(),
                source,
            })?
            .get(0);
        Ok(DbPreview {
            name: name.clone(),
            database: conn.dbname.clone(),
            url: conn.display_url(),
            server_version: self.server_version.clone(),
            pg_dump: format!("{} {}", self.tool.path.display(), self.tool.version.text),
            tables: t.len() as u64,
            size: size as u64,
        })
    }

    /// Checks that this is Pachyderm's database (see [`crate::journal`]).
    pub async fn journal_check(&self) -> Result<()> {
        crate::journal::check(&self.client, &self.source.name, &self.source.conn).await
    }

    /// A mark to take just before a live pass lists the bucket (see
    /// [`crate::journal`]).
    pub async fn journal_mark(&self) -> Result<crate::journal::Mark> {
        crate::journal::mark(&self.client, &self.source.name, &self.source.conn).await
    }

    /// Fixes the moment the dump will show: opens a read-only REPEATABLE
    /// READ transaction and exports its snapshot. Takes milliseconds.
    pub async fn export(self) -> Result<Exported> {
        let (name, server) = (self.source.name.clone(), self.source.conn.server());
        let q = |what: &'static str| {
            let (name, server) = (name.clone(), server.clone());
            move |source| PgError::Query {
                name,
                server,
                what: what.to_owned(),
                source,
            }
        };
        // A plain BEGIN on the client (not a borrowed Transaction) so the
        // exported snapshot can outlive this call, held by `Exported`.
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(q("starting the snapshot transaction"))?;
        let snapshot: String = self
            .client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(q("exporting the snapshot"))?
            .get(0);
        Ok(Exported {
            prepared: self,
            snapshot,
            exported: Instant::now(),
        })
    }

    /// Exports the snapshot and dumps at once (a backup that pauses nothing).
    pub async fn dump(
        self,
        repo: &Repository,
        limits: &DbLimits,
    ) -> Result<(DatabaseRecord, DbBackupReport)> {
        self.export()
            .await?
            .dump(repo, limits, GateWait::open())
            .await
    }
}

/// A database whose snapshot is exported: the transaction holding it stays
/// open until [`Exported::dump`] has finished.
#[derive(Debug)]
pub struct Exported {
    prepared: Prepared,
    /// The id pg_dump imports (`--snapshot`).
    snapshot: String,
    /// When the snapshot was exported: the dump's duration counts from here.
    exported: Instant,
}

impl Exported {
    /// The operator's name for the database.
    pub fn name(&self) -> &str {
        &self.prepared.source.name
    }

    /// The chunk objects uploaded since `mark`, as the exported snapshot
    /// shows them (see [`crate::journal::uploaded_since`]).
    pub async fn uploaded_since(&self, mark: crate::journal::Mark) -> Result<Vec<String>> {
        let p = &self.prepared;
        crate::journal::uploaded_since(&p.client, &p.source.name, &p.source.conn, mark).await
    }

    /// Dumps into the repository, as of the exported snapshot, and counts
    /// every table in it. Returns the record for the snapshot root; nothing
    /// is committed here. pg_dump starts at once; its data and the row
    /// counts wait for `gate` (see [`crate::gate`]).
    pub async fn dump(
        self,
        repo: &Repository,
        limits: &DbLimits,
        gate: GateWait,
    ) -> Result<(DatabaseRecord, DbBackupReport)> {
        let t0 = self.exported;
        let Exported {
            prepared: this,
            snapshot,
            ..
        } = self;
        let name = this.source.name.clone();
        let conn = this.source.conn.clone();
        let server = conn.server();
        let q = |what: &str| {
            let (name, server, what) = (name.clone(), server.clone(), what.to_owned());
            move |source| PgError::Query {
                name,
                server,
                what,
                source,
            }
        };
        let mut args: Vec<String> = DUMP_OPTIONS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--snapshot={snapshot}"));
        // Never prompt for a password on a terminal: fail instead.
        args.push("--no-password".into());
        let cmd = conn.command(&this.tool.path, &args);
        let what = format!("pg_dump of {name}");
        let (mut run, stdout) =
            Running::spawn_reading(cmd, "pg_dump", &name, conn.password.clone(), &what)?;

        let storing = async {
            let held = gate::first_bytes_then_wait(stdout, gate.clone())
                .await
                .map_err(|e| PgError::Stream {
                    what: what.clone(),
                    reason: format!("reading its output failed: {e}"),
                })?;
            stream::store(repo, held, limits, &what).await
        };
        let counting = async {
            gate.clone().wait().await;
            let list = tables::list(&this.client, &name, &server).await?;
            tables::count(&this.client, &list, &name, &server).await
        };
        // The exit status decides as soon as it is known: a killed pg_dump
        // leaves a truncated stream that looks complete.
        let exited = async {
            let stderr = run.finish().await?;
            if !stderr.trim().is_empty() {
                tracing::info!("pg_dump of {name}: {}", stderr.trim());
            }
            Ok::<_, PgError>(())
        };
        let (mut stored, (), counts) = futures::try_join!(storing, exited, counting)?;
        // The chunk list goes into the repository as pieces, not into the root.
        let entries: Vec<ListEntry> = stored
            .chunks
            .iter()
            .zip(&stored.lens)
            .map(|(&id, &len)| ListEntry { id, len })
            .collect();
        let (chunk_lists, list_uploaded) = repo.put_chunk_list(&entries).await?;
        if list_uploaded > 0 {
            stored.bytes_uploaded += list_uploaded;
        }
        this.client
            .batch_execute("COMMIT")
            .await
            .map_err(q("ending the snapshot transaction"))?;

        let record = DatabaseRecord {
            name: name.clone(),
            database: conn.dbname.clone(),
            server_version: this.server_version.clone(),
            format: "custom".into(),
            options: DUMP_OPTIONS.iter().map(|s| (*s).to_owned()).collect(),
            chunks: Vec::new(),
            chunk_lists,
            chunk_count: stored.chunks.len() as u64,
            bytes: stored.bytes,
            hash: stored.hash,
            tables: counts,
            url: conn.display_url(),
            pg_dump_version: this.tool.version.text.clone(),
            shape: Some(this.shape.clone()),
        };
        let report = DbBackupReport {
            name,
            database: conn.dbname.clone(),
            url: conn.display_url(),
            server_version: this.server_version.clone(),
            pg_dump_version: this.tool.version.text.clone(),
            bytes: stored.bytes,
            bytes_uploaded: stored.bytes_uploaded,
            chunks: stored.chunks.len() as u64,
            chunks_uploaded: stored.chunks_uploaded,
            tables: record.tables.len() as u64,
            rows: record.tables.values().sum(),
            duration_s: t0.elapsed().as_secs_f64(),
        };
        Ok((record, report))
    }
}
