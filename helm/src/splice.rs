//! One value spliced into the text: a scalar replaced where it stands, or
//! the missing keys inserted into the deepest block mapping that exists, at
//! that mapping's indentation. Everything else is left byte for byte.

use std::ops::Range;

use saphyr_parser::ScalarStyle;

use super::HelmError;
use super::tree::{Doc, Node, Scalar, column, line};

/// How a new value must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A string: plain when YAML would read it back as that same string.
    Text,
    /// Always quoted: the chart expects a port as a string (`"5432"`).
    Port,
}

/// A value to set at a path.
#[derive(Debug, Clone)]
pub(super) struct Write {
    pub path: Vec<&'static str>,
    pub value: String,
    pub kind: Kind,
}

impl Write {
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// Where a path leads in the current text.
#[derive(Debug)]
pub(super) enum Place<'a> {
    /// The value is there (possibly null): replace it. `key` is where its
    /// key starts, the line to name in errors.
    Found { scalar: &'a Scalar, key: usize },
    /// `path[from..]` is missing: insert it at byte `at`, its first key at
    /// column `indent`, after deleting `delete` (a `~` or `null` that the
    /// new mapping replaces).
    Missing {
        from: usize,
        at: usize,
        indent: usize,
        delete: Option<Range<usize>>,
    },
}

/// Finds where `path` is, or where it would go. `step` is the file's
/// indentation step, used under a key whose value is null.
pub(super) fn locate<'a>(
    text: &str,
    doc: &'a Doc,
    path: &[&str],
    step: usize,
) -> Result<Place<'a>, HelmError> {
    let dotted = path.join(".");
    let Some(mut node) = doc.root.as_ref() else {
        return Ok(Place::Missing {
            from: 0,
            at: text.len(),
            indent: 0,
            delete: None,
        });
    };
    // Where the key holding `node` starts (none for the root).
    let mut key_start: Option<usize> = None;
    for (i, key) in path.iter().enumerate() {
        let parent = || {
            if i == 0 {
                "(the top level)".to_owned()
            } else {
                path[..i].join(".")
            }
        };
        match node {
            Node::Mapping(m) if m.flow => {
                return Err(HelmError::FlowMapping {
                    path: dotted,
                    mapping: parent(),
                    line: line(text, m.start),
                });
            }
            Node::Mapping(m) => {
                let hits: Vec<&(Node, Node)> = m
                    .items
                    .iter()
                    .filter(|(k, _)| k.as_scalar().is_some_and(|k| k.value == *key))
                    .collect();
                match hits.as_slice() {
                    [] => {
                        let first_key = m.items.first().map_or(m.start, |(k, _)| k.start());
                        return Ok(Place::Missing {
                            from: i,
                            at: line_after(text, m.end),
                            indent: column(text, first_key),
                            delete: None,
                        });
                    }
                    [(k, v)] => {
                        key_start = Some(k.start());
                        node = v;
                    }
                    [(first, _), (second, _), ..] => {
                        return Err(HelmError::DuplicateKey {
                            path: path[..=i].join("."),
                            first: line(text, first.start()),
                            second: line(text, second.start()),
                        });
                    }
                }
            }
            Node::Scalar(s) if s.is_null() => {
                return Ok(Place::Missing {
                    from: i,
                    at: line_after(text, s.end),
                    indent: key_start.map_or(0, |k| column(text, k) + step),
                    delete: null_token(text, s),
                });
            }
            other => {
                return Err(HelmError::NotAMapping {
                    path: dotted,
                    parent: parent(),
                    line: line(text, key_start.unwrap_or_else(|| other.start())),
                    found: describe(other),
                });
            }
        }
    }
    let key = key_start.unwrap_or(0);
    match node {
        Node::Scalar(scalar) => Ok(Place::Found { scalar, key }),
        _ => Err(HelmError::Unsupported {
            path: dotted,
            line: line(text, key),
            reason: format!("it is {}, not a single value", describe(node)),
        }),
    }
}

fn describe(node: &Node) -> String {
    match node {
        Node::Scalar(s) => format!("the single value {:?}", s.value),
        Node::Mapping(_) => "a mapping".into(),
        Node::Sequence(_) => "a list".into(),
        Node::Alias { .. } => "an alias (`*name`)".into(),
    }
}

/// Refuses a scalar that cannot be replaced by a one-line string without
/// changing something else. `key` is where its key starts.
pub(super) fn check_replaceable(
    text: &str,
    path: &str,
    s: &Scalar,
    key: usize,
) -> Result<(), HelmError> {
    let reason = if s.anchored {
        "it has an anchor (`&name`) that other values may refer to"
    } else if s.str_tag == Some(false) {
        "it carries a tag other than `!!str`"
    } else if s.is_block() {
        "it is a block scalar (`|` or `>`)"
    } else if text[s.text_start..s.end].contains('\n') {
        "it spans several lines"
    } else if s.text_start == s.end && !text[s.end..].starts_with(':') {
        "it has no value and haul cannot tell where one would go"
    } else {
        return Ok(());
    };
    Err(HelmError::Unsupported {
        path: path.to_owned(),
        line: line(text, key),
        reason: reason.to_owned(),
    })
}

/// A replacement of `range` in the text.
#[derive(Debug)]
pub(super) struct Edit {
    pub range: Range<usize>,
    pub text: String,
}

/// The edits that set `write` at `place`, and the value it replaces (`None`
/// when the key was missing or null); no edits when the value is already set.
pub(super) fn edits(
    text: &str,
    place: &Place<'_>,
    write: &Write,
    step: usize,
) -> (Vec<Edit>, Option<String>) {
    match place {
        Place::Found { scalar: s, .. } if !s.is_null() && s.value == write.value => {
            (Vec::new(), Some(s.value.clone()))
        }
        Place::Found { scalar: s, .. } => {
            let old = (!s.is_null()).then(|| s.value.clone());
            let existing = old.as_ref().map(|_| s.style);
            let new = render(&write.value, write.kind, existing);
            let edit = if s.text_start == s.end {
                // `key:` with nothing after it: the parser puts the empty
                // value at the colon.
                let after_colon = s.end + usize::from(text[s.end..].starts_with(':'));
                Edit {
                    range: after_colon..after_colon,
                    text: format!(" {new}"),
                }
            } else {
                Edit {
                    range: s.text_start..s.end,
                    text: new,
                }
            };
            (vec![edit], old)
        }
        Place::Missing {
            from,
            at,
            indent,
            delete,
        } => {
            let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
            let mut lines = String::new();
            if *at == text.len() && !text.is_empty() && !text.ends_with('\n') {
                lines.push_str(newline);
            }
            let missing = &write.path[*from..];
            for (depth, key) in missing.iter().enumerate() {
                let pad = " ".repeat(indent + depth * step);
                if depth + 1 == missing.len() {
                    let value = render(&write.value, write.kind, None);
                    lines.push_str(&format!("{pad}{key}: {value}{newline}"));
                } else {
                    lines.push_str(&format!("{pad}{key}:{newline}"));
                }
            }
            let mut edits = vec![Edit {
                range: *at..*at,
                text: lines,
            }];
            if let Some(range) = delete {
                edits.push(Edit {
                    range: range.clone(),
                    text: String::new(),
                });
            }
            (edits, None)
        }
    }
}

/// Applies non-overlapping edits to `text`.
pub(super) fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| std::cmp::Reverse(e.range.start));
    let mut out = text.to_owned();
    for edit in edits {
        out.replace_range(edit.range, &edit.text);
    }
    out
}

/// The start of the line after the one holding byte `at`.
fn line_after(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |i| at + i + 1)
}

/// The text of a `~` / `null` that a new mapping replaces, with the blanks
/// before it (a comment after it keeps the blanks that follow).
fn null_token(text: &str, s: &Scalar) -> Option<Range<usize>> {
    if s.text_start == s.end {
        return None;
    }
    let before = text[..s.start].trim_end_matches([' ', '\t']).len();
    Some(before..s.end)
}

/// The text of `value` as a YAML scalar: in the style it replaces where that
/// style can hold it, else plain when YAML (1.1 as Helm reads it, or 1.2)
/// would read it back as this same string, else double-quoted.
pub(super) fn render(value: &str, kind: Kind, existing: Option<ScalarStyle>) -> String {
    match existing {
        Some(ScalarStyle::DoubleQuoted) => double_quoted(value),
        Some(ScalarStyle::SingleQuoted) if !value.chars().any(char::is_control) => {
            format!("'{}'", value.replace('\'', "''"))
        }
        _ if kind == Kind::Port || needs_quotes(value) => double_quoted(value),
        _ => value.to_owned(),
    }
}

/// Whether a plain scalar might not read back as this string. Deliberately
/// broad: quoting a string that did not need it is harmless. Starting with
/// a letter rules out numbers, dates and indicators; no blanks rule out
/// comments and `: `; a trailing `:` would make a key.
pub(super) fn needs_quotes(value: &str) -> bool {
    const SPECIAL: [&str; 9] = ["true", "false", "yes", "no", "y", "n", "on", "off", "null"];
    let Some(first) = value.chars().next() else {
        return true;
    };
    !first.is_ascii_alphabetic()
        || !value.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '.' | '_' | '-' | '/' | ':' | '?' | '=' | '&' | '@' | '%' | '+'
                )
        })
        || value.ends_with(':')
        || SPECIAL.contains(&value.to_ascii_lowercase().as_str())
}

pub(super) fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let code = u32::from(c);
                if code <= 0xffff {
                    out.push_str(&format!("\\u{code:04x}"));
                } else {
                    out.push_str(&format!("\\U{code:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The file's indentation step: how much deeper the first nested block
/// mapping sits than its parent's keys (2 when nothing is nested).
pub(super) fn indent_step(text: &str, doc: &Doc) -> usize {
    fn find(text: &str, node: &Node) -> Option<usize> {
        let Node::Mapping(m) = node else { return None };
        if m.flow {
            return None;
        }
        for (k, v) in &m.items {
            match v {
                Node::Mapping(child) if !child.flow && !child.items.is_empty() => {
                    let first = child.items[0].0.start();
                    let (outer, inner) = (column(text, k.start()), column(text, first));
                    if inner > outer {
                        return Some(inner - outer);
                    }
                }
                _ => {}
            }
            if let Some(step) = find(text, v) {
                return Some(step);
            }
        }
        None
    }
    doc.root
        .as_ref()
        .and_then(|root| find(text, root))
        .unwrap_or(2)
}
