//! The header of a pg_dump custom-format archive, read before a restore:
//! a dump that is not one (or is one of another database) is refused
//! before pg_restore sees a byte of it.
//!
//! Layout (pg_backup_archiver.c, `WriteHead`): `PGDMP`, version major,
//! minor and revision bytes, int size, offset size, format byte (1 =
//! custom), compression (a byte from 1.15, an int before), the creation
//! time as seven ints, then the database name, the server's version and
//! pg_dump's as strings. An int is a sign byte and `int size` bytes, least
//! significant first; a string is an int length then its bytes.

/// What the header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub format: u8,
    pub database: String,
    pub pg_dump_version: String,
}

/// The custom format's code.
pub(crate) const CUSTOM: u8 = 1;

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    int_size: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn int(&mut self) -> Option<i64> {
        let sign = self.byte()?;
        let mut v: i64 = 0;
        for i in 0..self.int_size {
            v |= i64::from(self.byte()?) << (8 * i);
        }
        Some(if sign == 0 { v } else { -v })
    }

    fn string(&mut self) -> Option<String> {
        let len = self.int()?;
        if len < 0 {
            return Some(String::new());
        }
        let end = self.at.checked_add(usize::try_from(len).ok()?)?;
        let s = self.buf.get(self.at..end)?;
        self.at = end;
        String::from_utf8(s.to_vec()).ok()
    }
}

/// Reads the header from the archive's first bytes (its first chunk).
/// `None`: not a pg_dump archive, or cut before the names.
pub(crate) fn read(first: &[u8]) -> Option<Header> {
    if !first.starts_with(b"PGDMP") {
        return None;
    }
    let mut r = Reader {
        buf: first,
        at: 5,
        int_size: 4,
    };
    let (major, minor, _rev) = (r.byte()?, r.byte()?, r.byte()?);
    r.int_size = usize::from(r.byte()?);
    if !(1..=8).contains(&r.int_size) {
        return None;
    }
    let _off_size = r.byte()?;
    let format = r.byte()?;
    if (major, minor) >= (1, 15) {
        r.byte()?;
    } else {
        r.int()?;
    }
    for _ in 0..7 {
        r.int()?;
    }
    let database = r.string()?;
    let _server = r.string()?;
    let pg_dump_version = r.string()?;
    Some(Header {
        format,
        database,
        pg_dump_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64, out: &mut Vec<u8>) {
        out.push(u8::from(v < 0));
        out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
    }

    fn header(minor: u8, db: &str) -> Vec<u8> {
        let mut h = b"PGDMP".to_vec();
        h.extend_from_slice(&[1, minor, 0, 4, 8, CUSTOM]);
        if minor >= 15 {
            h.push(0);
        } else {
            int(-1, &mut h);
        }
        for v in [1, 2, 3, 4, 5, 125, 0] {
            int(v, &mut h);
        }
        for s in [db, "15.18", "15.18 (Debian)"] {
            int(s.len() as i64, &mut h);
            h.extend_from_slice(s.as_bytes());
        }
        h.extend_from_slice(b"...the TOC");
        h
    }

    #[test]
    fn headers_of_both_layouts_are_read() {
        for minor in [14, 15, 16] {
            let h = read(&header(minor, "pachyderm")).expect("a header");
            assert_eq!(h.format, CUSTOM);
            assert_eq!(h.database, "pachyderm");
            assert_eq!(h.pg_dump_version, "15.18 (Debian)");
        }
        assert_eq!(read(b"-- plain SQL\nCREATE TABLE"), None);
        assert_eq!(read(&header(14, "pachyderm")[..30]), None, "cut short");
    }
}
