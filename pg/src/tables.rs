//! The tables of a database and their exact row counts: taken in the dump's
//! MVCC snapshot at backup, compared after a restore.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

use crate::error::{PgError, Result};

/// Ordinary tables (partitions included, partitioned parents not: their
/// rows are their partitions'), outside the system schemas and not owned by
/// an extension. Names come back as `schema.table` for the record and
/// quoted (`format('%I.%I')`) for queries, so no name is ever spliced into
/// SQL unquoted.
const TABLES: &str = r"
SELECT n.nspname || '.' || c.relname, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1";

/// A table: its `schema.table` name and its quoted SQL name.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    quoted: String,
}

fn query_err(name: &str, server: &str, what: &str, source: tokio_postgres::Error) -> PgError {
    PgError::Query {
        name: name.to_owned(),
        server: server.to_owned(),
        what: what.to_owned(),
        source,
    }
}

pub async fn list(c: &impl GenericClient, name: &str, server: &str) -> Result<Vec<Table>> {
    let rows = c
        .query(TABLES, &[])
        .await
        .map_err(|e| query_err(name, server, "listing tables", e))?;
    Ok(rows
        .iter()
        .map(|r| Table {
            name: r.get(0),
            quoted: r.get(1),
        })
        .collect())
}

/// Exact `count(*)` of each table, one after another.
pub async fn count(
    c: &impl GenericClient,
    tables: &[Table],
    name: &str,
    server: &str,
) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for t in tables {
        let row = c
            .query_one(&format!("SELECT count(*) FROM {}", t.quoted), &[])
            .await
            .map_err(|e| query_err(name, server, &format!("counting the rows of {}", t.name), e))?;
        out.insert(t.name.clone(), row.get::<_, i64>(0) as u64);
    }
    Ok(out)
}

/// A table whose row count differs after a restore.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mismatch {
    pub table: String,
    pub expected: u64,
    /// None: the table is missing from the restored database.
    pub found: Option<u64>,
}

/// Compares a restored database's counts with the snapshot's.
pub fn compare(expected: &BTreeMap<String, u64>, found: &BTreeMap<String, u64>) -> Vec<Mismatch> {
    expected
        .iter()
        .filter_map(|(t, &n)| {
            let f = found.get(t).copied();
            (f != Some(n)).then(|| Mismatch {
                table: t.clone(),
                expected: n,
                found: f,
            })
        })
        .collect()
}
