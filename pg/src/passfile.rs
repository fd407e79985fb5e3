//! libpq's password file (`~/.pgpass`, or `PGPASSFILE` / `passfile=`):
//! where a password comes from when the URL and PGPASSWORD have none.

use std::path::Path;

/// The password a passfile (`~/.pgpass` format) gives this connection, if
/// any: `host:port:database:user:password`, `*` matching anything, `\`
/// escaping `:` and `\`. A Unix socket matches `localhost`, as in libpq.
pub fn lookup(file: &Path, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    // Like libpq: a passfile others can read is ignored, loudly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access ({:o}); ignored: chmod 0600 it",
                file.display(),
                mode & 0o777
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let m = |f: &str, v: &str| f == "*" || f == v;
        if m(&fields[0], host) && m(&fields[1], &port) && m(&fields[2], db) && m(&fields[3], user) {
            return Some(fields[4].clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_matches_like_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(
            &f,
            "# comment\nother:*:*:*:nope\ndb.example:5432:*:pach:pa\\:ss\nlocalhost:*:*:*:sock\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            lookup(&f, "db.example", 5432, "x", "pach").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(lookup(&f, "db.example", 5433, "x", "pach"), None);
        assert_eq!(
            lookup(&f, "/var/run/postgresql", 5432, "x", "y").as_deref(),
            Some("sock")
        );
        // Readable by others: ignored, as libpq does.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&f, "db.example", 5432, "x", "pach"), None);
    }
}
