//! haul's one integration-test binary. Tests drive the real `haul` binary
//! against a real S3 server (SeaweedFS on 127.0.0.1), local files and
//! memory. Start the services with `bash scripts/test.sh`, which runs this
//! suite; run alone, the S3 tests fail with a message saying so. The
//! damaged-repository fixtures (`fixtures`) need no service.

mod bad_input;
mod bucket_e2e;
mod cli_output;
mod cluster;
mod cluster_rig;
mod common;
mod conformance;
mod db;
mod encryption;
mod fixtures;
mod golden;
mod lanes;
mod packs;
mod proxy_faults;
mod prune;
mod refresh;
mod retention;
mod shards;
