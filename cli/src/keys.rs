//! The repository's key, from the environment, and `haul key`.
//!
//! A key never comes from the command line (argv is visible to every user
//! of the machine): `HAUL_PASSWORD`, `HAUL_PASSWORD_FILE`,
//! `HAUL_PASSWORD_COMMAND` (any vault or KMS command line that prints it)
//! or `HAUL_KEY_FILE`, exactly one of them.

use std::io::Write;
use std::path::Path;

use haul_manifest::crypto::{Credential, KeySlot, SlotKind};

use crate::error::{CliError, Result};

/// The variables that can hold the repository's key.
pub const KEY_VARS: [&str; 4] = [
    "HAUL_PASSWORD",
    "HAUL_PASSWORD_FILE",
    "HAUL_PASSWORD_COMMAND",
    "HAUL_KEY_FILE",
];

/// The credential the environment gives, if any.
pub fn from_env() -> Result<Option<Credential>> {
    let set: Vec<(&str, String)> = KEY_VARS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    match set.as_slice() {
        [] => Ok(None),
        [(name, value)] => credential(name, value).map(Some),
        many => Err(CliError::Usage(format!(
            "{} are all set: set only one of {}",
            many.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
            KEY_VARS.join(", ")
        ))),
    }
}

fn credential(var: &str, value: &str) -> Result<Credential> {
    Ok(match var {
        "HAUL_PASSWORD" => Credential::Password(value.as_bytes().to_vec()),
        "HAUL_PASSWORD_FILE" => Credential::Password(password_file(Path::new(value), var)?),
        "HAUL_PASSWORD_COMMAND" => Credential::Password(password_command(value, var)?),
        _ => Credential::KeyFile(key_file(Path::new(value), var)?),
    })
}

/// A password file's first line.
pub fn password_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    let bytes = read_private(path, what)?;
    first_line(&bytes).ok_or_else(|| {
        CliError::Usage(format!(
            "{what}: {} holds no password on its first line",
            path.display()
        ))
    })
}

/// What a command prints on its first line (run with `sh -c`).
pub fn password_command(cmd: &str, what: &str) -> Result<Vec<u8>> {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| CliError::Usage(format!("{what}: cannot run sh: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Usage(format!(
            "{what}: the command failed ({})",
            out.status
        )));
    }
    first_line(&out.stdout)
        .ok_or_else(|| CliError::Usage(format!("{what}: the command printed no password")))
}

/// The first line of `text` (without `\n` or `\r\n`), if not empty: a
/// password as a file or a command gives it.
fn first_line(text: &[u8]) -> Option<Vec<u8>> {
    let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.is_empty()).then(|| line.to_vec())
}

/// A key file's bytes.
pub fn key_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    read_private(path, what)
}

/// Reads a secret file, warning when others may read it too.
fn read_private(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("{what}: cannot read {}: {e}", path.display())))?;
    if let Ok(md) = std::fs::metadata(path)
        && md.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "{what}: {} can be read by other users (mode {:o}): chmod 600 it",
            path.display(),
            md.permissions().mode() & 0o777
        );
    }
    Ok(bytes)
}

/// Writes a new key file: 32 random bytes as 64 hex digits, mode 0600,
/// never over an existing file.
pub fn generate(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 32];
    haul_manifest::crypto::getrandom_error::fill(&mut key)
        .map_err(|e| CliError::Usage(format!("no randomness: {e}")))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot create {} (an existing file is never replaced): {e}",
                path.display()
            ))
        })?;
    let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
    writeln!(f, "{text}")
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}

/// A slot's kind as the operator reads it.
pub fn kind_name(k: SlotKind) -> &'static str {
    match k {
        SlotKind::Password => "password",
        SlotKind::KeyFile => "key-file",
    }
}

/// One line of `haul key list`.
pub fn describe(s: &KeySlot) -> String {
    format!(
        "{}  {:<9} {}  {}",
        s.id,
        kind_name(s.kind),
        s.created.format("%Y-%m-%d %H:%M:%S UTC"),
        s.label
    )
}
