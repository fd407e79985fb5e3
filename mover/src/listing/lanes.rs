//! Lanes: one listing cut into pieces of the key space, listed concurrently
//! and put back in order.
//!
//! A store answers a LIST with 1,000 keys per round trip, so one paginated
//! listing of a million keys costs a thousand round trips in a row. Cut into
//! pieces, the round trips of different pieces overlap. Pieces are listed
//! in key order through a window of `lanes`: the first is read as the
//! consumer goes, the next ones each fill a bounded buffer ([`LANE_AHEAD`]
//! objects), so memory holds a window's worth of keys, never the listing.
//!
//! ```text
//!   first page ── all of it? ─▶ done, one request
//!        │ no
//!        ▼
//!   cut directory (where most keys are) + bounds inside it:
//!     hash names (Pachyderm's chunk/<hash>): evenly through the hash space,
//!       ~3,000 keys apart (the count from the parent, or the first page's reach)
//!     other names: a parent manifest's segment boundaries, or one per letter
//!        ▼
//!   pieces: on each level down, the names before the directory, its own
//!   name, its punctuation siblings and the names after; inside it the
//!   ranges [start, b1) [b1, b2) … [bn, end)
//!        ▼
//!   window of `lanes` pieces ─▶ concatenated in order
//! ```
//!
//! Why the pieces come back in path order whatever the store's own order
//! (byte order, or SeaweedFS's path order), each key exactly once:
//!
//! - Every piece is a listing under a directory, bounded by names made of
//!   characters that all sort above `/` (a key's stem: `3fa9…` of
//!   `3fa9….1`; the cut directory's path is made of such names too).
//!   Against such a name, byte order and path order agree for every key, so
//!   a piece holds the same keys in both orders, and the pieces follow each
//!   other in path order.
//! - The one place the orders disagree is a directory's punctuation
//!   siblings: `chunk.txt` comes before `chunk/…` in byte order, after it in
//!   path order. They are their own piece, looked for in both places; each
//!   store has them in one.
//! - A piece starting at `from` is listed after an offset just below it
//!   (`from` with its last character lowered, then U+10FFFF), never after a
//!   name that could be a directory: SeaweedFS, asked to start after `d`,
//!   also skips everything under `d/`. Names between the offset and `from`
//!   (only ones going on with U+10FFFF there) are dropped: they belong to
//!   the piece before, which stops at the first name at or above its end.
//! - Each piece goes through the same reordering and strict check as a
//!   one-lane listing, and the concatenation is checked again: pieces that
//!   come back out of order fail the listing, never reorder it silently. A
//!   piece whose page breaks off is resumed after its last key (see
//!   `listing::resumable`); one that keeps failing fails the whole listing.
//!
//! A piece trusts that the store lists in byte or path order: it stops at
//! the first name past its end. Every store haul knows does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use haul_manifest::SegmentRef;
use haul_manifest::diff::key_order;
use haul_manifest::shard::KeySplit;
use tokio::sync::mpsc;

use super::Listed;
use crate::engine::AbortOnDrop;
use crate::{Location, MoverError, Result};

/// Objects one lane lists ahead of the consumer before it waits: more than
/// a range of [`RANGE_KEYS`], so ranges ahead are usually listed whole while
/// the first is consumed. Sixteen lanes hold at most ~16 MiB of listed keys.
const LANE_AHEAD: usize = 4096;

/// Keys of the first page of a listing. A store with fewer keys is listed
/// whole by that one request; lanes would only add requests.
pub(super) const FIRST_PAGE: usize = 1000;

/// Keys a range aims at when the keys' spread is known (hash names): three
/// pages, listed in four requests, the last one short.
const RANGE_KEYS: u64 = 3000;

/// Most ranges a listing is cut into (200 million hash-named keys).
const MAX_RANGES: u64 = 1 << 16;

/// Most keys a first page is taken to promise (1,000 ranges): a wrong guess
/// costs at most 1,000 short requests, and a first backup of more keys
/// spends its time copying them, not listing.
const GUESSED_KEYS: u64 = 1000 * RANGE_KEYS;

/// Where a listing may be cut: keys spread through the store, each with
/// about how many keys follow it before the next, such as the segment
/// boundaries of a manifest of the store. Only hints: any keys (or none)
/// give the same listing, only sooner or later.
#[derive(Debug, Clone, Default)]
pub struct SplitHints(Vec<(String, u64)>);

impl SplitHints {
    /// No hints: a first listing is cut from its first page.
    pub fn none() -> Self {
        Self::default()
    }

    /// The first key of every segment, with the segment's entries: a
    /// segment holds about `segment_entries` keys (4,096).
    pub fn from_segments(segments: &[SegmentRef]) -> Self {
        Self(
            segments
                .iter()
                .map(|s| (s.first.clone(), s.entries))
                .collect(),
        )
    }

    /// Keys relative to the listed location, each followed by `each` keys.
    pub fn from_keys(keys: impl IntoIterator<Item = String>, each: u64) -> Self {
        Self(keys.into_iter().map(|k| (k, each)).collect())
    }
}

/// Where a listing is cut: the directory whose keys are split (`""` for
/// the whole location, else ending in `/`) and the bounds inside it, names
/// below `dir` made only of characters above `/`, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cuts {
    dir: String,
    bounds: Vec<String>,
}

impl Cuts {
    /// Cuts from hints: in the directory most of them share, either evenly
    /// through the hash space (names that are hashes) or at the hints' stems.
    fn from_hints(hints: &SplitHints) -> Self {
        let keys: Vec<&str> = hints.0.iter().map(|(k, _)| k.as_str()).collect();
        let dir = common_dir(&keys);
        let under: Vec<(&str, u64)> = hints
            .0
            .iter()
            .filter_map(|(k, n)| Some((stem(k.strip_prefix(dir.as_str())?), *n)))
            .collect();
        if let Some(case) = Hex::of(under.iter().map(|(s, _)| *s)) {
            let objects = under.iter().map(|(_, n)| n).sum();
            return Self::hash_space(dir, case, objects);
        }
        let bounds: BTreeSet<String> = under
            .iter()
            .filter(|(s, _)| !s.is_empty())
            .map(|(s, _)| (*s).to_owned())
            .collect();
        Self {
            dir,
            bounds: bounds.into_iter().collect(),
        }
    }

    /// Cuts for a store listed the first time, from the keys of its first
    /// page: in the directory most of them share, evenly through the hash
    /// space when names are hashes (how many keys there are shows in how far
    /// the first page reaches into it), else over one letter or digit. Keys
    /// starting elsewhere fall between bounds: they are listed all the same,
    /// in a larger range.
    fn from_page(keys: &[&str]) -> Self {
        let dir = common_dir(keys);
        let stems: Vec<&str> = keys
            .iter()
            .filter_map(|k| Some(stem(k.strip_prefix(dir.as_str())?)))
            .collect();
        if let Some(case) = Hex::of(stems.iter().copied()) {
            // The page holds the smallest hashes: it reaches as far into the
            // space as it holds keys of the whole. A guess, so a modest one.
            let reach = stems.iter().map(|s| Hex::value(s)).max().unwrap_or(0);
            let objects = stems.len() as u64 * (1 << 32) / (reach + 1);
            return Self::hash_space(dir, case, objects.min(GUESSED_KEYS));
        }
        let bounds = ('1'..='9')
            .chain('A'..='Z')
            .chain('a'..='z')
            .map(String::from)
            .collect();
        Self { dir, bounds }
    }

    /// Cuts a store is sharded by: as [`Cuts::from_hints`] from `keys`
    /// (spread through the store, `objects` in all), with hash names cut
    /// into ranges for at least `min_keys` keys, and other names also at
    /// every letter and digit, so that there are places to split.
    fn for_shards(keys: &[&str], objects: u64, min_keys: u64) -> Self {
        let dir = common_dir(keys);
        let stems: Vec<&str> = keys
            .iter()
            .filter_map(|k| Some(stem(k.strip_prefix(dir.as_str())?)))
            .collect();
        if let Some(case) = Hex::of(stems.iter().copied()) {
            return Self::hash_space(dir, case, objects.max(min_keys));
        }
        let mut bounds: Vec<String> = stems
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| (*s).to_owned())
            .chain(
                ('1'..='9')
                    .chain('A'..='Z')
                    .chain('a'..='z')
                    .map(String::from),
            )
            .collect();
        bounds.sort_by(|a, b| key_order(a, b));
        bounds.dedup();
        Self { dir, bounds }
    }

    /// Ranges of the cut directory.
    fn ranges(&self) -> u64 {
        self.bounds.len() as u64 + 1
    }

    /// The range of the cut directory a key falls in (0 for keys before
    /// the directory, the last for keys after it).
    fn range_of(&self, key: &str) -> usize {
        self.bounds
            .partition_point(|b| key_order(key, &format!("{}{b}", self.dir)).is_ge())
    }

    /// Bounds spread evenly through the space of hash names, about
    /// [`RANGE_KEYS`] of `objects` keys apart.
    fn hash_space(dir: String, case: Hex, objects: u64) -> Self {
        let ranges = (objects / RANGE_KEYS).clamp(1, MAX_RANGES);
        let bounds = (1..ranges)
            .map(|i| {
                let v = (i << 32) / ranges;
                match case {
                    Hex::Lower => format!("{v:08x}"),
                    Hex::Upper => format!("{v:08X}"),
                }
            })
            .collect();
        Self { dir, bounds }
    }
}

/// Names that are hashes in hexadecimal, of one case: content-addressed
/// keys (Pachyderm's `chunk/<hash>`), spread evenly through their space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hex {
    Lower,
    Upper,
}

impl Hex {
    /// Digits a name needs to count as a hash (64 bits).
    const DIGITS: usize = 16;

    /// The case of `stems` when every one is a hash, and they are spread
    /// like hashes: the middle one about halfway to the largest (not
    /// zero-padded counters, say).
    fn of<'a>(stems: impl Iterator<Item = &'a str>) -> Option<Self> {
        let stems: Vec<&str> = stems.collect();
        let first = stems.first()?;
        let case = |s: &str| {
            let long = s.len() >= Self::DIGITS;
            if long && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                Some(Self::Lower)
            } else if long && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')) {
                Some(Self::Upper)
            } else {
                None
            }
        };
        let c = case(first)?;
        if !stems.iter().all(|s| case(s) == Some(c)) {
            return None;
        }
        let mut values: Vec<u64> = stems.iter().map(|s| Self::value(s)).collect();
        values.sort_unstable();
        let (middle, reach) = (values[values.len() / 2], values[values.len() - 1]);
        (reach > 0 && middle >= reach / 4 && middle <= reach / 4 * 3).then_some(c)
    }

    /// The first 32 bits of a hash name.
    fn value(stem: &str) -> u64 {
        u64::from_str_radix(&stem[..8], 16).unwrap_or(0)
    }
}

/// The deepest directory holding more than half of `keys` (`""` when none),
/// through directories whose names sort alike in byte and path order (see
/// [`stem`]): pieces are cut around them.
fn common_dir(keys: &[&str]) -> String {
    let mut dir = String::new();
    let mut pool: Vec<&str> = keys.to_vec();
    loop {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for k in &pool {
            if let Some((name, _)) = k[dir.len()..].split_once('/')
                && !name.is_empty()
                && stem(name) == name
            {
                *counts.entry(name).or_default() += 1;
            }
        }
        match counts.into_iter().max_by_key(|(_, n)| *n) {
            Some((name, n)) if 2 * n > pool.len() => {
                dir = format!("{dir}{name}/");
                pool.retain(|k| k.starts_with(&dir));
            }
            _ => return dir,
        }
    }
}

/// The longest start of `name` made of characters that sort above `/` in
/// both byte and path order (and are not DEL, which no path may hold).
fn stem(name: &str) -> &str {
    let end = name
        .find(|c: char| c <= '/' || c == '\u{7f}')
        .unwrap_or(name.len());
    &name[..end]
}

/// The offset to list a range starting at `from` after: `from` with its
/// last character lowered, then U+10FFFF, which sorts below `from` and above
/// every key below it but those made of U+10FFFF. `None`: list from the
/// start of the directory (`from` is `0`, below which only names starting
/// with punctuation sort).
fn offset_below(from: &str) -> Option<String> {
    let mut s = from.to_owned();
    let last = s.pop()?;
    let lower = if last == '0' { '/' } else { lower(last) };
    if lower == '/' && s.is_empty() {
        return None;
    }
    s.push(lower);
    s.push(char::MAX);
    Some(s)
}

/// The character just below `c` (which sorts above `0`), skipping the
/// surrogate gap and DEL.
fn lower(c: char) -> char {
    let mut n = c as u32;
    loop {
        n -= 1;
        if let Some(p) = char::from_u32(n)
            && !p.is_ascii_control()
        {
            return p;
        }
    }
}

/// The cut of a key space into `n` shards balanced by bytes, and into
/// listing ranges within each (see `haul_manifest::shard`): from the
/// segments of a snapshot of the store (each segment's bytes counted in the
/// range its first key falls in), or, for a store never listed, from its
/// first page (ranges of equal weight). Hash names are cut evenly through
/// their space into at least four ranges per shard; other names at the
/// segments' stems and at every letter and digit.
pub(crate) async fn shard_split(
    loc: &Location,
    segments: Option<&[SegmentRef]>,
    n: u32,
) -> Result<(KeySplit, Vec<u64>)> {
    let min_keys = u64::from(n) * 4 * RANGE_KEYS;
    let cuts = match segments.filter(|s| !s.is_empty()) {
        Some(segs) => {
            let hints = SplitHints::from_segments(segs);
            let keys: Vec<&str> = hints.0.iter().map(|(k, _)| k.as_str()).collect();
            Cuts::for_shards(&keys, hints.0.iter().map(|(_, n)| n).sum(), min_keys)
        }
        None => {
            let page: Vec<Listed> = super::resumable(loc, "", None)
                .take(FIRST_PAGE)
                .try_collect()
                .await?;
            let keys: Vec<&str> = page.iter().map(|l| l.key.as_str()).collect();
            let objects = Cuts::from_page(&keys).ranges() * RANGE_KEYS;
            Cuts::for_shards(&keys, objects, min_keys)
        }
    };
    // Weights of the ranges of the cut directory: bytes from the segments,
    // else one each.
    let ranges = cuts.bounds.len() + 1;
    let mut weight = vec![0u64; ranges];
    match segments.filter(|s| !s.is_empty()) {
        Some(segs) => {
            for s in segs {
                weight[cuts.range_of(&s.first)] += s.bytes.max(1);
            }
        }
        None => weight.iter_mut().for_each(|w| *w = 1),
    }
    let total: u64 = weight.iter().sum();
    // Shard j starts at the first range where the bytes before it reach j/n
    // of the whole (never at range 0: shard 0 holds it).
    let mut splits = Vec::new();
    let (mut before, mut r) = (0u64, 0usize);
    for j in 1..u64::from(n) {
        while r < ranges - 1 && (r == 0 || before * u64::from(n) < j * total) {
            before += weight[r];
            r += 1;
        }
        splits.push(r.max(1));
    }
    let mut expected = vec![0u64; n as usize];
    if segments.is_some_and(|s| !s.is_empty()) {
        for (i, w) in weight.iter().enumerate() {
            let shard = splits.iter().take_while(|&&s| i >= s).count();
            expected[shard] += w;
        }
    }
    let split = KeySplit {
        splits: splits
            .into_iter()
            .map(|r| cuts.bounds.get(r - 1).cloned().unwrap_or_default())
            .collect(),
        dir: cuts.dir,
        bounds: cuts.bounds,
    };
    if split.bounds.is_empty() && n > 1 {
        return Err(MoverError::Object {
            key: loc.url.to_string(),
            reason: "found no place to cut the key space into shards".into(),
        });
    }
    Ok((split, expected))
}

/// The pieces of shard `k`'s listing: the ranges of the split's cut
/// directory that start in the shard, and, for the first and last shard,
/// the names before and after that directory.
pub(super) fn shard_parts(split: &KeySplit, k: u32) -> Vec<Part> {
    let cuts = Cuts {
        dir: split.dir.clone(),
        bounds: split.bounds.clone(),
    };
    let last = split.shards() - 1;
    cuts.parts()
        .into_iter()
        .filter(|p| match p {
            Part::Range { dir, from, .. } if *dir == split.dir => match from {
                None => k == 0,
                Some(f) => split.shard_of(&format!("{dir}{f}")) == k,
            },
            // Before the cut directory, or after it: the first shard's or
            // the last's (see `Cuts::parts`: on the way down, a range ends
            // at the next level's name; after it, ranges start after it).
            Part::Range { from: None, .. } | Part::Name { .. } => k == 0,
            Part::Range { from: Some(_), .. } | Part::Siblings { .. } => k == last,
            Part::Listed(_) => k == 0,
        })
        .collect()
}

/// The pieces of a listing of everything but the keys under `dir` (a
/// directory: ends in `/`): around each directory on the way down to it,
/// as [`Cuts::parts`] has them, without `dir`'s own range.
pub(super) fn outside_parts(dir: &str) -> Vec<Part> {
    let cuts = Cuts {
        dir: dir.to_owned(),
        bounds: Vec::new(),
    };
    cuts.parts()
        .into_iter()
        .filter(|p| !matches!(p, Part::Range { dir: d, .. } if d == dir))
        .collect()
}

/// One piece of a listing. Pieces are disjoint and in path order. `dir` is
/// a directory of the location (`""`, or ending in `/`); names are the
/// keys' names below it; every name a piece is bounded by sorts alike in
/// byte and path order (see [`stem`]).
#[derive(Debug)]
pub(super) enum Part {
    /// Objects already listed: a first page that held everything.
    Listed(Vec<Listed>),
    /// The keys whose name is at or above `from` and below `to`.
    Range {
        dir: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// The key named `name`, if there is one (beside the directory `name/`).
    Name { dir: String, name: String },
    /// The keys named `name` then a character below `/` (`name.txt`,
    /// `name-old/x`): in path order after everything under `name/`, in byte
    /// order before it.
    Siblings { dir: String, name: String },
}

/// The pieces to list `loc` in: one request tells a small store, listed
/// whole, from a large one, cut where `hints` say (or as its first page
/// suggests).
pub(super) async fn plan(
    loc: &Location,
    hints: &SplitHints,
    first_page: usize,
) -> Result<Vec<Part>> {
    let page: Vec<Listed> = super::resumable(loc, "", None)
        .take(first_page)
        .try_collect()
        .await?;
    if page.len() < first_page {
        return Ok(vec![Part::Listed(page)]);
    }
    let cuts = if hints.0.is_empty() {
        Cuts::from_page(&page.iter().map(|l| l.key.as_str()).collect::<Vec<_>>())
    } else {
        Cuts::from_hints(hints)
    };
    Ok(cuts.parts())
}

impl Cuts {
    /// The pieces of a listing cut here: around each directory on the way
    /// down to the cut directory, the names before it, itself as a name, its
    /// punctuation siblings and the names after; the cut directory in
    /// ranges between its bounds.
    fn parts(&self) -> Vec<Part> {
        let mut parts = Vec::new();
        // What follows each step down, innermost last.
        let mut after = Vec::new();
        let mut dir = String::new();
        for name in self.dir.split_terminator('/') {
            let (d, n) = (dir.clone(), name.to_owned());
            parts.push(Part::Range {
                dir: d.clone(),
                from: None,
                to: Some(n.clone()),
            });
            parts.push(Part::Name {
                dir: d.clone(),
                name: n.clone(),
            });
            after.push([
                Part::Siblings {
                    dir: d.clone(),
                    name: n.clone(),
                },
                // `0` is the first character above `/`.
                Part::Range {
                    dir: d,
                    from: Some(format!("{n}0")),
                    to: None,
                },
            ]);
            dir = format!("{dir}{name}/");
        }
        let mut from: Option<String> = None;
        for to in self.bounds.iter().cloned().map(Some).chain([None]) {
            parts.push(Part::Range {
                dir: dir.clone(),
                from: from.take(),
                to: to.clone(),
            });
            from = to;
        }
        parts.extend(after.into_iter().rev().flatten());
        parts
    }
}

/// The objects of one piece, in the store's order.
pub(super) fn objects(loc: &Location, part: Part) -> BoxStream<'static, Result<Listed>> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match part {
        Part::Listed(files) => stream::iter(files.into_iter().map(Ok)).boxed(),
        Part::Range { dir, from, to } => {
            let after = from.as_deref().and_then(offset_below);
            scan(loc, dir, after, move |name| {
                if to.as_ref().is_some_and(|to| key_order(name, to).is_ge()) {
                    Keep::Stop
                } else if from
                    .as_ref()
                    .is_none_or(|from| key_order(name, from).is_ge())
                {
                    Keep::Yes
                } else {
                    Keep::No
                }
            })
        }
        Part::Name { dir, name } => {
            let after = offset_below(&name);
            scan(loc, dir, after, move |n| match key_order(n, &name) {
                Less => Keep::No,
                Equal => Keep::Yes,
                Greater => Keep::Stop,
            })
        }
        Part::Siblings { dir, name } => {
            // Listed where a byte-ordered store has them (after `name`, up to
            // `name/`), then where a path-ordered one has them (after
            // everything under `name/`); each store finds them in one place.
            let sibling = {
                let name = name.clone();
                move |n: &str| {
                    let next = n.strip_prefix(name.as_str()).and_then(|r| r.chars().next());
                    next.is_some_and(|c| c < '/')
                }
            };
            let under = format!("{name}/");
            // Only a store that listed keys under `name/` first can have
            // siblings after them; without any, both would find them.
            let went_under = Arc::new(AtomicBool::new(false));
            let first = {
                let (name, under, sibling) = (name.clone(), under.clone(), sibling.clone());
                let went_under = went_under.clone();
                scan(loc, dir.clone(), offset_below(&name), move |n| {
                    if key_order(n, &name).is_le() {
                        Keep::No
                    } else if sibling(n) {
                        Keep::Yes
                    } else {
                        went_under.store(n.starts_with(&under), Ordering::Relaxed);
                        Keep::Stop
                    }
                })
            };
            let past = Some(format!("{under}{}", char::MAX));
            let then = scan(loc, dir, past, move |n| {
                if n.starts_with(&under) {
                    Keep::No
                } else if sibling(n) {
                    Keep::Yes
                } else {
                    Keep::Stop
                }
            });
            let then = stream::once(async move {
                if went_under.load(Ordering::Relaxed) {
                    then
                } else {
                    stream::empty().boxed()
                }
            })
            .flatten();
            first.chain(then).boxed()
        }
    }
}

/// What a scan does with a listed name.
enum Keep {
    Yes,
    No,
    /// Past the piece: nothing after it can belong.
    Stop,
}

/// The keys under `dir`, listed after the name `after` (from the start when
/// `None`), as `keep` says.
fn scan(
    loc: &Location,
    dir: String,
    after: Option<String>,
    keep: impl Fn(&str) -> Keep + Send + 'static,
) -> BoxStream<'static, Result<Listed>> {
    let after = after.map(|a| format!("{dir}{a}"));
    super::resumable(loc, dir.trim_end_matches('/'), after)
        .and_then(move |l| {
            ready(match l.key.strip_prefix(dir.as_str()) {
                Some(name) => Ok((keep(name), l)),
                None => Err(MoverError::Object {
                    reason: format!("listed under {dir:?}, but it is not there"),
                    key: l.key,
                }),
            })
        })
        .try_take_while(|(k, _)| ready(Ok(!matches!(k, Keep::Stop))))
        .try_filter_map(|(k, l)| ready(Ok(matches!(k, Keep::Yes).then_some(l))))
        .boxed()
}

/// Streams `parts` one after the other. Up to `lanes` of them run at once,
/// each in its own task and up to [`LANE_AHEAD`] items ahead of the
/// consumer; the next starts when the first is used up. The first error
/// ends the stream.
pub(super) fn in_order<T: Send + 'static>(
    parts: impl Iterator<Item = BoxStream<'static, Result<T>>> + Send + 'static,
    lanes: usize,
) -> BoxStream<'static, Result<T>> {
    struct State<T> {
        parts: Box<dyn Iterator<Item = BoxStream<'static, Result<T>>> + Send>,
        running: VecDeque<BoxStream<'static, Result<T>>>,
        failed: bool,
    }
    let st = State {
        parts: Box::new(parts),
        running: VecDeque::new(),
        failed: false,
    };
    stream::unfold(st, move |mut st| async move {
        if st.failed {
            return None;
        }
        loop {
            while st.running.len() < lanes.max(1) {
                match st.parts.next() {
                    Some(p) => st.running.push_back(run_ahead(p, LANE_AHEAD)),
                    None => break,
                }
            }
            match st.running.front_mut()?.next().await {
                Some(Ok(item)) => return Some((Ok(item), st)),
                Some(Err(e)) => {
                    st.failed = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.running.pop_front();
                }
            }
        }
    })
    .boxed()
}

/// Drives `input` in its own task from now on, up to `ahead` items ahead of
/// the consumer. The task stops when the stream is dropped; if it dies, the
/// stream ends with an error, never early: a short listing would read as
/// deletions.
fn run_ahead<T: Send + 'static>(
    mut input: BoxStream<'static, Result<T>>,
    ahead: usize,
) -> BoxStream<'static, Result<T>> {
    let (tx, rx) = mpsc::channel(ahead.max(1));
    let task = AbortOnDrop(tokio::spawn(async move {
        while let Some(item) = input.next().await {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }));
    stream::unfold(Some((rx, task)), |st| async move {
        let (mut rx, mut task) = st?;
        match rx.recv().await {
            Some(item) => Some((item, Some((rx, task)))),
            None => match (&mut task.0).await {
                Ok(()) => None,
                Err(e) => Some((Err(MoverError::Task(format!("listing stopped: {e}"))), None)),
            },
        }
    })
    .boxed()
}

/// Like [`run_ahead`], but starts only when first polled: a listing is
/// fetched ahead of its consumer, not before anyone asks for it.
pub(super) fn prefetch<T: Send + 'static>(
    input: BoxStream<'static, Result<T>>,
    ahead: usize,
) -> BoxStream<'static, Result<T>> {
    stream::once(async move { run_ahead(input, ahead) })
        .flatten()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(keys: &[String]) -> BoxStream<'static, Result<String>> {
        stream::iter(keys.iter().cloned().map(Ok).collect::<Vec<_>>()).boxed()
    }

    #[tokio::test]
    async fn prefetch_passes_everything_through_in_order() {
        let keys: Vec<String> = (0..5000).map(|i| format!("k/{i:06}")).collect();
        let got: Vec<String> = prefetch(items(&keys), 7).try_collect().await.unwrap();
        assert_eq!(got, keys);
    }

    /// A listing whose task dies must end in an error: ending early would
    /// read as every remaining object deleted.
    #[tokio::test]
    async fn prefetch_reports_a_dead_listing_instead_of_ending_early() {
        let keys: Vec<String> = (0..3).map(|i| format!("k/{i}")).collect();
        let dying = items(&keys)
            .chain(stream::once(async { panic!("the listing task dies") }))
            .boxed();
        let got: Vec<Result<String>> = prefetch(dying, 2).collect().await;
        assert_eq!(got.len(), 4, "three keys, then the error");
        assert!(got[..3].iter().all(|r| r.is_ok()));
        let err = got[3].as_ref().unwrap_err().to_string();
        assert!(err.contains("listing stopped"), "{err}");
    }

    /// Pieces come out one after the other whatever the window, and the
    /// first error ends the stream: nothing after it, however many lanes
    /// had already listed more.
    #[tokio::test]
    async fn pieces_come_out_in_order_and_an_error_ends_them() {
        let pieces: Vec<Vec<String>> = (0..20)
            .map(|p| (0..p * 37 % 11).map(|i| format!("{p:02}/{i:02}")).collect())
            .collect();
        let all: Vec<String> = pieces.concat();
        for lanes in [1, 2, 3, 16, 64] {
            let streams: Vec<_> = pieces.iter().map(|p| items(p)).collect();
            let got: Vec<String> = in_order(streams.into_iter(), lanes)
                .try_collect()
                .await
                .unwrap();
            assert_eq!(got, all, "{lanes} lanes");

            let mut streams: Vec<_> = pieces.iter().map(|p| items(p)).collect();
            streams[5] = items(&pieces[5])
                .chain(stream::once(ready(Err(MoverError::Task("cut".into())))))
                .boxed();
            let got: Vec<Result<String>> = in_order(streams.into_iter(), lanes).collect().await;
            let before: usize = pieces[..6].iter().map(Vec::len).sum();
            assert_eq!(
                got.len(),
                before + 1,
                "{lanes} lanes: the keys before, then the error"
            );
            assert!(got[before].is_err());
        }
    }

    #[test]
    fn the_cut_directory_is_where_most_keys_are() {
        assert_eq!(common_dir(&["chunk/a", "chunk/b", "meta/x"]), "chunk/");
        assert_eq!(common_dir(&["a/b/c/1", "a/b/c/2", "a/b/d/3"]), "a/b/c/");
        assert_eq!(common_dir(&["a/1", "b/2"]), "");
        assert_eq!(common_dir(&["x", "y", "a/1"]), "");
        assert_eq!(common_dir(&[]), "");
    }

    #[test]
    fn bounds_are_stems_that_sort_alike_in_both_orders() {
        let keys = ["chunk/3fa9.1", "chunk/07 b", "chunk/07", "chunk/.x", "top"];
        let cuts = Cuts::from_hints(&SplitHints::from_keys(keys.map(String::from), 4096));
        assert_eq!(cuts.dir, "chunk/");
        assert_eq!(cuts.bounds, ["07", "3fa9"]);
        assert_eq!(stem("é-x"), "é");
        assert_eq!(stem("a\u{7f}b"), "a");
        // Every character of a bound sorts above `/`: byte and path order agree.
        for b in &cuts.bounds {
            assert!(b.bytes().all(|c| c > b'/'));
        }
    }

    /// Hash names are cut evenly through the hash space, about a range per
    /// [`RANGE_KEYS`] keys: from a parent's count, or from how far a first
    /// page reaches.
    #[test]
    fn hash_names_are_cut_evenly() {
        let hash = |i: u64| format!("chunk/{:016x}{i}.1", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let hints = SplitHints::from_keys((0..100).map(hash), 4096);
        let cuts = Cuts::from_hints(&hints);
        assert_eq!(cuts.dir, "chunk/");
        assert_eq!(cuts.bounds.len() as u64, 100 * 4096 / RANGE_KEYS - 1);
        assert!(cuts.bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(cuts.bounds[0].len(), 8);

        // A first page of 1,000 keys reaching 1/1000 into the space: about a
        // million keys, so 333 ranges.
        let page: Vec<String> = (0..1000u64)
            .map(|i| format!("chunk/{:016x}.0", i << 44))
            .collect();
        let page: Vec<&str> = page.iter().map(String::as_str).collect();
        let cuts = Cuts::from_page(&page);
        assert_eq!(cuts.dir, "chunk/");
        let n = cuts.bounds.len();
        assert!((300..=400).contains(&n), "{n}");
        // A page reaching nowhere is a guess of at most 1,000 ranges.
        let page: Vec<String> = (0..1000u64)
            .map(|i| format!("chunk/{:016x}.0", (i << 32) + 5))
            .collect();
        let page: Vec<&str> = page.iter().map(String::as_str).collect();
        assert_eq!(Cuts::from_page(&page).bounds.len(), 999);

        // Uppercase hashes stay uppercase; short or mixed names, or names
        // not spread like hashes (counters), are not hashes.
        let upper = ["0BCDEF0123456789", "7BCDEF0123456789", "EBCDEF0123456789"];
        assert_eq!(Hex::of(upper.into_iter()), Some(Hex::Upper));
        assert_eq!(Hex::of(["abcdef01234"].into_iter()), None);
        let mixed = ["0bcdef0123456789", "7BCDEF0123456789", "ebcdef0123456789"];
        assert_eq!(Hex::of(mixed.into_iter()), None);
        let counters: Vec<String> = (1..100).map(|i| format!("{i:016x}")).collect();
        assert_eq!(Hex::of(counters.iter().map(String::as_str)), None);
    }

    #[test]
    fn other_first_listings_fan_out_over_letters_and_digits() {
        let words = Cuts::from_page(&["photos/moose.jpg", "photos/dog.jpg"]);
        assert_eq!(words.dir, "photos/");
        assert_eq!(words.bounds.len(), 61);
        assert!(words.bounds.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn shards_partition_the_pieces_in_order() {
        let bounds: Vec<String> = ["1", "2", "3", "4", "5"].map(String::from).to_vec();
        let split = KeySplit {
            dir: "a/chunk/".into(),
            bounds: bounds.clone(),
            // Shard 1 is empty: shards 1 and 2 start at one bound.
            splits: ["2", "2", "4"].map(String::from).to_vec(),
        };
        assert!(split.check().is_ok());
        let all = Cuts {
            dir: split.dir.clone(),
            bounds,
        }
        .parts();
        let by_shard: Vec<Vec<Part>> = (0..4).map(|k| shard_parts(&split, k)).collect();
        assert!(by_shard[1].is_empty());
        let joined: Vec<Part> = by_shard.into_iter().flatten().collect();
        assert_eq!(format!("{joined:?}"), format!("{all:?}"));
    }

    #[test]
    fn offsets_sort_just_below_their_bound() {
        assert_eq!(offset_below("8").as_deref(), Some("7\u{10FFFF}"));
        assert_eq!(offset_below("a0").as_deref(), Some("a/\u{10FFFF}"));
        assert_eq!(offset_below("0"), None);
        assert_eq!(offset_below("\u{80}").as_deref(), Some("~\u{10FFFF}"));
        assert_eq!(
            offset_below("\u{e000}").as_deref(),
            Some("\u{d7ff}\u{10FFFF}")
        );
        for from in ["8", "a0", "ab", "é", "\u{e000}"] {
            let o = offset_below(from).unwrap();
            assert!(
                o.as_str() < from && key_order(&o, from).is_lt(),
                "{o:?} {from:?}"
            );
        }
    }
}
