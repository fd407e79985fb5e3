//! What one PostgreSQL connection is, spelt the way libpq spells it: a
//! `postgresql://` URL (percent-decoding, IPv6 and Unix-socket hosts, query
//! parameters) completed from the `PG*` environment and the passfile, and
//! the same settings handed back to client programs as their environment.
//! Every message shows the URL with its password replaced by `***`, and
//! the password itself lives in [`Secret`], which never prints.
//!
//! The leaf of this crate's connection stack: `config` ◀─ `tls` ◀─ `conn`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{PgError, Result};
use crate::passfile;

/// A password: shown as `***` by Debug and Display, read only where it is used.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

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
    pub(crate) fn parse(s: &str) -> Option<Self> {
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

    pub(crate) fn is_socket(&self) -> bool {
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
            Some(RootCert::System) => env.push(("PGSSLROOTCERT", system_bundle_for_libpq())),
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
}

/// The CA bundle libpq 15 and older should read for `sslrootcert=system`
/// (libpq 16 understands `system` itself and reads the same file).
pub fn system_bundle_for_libpq() -> String {
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file())
    .unwrap_or("system")
    .to_owned()
}

/// URL query parameters haul understands; any other is refused so that a
/// misspelt `sslmode` cannot silently weaken a connection.
const PARAMS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "passfile",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
];

fn bad(url: &str, reason: impl Into<String>) -> PgError {
    PgError::Url {
        url: redact_url(url),
        reason: reason.into(),
    }
}

/// The URL with its password replaced by `***`, for messages. Works on
/// strings that do not even parse.
pub fn redact_url(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return "<not a postgresql:// URL>".into();
    };
    // A password may hold an unencoded `/`, `?` or `@`: whatever comes
    // before the last `@` is taken for the user and password (over-redacting
    // a URL whose query holds an `@` rather than printing a password).
    let (authority, tail) = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, after) = (&rest[..at], &rest[at + 1..]);
            let hosts_end = after.find(['/', '?']).unwrap_or(after.len());
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            (
                format!("{user}@{}", &after[..hosts_end]),
                &after[hosts_end..],
            )
        }
        None => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            (rest[..end].to_owned(), &rest[end..])
        }
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl PgConn {
    /// Parses a `postgresql://` URL, completing it from the process environment.
    pub fn parse(raw: &str) -> Result<Self> {
        Self::parse_with(raw, &|k| std::env::var(k).ok())
    }

    /// Parses a URL, completing it from `env` (libpq's variables: PGHOST,
    /// PGPORT, PGUSER, PGPASSWORD, PGPASSFILE, PGDATABASE, PGSSLMODE,
    /// PGSSLROOTCERT, PGSSLCERT, PGSSLKEY, PGCONNECT_TIMEOUT) and the passfile.
    pub fn parse_with(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let rest = raw
            .strip_prefix("postgresql://")
            .or_else(|| raw.strip_prefix("postgres://"))
            .ok_or_else(|| bad(raw, "expected postgresql://[user[:password]@]host[:port]/database[?param=value&...]"))?;
        // An `@` past the first `/` or `?`: a password (or user) with an
        // unencoded `/`, `?` or `@`. Parsed the libpq way, pieces of it
        // would land in the host, port or database, and in the error.
        if let (Some(delim), Some(at)) = (rest.find(['/', '?']), rest.rfind('@'))
            && delim < at
        {
            return Err(bad(
                raw,
                "an `@` comes after the host part: a `/`, `?` or `@` in the user or password must be \
                 percent-encoded (%2F, %3F, %40)",
            ));
        }
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if hostport.contains(',') {
            return Err(bad(raw, "several hosts in one URL are not supported"));
        }
        let (mut host, mut port) = split_host_port(hostport).map_err(|r| bad(raw, r))?;
        host = host.map(|h| decode(&h));
        let mut user = None;
        let mut password = None;
        if let Some(u) = userinfo {
            let (name, pass) = match u.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (u, None),
            };
            if !name.is_empty() {
                user = Some(decode(name));
            }
            password = pass.map(decode);
        }
        let mut dbname = (!path.is_empty()).then(|| decode(path));
        let mut p = std::collections::BTreeMap::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(raw, format!("query parameter {kv:?} has no value")))?;
            let k = decode(k);
            if !PARAMS.contains(&k.as_str()) {
                return Err(bad(
                    raw,
                    format!(
                        "unknown parameter {k:?}; haul understands {}",
                        PARAMS.join(", ")
                    ),
                ));
            }
            p.insert(k, decode(v));
        }
        if let Some(h) = p.remove("host") {
            host = Some(h);
        }
        if let Some(h) = p.remove("hostaddr") {
            host = Some(h);
        }
        if let Some(pt) = p.remove("port") {
            port = Some(pt);
        }
        if let Some(u) = p.remove("user") {
            user = Some(u);
        }
        if let Some(pw) = p.remove("password") {
            password = Some(pw);
        }
        if let Some(d) = p.remove("dbname") {
            dbname = Some(d);
        }
        let mut get = |k: &str, var: &str| p.remove(k).or_else(|| env(var));

        let host = host
            .filter(|h| !h.is_empty())
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(|| "/var/run/postgresql".into());
        let port = match port.or_else(|| env("PGPORT")) {
            Some(s) => s
                .parse::<u16>()
                .map_err(|_| bad(raw, format!("port {s:?} is not a number")))?,
            None => 5432,
        };
        let user = user
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .ok_or_else(|| {
                bad(
                    raw,
                    "no user: give one in the URL (postgresql://USER@host/db) or PGUSER",
                )
            })?;
        let dbname = dbname
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        let mode = match get("sslmode", "PGSSLMODE") {
            Some(m) => SslMode::parse(&m).ok_or_else(|| {
                bad(
                    raw,
                    format!(
                        "sslmode {m:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ),
                )
            })?,
            None => SslMode::Prefer,
        };
        let home = env("HOME").map(PathBuf::from);
        let rootcert = match get("sslrootcert", "PGSSLROOTCERT") {
            Some(s) if s == "system" => Some(RootCert::System),
            Some(s) => Some(RootCert::File(PathBuf::from(s))),
            None => home
                .as_ref()
                .map(|h| h.join(".postgresql/root.crt"))
                .filter(|p| p.is_file())
                .map(RootCert::File),
        };
        let cert = get("sslcert", "PGSSLCERT").map(PathBuf::from);
        let key = get("sslkey", "PGSSLKEY").map(PathBuf::from);
        let connect_timeout = match get("connect_timeout", "PGCONNECT_TIMEOUT") {
            Some(s) => match s.parse::<u64>() {
                Ok(0) => DEFAULT_CONNECT_TIMEOUT,
                Ok(n) => Duration::from_secs(n.max(2)),
                Err(_) => return Err(bad(raw, format!("connect_timeout {s:?} is not a number"))),
            },
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let passfile = get("passfile", "PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".pgpass")));
        // Not used by haul, but accepted because libpq accepts it.
        let _ = p.remove("application_name");

        let password = match password.or_else(|| env("PGPASSWORD")) {
            Some(pw) => Some(pw),
            None => passfile.and_then(|f| passfile::lookup(&f, &host, port, &dbname, &user)),
        };
        Ok(Self {
            host,
            port,
            user,
            password: password.map(Secret),
            dbname,
            ssl: Ssl {
                mode,
                rootcert,
                cert,
                key,
            },
            connect_timeout,
        })
    }
}

fn split_host_port(hp: &str) -> std::result::Result<(Option<String>, Option<String>), String> {
    if hp.is_empty() {
        return Ok((None, None));
    }
    if let Some(rest) = hp.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address in [brackets] lacks its closing ]")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.to_owned()),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after the host")),
        };
        return Ok((Some(h.to_owned()), port));
    }
    Ok(match hp.rsplit_once(':') {
        Some((h, p)) => (
            Some(h.to_owned()),
            Some(p.to_owned()).filter(|p| !p.is_empty()),
        ),
        None => (Some(hp.to_owned()), None),
    })
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

    fn env_none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parses_urls_the_libpq_way() {
        let c = PgConn::parse_with(
            "postgresql://pach%40x:s3cr%3At@db.example:6543/pachyderm?sslmode=verify-full&sslrootcert=/ca.pem",
            &env_none,
        )
        .unwrap();
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "pach@x");
        assert_eq!(c.password.as_ref().unwrap().expose(), "s3cr:t");
        assert_eq!(c.dbname, "pachyderm");
        assert_eq!(c.ssl.mode, SslMode::VerifyFull);
        assert_eq!(c.ssl.rootcert, Some(RootCert::File("/ca.pem".into())));
        assert!(!format!("{c:?}").contains("s3cr"), "{c:?}");
        assert_eq!(
            c.display_url(),
            "postgresql://pach%40x@db.example:6543/pachyderm?sslmode=verify-full"
        );

        let env = |k: &str| match k {
            "PGUSER" => Some("u".to_owned()),
            "PGPASSWORD" => Some("envpw".to_owned()),
            "PGSSLMODE" => Some("require".to_owned()),
            _ => None,
        };
        let c = PgConn::parse_with("postgres://[::1]/d", &env).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str()),
            ("::1", 5432, "u")
        );
        assert_eq!(c.password.unwrap().expose(), "envpw");
        assert_eq!(c.ssl.mode, SslMode::Require);

        let c = PgConn::parse_with("postgresql://u@/d?host=/run/pg&port=5433", &env_none).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("/run/pg", 5433));
        assert!(c.is_socket());
    }

    #[test]
    fn refuses_bad_urls_without_echoing_the_password() {
        for (url, needle) in [
            ("mysql://u:hunter2@h/d", "expected postgresql://"),
            (
                "postgresql://u:hunter2@h/d?sslmod=require",
                "unknown parameter \"sslmod\"",
            ),
            ("postgresql://u:hunter2@h/d?sslmode=on", "sslmode \"on\""),
            ("postgresql://u:hunter2@h:port/d", "port \"port\""),
            ("postgresql://u:hunter2@a,b/d", "several hosts"),
        ] {
            let e = PgConn::parse_with(url, &env_none).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert_eq!(
            redact_url("postgresql://u:pw@h/d?password=pw2&sslmode=require"),
            "postgresql://u:***@h/d?password=***&sslmode=require"
        );
        // A password with unencoded `/`, `?` or `@` is never printed.
        for url in [
            "postgresql://u:hun/ter2@h/d",
            "postgresql://u:hun?ter2@h/d",
            "postgresql://u:hu@n/t?er2@h/d",
        ] {
            let shown = redact_url(url);
            assert_eq!(shown, "postgresql://u:***@h/d", "{url}");
            if let Err(e) = PgConn::parse_with(url, &env_none) {
                let e = e.to_string();
                assert!(!e.contains("ter2") && !e.contains("hun"), "{e}");
            }
        }
    }

    #[test]
    fn passfile_is_read_when_the_url_has_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(&f, "db.example:5432:*:pach:pa\\:ss\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = |k: &str| (k == "PGPASSFILE").then(|| f.display().to_string());
        let c = PgConn::parse_with("postgresql://pach@db.example/x", &env).unwrap();
        assert_eq!(c.password.unwrap().expose(), "pa:ss");
        let c = PgConn::parse_with("postgresql://pach:url@db.example/x", &env).unwrap();
        assert_eq!(
            c.password.unwrap().expose(),
            "url",
            "the URL's password wins"
        );
    }
}
