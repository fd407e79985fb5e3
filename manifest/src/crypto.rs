//! Format v2's encryption: a master key per repository, wrapped by key
//! slots; everything stored but `haul-repo.json` sealed with it.
//!
//! ```text
//!   key slot (password: Argon2id; key file: blake3 derive_key) ──unwraps──▶ master key (32 random bytes)
//!   master key ──derive_key──▶ seal key    XChaCha20-Poly1305 of every stored object
//!              ──derive_key──▶ name key    chunk names: keyed blake3 of the chunk id
//!              ──derive_key──▶ config key  MAC of haul-repo.json's settings
//! ```
//!
//! **Sealed objects.** `HLS2` ‖ 24-byte random nonce ‖ ciphertext ‖ 16-byte
//! tag. The associated data binds a sealed object to where it belongs:
//! `haul-2` ‖ repository id ‖ kind ‖ name (a chunk's id, a snapshot's id,
//! a record's path), each field followed by a zero byte. A flipped byte, an
//! object moved to another name (a snapshot root swapped for another), or
//! one copied from another repository fails to open: refused, never read.
//!
//! **Chunk names.** A chunk is still identified by the blake3 of its
//! plaintext inside the (sealed) manifests, so deduplication and the
//! whole-object hash work as in v1; but it is stored under the keyed blake3
//! of that id, so whoever reads the bucket cannot test whether a file they
//! can hash is in the backup.
//!
//! **Key slots** ([`KeySlot`]) each hold the master key sealed under a key
//! derived from one credential: a passphrase stretched with Argon2id, or a
//! key file's bytes through blake3's `derive_key`. Adding or removing a
//! slot rewrites `haul-repo.json` only: the data is never re-encrypted.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::{ChunkId, FormatError, RepoId};

/// The one cipher of format v2.
pub const CIPHER: &str = "xchacha20poly1305";
const MAGIC: &[u8; 4] = b"HLS2";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext.
pub const OVERHEAD: usize = MAGIC.len() + NONCE_LEN + TAG_LEN;

/// What a sealed object is: part of its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chunk blob (object data, dump, manifest segment); named by its id.
    Chunk,
    /// A snapshot root; named by the snapshot's id.
    Snapshot,
    /// A run, target or pause record; named by its path in the repository.
    Record,
}

impl Kind {
    fn tag(self) -> &'static [u8] {
        match self {
            Kind::Chunk => b"chunk",
            Kind::Snapshot => b"snapshot",
            Kind::Record => b"record",
        }
    }
}

/// A repository's master key and the keys derived from it.
pub struct Keys {
    repo: String,
    seal: XChaCha20Poly1305,
    name: [u8; 32],
    config: [u8; 32],
    master: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys(repository {}, secrets not shown)", self.repo)
    }
}

impl Keys {
    /// The keys of repository `repo` from its master key.
    pub fn new(repo: &RepoId, master: [u8; 32]) -> Self {
        let seal = blake3::derive_key("haul 2026 repository v2 seal key", &master);
        Self {
            repo: repo.to_string(),
            seal: XChaCha20Poly1305::new((&seal).into()),
            name: blake3::derive_key("haul 2026 repository v2 chunk name key", &master),
            config: blake3::derive_key("haul 2026 repository v2 config key", &master),
            master,
        }
    }

    /// A fresh random master key.
    pub fn random_master() -> Result<[u8; 32], getrandom_error::Error> {
        let mut k = [0u8; 32];
        getrandom_error::fill(&mut k)?;
        Ok(k)
    }

    fn aad(&self, kind: Kind, name: &str) -> Vec<u8> {
        let mut a = Vec::with_capacity(64 + name.len());
        for part in [
            b"haul-2".as_slice(),
            self.repo.as_bytes(),
            kind.tag(),
            name.as_bytes(),
        ] {
            a.extend_from_slice(part);
            a.push(0);
        }
        a
    }

    /// `plain` sealed as the `kind` object named `name`.
    pub fn seal(&self, kind: Kind, name: &str, plain: &[u8]) -> Vec<u8> {
        self.seal_parts(kind, name, &[plain])
    }

    /// The concatenation of `parts` sealed as the `kind` object `name`,
    /// encrypted in place in the one buffer returned (a chunk's header and
    /// payload, without a copy of their concatenation first).
    pub fn seal_parts(&self, kind: Kind, name: &str, parts: &[&[u8]]) -> Vec<u8> {
        use chacha20poly1305::aead::AeadInPlace;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut chacha20poly1305::aead::OsRng);
        let aad = self.aad(kind, name);
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = Vec::with_capacity(OVERHEAD + len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        for p in parts {
            out.extend_from_slice(p);
        }
        let tag = self
            .seal
            .encrypt_in_place_detached(&nonce, &aad, &mut out[MAGIC.len() + NONCE_LEN..])
            .expect("XChaCha20-Poly1305 seals any length haul writes");
        out.extend_from_slice(&tag);
        out
    }

    /// The plaintext of a sealed `kind` object named `name`; an error when
    /// it was not sealed with this repository's key, as this object.
    pub fn open(&self, kind: Kind, name: &str, sealed: &[u8]) -> Result<Vec<u8>, FormatError> {
        let refused = |reason: &str| FormatError::Unauthentic {
            what: format!("{} {name}", String::from_utf8_lossy(kind.tag())),
            reason: reason.into(),
        };
        if sealed.len() < OVERHEAD || &sealed[..4] != MAGIC {
            return Err(refused("not a sealed object of format v2"));
        }
        let nonce = XNonce::from_slice(&sealed[4..4 + NONCE_LEN]);
        let aad = self.aad(kind, name);
        let body = &sealed[4 + NONCE_LEN..sealed.len() - TAG_LEN];
        let tag = chacha20poly1305::Tag::from_slice(&sealed[sealed.len() - TAG_LEN..]);
        let mut plain = body.to_vec();
        {
            use chacha20poly1305::aead::AeadInPlace;
            self.seal
                .decrypt_in_place_detached(nonce, &aad, &mut plain, tag)
                .map_err(|_| {
                    refused(
                        "it fails authentication: altered, moved from another name or repository, \
                         or sealed with another key",
                    )
                })?;
        }
        Ok(plain)
    }

    /// The name a chunk is stored under: its id, keyed.
    pub fn chunk_name(&self, id: &ChunkId) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.name, &id.0).as_bytes())
    }

    /// The MAC of `haul-repo.json`'s settings (see [`crate::RepoConfig`]).
    pub fn config_mac(&self, settings: &[u8]) -> String {
        blake3::keyed_hash(&self.config, settings)
            .to_hex()
            .to_string()
    }

    /// The master key sealed under `kek` for the slot `slot` (a new slot).
    fn wrap(&self, slot: &str, kek: &[u8; 32]) -> (String, String) {
        let cipher = XChaCha20Poly1305::new(kek.into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut chacha20poly1305::aead::OsRng);
        let aad = slot_aad(&self.repo, slot);
        let wrapped = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &self.master,
                    aad: &aad,
                },
            )
            .expect("32 bytes seal");
        (hex::encode(nonce), hex::encode(wrapped))
    }
}

fn slot_aad(repo: &str, slot: &str) -> Vec<u8> {
    format!("haul-2 key slot\0{repo}\0{slot}\0").into_bytes()
}

/// Randomness for keys and salts (re-exported so callers need no crate of
/// their own).
pub mod getrandom_error {
    pub use chacha20poly1305::aead::rand_core::Error;

    /// Fills `out` from the operating system's generator.
    pub fn fill(out: &mut [u8]) -> Result<(), Error> {
        use chacha20poly1305::aead::rand_core::RngCore;
        chacha20poly1305::aead::OsRng.try_fill_bytes(out)
    }
}

/// `haul-repo.json`'s `encryption` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encryption {
    /// Always [`CIPHER`].
    pub cipher: String,
    /// [`Keys::config_mac`] of the repository's settings: a key that
    /// unwraps a slot but does not match is refused, and settings changed
    /// by someone without the key are noticed.
    pub check: String,
    pub slots: Vec<KeySlot>,
}

/// One credential that unlocks the master key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySlot {
    /// 8 hex digits, random: how `haul key remove` names it.
    pub id: String,
    pub kind: SlotKind,
    pub created: chrono::DateTime<chrono::Utc>,
    /// Free text from `haul key add --label`: who or what holds it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// Password slots: the Argon2id parameters and salt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Argon2Params>,
    pub nonce: String,
    pub wrapped: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    Password,
    KeyFile,
}

/// Argon2id's cost and salt for one password slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    pub salt: String,
}

impl Argon2Params {
    /// 64 MiB, 3 passes, one lane (OWASP's first recommendation for
    /// Argon2id): about 0.2 s here, costly to guess at scale.
    pub fn new() -> Result<Self, FormatError> {
        let mut salt = [0u8; 16];
        getrandom_error::fill(&mut salt).map_err(|e| FormatError::Invalid {
            what: "a new key slot".into(),
            reason: format!("no randomness: {e}"),
        })?;
        Ok(Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
            salt: hex::encode(salt),
        })
    }

    /// The key a password gives with these parameters.
    pub fn derive(&self, password: &[u8]) -> Result<[u8; 32], FormatError> {
        let invalid = |reason: String| FormatError::Invalid {
            what: "a key slot's Argon2id parameters".into(),
            reason,
        };
        // Bounded so a forged slot cannot make haul allocate without limit.
        if self.m_kib > 4 << 20 || self.t > 100 || self.p > 64 {
            return Err(invalid(format!(
                "m={} KiB, t={}, p={} is beyond what haul accepts",
                self.m_kib, self.t, self.p
            )));
        }
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| invalid(e.to_string()))?;
        let salt = hex::decode(&self.salt).map_err(|e| invalid(format!("salt: {e}")))?;
        let mut out = [0u8; 32];
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(password, &salt, &mut out)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(out)
    }
}

/// The key a key file gives: the file's bytes (surrounding whitespace cut)
/// through blake3's `derive_key`. Any file of at least 32 bytes serves;
/// `haul key generate` writes 32 random bytes as 64 hex digits.
pub fn key_file_kek(bytes: &[u8]) -> Result<[u8; 32], FormatError> {
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < 32 {
        return Err(FormatError::Invalid {
            what: "the key file".into(),
            reason: format!(
                "it holds {} bytes; a key file needs at least 32 (make one with `haul key generate FILE`)",
                trimmed.len()
            ),
        });
    }
    Ok(blake3::derive_key("haul 2026 key file slot", trimmed))
}

/// The master key from `slot` with the key its credential gives, `None`
/// when that credential is not this slot's.
pub fn unwrap(repo: &RepoId, slot: &KeySlot, kek: &[u8; 32]) -> Option<[u8; 32]> {
    let nonce = hex::decode(&slot.nonce).ok()?;
    let wrapped = hex::decode(&slot.wrapped).ok()?;
    if nonce.len() != NONCE_LEN {
        return None;
    }
    let cipher = XChaCha20Poly1305::new(kek.into());
    let plain = cipher
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &wrapped,
                aad: &slot_aad(&repo.to_string(), &slot.id),
            },
        )
        .ok()?;
    plain.try_into().ok()
}

/// What unlocks a repository: a passphrase, or a key file's bytes.
pub enum Credential {
    Password(Vec<u8>),
    KeyFile(Vec<u8>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Credential::Password(not shown)"),
            Credential::KeyFile(_) => f.write_str("Credential::KeyFile(not shown)"),
        }
    }
}

impl Credential {
    pub fn kind(&self) -> SlotKind {
        match self {
            Credential::Password(_) => SlotKind::Password,
            Credential::KeyFile(_) => SlotKind::KeyFile,
        }
    }

    /// The master key, from the first of `slots` this credential opens;
    /// `None` when it opens none of them.
    pub fn unlock(
        &self,
        repo: &RepoId,
        slots: &[KeySlot],
    ) -> Result<Option<[u8; 32]>, FormatError> {
        for slot in slots.iter().filter(|s| s.kind == self.kind()) {
            let kek = match (self, &slot.kdf) {
                (Credential::Password(p), Some(kdf)) => kdf.derive(p)?,
                (Credential::KeyFile(b), _) => key_file_kek(b)?,
                (Credential::Password(_), None) => continue,
            };
            if let Some(master) = unwrap(repo, slot, &kek) {
                return Ok(Some(master));
            }
        }
        Ok(None)
    }

    /// A new slot of `keys`' master key for this credential.
    pub fn new_slot(&self, keys: &Keys, label: &str) -> Result<KeySlot, FormatError> {
        let mut id = [0u8; 4];
        getrandom_error::fill(&mut id).map_err(|e| FormatError::Invalid {
            what: "a new key slot".into(),
            reason: format!("no randomness: {e}"),
        })?;
        let id = hex::encode(id);
        let (kdf, kek) = match self {
            Credential::Password(p) => {
                let kdf = Argon2Params::new()?;
                let kek = kdf.derive(p)?;
                (Some(kdf), kek)
            }
            Credential::KeyFile(b) => (None, key_file_kek(b)?),
        };
        let (nonce, wrapped) = keys.wrap(&id, &kek);
        Ok(KeySlot {
            id,
            kind: self.kind(),
            created: chrono::Utc::now(),
            label: label.to_owned(),
            kdf,
            nonce,
            wrapped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> Keys {
        Keys::new(&RepoId::from_random([seed; 16]), [seed; 32])
    }

    #[test]
    fn sealed_objects_open_only_as_what_and_where_they_were_sealed() {
        let k = keys(1);
        let s = k.seal(Kind::Snapshot, "abc", b"root");
        assert_eq!(k.open(Kind::Snapshot, "abc", &s).unwrap(), b"root");
        assert!(k.open(Kind::Snapshot, "abd", &s).is_err(), "moved");
        assert!(k.open(Kind::Record, "abc", &s).is_err(), "another kind");
        assert!(
            keys(2).open(Kind::Snapshot, "abc", &s).is_err(),
            "another repo"
        );
        for i in 0..s.len() {
            let mut bad = s.clone();
            bad[i] ^= 1;
            assert!(k.open(Kind::Snapshot, "abc", &bad).is_err(), "byte {i}");
        }
        assert!(k.open(Kind::Snapshot, "abc", &s[..s.len() - 1]).is_err());
        assert_ne!(
            k.seal(Kind::Chunk, "x", b"same"),
            k.seal(Kind::Chunk, "x", b"same"),
            "fresh nonces"
        );
    }

    #[test]
    fn slots_unwrap_with_their_credential_only() {
        let repo = RepoId::from_random([7; 16]);
        let k = Keys::new(&repo, [9; 32]);
        let kek = key_file_kek(&[b'k'; 40]).unwrap();
        let (nonce, wrapped) = k.wrap("s1", &kek);
        let slot = KeySlot {
            id: "s1".into(),
            kind: SlotKind::KeyFile,
            created: chrono::Utc::now(),
            label: String::new(),
            kdf: None,
            nonce,
            wrapped,
        };
        assert_eq!(unwrap(&repo, &slot, &kek), Some([9; 32]));
        let other = key_file_kek(&[b'j'; 40]).unwrap();
        assert_eq!(unwrap(&repo, &slot, &other), None);
        let moved = KeySlot {
            id: "s2".into(),
            ..slot.clone()
        };
        assert_eq!(unwrap(&repo, &moved, &kek), None, "slot id is bound");
        assert!(key_file_kek(b"  short  ").is_err());
    }

    #[test]
    fn passwords_stretch_deterministically_per_salt() {
        let p = Argon2Params {
            m_kib: 64,
            t: 1,
            p: 1,
            salt: "00112233445566778899aabbccddeeff".into(),
        };
        assert_eq!(p.derive(b"pw").unwrap(), p.derive(b"pw").unwrap());
        assert_ne!(p.derive(b"pw").unwrap(), p.derive(b"pv").unwrap());
        let huge = Argon2Params {
            m_kib: u32::MAX,
            ..p
        };
        assert!(huge.derive(b"pw").is_err());
    }

    #[test]
    fn chunk_names_hide_ids_per_repository() {
        let id = ChunkId::of(b"a file someone can guess");
        assert_ne!(keys(1).chunk_name(&id), id);
        assert_ne!(keys(1).chunk_name(&id), keys(2).chunk_name(&id));
        assert_eq!(keys(1).chunk_name(&id), keys(1).chunk_name(&id));
    }
}
