//! What makes a database itself beyond its contents (owner, encoding,
//! locale, connection limit, settings, privileges): read where it lives,
//! and reproduced where a database is created for it, so a restored or
//! refreshed database behaves as the original did (on PostgreSQL 15 the
//! `public` schema belongs to the database's owner: the wrong owner means
//! `permission denied for schema public` for the application's role).

use haul_manifest::{DatabaseGrant, DatabaseShape};
use tokio_postgres::Client;

use crate::config::PgConn;
use crate::error::{PgError, Result};

/// `"name"` with inner quotes doubled.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with inner quotes doubled.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) fn query_err(
    name: &str,
    conn: &PgConn,
    what: String,
) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let (name, server) = (name.to_owned(), conn.server());
    move |source| PgError::Query {
        name,
        server,
        what,
        source,
    }
}

/// The shape of database `db` on the server `c` is connected to.
pub async fn read(c: &Client, name: &str, conn: &PgConn, db: &str) -> Result<DatabaseShape> {
    let row = c
        .query_one(
            "SELECT pg_get_userbyid(d.datdba)::text, pg_encoding_to_char(d.encoding)::text, \
                    d.datcollate::text, d.datctype::text, d.datconnlimit, d.datacl IS NULL, \
                    coalesce((SELECT setconfig FROM pg_db_role_setting s \
                              WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') \
             FROM pg_database d WHERE d.datname = $1",
            &[&db],
        )
        .await
        .map_err(query_err(
            name,
            conn,
            format!("reading the settings of database {db}"),
        ))?;
    let default_acl: bool = row.get(5);
    let grants = if default_acl {
        None
    } else {
        let rows = c
            .query(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END, \
                        a.privilege_type::text, a.is_grantable \
                 FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1",
                &[&db],
            )
            .await
            .map_err(query_err(name, conn, format!("reading the privileges on database {db}")))?;
        Some(
            rows.iter()
                .map(|r| DatabaseGrant {
                    grantee: r.get(0),
                    privilege: r.get(1),
                    grantable: r.get(2),
                })
                .collect(),
        )
    };
    Ok(DatabaseShape {
        owner: row.get(0),
        encoding: row.get(1),
        collate: row.get(2),
        ctype: row.get(3),
        connection_limit: row.get(4),
        settings: row.get(6),
        grants,
    })
}

async fn role_exists(c: &Client, name: &str, conn: &PgConn, role: &str) -> Result<bool> {
    Ok(
        c.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(query_err(name, conn, format!("looking for role {role}")))?
            .is_some(),
    )
}

/// Creates `db` shaped like `shape` (plainly without one). With `no_owner`
/// the restoring user owns it and no privileges are granted; an owner or
/// grantee the server lacks is left out with a warning (pg_restore then
/// reports the missing role as before). A locale the server lacks falls
/// back to `C`, with a warning.
pub async fn create(
    c: &Client,
    name: &str,
    conn: &PgConn,
    db: &str,
    shape: Option<&DatabaseShape>,
    no_owner: bool,
) -> Result<()> {
    let q = quote_ident(db);
    let Some(shape) = shape else {
        return c
            .batch_execute(&format!("CREATE DATABASE {q}"))
            .await
            .map_err(query_err(name, conn, format!("creating database {db}")));
    };
    let owner = if no_owner {
        None
    } else if role_exists(c, name, conn, &shape.owner).await? {
        Some(shape.owner.as_str())
    } else {
        tracing::warn!(
            "database {name}: role {:?}, the original owner of {db}, does not exist on {}: \
             the restoring user owns it",
            shape.owner,
            conn.server()
        );
        None
    };
    let create = |collate: &str, ctype: &str| {
        format!(
            "CREATE DATABASE {q}{} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {} CONNECTION LIMIT {}",
            owner
                .map(|o| format!(" OWNER {}", quote_ident(o)))
                .unwrap_or_default(),
            quote_literal(&shape.encoding),
            quote_literal(collate),
            quote_literal(ctype),
            shape.connection_limit
        )
    };
    if let Err(e) = c.batch_execute(&create(&shape.collate, &shape.ctype)).await {
        let text = e.to_string();
        if !(text.contains("locale") || text.contains("collation") || text.contains("encoding")) {
            return Err(query_err(name, conn, format!("creating database {db}"))(e));
        }
        tracing::warn!(
            "database {name}: {} cannot create {db} with locale {}/{} ({text}): using C",
            conn.server(),
            shape.collate,
            shape.ctype
        );
        c.batch_execute(&create("C", "C")).await.map_err(query_err(
            name,
            conn,
            format!("creating database {db}"),
        ))?;
    }
    let mut sql = Vec::new();
    for s in &shape.settings {
        if let Some((k, v)) = s.split_once('=') {
            sql.push(format!(
                "ALTER DATABASE {q} SET {} = {}",
                quote_ident(k),
                quote_literal(v)
            ));
        }
    }
    if let (Some(grants), false) = (&shape.grants, no_owner) {
        sql.push(format!("REVOKE ALL ON DATABASE {q} FROM PUBLIC"));
        for g in grants {
            let who = match &g.grantee {
                None => "PUBLIC".to_owned(),
                Some(r) if role_exists(c, name, conn, r).await? => quote_ident(r),
                Some(r) => {
                    tracing::warn!(
                        "database {name}: role {r:?} does not exist: its {} privilege on {db} is left out",
                        g.privilege
                    );
                    continue;
                }
            };
            sql.push(format!(
                "GRANT {} ON DATABASE {q} TO {who}{}",
                g.privilege,
                if g.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            ));
        }
    }
    for s in sql {
        c.batch_execute(&s).await.map_err(query_err(
            name,
            conn,
            format!("setting up database {db}: {s}"),
        ))?;
    }
    Ok(())
}
