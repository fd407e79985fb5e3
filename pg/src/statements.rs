//! The roles' SQL (`pg_dumpall --globals-only`) split into statements,
//! for replay over the PostgreSQL protocol rather than through psql: a
//! record read from a repository must never run a program on the machine
//! that restores, and psql would run `\! cmd` from it. The only psql
//! meta-commands pg_dumpall writes, `\restrict` and `\unrestrict`, are
//! dropped; any other one refuses the whole record before anything runs.

/// Why a record is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The 1-based line of the meta-command.
    pub line: usize,
    pub command: String,
}

/// Splits `sql` at the semicolons that end statements, outside quotes,
/// quoted identifiers, dollar quotes and comments.
pub(crate) fn split(sql: &str) -> Result<Vec<String>, Refused> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut line = 1;
    let mut chars = sql.chars().peekable();
    let mut at_line_start = true;
    while let Some(c) = chars.next() {
        if c == '\\' && at_line_start && cur.trim().is_empty() {
            // A meta-command: the whole line.
            let mut cmd = String::from('\\');
            while let Some(&n) = chars.peek() {
                if n == '\n' {
                    break;
                }
                cmd.push(n);
                chars.next();
            }
            let name = cmd.split_whitespace().next().unwrap_or("").to_owned();
            if name != "\\restrict" && name != "\\unrestrict" {
                return Err(Refused {
                    line,
                    command: name,
                });
            }
            continue;
        }
        if c == '\n' {
            line += 1;
            at_line_start = true;
        } else if !c.is_whitespace() {
            at_line_start = false;
        }
        match c {
            '\'' | '"' => {
                cur.push(c);
                // Doubled quotes escape themselves (standard strings).
                while let Some(n) = chars.next() {
                    cur.push(n);
                    if n == '\n' {
                        line += 1;
                    }
                    if n == c {
                        if chars.peek() == Some(&c) {
                            cur.push(chars.next().unwrap_or(c));
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                // A comment, to the end of the line.
                for n in chars.by_ref() {
                    if n == '\n' {
                        line += 1;
                        at_line_start = true;
                        cur.push('\n');
                        break;
                    }
                }
            }
            '$' => {
                // $tag$ ... $tag$ (the tag may be empty).
                let mut tag = String::from('$');
                while let Some(&n) = chars.peek() {
                    if n.is_alphanumeric() || n == '_' {
                        tag.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                cur.push_str(&tag);
                if chars.peek() == Some(&'$') {
                    chars.next();
                    tag.push('$');
                    cur.push('$');
                    let mut body = String::new();
                    for n in chars.by_ref() {
                        body.push(n);
                        if n == '\n' {
                            line += 1;
                        }
                        if body.ends_with(&tag) {
                            break;
                        }
                    }
                    cur.push_str(&body);
                }
            }
            ';' => {
                let s = cur.trim();
                if !s.is_empty() {
                    out.push(s.to_owned());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    let s = cur.trim();
    if !s.is_empty() {
        out.push(s.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pg_dumpall_output_splits_into_its_statements() {
        let dump = "--\n-- PostgreSQL database cluster dump\n--\n\n\\restrict abc123\n\n\
                    SET default_transaction_read_only = off;\n\nCREATE ROLE \"we;ird\"\"x\";\n\
                    ALTER ROLE \"we;ird\"\"x\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:a;b''c';\n\
                    COMMENT ON ROLE app IS $$semi; colon$$;\n\n\\unrestrict abc123\n";
        assert_eq!(
            split(dump).unwrap(),
            sql(&[
                "SET default_transaction_read_only = off",
                "CREATE ROLE \"we;ird\"\"x\"",
                "ALTER ROLE \"we;ird\"\"x\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:a;b''c'",
                "COMMENT ON ROLE app IS $$semi; colon$$",
            ])
        );
    }

    #[test]
    fn any_other_meta_command_refuses_the_record() {
        for (text, line, cmd) in [
            ("CREATE ROLE a;\n\\! id > /tmp/pwned\n", 2, "\\!"),
            ("\\restrict k\n  \\copy t to program 'x'\n", 2, "\\copy"),
            ("\\connect other\n", 1, "\\connect"),
        ] {
            assert_eq!(
                split(text),
                Err(Refused {
                    line,
                    command: cmd.into()
                }),
                "{text:?}"
            );
        }
        // A backslash inside a statement is SQL's business (an error there,
        // never a command).
        assert_eq!(split("SELECT 'a\\!b';").unwrap(), sql(&["SELECT 'a\\!b'"]));
    }
}
