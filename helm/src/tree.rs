//! A values file read into a tree that remembers where each node sits in
//! the text, so that a value can be replaced without touching its neighbours.
//!
//! saphyr-parser reports positions in characters; the tree holds byte
//! offsets into the original string. Two of its spans are not used as they
//! come: a quoted scalar's span may run on over trailing blanks and a
//! comment, so its end is found by scanning to the closing quote; a block
//! scalar's span starts at its first content line, so its end is taken as
//! the end of its last line.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::HelmError;

/// Deeper than any values file: stops a hostile file from exhausting the stack.
const MAX_DEPTH: usize = 256;

/// The tag `!!str`, the one tag a rewritten value may carry.
const STR_TAG: (&str, &str) = ("tag:yaml.org,2002:", "str");

#[derive(Debug)]
pub(super) enum Node {
    Scalar(Scalar),
    Mapping(Collection<(Node, Node)>),
    Sequence(Collection<Node>),
    Alias { start: usize, end: usize, id: usize },
}

#[derive(Debug)]
pub(super) struct Scalar {
    pub value: String,
    pub style: ScalarStyle,
    /// `Some(true)` for `!!str`, `Some(false)` for any other tag.
    pub str_tag: Option<bool>,
    /// Other values may refer to it (`*name`): replacing it would change them too.
    pub anchored: bool,
    /// Byte where the node starts, its tag or anchor included.
    pub start: usize,
    /// Byte where the scalar's own text starts (its opening quote, if any).
    pub text_start: usize,
    /// Byte just past the scalar's text (past the closing quote); for a block
    /// scalar, the newline that ends its last line.
    pub end: usize,
}

/// A mapping (entries are key, value) or a sequence.
#[derive(Debug)]
pub(super) struct Collection<T> {
    /// Written `{...}` / `[...]` rather than one entry per line.
    pub flow: bool,
    pub start: usize,
    /// Byte just past its last content: its last value's text for a block
    /// collection, the closing bracket for a flow one.
    pub end: usize,
    pub items: Vec<T>,
}

impl Node {
    pub fn start(&self) -> usize {
        match self {
            Node::Scalar(s) => s.start,
            Node::Mapping(c) => c.start,
            Node::Sequence(c) => c.start,
            Node::Alias { start, .. } => *start,
        }
    }

    pub fn end(&self) -> usize {
        match self {
            Node::Scalar(s) => s.end,
            Node::Mapping(c) => c.end,
            Node::Sequence(c) => c.end,
            Node::Alias { end, .. } => *end,
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The key and value of `key` in this mapping, if it is a mapping
    /// holding that key (the last one when given twice, as a reader takes it).
    pub fn entry(&self, key: &str) -> Option<&(Node, Node)> {
        match self {
            Node::Mapping(m) => m
                .items
                .iter()
                .rev()
                .find(|(k, _)| k.as_scalar().is_some_and(|k| k.value == key)),
            _ => None,
        }
    }

    /// The value under `key` in this mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The node at a dotted path, read through flow and block collections alike.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The text of the scalar at `path`, if it is a non-null scalar.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path)
            .and_then(Node::as_scalar)
            .filter(|s| !s.is_null())
            .map(|s| s.value.as_str())
    }
}

impl Scalar {
    /// `key:`, `key: ~`, `key: null`: no value at all.
    pub fn is_null(&self) -> bool {
        self.style == ScalarStyle::Plain
            && self.str_tag.is_none()
            && matches!(self.value.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }

    pub fn is_block(&self) -> bool {
        matches!(self.style, ScalarStyle::Literal | ScalarStyle::Folded)
    }
}

/// A parsed values file: its single document's root, if it has one.
#[derive(Debug)]
pub(super) struct Doc {
    pub root: Option<Node>,
}

/// Parses `text`, which must hold at most one YAML document.
pub(super) fn parse(text: &str) -> Result<Doc, HelmError> {
    // The parser skips a byte-order mark without counting it.
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let body = &text[bom..];
    let mut byte_of: Vec<usize> = body.char_indices().map(|(b, _)| b + bom).collect();
    byte_of.push(text.len());
    let mut builder = Builder {
        text,
        byte_of,
        events: Parser::new_from_str(body),
    };
    let mut root = None;
    let mut documents = 0;
    while let Some((event, span)) = builder.next()? {
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(HelmError::MultiDocument {
                        line: span.start.line(),
                    });
                }
            }
            Event::StreamStart | Event::DocumentEnd | Event::StreamEnd | Event::Nothing => {}
            event => root = Some(builder.node(event, span, 0)?),
        }
    }
    Ok(Doc { root })
}

struct Builder<'a> {
    text: &'a str,
    /// Byte offset in `text` of each character the parser counts, and of the end.
    byte_of: Vec<usize>,
    events: Parser<'a, saphyr_parser::StrInput<'a>>,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<Option<(Event<'a>, Span)>, HelmError> {
        match self.events.next() {
            None => Ok(None),
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(e)) => Err(HelmError::Parse {
                line: e.marker().line(),
                column: e.marker().col() + 1,
                message: e.info().to_owned(),
            }),
        }
    }

    fn next_required(&mut self) -> Result<(Event<'a>, Span), HelmError> {
        self.next()?.ok_or_else(|| HelmError::Parse {
            line: self.text.lines().count(),
            column: 1,
            message: "the file ends inside a collection".into(),
        })
    }

    fn byte(&self, marker: saphyr_parser::Marker) -> usize {
        self.byte_of[marker.index().min(self.byte_of.len() - 1)]
    }

    fn node(&mut self, event: Event<'a>, span: Span, depth: usize) -> Result<Node, HelmError> {
        if depth > MAX_DEPTH {
            return Err(HelmError::Parse {
                line: span.start.line(),
                column: span.start.col() + 1,
                message: format!("nested deeper than {MAX_DEPTH} levels"),
            });
        }
        let start = self.byte(span.start);
        Ok(match event {
            Event::Scalar(value, style, anchor, tag) => {
                let text_start = if anchor != 0 || tag.is_some() {
                    skip_properties(self.text, start)
                } else {
                    start
                };
                let end = match style {
                    ScalarStyle::Plain => self.byte(span.end),
                    ScalarStyle::DoubleQuoted => quoted_end(self.text, text_start, b'"'),
                    ScalarStyle::SingleQuoted => quoted_end(self.text, text_start, b'\''),
                    ScalarStyle::Literal | ScalarStyle::Folded => {
                        block_end(self.text, self.byte(span.end))
                    }
                };
                Node::Scalar(Scalar {
                    value: value.into_owned(),
                    style,
                    str_tag: tag.map(|t| (t.handle.as_str(), t.suffix.as_str()) == STR_TAG),
                    anchored: anchor != 0,
                    start,
                    text_start,
                    end: end.max(text_start),
                })
            }
            Event::MappingStart(..) => {
                let flow =
                    self.text.as_bytes().get(skip_properties(self.text, start)) == Some(&b'{');
                let mut items = Vec::new();
                let mut end = start;
                loop {
                    let (event, span) = self.next_required()?;
                    if let Event::MappingEnd = event {
                        if flow {
                            end = self.byte(span.end);
                        }
                        break;
                    }
                    let key = self.node(event, span, depth + 1)?;
                    let (event, span) = self.next_required()?;
                    let value = self.node(event, span, depth + 1)?;
                    end = end.max(key.end()).max(value.end());
                    items.push((key, value));
                }
                Node::Mapping(Collection {
                    flow,
                    start,
                    end,
                    items,
                })
            }
            Event::SequenceStart(..) => {
                let flow =
                    self.text.as_bytes().get(skip_properties(self.text, start)) == Some(&b'[');
                let mut items = Vec::new();
                let mut end = start;
                loop {
                    let (event, span) = self.next_required()?;
                    if let Event::SequenceEnd = event {
                        if flow {
                            end = self.byte(span.end);
                        }
                        break;
                    }
                    let item = self.node(event, span, depth + 1)?;
                    end = end.max(item.end());
                    items.push(item);
                }
                Node::Sequence(Collection {
                    flow,
                    start,
                    end,
                    items,
                })
            }
            Event::Alias(id) => Node::Alias {
                start,
                end: self.byte(span.end),
                id,
            },
            other => {
                return Err(HelmError::Parse {
                    line: span.start.line(),
                    column: span.start.col() + 1,
                    message: format!("unexpected {other:?}"),
                });
            }
        })
    }
}

/// Skips a node's tag and anchor (`!!str &a value`) and the blanks after them.
fn skip_properties(text: &str, mut at: usize) -> usize {
    let bytes = text.as_bytes();
    loop {
        while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\r' | b'\n') {
            at += 1;
        }
        if at < bytes.len() && matches!(bytes[at], b'!' | b'&') {
            while at < bytes.len() && !matches!(bytes[at], b' ' | b'\t' | b'\r' | b'\n') {
                at += 1;
            }
        } else {
            return at;
        }
    }
}

/// The byte past the closing quote of the quoted scalar opening at `open`.
fn quoted_end(text: &str, open: usize, quote: u8) -> usize {
    let bytes = text.as_bytes();
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    text.len()
}

/// A block scalar's span ends at the indentation of the line after it (or at
/// the end of the file): its last line ends at the newline before that.
fn block_end(text: &str, span_end: usize) -> usize {
    let line_start = text[..span_end].rfind('\n').map_or(0, |i| i + 1);
    if line_start > 0 && text[line_start..span_end].bytes().all(|b| b == b' ') {
        line_start - 1
    } else {
        span_end
    }
}

/// The column (in characters) of byte `at`.
pub(super) fn column(text: &str, at: usize) -> usize {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..at].chars().count()
}

/// The line (1-based) of byte `at`.
pub(super) fn line(text: &str, at: usize) -> usize {
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Every leaf of the tree by path (`[i]` for a sequence item), as a string
/// that tells a null from an empty string: what a rewrite must leave alone.
pub(super) fn leaves(node: &Node) -> Vec<(Vec<String>, String)> {
    fn walk(node: &Node, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        match node {
            Node::Scalar(s) if s.is_null() => out.push((path.clone(), "null".into())),
            Node::Scalar(s) => out.push((path.clone(), format!("{:?}", s.value))),
            Node::Alias { id, .. } => out.push((path.clone(), format!("*{id}"))),
            Node::Mapping(m) => {
                for (k, v) in &m.items {
                    let key = k
                        .as_scalar()
                        .map_or_else(|| "?".to_owned(), |k| k.value.clone());
                    path.push(key);
                    walk(v, path, out);
                    path.pop();
                }
            }
            Node::Sequence(s) => {
                for (i, item) in s.items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    walk(item, path, out);
                    path.pop();
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(node, &mut Vec::new(), &mut out);
    out
}
