use haul_mover::MoverError;

/// Environment variable naming the directory that holds the programs.
pub const PG_BIN_ENV: &str = "HAUL_PG_BIN";

/// What can go wrong talking to PostgreSQL. Every variant names the
/// database (the operator's name for it) or the server, never a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// Reading or writing the repository while streaming a dump (boxed:
    /// the engine's errors are large, and most of these are not them).
    #[error(transparent)]
    Mover(Box<MoverError>),

    #[error("invalid PostgreSQL URL {url}: {reason}")]
    Url { url: String, reason: String },

    #[error("--db {0}: the name is given twice")]
    DuplicateDatabase(String),

    #[error("cannot connect to database {name} ({database} on {server} as {user})")]
    Connect {
        name: String,
        server: String,
        user: String,
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("database {name}: {server} did not complete a connection within {seconds}s")]
    Timeout {
        name: String,
        server: String,
        seconds: u64,
    },

    #[error("database {name}: TLS settings for {server}: {reason}")]
    Tls {
        name: String,
        server: String,
        reason: String,
    },

    #[error("database {name} ({server}): {what}")]
    Query {
        name: String,
        server: String,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The application's record of its objects (see [`crate::journal`])
    /// cannot stand in for a listing.
    #[error("database {name} ({server}): {reason}")]
    Journal {
        name: String,
        server: String,
        reason: String,
    },

    #[error("{tool} not found (searched {searched})")]
    ToolMissing {
        tool: &'static str,
        searched: String,
    },

    #[error("{tool} at {path} cannot be used: {reason}")]
    ToolBroken {
        tool: &'static str,
        path: String,
        reason: String,
    },

    /// `found` is the program's version and path, `than` what it is too old
    /// for ("the server 16.2").
    #[error(
        "database {name}: {tool} {found} is older than {than}; it needs {tool} {needed} or newer"
    )]
    ToolTooOld {
        tool: &'static str,
        found: String,
        needed: String,
        than: String,
        name: String,
    },

    #[error("cannot run {tool} for {name}: {source}")]
    ToolSpawn {
        tool: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{tool} of {name} failed ({status}){}", stderr_text(.stderr))]
    ToolFailed {
        tool: &'static str,
        name: String,
        status: String,
        stderr: String,
    },

    #[error("{what}: {reason}")]
    Stream { what: String, reason: String },

    #[error("writing {what} failed")]
    StreamWrite {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("database {name}: {target} does not exist and {user} may not create databases")]
    CannotCreate {
        name: String,
        target: String,
        user: String,
    },

    #[error(
        "database {name}: the target {target} already holds {tables} table(s) (e.g. {example}); refusing to restore over it"
    )]
    TargetNotEmpty {
        name: String,
        target: String,
        tables: u64,
        example: String,
    },

    #[error("snapshot {snapshot} has no database {name:?}; it has: {available}")]
    UnknownDatabase {
        snapshot: String,
        name: String,
        available: String,
    },

    #[error("two --db targets are the same database {target}")]
    SameTarget { target: String },
}

pub type Result<T, E = PgError> = std::result::Result<T, E>;

fn stderr_text(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", s.trim())
    }
}

impl From<MoverError> for PgError {
    fn from(e: MoverError) -> Self {
        Self::Mover(Box::new(e))
    }
}

impl PgError {
    /// What the operator can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Mover(e) => e.hint(),
            Self::Connect { source, server, user, database, .. } => connect_hint(source, server, user, database),
            Self::Timeout { .. } => Some(
                "check the host and port, firewalls, and that the server is up; connect_timeout=SECONDS in the URL changes the wait".into(),
            ),
            Self::Tls { .. } => Some(
                "sslmode, sslrootcert, sslcert and sslkey in the URL mean what they mean to libpq (psql)".into(),
            ),
            Self::ToolMissing { tool, .. } => Some(format!(
                "install PostgreSQL's client programs (Debian/Ubuntu: apt-get install postgresql-client; \
                 RHEL: dnf install postgresql), or point {} at the directory holding {tool}",
                PG_BIN_ENV
            )),
            Self::ToolTooOld { tool, needed, .. } => Some(format!(
                "install the version {needed} client (Debian/Ubuntu: apt-get install postgresql-client-{needed}, \
                 from apt.postgresql.org if your release lacks it); haul also looks in \
                 /usr/lib/postgresql/{needed}/bin, or set {}=/path/to/its/bin to choose the {tool} to use",
                PG_BIN_ENV
            )),
            Self::ToolFailed { tool, stderr, .. } => tool_hint(tool, stderr),
            Self::TargetNotEmpty { .. } => Some(
                "pass --clean to replace the objects the snapshot holds (in one transaction), or restore into \
                 another database: --db NAME=postgresql://host/new_database creates it"
                    .into(),
            ),
            Self::UnknownDatabase { .. } => {
                Some("name a database of the snapshot on the left of --db NAME=URL".into())
            }
            Self::Url { .. } => Some(
                "the form is postgresql://USER@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=/path/ca.pem; \
                 leave the password out and use PGPASSWORD or ~/.pgpass (PGPASSFILE)"
                    .into(),
            ),
            _ => None,
        }
    }
}

fn connect_hint(
    e: &tokio_postgres::Error,
    server: &str,
    user: &str,
    database: &str,
) -> Option<String> {
    use tokio_postgres::error::SqlState;
    let text = haul_mover::error_chain(e);
    Some(match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD => format!(
            "the server refused the password of {user}: check the password in the URL, PGPASSWORD or the passfile (~/.pgpass)"
        ),
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => format!(
            "the server does not let {user} in (pg_hba.conf or role): check the user name and the server's pg_hba.conf"
        ),
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => format!(
            "database {database:?} does not exist on {server}: check its name (for a restore, haul creates a missing target)"
        ),
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS => {
            "the server has no free connection slots; try again or raise max_connections".into()
        }
        _ if text.contains("password missing") => format!(
            "the server wants a password for {user}: put it in PGPASSWORD or a passfile (~/.pgpass, PGPASSFILE), or in the URL"
        ),
        _ if text.contains("Connection refused") => format!(
            "nothing answers on {server}: check the host and port and that PostgreSQL is running"
        ),
        _ if text.contains("failed to lookup address") || text.contains("Name or service not known") => {
            format!("the host of {server} is unknown: check its name")
        }
        _ if text.contains("certificate") || text.contains("tls") || text.contains("TLS") => {
            "the server's TLS certificate was refused: check sslrootcert (the CA that signed it) and, for \
             sslmode=verify-full, that the host name in the URL is one the certificate names"
                .into()
        }
        _ if text.contains("server does not support TLS") => {
            "the server does not offer TLS: use sslmode=prefer or disable, or enable ssl on the server".into()
        }
        _ => return None,
    })
}

fn tool_hint(tool: &str, stderr: &str) -> Option<String> {
    if let Some(role) = stderr
        .split("role \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .filter(|_| stderr.contains("does not exist"))
    {
        return Some(format!(
            "role {role:?} does not exist on the target server: restore the roles first (haul restore ... \
             --db-globals URL, when the backup captured them with --db-globals), create the role, or pass \
             --no-owner to make the restoring user own everything"
        ));
    }
    if tool == "pg_restore" {
        return Some(
            "pg_restore ran in one transaction and stopped at the first error: the target was left as it was".into(),
        );
    }
    if tool == "pg_dump" {
        return Some("nothing was committed: the snapshot does not exist".into());
    }
    None
}
