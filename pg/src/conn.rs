//! Connecting to a server with tokio-postgres, over TLS per `sslmode`.
//!
//! `config` (what to reach) ─▶ `tls` (how to trust it) ─▶ here (a [`Client`]).

use tokio_postgres::Client;

use crate::config::{PgConn, SslMode};
use crate::error::{PgError, Result};
use crate::tls;

/// Connects to `conn` with tokio-postgres (TLS per `sslmode`), as `name` in errors.
pub async fn connect(conn: &PgConn, name: &str) -> Result<Client> {
    let mut c = tokio_postgres::Config::new();
    if conn.is_socket() {
        c.host_path(&conn.host);
    } else {
        c.host(&conn.host);
    }
    c.port(conn.port)
        .user(&conn.user)
        .dbname(&conn.dbname)
        .application_name("haul")
        .connect_timeout(conn.connect_timeout);
    if let Some(p) = &conn.password {
        c.password(p.expose());
    }
    let mode = match conn.ssl.mode {
        _ if conn.is_socket() => tokio_postgres::config::SslMode::Disable,
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    };
    c.ssl_mode(mode);
    let tls = tls::connector(&conn.ssl).map_err(|reason| PgError::Tls {
        name: name.to_owned(),
        server: conn.server(),
        reason,
    })?;
    let connecting = c.connect(tls);
    // tokio-postgres applies connect_timeout per attempt; bound the whole
    // handshake too, so a server that accepts and then stalls is reported.
    let (client, connection) =
        match tokio::time::timeout(conn.connect_timeout * 2, connecting).await {
            Ok(r) => r.map_err(|source| connect_error(conn, name, source))?,
            Err(_) => {
                return Err(PgError::Timeout {
                    name: name.to_owned(),
                    server: conn.server(),
                    seconds: conn.connect_timeout.as_secs() * 2,
                });
            }
        };
    let who = format!("{name} ({})", conn.server());
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection to {who} ended: {e}");
        }
    });
    Ok(client)
}

fn connect_error(conn: &PgConn, name: &str, source: tokio_postgres::Error) -> PgError {
    PgError::Connect {
        name: name.to_owned(),
        server: conn.server(),
        user: conn.user.clone(),
        database: conn.dbname.clone(),
        source,
    }
}
