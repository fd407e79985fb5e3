//! Every tunable of the engine, with its default and the reason for it.
//! Nothing in the pipeline uses a bare number: it asks [`Limits`].

/// How much the engine may do at once.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests to object stores in flight at once. S3-compatible servers
    /// serve dozens of parallel requests per client; 32 keeps a 10 Gb/s link
    /// busy with 8 MiB transfers without swamping a small MinIO/SeaweedFS.
    pub requests: usize,
    /// Bytes of object data held in memory at once across all transfers
    /// (the memory budget). Each object reserves what it needs before it
    /// starts, so peak memory is this plus a small per-object overhead,
    /// whatever the object sizes. 128 MiB holds 16 chunks of 8 MiB in
    /// flight: on the benchmark machine a backup of 1–20 MB objects ran as
    /// fast with 128 MiB as with 512 (peak RSS ~200 MiB against ~570, see
    /// BENCHMARKS.md); raise it for links faster than ~1 GB/s.
    pub memory: u64,
    /// Objects in flight in the ordered pipeline. Manifests are written in
    /// key order; a wide window keeps many small objects moving while a
    /// large one is still transferring.
    pub window: usize,
    /// Chunks of one large object transferred at once: bounds a single
    /// object's share of `memory` so large objects stream instead of load.
    pub object_parts: usize,
    /// Objects larger than this are written to a target with multipart
    /// upload; smaller ones with a single PUT (two fewer requests).
    pub multipart_threshold: u64,
    /// Smallest multipart part written to a target: chunks are grouped up to
    /// this size. S3 refuses parts under 5 MiB (except the last).
    pub part_size: u64,
    /// CPU-bound workers (hashing, compression) running at once.
    pub cpu: usize,
    /// Segment and chunk-listing reads issued ahead of need; also segment
    /// writes in flight.
    pub read_ahead: usize,
    /// Chunks checked with one HEAD request each before a write, before one
    /// listing of every chunk in the repository replaces the HEADs. When the
    /// repository's size is known, the allowance grows to a twentieth of its
    /// chunk count (on SeaweedFS, listing 1,000 chunks cost about as much as
    /// 50 HEADs). A small backup (a no-change run writes only its manifest, a
    /// 1% incremental 1% of the chunks) then costs a few requests instead of
    /// a listing; a large one pays for the listing once.
    pub head_checks: usize,
    /// A restore stops after this many objects failed (corrupt chunks and
    /// the like): past it the cause is surely not one bad object.
    pub max_object_errors: usize,
    /// Pieces of the key space listed at once when a whole bucket is listed
    /// (backup and its rounds, restore plans). A lane is one LIST request in
    /// flight: one lane lists 1,000 keys per round trip, so at ~50 ms a
    /// request on S3 a million keys take ~70 s even when nothing changed.
    /// S3 serves many concurrent LISTs of one bucket. Against SeaweedFS with
    /// 50 ms added per round trip, 100,000 keys listed in 8.5 s in one lane
    /// and 3.3 s in 16 (debug build, two cores shared with the server). Never
    /// more than `requests`.
    pub list_lanes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests: 32,
            memory: 128 << 20,
            window: 1024,
            object_parts: 8,
            multipart_threshold: 32 << 20,
            part_size: 8 << 20,
            cpu: std::thread::available_parallelism().map_or(2, |n| n.get()),
            read_ahead: 8,
            head_checks: 1024,
            max_object_errors: 20,
            list_lanes: 16,
        }
    }
}

impl Limits {
    /// Checks the limits against the repository's chunk size: the budget must
    /// hold at least one large object's window of chunks.
    pub fn check(&self, chunk_size: u64) -> Result<(), String> {
        let need = chunk_size.max(self.part_size) * 2;
        if self.memory < need {
            return Err(format!(
                "memory budget {} MiB is below the {} MiB needed for two chunks of {} MiB",
                self.memory >> 20,
                need >> 20,
                chunk_size >> 20
            ));
        }
        if self.requests == 0
            || self.window == 0
            || self.object_parts == 0
            || self.cpu == 0
            || self.list_lanes == 0
        {
            return Err(
                "requests, window, object parts, cpu workers and list lanes must be at least 1"
                    .into(),
            );
        }
        if self.part_size < 5 << 20 {
            return Err("part size must be at least 5 MiB (S3's minimum)".into());
        }
        Ok(())
    }

    /// Listing lanes to use: `list_lanes`, within the `requests` budget.
    pub fn lanes(&self) -> usize {
        self.list_lanes.min(self.requests).max(1)
    }
}
