//! The blake3 of a whole object, from the chaining values of its chunks.
//!
//! Objects are cut into chunks of a fixed power-of-two size, so each chunk
//! is a complete BLAKE3 subtree. Workers hash chunks independently (in any
//! order, on any thread) with [`chunk_cv`]; [`object_hash`] then merges the
//! chaining values into the same root hash `blake3::hash(whole object)` gives.

use blake3::hazmat::{self, ChainingValue, HasherExt, Mode};

/// Is `size` usable as an object chunk size? Subtree hashing needs a power of
/// two of at least one BLAKE3 chunk (1 KiB).
pub fn valid_chunk_size(size: u64) -> bool {
    size.is_power_of_two() && size >= blake3::CHUNK_LEN as u64
}

/// The chaining value of the chunk that starts at byte `offset` of an object.
/// Only meaningful for objects of more than one chunk.
pub fn chunk_cv(data: &[u8], offset: u64) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

/// The first chunk of an object of several: its blake3 (the chunk's id) and
/// its chaining value, from one pass over the bytes instead of two. At offset
/// 0 both are the parent node of the chunk's two halves, with and without the
/// root flag. `data` must be a full chunk (see [`valid_chunk_size`]).
pub fn first_chunk_hashes(data: &[u8]) -> (blake3::Hash, ChainingValue) {
    assert!(
        data.len().is_power_of_two() && data.len() >= 2 * blake3::CHUNK_LEN,
        "a first chunk is a full chunk of two BLAKE3 chunks or more"
    );
    let half = data.len() / 2;
    let (left, right) = (
        chunk_cv(&data[..half], 0),
        chunk_cv(&data[half..], half as u64),
    );
    (
        hazmat::merge_subtrees_root(&left, &right, Mode::Hash),
        hazmat::merge_subtrees_non_root(&left, &right, Mode::Hash),
    )
}

/// The blake3 of an object made of two or more chunks, from their chaining
/// values in order. Every chunk but the last must be a full chunk of a size
/// accepted by [`valid_chunk_size`].
pub fn object_hash(cvs: &[ChainingValue]) -> blake3::Hash {
    assert!(cvs.len() >= 2, "objects of one chunk are hashed whole");
    let (left, right) = cvs.split_at(left_count(cvs.len()));
    hazmat::merge_subtrees_root(&subtree(left), &subtree(right), Mode::Hash)
}

fn subtree(cvs: &[ChainingValue]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (left, right) = cvs.split_at(left_count(cvs.len()));
    hazmat::merge_subtrees_non_root(&subtree(left), &subtree(right), Mode::Hash)
}

/// BLAKE3 puts the largest power of two of (equal, power-of-two) chunks that
/// is strictly less than the total on the left.
fn left_count(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn via_chunks(data: &[u8], chunk: usize) -> blake3::Hash {
        let cvs: Vec<_> = data
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| chunk_cv(c, (i * chunk) as u64))
            .collect();
        if cvs.len() < 2 {
            blake3::hash(data)
        } else {
            object_hash(&cvs)
        }
    }

    #[test]
    fn left_count_is_largest_power_of_two_below() {
        assert_eq!(left_count(2), 1);
        assert_eq!(left_count(3), 2);
        assert_eq!(left_count(4), 2);
        assert_eq!(left_count(5), 4);
        assert_eq!(left_count(9), 8);
        assert_eq!(left_count(16), 8);
        assert_eq!(left_count(17), 16);
    }

    #[test]
    fn matches_blake3_on_exact_and_ragged_lengths() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for chunk in [1024, 2048, 4096, 8192] {
            for len in [
                chunk + 1,
                2 * chunk,
                3 * chunk - 7,
                5 * chunk,
                8 * chunk + 1,
                70_000,
            ] {
                let d = &data[..len.min(data.len())];
                assert_eq!(
                    via_chunks(d, chunk),
                    blake3::hash(d),
                    "chunk {chunk} len {len}"
                );
            }
        }
    }

    #[test]
    fn first_chunk_hashes_equal_the_two_passes() {
        let data: Vec<u8> = (0..(64u32 << 10)).map(|i| (i * 7 % 253) as u8).collect();
        for len in [2048, 4096, 16 << 10, 64 << 10] {
            let d = &data[..len];
            let (id, cv) = first_chunk_hashes(d);
            assert_eq!(id, blake3::hash(d), "len {len}");
            assert_eq!(cv, chunk_cv(d, 0), "len {len}");
        }
    }

    proptest! {
        #[test]
        fn streaming_by_chunks_equals_one_shot(len in 0usize..40_000, shift in 0u32..4, seed: u8) {
            let chunk = 1024usize << shift;
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed)).collect();
            prop_assert_eq!(via_chunks(&data, chunk), blake3::hash(&data));
        }
    }
}
