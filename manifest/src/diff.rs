//! Key order, and merge-join of two key-sorted sequences: a source listing
//! against a manifest (backup), or a manifest against a target listing
//! (restore).
//!
//! **Key order** is *path order*: keys compare as bytes, except that `/`
//! sorts before every other byte, so everything under `a/` comes right after
//! `a` and before `a-b` or `a.txt`. It is the order of a depth-first walk of
//! a directory tree, and the order some S3 servers (SeaweedFS) list in;
//! stores that list in plain byte order (AWS S3, GCS, Azure) are brought to
//! it by the engine with a small buffer.
//!
//! The engine drives [`step`] over async streams; [`merge_join`] is the same
//! logic over iterators, for tests and for callers that hold both sides.

use std::cmp::Ordering;
use std::iter::Peekable;

/// Compares two keys in path order (see the module doc).
pub fn key_order(a: &str, b: &str) -> Ordering {
    let rank = |c: u8| if c == b'/' { 0u16 } else { c as u16 + 1 };
    a.bytes().map(rank).cmp(b.bytes().map(rank))
}

/// Which side(s) the next key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Only the left side has the next key.
    Left,
    /// Only the right side has it.
    Right,
    /// Both sides have it.
    Both,
}

/// Decides the next step from the keys at the head of each side.
/// `None` when both sides are exhausted.
pub fn step(left: Option<&str>, right: Option<&str>) -> Option<Step> {
    match (left, right) {
        (None, None) => None,
        (Some(_), None) => Some(Step::Left),
        (None, Some(_)) => Some(Step::Right),
        (Some(l), Some(r)) => Some(match key_order(l, r) {
            Ordering::Less => Step::Left,
            Ordering::Greater => Step::Right,
            Ordering::Equal => Step::Both,
        }),
    }
}

/// One key of a merge-join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined<L, R> {
    Left(L),
    Right(R),
    Both(L, R),
}

/// A key of an item in a sorted sequence.
pub trait Keyed {
    fn key(&self) -> &str;
}

impl Keyed for crate::ObjectEntry {
    fn key(&self) -> &str {
        &self.key
    }
}

impl Keyed for String {
    fn key(&self) -> &str {
        self
    }
}

/// Merge-joins two key-sorted iterators.
pub fn merge_join<L: Keyed, R: Keyed>(
    left: impl IntoIterator<Item = L>,
    right: impl IntoIterator<Item = R>,
) -> MergeJoin<impl Iterator<Item = L>, impl Iterator<Item = R>> {
    MergeJoin {
        left: left.into_iter().peekable(),
        right: right.into_iter().peekable(),
    }
}

#[allow(missing_debug_implementations)]
pub struct MergeJoin<A: Iterator, B: Iterator> {
    left: Peekable<A>,
    right: Peekable<B>,
}

impl<L: Keyed, R: Keyed, A: Iterator<Item = L>, B: Iterator<Item = R>> Iterator
    for MergeJoin<A, B>
{
    type Item = Joined<L, R>;
    fn next(&mut self) -> Option<Self::Item> {
        let s = step(
            self.left.peek().map(Keyed::key),
            self.right.peek().map(Keyed::key),
        )?;
        Some(match s {
            Step::Left => Joined::Left(self.left.next()?),
            Step::Right => Joined::Right(self.right.next()?),
            Step::Both => Joined::Both(self.left.next()?, self.right.next()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn merge_join_matches_set_algebra(
            a in proptest::collection::btree_set("[a-c/é-]{0,4}", 0..60)
                .prop_map(|s| { let mut v: Vec<String> = s.into_iter().collect(); v.sort_by(|x, y| key_order(x, y)); v }),
            b in proptest::collection::btree_set("[a-c/é-]{0,4}", 0..60)
                .prop_map(|s| { let mut v: Vec<String> = s.into_iter().collect(); v.sort_by(|x, y| key_order(x, y)); v }),
        ) {
            let mut only_a = BTreeSet::new();
            let mut only_b = BTreeSet::new();
            let mut both = BTreeSet::new();
            let mut order = Vec::new();
            for j in merge_join(a.iter().cloned(), b.iter().cloned()) {
                match j {
                    Joined::Left(l) => { order.push(l.clone()); only_a.insert(l); }
                    Joined::Right(r) => { order.push(r.clone()); only_b.insert(r); }
                    Joined::Both(l, r) => { prop_assert_eq!(&l, &r); order.push(l.clone()); both.insert(l); }
                }
            }
            let (sa, sb): (BTreeSet<String>, BTreeSet<String>) = (a.iter().cloned().collect(), b.iter().cloned().collect());
            prop_assert_eq!(only_a, sa.difference(&sb).cloned().collect::<BTreeSet<_>>());
            prop_assert_eq!(only_b, sb.difference(&sa).cloned().collect::<BTreeSet<_>>());
            prop_assert_eq!(both, sa.intersection(&sb).cloned().collect::<BTreeSet<_>>());
            let mut sorted = order.clone();
            sorted.sort_by(|a, b| key_order(a, b));
            prop_assert_eq!(order, sorted);
        }

        #[test]
        fn path_order_is_byte_order_of_segments(a in "[a-c/ .-]{0,6}", b in "[a-c/ .-]{0,6}") {
            let segs = |s: &str| s.split('/').map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
            prop_assert_eq!(key_order(&a, &b), segs(&a).cmp(&segs(&b)));
        }
    }

    #[test]
    fn path_order_puts_a_directory_before_its_low_siblings() {
        let mut keys = vec![
            "a-b", "a/b-c", "a", "a b", "a/b", "a!", "dir-file", "a/b/c", "dir/file",
        ];
        keys.sort_by(|a, b| key_order(a, b));
        assert_eq!(
            keys,
            [
                "a", "a/b", "a/b/c", "a/b-c", "a b", "a!", "a-b", "dir/file", "dir-file"
            ]
        );
    }
}
