//! Roles and tablespaces: `pg_dumpall --globals-only` at backup (plain SQL,
//! chunked like a dump), replayed statement by statement over the
//! PostgreSQL protocol at restore: never through psql, which would run a
//! `\! command` a forged record holds (see `statements`).
//!
//! pg_dumpall's output is made to be replayed on a server that may already
//! have some of the roles: `CREATE ROLE` then fails ("already exists") and
//! the following `ALTER ROLE` sets its attributes. So a failed statement
//! does not stop the replay, and haul reports the errors.

use std::time::Instant;

use haul_manifest::GlobalsRecord;
use haul_mover::Repository;
use serde::Serialize;

use crate::config::PgConn;
use crate::conn;
use crate::dump::server_version;
use crate::error::{PgError, Result};
use crate::limits::DbLimits;
use crate::process::Running;
use crate::statements;
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
    /// Statements that failed (mostly roles that already exist).
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
    role_passwords: bool,
}

/// `role_passwords: false` leaves the password hashes out of the capture.
pub async fn prepare(conn: PgConn, role_passwords: bool) -> Result<PreparedGlobals> {
    let client = conn::connect(&conn, NAME).await?;
    let (server, server_version) = server_version(&client, NAME, &conn).await?;
    let tool = tools::find("pg_dumpall").await?;
    tool.check_not_older(&server, "the server", NAME)?;
    Ok(PreparedGlobals {
        conn,
        server_version,
        tool,
        role_passwords,
    })
}

impl PreparedGlobals {
    pub async fn dump(
        self,
        repo: &Repository,
        limits: &DbLimits,
    ) -> Result<(GlobalsRecord, GlobalsBackupReport)> {
        let t0 = Instant::now();
        let mut args = vec![
            "--globals-only".to_owned(),
            "--no-password".to_owned(),
            format!("--database={}", self.conn.dbname),
        ];
        if !self.role_passwords {
            args.push("--no-role-passwords".to_owned());
        }
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

/// A server the roles will be replayed on.
#[derive(Debug)]
pub struct GlobalsTarget {
    pub conn: PgConn,
}

/// The most roles SQL haul replays: pg_dumpall's globals are kilobytes; a
/// record claiming more is damaged or forged.
const MAX_ROLES_SQL: u64 = 64 << 20;

pub async fn plan_restore(conn: PgConn) -> Result<GlobalsTarget> {
    // Connecting first reports an unreachable server or a wrong password
    // before anything is written.
    conn::connect(&conn, NAME).await?;
    Ok(GlobalsTarget { conn })
}

impl GlobalsTarget {
    pub async fn apply(
        &self,
        repo: &Repository,
        record: &GlobalsRecord,
        limits: &DbLimits,
    ) -> Result<GlobalsRestoreReport> {
        let t0 = Instant::now();
        let refuse = |reason: String| PgError::Stream {
            what: format!("the {NAME} record of the snapshot"),
            reason,
        };
        if record.bytes > MAX_ROLES_SQL {
            return Err(refuse(format!(
                "it claims {} bytes of SQL, more than roles ever take: damaged or forged",
                record.bytes
            )));
        }
        let mut sql: Vec<u8> = Vec::with_capacity(record.bytes as usize);
        stream::feed(
            repo,
            &record.chunks,
            record.bytes,
            record.hash,
            limits,
            &mut sql,
            "the roles' SQL",
        )
        .await?;
        let sql = String::from_utf8(sql).map_err(|_| refuse("it is not UTF-8 text".into()))?;
        let statements = statements::split(&sql).map_err(|r| {
            refuse(format!(
                "line {} holds the psql meta-command {}, which pg_dumpall never writes: \
                 refusing to replay it (damaged or forged)",
                r.line, r.command
            ))
        })?;
        let client = conn::connect(&self.conn, NAME).await?;
        let mut errors = Vec::new();
        for s in &statements {
            if let Err(e) = client.batch_execute(s).await {
                errors.push(
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
                );
            }
        }
        Ok(GlobalsRestoreReport {
            url: self.conn.display_url(),
            bytes: record.bytes,
            errors,
            duration_s: t0.elapsed().as_secs_f64(),
        })
    }
}
