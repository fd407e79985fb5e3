//! Merge-join of two key-sorted sequences: a source listing against a
//! manifest (backup), or a manifest against a target listing (restore).
//!
//! The engine drives [`step`] over async streams; [`merge_join`] is the same
//! logic over iterators, for tests and for callers that hold both sides.

use std::cmp::Ordering;
use std::iter::Peekable;

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
        (Some(l), Some(r)) => Some(match l.as_bytes().cmp(r.as_bytes()) {
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
            a in proptest::collection::btree_set("[a-c/é-]{0,4}", 0..60),
            b in proptest::collection::btree_set("[a-c/é-]{0,4}", 0..60),
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
            prop_assert_eq!(only_a, a.difference(&b).cloned().collect::<BTreeSet<_>>());
            prop_assert_eq!(only_b, b.difference(&a).cloned().collect::<BTreeSet<_>>());
            prop_assert_eq!(both, a.intersection(&b).cloned().collect::<BTreeSet<_>>());
            let mut sorted = order.clone();
            sorted.sort();
            prop_assert_eq!(order, sorted);
        }
    }
}
