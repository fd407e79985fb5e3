//! Criterion benches of haul's CPU stages, each beside the raw primitive on
//! the same input so the overhead of haul's stage reads as a ratio:
//!
//! - `chunk/*`: the object chunk stage (blake3 + compressibility sample +
//!   zstd when it pays + framing), vs raw `blake3::hash` + `zstd` level 3, on
//!   8 MiB of incompressible data (Pachyderm's chunks) and of text-like data.
//! - `segment/*`: manifest segment encode and parse, per entry.
//! - `diff/*`: the merge-join of a listing against a manifest, per key.
//!
//! Run: `cargo bench -p haul-benches --bench cpu` (see BENCHMARKS.md).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use haul_manifest::diff::merge_join;
use haul_manifest::segment::{SegmentWriter, parse};
use haul_manifest::{ChunkId, ObjectEntry, chunk, tree};

const CHUNK: usize = 8 << 20;
const ZSTD_LEVEL: i32 = 3;

fn noise(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"bench")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Text-like data: JSON-ish lines from a small vocabulary, ~4:1 under zstd.
fn text(len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "commit",
        "branch",
        "repo",
        "pipeline",
        "datum",
        "\"id\":",
        "\"size\":",
        "true",
        "false",
        "{",
        "}",
        "\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % 12) as usize].as_bytes());
        out.extend_from_slice(format!("{} ", x % 1000).as_bytes());
    }
    out.truncate(len);
    out
}

fn chunk_stage(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    g.sample_size(20);
    for (name, data) in [("incompressible", noise(CHUNK)), ("text", text(CHUNK))] {
        g.bench_with_input(BenchmarkId::new("raw_blake3", name), &data, |b, d| {
            b.iter(|| blake3::hash(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("raw_blake3+zstd", name), &data, |b, d| {
            b.iter(|| {
                let h = blake3::hash(black_box(d));
                let z = zstd::bulk::compress(d, ZSTD_LEVEL).expect("zstd");
                (h, z.len())
            })
        });
        g.bench_with_input(BenchmarkId::new("haul_encode", name), &data, |b, d| {
            b.iter(|| chunk::encode(black_box(d), ZSTD_LEVEL).blob_len())
        });
        // Chunks of objects larger than one chunk also yield a subtree hash.
        g.bench_with_input(BenchmarkId::new("haul_encode+cv", name), &data, |b, d| {
            b.iter(|| {
                (
                    chunk::encode(black_box(d), ZSTD_LEVEL).blob_len(),
                    tree::chunk_cv(d, CHUNK as u64),
                )
            })
        });
        // The first chunk of such an object gets both hashes from one pass.
        g.bench_with_input(
            BenchmarkId::new("haul_encode+cv_first", name),
            &data,
            |b, d| {
                b.iter(|| {
                    let (id, cv) = tree::first_chunk_hashes(black_box(d));
                    (
                        chunk::encode_with_id(id.into(), d, ZSTD_LEVEL).blob_len(),
                        cv,
                    )
                })
            },
        );
        let enc = chunk::encode(&data, ZSTD_LEVEL);
        let blob = enc.to_blob(&data);
        g.bench_with_input(
            BenchmarkId::new("haul_decode_verified", name),
            &blob,
            |b, blob| {
                b.iter(|| {
                    chunk::decode(&enc.id, black_box(blob))
                        .expect("decodes")
                        .len()
                })
            },
        );
    }
    g.finish();
}

fn entries(n: usize) -> Vec<ObjectEntry> {
    (0..n)
        .map(|i| {
            let key = format!("chunk/{:064x}.{}", i as u128 * 0x9E37_79B9_7F4A_7C15, i % 3);
            let hash = ChunkId::of(key.as_bytes());
            ObjectEntry::new(
                key,
                8 << 20,
                Some(format!("\"{}\"", &hash.to_hex()[..32])),
                None,
                hash,
                vec![],
            )
        })
        .collect()
}

fn segments(c: &mut Criterion) {
    let es = entries(100_000);
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Elements(es.len() as u64));
    g.sample_size(10);
    g.bench_function("encode_100k_entries", |b| {
        b.iter(|| {
            let mut w = SegmentWriter::new(4096);
            let mut bytes = 0;
            for e in &es {
                if let Some(s) = w.push(e) {
                    bytes += chunk::encode(&s.plain, ZSTD_LEVEL).blob_len();
                }
            }
            bytes
        })
    });
    let mut w = SegmentWriter::new(4096);
    let mut plains: Vec<Vec<u8>> = es
        .iter()
        .filter_map(|e| w.push(e))
        .map(|s| s.plain)
        .collect();
    plains.extend(w.finish().map(|s| s.plain));
    g.bench_function("parse_100k_entries", |b| {
        b.iter(|| {
            plains
                .iter()
                .map(|p| parse(black_box(p), "bench").expect("parses").len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn diff(c: &mut Criterion) {
    let es = entries(100_000);
    let mut keys: Vec<String> = es.iter().map(|e| e.key.clone()).collect();
    // The listing: 1% changed keys.
    for k in keys.iter_mut().step_by(100) {
        k.push('x');
    }
    keys.sort_by(|a, b| haul_manifest::diff::key_order(a, b));
    let mut g = c.benchmark_group("diff");
    g.throughput(Throughput::Elements(es.len() as u64));
    g.sample_size(10);
    g.bench_function("merge_join_100k", |b| {
        b.iter(|| merge_join(black_box(es.iter().cloned()), keys.iter().cloned()).count())
    });
    g.bench_function("raw_sorted_set_difference_100k", |b| {
        // The floor: the same walk over two sorted arrays of strings.
        b.iter(|| {
            let (mut i, mut j, mut n) = (0, 0, 0);
            while i < es.len() && j < keys.len() {
                match es[i].key.as_str().cmp(keys[j].as_str()) {
                    std::cmp::Ordering::Less => i += 1,
                    std::cmp::Ordering::Greater => j += 1,
                    std::cmp::Ordering::Equal => {
                        i += 1;
                        j += 1;
                    }
                }
                n += 1;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, chunk_stage, segments, diff);
criterion_main!(benches);
