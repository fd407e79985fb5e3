//! A PostgreSQL server as libpq understands it (parsed by `pgurl` from a
//! `postgresql://` URL, the `PG*` environment and the passfile), given to
//! tokio-postgres (our own checks) and, as environment variables, to
//! pg_dump/pg_restore/pg_dumpall/psql — so both reach the same server, the
//! same way. The password lives in [`Secret`], which never prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::Client;

pub use super::pgurl::redact_url;
use super::tls;
use crate::{Result, SnapshotError};

/// A password: shown as `***` by Debug and Display, read only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// libpq tries plain first; tokio-postgres cannot, so this is treated as `prefer`.
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where a root certificate comes from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trusted roots.
    System,
}

/// TLS settings, libpq's names and meanings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssl {
    pub mode: SslMode,
    /// Given, or `~/.postgresql/root.crt` when that exists (libpq's default).
    pub rootcert: Option<RootCert>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Everything needed to connect to one database. Debug never shows the password.
#[derive(Debug, Clone)]
pub struct PgConn {
    /// Host name, IP address, or a Unix socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub ssl: Ssl,
    pub connect_timeout: Duration,
}

/// Unless the URL says otherwise (`connect_timeout=`), a server that does not
/// answer within this time is reported as unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl PgConn {
    /// The same server, another database (`postgres`, to create or drop one).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        Self {
            dbname: dbname.to_owned(),
            ..self.clone()
        }
    }

    pub(super) fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// `postgresql://user@host:port/db?sslmode=...`: no password, for
    /// records and messages.
    pub fn display_url(&self) -> String {
        let enc = |s: &str| {
            url::form_urlencoded::byte_serialize(s.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        let host = if self.is_socket() {
            enc(&self.host)
        } else if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut u = format!(
            "postgresql://{}@{host}:{}/{}",
            enc(&self.user),
            self.port,
            enc(&self.dbname)
        );
        if self.ssl.mode != SslMode::Prefer {
            u.push_str(&format!("?sslmode={}", self.ssl.mode.as_str()));
        }
        u
    }

    /// `host:port` (or the socket directory and port), for messages.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The environment a libpq client program gets: every setting of this
    /// connection, the password included, so that nothing secret is ever on
    /// a command line. Inherited `PG*` variables are removed by [`Self::command`].
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", self.ssl.mode.as_str().to_owned()),
            (
                "PGCONNECT_TIMEOUT",
                self.connect_timeout.as_secs().to_string(),
            ),
            ("PGAPPNAME", "haul".to_owned()),
        ];
        match &self.ssl.rootcert {
            Some(RootCert::File(p)) => env.push(("PGSSLROOTCERT", p.display().to_string())),
            Some(RootCert::System) => env.push(("PGSSLROOTCERT", tls::system_bundle_for_libpq())),
            None => {}
        }
        if let Some(c) = &self.ssl.cert {
            env.push(("PGSSLCERT", c.display().to_string()));
        }
        if let Some(k) = &self.ssl.key {
            env.push(("PGSSLKEY", k.display().to_string()));
        }
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.expose().to_owned()));
        }
        env
    }

    /// A client program (`pg_dump`, ...) set up to reach this database: the
    /// caller's `PG*` variables are cleared so nothing but this connection's
    /// settings applies, and `args` never carry a secret.
    pub fn command(&self, program: &Path, args: &[String]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.libpq_env());
        cmd.args(args);
        cmd.stdin(std::process::Stdio::null());
        cmd.kill_on_drop(true);
        cmd
    }

    /// Connects with tokio-postgres (TLS per `sslmode`), as `name` in errors.
    pub async fn connect(&self, name: &str) -> Result<Client> {
        let mut c = tokio_postgres::Config::new();
        if self.is_socket() {
            c.host_path(&self.host);
        } else {
            c.host(&self.host);
        }
        c.port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("haul")
            .connect_timeout(self.connect_timeout);
        if let Some(p) = &self.password {
            c.password(p.expose());
        }
        let mode = match self.ssl.mode {
            _ if self.is_socket() => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        };
        c.ssl_mode(mode);
        let tls = tls::connector(&self.ssl).map_err(|reason| SnapshotError::DbTls {
            name: name.to_owned(),
            server: self.server(),
            reason,
        })?;
        let connecting = c.connect(tls);
        // tokio-postgres applies connect_timeout per attempt; bound the whole
        // handshake too, so a server that accepts and then stalls is reported.
        let (client, connection) =
            match tokio::time::timeout(self.connect_timeout * 2, connecting).await {
                Ok(r) => r.map_err(|source| self.connect_error(name, source))?,
                Err(_) => {
                    return Err(SnapshotError::DbTimeout {
                        name: name.to_owned(),
                        server: self.server(),
                        seconds: self.connect_timeout.as_secs() * 2,
                    });
                }
            };
        let who = format!("{name} ({})", self.server());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection to {who} ended: {e}");
            }
        });
        Ok(client)
    }

    fn connect_error(&self, name: &str, source: tokio_postgres::Error) -> SnapshotError {
        SnapshotError::DbConnect {
            name: name.to_owned(),
            server: self.server(),
            user: self.user.clone(),
            database: self.dbname.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_programs_get_the_password_by_environment_only() {
        let c = PgConn::parse_with(
            "postgresql://u:topsecret@127.0.0.1:5/d?sslmode=require&sslrootcert=/ca.pem",
            &|_: &str| None,
        )
        .unwrap();
        let cmd = c.command(Path::new("/bin/pg_dump"), &["--format=custom".into()]);
        let std = cmd.as_std();
        assert!(
            std.get_args()
                .all(|a| !a.to_string_lossy().contains("topsecret")),
            "{std:?}"
        );
        let envs: std::collections::BTreeMap<_, _> = std
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        assert_eq!(envs["PGPASSWORD"], "topsecret");
        assert_eq!(envs["PGHOST"], "127.0.0.1");
        assert_eq!(envs["PGPORT"], "5");
        assert_eq!(envs["PGDATABASE"], "d");
        assert_eq!(envs["PGSSLMODE"], "require");
        assert_eq!(envs["PGSSLROOTCERT"], "/ca.pem");
    }
}
