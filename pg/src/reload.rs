//! Restoring databases: plan (where each goes, created or replaced — checked
//! against every target before anything is written), then pg_restore from
//! the repository's chunks on stdin, in one transaction, then row counts
//! compared with the snapshot's.

use std::time::Instant;

use haul_manifest::{ChunkId, DatabaseRecord, Snapshot};
use haul_mover::Repository;
use serde::Serialize;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::archive;
use crate::config::PgConn;
use crate::conn;
use crate::dump::server_version;
use crate::error::{PgError, Result};
use crate::limits::DbLimits;
use crate::process::Running;
use crate::shape::{self, quote_ident};
use crate::stream;
use crate::tables::{self, Mismatch};
use crate::tools::{self, PgVersion, Tool};

/// A database of the snapshot and where to restore it.
#[derive(Debug, Clone)]
pub struct DbTarget {
    /// The database's name in the snapshot (`pachyderm`).
    pub name: String,
    pub conn: PgConn,
}

/// How to treat targets.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbRestoreOptions {
    /// Replace the objects of a target that holds tables (pg_restore
    /// `--clean --if-exists`, inside the restore's transaction).
    pub clean: bool,
    /// Make the restoring user own everything and restore no GRANTs, for a
    /// server that lacks the original roles.
    pub no_owner: bool,
}

/// What happens to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The database does not exist: created, then restored.
    Create,
    /// It exists and holds no table.
    Restore,
    /// It holds tables and --clean was given: the snapshot's objects replace them.
    Replace,
}

impl Action {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Create => "create it",
            Self::Restore => "restore into the empty database",
            Self::Replace => "replace its objects (--clean)",
        }
    }
}

/// One line of the restore plan.
#[derive(Debug, Clone, Serialize)]
pub struct DbPlan {
    pub name: String,
    /// The target database's own name.
    pub database: String,
    pub url: String,
    pub action: Action,
    /// Tables the target holds now.
    pub tables_in_target: u64,
    /// Tables and dump size in the snapshot.
    pub tables: u64,
    pub dump_bytes: u64,
    pub server_version: String,
    pub pg_restore: String,
}

/// A planned database restore, ready to run.
#[derive(Debug)]
pub struct PlannedDb {
    pub plan: DbPlan,
    record: DatabaseRecord,
    conn: PgConn,
    server: PgVersion,
    tool: Tool,
}

/// The outcome for one database, as `haul restore --json` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct DbRestoreReport {
    pub name: String,
    pub database: String,
    pub url: String,
    pub action: Action,
    pub bytes: u64,
    pub tables_checked: u64,
    pub rows: u64,
    pub row_count_mismatches: Vec<Mismatch>,
    pub duration_s: f64,
}

/// `dbname='...'` for a conninfo string: only the database name goes on the
/// command line; everything else (the password above all) is in the environment.
fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The server's maintenance database, to create or drop a target.
pub(crate) async fn maintenance(conn: &PgConn, name: &str) -> Result<(Client, PgConn)> {
    let mut first = None;
    for db in ["postgres", "template1"] {
        let m = conn.with_dbname(db);
        match conn::connect(&m, name).await {
            Ok(c) => return Ok((c, m)),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.expect("tried at least one database"))
}

fn is_missing_database(e: &PgError) -> bool {
    matches!(e, PgError::Connect { source, .. }
        if source.code() == Some(&SqlState::INVALID_CATALOG_NAME))
}

/// Checks every target and decides what happens to it. Writes nothing.
pub async fn plan(
    snapshot: &Snapshot,
    targets: &[DbTarget],
    opts: DbRestoreOptions,
) -> Result<Vec<PlannedDb>> {
    let mut seen_names = std::collections::HashSet::new();
    let mut seen_targets = std::collections::HashSet::new();
    for t in targets {
        if !seen_names.insert(t.name.as_str()) {
            return Err(PgError::DuplicateDatabase(t.name.clone()));
        }
        let key = (t.conn.server(), t.conn.dbname.clone());
        if !seen_targets.insert(key) {
            return Err(PgError::SameTarget {
                target: t.conn.display_url(),
            });
        }
        if !snapshot.databases.iter().any(|d| d.name == t.name) {
            let available: Vec<&str> = snapshot.databases.iter().map(|d| d.name.as_str()).collect();
            return Err(PgError::UnknownDatabase {
                snapshot: snapshot.id.to_string(),
                name: t.name.clone(),
                available: if available.is_empty() {
                    "no databases".into()
                } else {
                    available.join(", ")
                },
            });
        }
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let tool = tools::find("pg_restore").await?;
    let plans = targets.iter().map(|t| {
        let record = snapshot
            .databases
            .iter()
            .find(|d| d.name == t.name)
            .expect("checked above")
            .clone();
        plan_one(t.clone(), record, tool.clone(), opts)
    });
    futures::future::try_join_all(plans).await
}

async fn plan_one(
    t: DbTarget,
    record: DatabaseRecord,
    tool: Tool,
    opts: DbRestoreOptions,
) -> Result<PlannedDb> {
    if let Some(v) = PgVersion::parse(&record.pg_dump_version) {
        tool.check_not_older(&v, "the pg_dump that wrote the snapshot's dump,", &t.name)?;
    }
    let (action, tables_in_target, server, server_text) =
        match conn::connect(&t.conn, &t.name).await {
            Ok(client) => {
                let (server, text) = server_version(&client, &t.name, &t.conn).await?;
                let existing = tables::list(&client, &t.name, &t.conn.server()).await?;
                let n = existing.len() as u64;
                if n > 0 && !opts.clean {
                    return Err(PgError::TargetNotEmpty {
                        name: t.name.clone(),
                        target: t.conn.display_url(),
                        tables: n,
                        example: existing[0].name.clone(),
                    });
                }
                let action = if n > 0 {
                    Action::Replace
                } else {
                    Action::Restore
                };
                (action, n, server, text)
            }
            Err(e) if is_missing_database(&e) => {
                let (client, m) = maintenance(&t.conn, &t.name).await?;
                let (server, text) = server_version(&client, &t.name, &m).await?;
                let can: bool = client
                    .query_one(
                        "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user",
                        &[],
                    )
                    .await
                    .map_err(|source| PgError::Query {
                        name: t.name.clone(),
                        server: t.conn.server(),
                        what: "checking the right to create databases".into(),
                        source,
                    })?
                    .get(0);
                if !can {
                    return Err(PgError::CannotCreate {
                        name: t.name.clone(),
                        target: t.conn.display_url(),
                        user: t.conn.user.clone(),
                    });
                }
                (Action::Create, 0, server, text)
            }
            Err(e) => return Err(e),
        };
    tool.check_not_older(&server, "the target server", &t.name)?;
    let plan = DbPlan {
        name: t.name.clone(),
        database: t.conn.dbname.clone(),
        url: t.conn.display_url(),
        action,
        tables_in_target,
        tables: record.tables.len() as u64,
        dump_bytes: record.bytes,
        server_version: server_text,
        pg_restore: format!("{} {}", tool.path.display(), tool.version.text),
    };
    Ok(PlannedDb {
        plan,
        record,
        conn: t.conn,
        server,
        tool,
    })
}

impl PlannedDb {
    /// Restores this database. A database created here is dropped again if
    /// the restore fails, so a failure leaves every target as it was.
    pub async fn execute(
        &self,
        repo: &Repository,
        opts: DbRestoreOptions,
        limits: &DbLimits,
    ) -> Result<DbRestoreReport> {
        let t0 = Instant::now();
        let name = &self.plan.name;
        let chunks = repo.dump_chunks(&self.record).await?;
        self.check_archive(repo, &chunks).await?;
        let created = if self.plan.action == Action::Create {
            let (client, _) = maintenance(&self.conn, name).await?;
            // Like the original: owner, encoding, locale, settings, privileges.
            shape::create(
                &client,
                name,
                &self.conn,
                &self.conn.dbname,
                self.record.shape.as_ref(),
                opts.no_owner,
            )
            .await?;
            true
        } else {
            false
        };
        let result = self.pg_restore(repo, &chunks, opts, limits).await;
        if result.is_err() && created {
            self.drop_created().await;
        }
        result?;

        let client = conn::connect(&self.conn, name).await?;
        let list = tables::list(&client, name, &self.conn.server()).await?;
        let found = tables::count(&client, &list, name, &self.conn.server()).await?;
        let row_count_mismatches = tables::compare(&self.record.tables, &found);
        Ok(DbRestoreReport {
            name: name.clone(),
            database: self.conn.dbname.clone(),
            url: self.conn.display_url(),
            action: self.plan.action,
            bytes: self.record.bytes,
            tables_checked: self.record.tables.len() as u64,
            rows: found.values().sum(),
            row_count_mismatches,
            duration_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// Refuses a dump that is not a pg_dump custom archive of the database
    /// the snapshot says it is, before pg_restore sees a byte of it (exit 3,
    /// damaged data). Reads the first chunk once more.
    async fn check_archive(&self, repo: &Repository, chunks: &[ChunkId]) -> Result<()> {
        let Some(first) = chunks.first() else {
            return Ok(());
        };
        let bytes = repo.read_chunk(*first).await?;
        let reason = match archive::read(&bytes) {
            None => Some("it is not a pg_dump archive".to_owned()),
            Some(h) if h.format != archive::CUSTOM => Some(format!(
                "it is a pg_dump archive of format {}, not custom",
                h.format
            )),
            Some(h) if h.database != self.record.database => Some(format!(
                "it is a dump of database {:?}, not {:?}",
                h.database, self.record.database
            )),
            Some(_) => None,
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(haul_mover::MoverError::Corrupt {
                url: repo.url(),
                what: format!("the dump of {}", self.plan.name),
                source: haul_manifest::FormatError::Invalid {
                    what: format!("the dump of {}", self.plan.name),
                    reason: format!("{reason}: refusing to restore it (damaged or forged)"),
                },
            }
            .into()),
        }
    }

    async fn pg_restore(
        &self,
        repo: &Repository,
        chunks: &[ChunkId],
        opts: DbRestoreOptions,
        limits: &DbLimits,
    ) -> Result<()> {
        let name = &self.plan.name;
        let mut args = vec![
            // All or nothing: the target is left as it was on any error.
            "--single-transaction".to_owned(),
            "--exit-on-error".to_owned(),
            "--no-password".to_owned(),
            format!("--dbname={}", dbname_conninfo(&self.conn.dbname)),
        ];
        if opts.clean {
            args.extend(["--clean".to_owned(), "--if-exists".to_owned()]);
        }
        if opts.no_owner {
            args.extend(["--no-owner".to_owned(), "--no-privileges".to_owned()]);
        }
        let cmd = self.conn.command(&self.tool.path, &args);
        let (mut run, mut stdin) = Running::spawn_writing(
            cmd,
            "pg_restore",
            name,
            self.conn.password.clone(),
            &format!("pg_restore of {name}"),
        )?;
        let what = format!("the dump of {name} into pg_restore");
        let fed = stream::feed(
            repo,
            chunks,
            self.record.bytes,
            self.record.hash,
            limits,
            &mut stdin,
            &what,
        )
        .await;
        if let Err(e) = fed {
            return Err(run.abandon(stdin, e).await);
        }
        drop(stdin);
        let stderr = run.finish().await?;
        if !stderr.trim().is_empty() {
            tracing::info!("pg_restore of {name}: {}", stderr.trim());
        }
        Ok(())
    }

    /// Best effort: drop the database this restore created.
    async fn drop_created(&self) {
        let name = &self.plan.name;
        let force = if self.server.major >= (13, 0) {
            " WITH (FORCE)"
        } else {
            ""
        };
        let sql = format!(
            "DROP DATABASE IF EXISTS {}{force}",
            quote_ident(&self.conn.dbname)
        );
        let dropped = match maintenance(&self.conn, name).await {
            Ok((c, _)) => c.batch_execute(&sql).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = dropped {
            tracing::warn!(
                "could not drop the database {} that this failed restore created: {e}",
                self.conn.dbname
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_for_sql_and_conninfo() {
        assert_eq!(quote_ident("pach\"y"), "\"pach\"\"y\"");
        assert_eq!(dbname_conninfo("a'b\\c"), "dbname='a\\'b\\\\c'");
    }
}
