//! Roles and tablespaces: `pg_dumpall --globals-only` at backup (plain SQL,
//! chunked like a dump), replayed through psql at restore.
//!
//! pg_dumpall's output is made to be replayed on a server that may already
//! have some of the roles: `CREATE ROLE` then fails ("already exists") and
//! the following `ALTER ROLE` sets its attributes. So psql runs without
//! ON_ERROR_STOP and haul reports the errors it printed.

use std::time::Instant;

use haul_manifest::GlobalsRecord;
use haul_mover::Repository;
use serde::Serialize;

use crate::config::PgConn;
use crate::conn;
use crate::dump::server_version;
use crate::error::Result;
use crate::limits::DbLimits;
use crate::process::Running;
use crate::stream;
use crate::tools::{self, Tool};

/// What `haul backup --json` reports about the roles.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalsBackupReport {
    pub url: String,
    pub server_version: String,
    pub bytes: u64,
    pub bytes_uploaded: u64,
    pub chunks: u64,
    pub duration_s: f64,
}

/// What `haul restore --json` reports about the roles.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalsRestoreReport {
    pub url: String,
    pub bytes: u64,
    /// Statements psql reported as failed (mostly roles that already exist).
    pub errors: Vec<String>,
    pub duration_s: f64,
}

/// The name used for the roles in messages.
const NAME: &str = "roles (--db-globals)";

/// A server checked for a globals capture: connects and finds a pg_dumpall
/// at least as new as the server.
#[derive(Debug)]
pub struct PreparedGlobals {
    conn: PgConn,
    server_version: String,
    tool: Tool,
}

pub async fn prepare(conn: PgConn) -> Result<PreparedGlobals> {
    let client = conn::connect(&conn, NAME).await?;
    let (server, server_version) = server_version(&client, NAME, &conn).await?;
    let tool = tools::find("pg_dumpall").await?;
    tool.check_not_older(&server, "the server", NAME)?;
    Ok(PreparedGlobals {
        conn,
        server_version,
        tool,
    })
}

impl PreparedGlobals {
    pub async fn dump(
        self,
        repo: &Repository,
        limits: &DbLimits,
    ) -> Result<(GlobalsRecord, GlobalsBackupReport)> {
        let t0 = Instant::now();
        let args = vec![
            "--globals-only".to_owned(),
            "--no-password".to_owned(),
            format!("--database={}", self.conn.dbname),
        ];
        let cmd = self.conn.command(&self.tool.path, &args);
        let (mut run, stdout) = Running::spawn_reading(
            cmd,
            "pg_dumpall",
            NAME,
            self.conn.password.clone(),
            "pg_dumpall",
        )?;
        let exited = async { run.finish().await.map(|_| ()) };
        let (stored, ()) =
            futures::try_join!(stream::store(repo, stdout, limits, "pg_dumpall"), exited)?;
        let url = self.conn.display_url();
        let record = GlobalsRecord {
            url: url.clone(),
            server_version: self.server_version.clone(),
            pg_dumpall_version: self.tool.version.text.clone(),
            chunks: stored.chunks.clone(),
            bytes: stored.bytes,
            hash: stored.hash,
        };
        let report = GlobalsBackupReport {
            url,
            server_version: self.server_version,
            bytes: stored.bytes,
            bytes_uploaded: stored.bytes_uploaded,
            chunks: stored.chunks.len() as u64,
            duration_s: t0.elapsed().as_secs_f64(),
        };
        Ok((record, report))
    }
}

/// A server the roles will be replayed on, with a psql to do it.
#[derive(Debug)]
pub struct GlobalsTarget {
    pub conn: PgConn,
    tool: Tool,
}

pub async fn plan_restore(conn: PgConn) -> Result<GlobalsTarget> {
    // Connecting first reports an unreachable server or a wrong password
    // before anything is written; plain SQL needs no particular psql version.
    conn::connect(&conn, NAME).await?;
    let tool = tools::find("psql").await?;
    Ok(GlobalsTarget { conn, tool })
}

impl GlobalsTarget {
    pub async fn apply(
        &self,
        repo: &Repository,
        record: &GlobalsRecord,
        limits: &DbLimits,
    ) -> Result<GlobalsRestoreReport> {
        let t0 = Instant::now();
        let args = vec![
            "--no-psqlrc".to_owned(),
            "--quiet".to_owned(),
            "--no-password".to_owned(),
            "--file=-".to_owned(),
        ];
        let cmd = self.conn.command(&self.tool.path, &args);
        let (mut run, mut stdin) =
            Running::spawn_writing(cmd, "psql", NAME, self.conn.password.clone(), "psql")?;
        let fed = stream::feed(
            repo,
            &record.chunks,
            record.bytes,
            record.hash,
            limits,
            &mut stdin,
            "the roles' SQL into psql",
        )
        .await;
        if let Err(e) = fed {
            return Err(run.abandon(stdin, e).await);
        }
        drop(stdin);
        let stderr = run.finish().await?;
        let errors = stderr
            .lines()
            .filter(|l| l.contains("ERROR:"))
            .map(|l| {
                l.split_once("ERROR:")
                    .map_or(l, |(_, m)| m)
                    .trim()
                    .to_owned()
            })
            .collect();
        Ok(GlobalsRestoreReport {
            url: self.conn.display_url(),
            bytes: record.bytes,
            errors,
            duration_s: t0.elapsed().as_secs_f64(),
        })
    }
}
