//! Command-line arguments, as the operator types them. `main` turns them into
//! validated objects (URLs, limits, config) before any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Back up and restore applications whose metadata lives in PostgreSQL and
/// whose data lives in an object store, with the least downtime possible.
///
/// A repository is a folder in an object store (s3://bucket/prefix,
/// gs://bucket/prefix, az://container/prefix, file:///abs/path) that holds
/// content-addressed chunks and snapshots. Every backup is incremental: only
/// objects that changed since the previous snapshot of the same source are
/// read, and only chunks the repository lacks are uploaded.
///
/// S3 credentials and endpoint come from the usual AWS variables
/// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
/// AWS_PROFILE, AWS_ENDPOINT_URL, AWS_CA_BUNDLE) or, per store, from
/// [[store]] sections of the config file (see --config).
#[derive(Debug, Parser)]
#[command(name = "haul", version, propagate_version = true, max_term_width = 100)]
#[command(after_help = "Examples:
  haul init s3://backups/pachyderm
  haul backup --source s3://pachyderm-data --repo s3://backups/pachyderm
  haul snapshots --repo s3://backups/pachyderm
  haul restore latest --repo s3://backups/pachyderm --to s3://pachyderm-restored
  haul verify --repo s3://backups/pachyderm --read-data")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Config file (TOML). Its [[store]] sections give per-store endpoint,
    /// region, profile and the names of credential variables, e.g.
    ///   [[store]]
    ///   url = "s3://prod-backups"
    ///   endpoint = "https://minio.internal:9000"
    ///   access_key_id_env = "BACKUP_AWS_ACCESS_KEY_ID"
    ///   secret_access_key_env = "BACKUP_AWS_SECRET_ACCESS_KEY"
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "HAUL_CONFIG",
        value_name = "FILE",
        verbatim_doc_comment
    )]
    pub config: Option<PathBuf>,

    /// More log output on stderr (-v: info, -vv: debug). HAUL_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Never draw progress bars (they are drawn only when stderr is a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Tuning. The defaults suit a backup host with a 10 Gb/s link; lower them to
/// be gentle with a small object store.
#[derive(Debug, Args)]
#[command(next_help_heading = "Tuning")]
pub struct LimitArgs {
    /// Requests in flight at once to each store [default: 32].
    #[arg(long, global = true, value_name = "N", env = "HAUL_REQUESTS")]
    pub requests: Option<usize>,
    /// Memory budget for object data in flight, in MiB [default: 512].
    #[arg(long, global = true, value_name = "MIB", env = "HAUL_MEMORY_MIB")]
    pub memory_mib: Option<u64>,
    /// Objects in flight in the ordered pipeline [default: 1024].
    #[arg(long, global = true, value_name = "N")]
    pub window: Option<usize>,
    /// Objects above this size (MiB) are written with multipart upload [default: 32].
    #[arg(long, global = true, value_name = "MIB")]
    pub multipart_threshold_mib: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository at an empty location.
    Init {
        /// Where: s3://bucket/prefix, gs://..., az://..., file:///abs/path.
        #[arg(value_name = "REPO")]
        repo: String,
    },

    /// Back up a bucket into a repository (incremental against its last snapshot).
    ///
    /// Lists the source, compares it with the newest snapshot of the same
    /// source in the repository (key, size, ETag), reads only new and changed
    /// objects, and commits a new snapshot. The snapshot exists only once
    /// everything is stored: an interrupted backup leaves no snapshot.
    Backup {
        /// The bucket to back up, e.g. s3://pachyderm-data.
        #[arg(long, value_name = "URL")]
        source: Option<String>,
        #[command(flatten)]
        repo: RepoArg,
        /// Show what would be read, without reading or writing anything.
        #[arg(long)]
        dry_run: bool,
        /// A label stored with the snapshot (repeatable), e.g. --label cluster=prod.
        #[arg(long, value_name = "KEY=VALUE")]
        label: Vec<String>,
    },

    /// List the snapshots of a repository, oldest first.
    Snapshots {
        #[command(flatten)]
        repo: RepoArg,
    },

    /// Restore a snapshot's bucket into a target bucket.
    ///
    /// First computes and prints a plan: objects missing from the target,
    /// different in it, unchanged, and extraneous (in the target, not in the
    /// snapshot). Then copies only the missing and different objects,
    /// checking the blake3 hash of every chunk; an object whose data is
    /// damaged is never written. Extraneous objects are kept unless
    /// --delete-extraneous is given. Refreshing a target that holds an older
    /// snapshot costs only the difference.
    Restore {
        /// Snapshot id (or a unique prefix of one), or `latest`.
        #[arg(value_name = "SNAPSHOT")]
        snapshot: String,
        #[command(flatten)]
        repo: RepoArg,
        /// The bucket to restore into; it may already hold data.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Delete objects of the target that are not in the snapshot, so the
        /// target ends up equal to the snapshot.
        #[arg(long)]
        delete_extraneous: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },

    /// Check a repository: every chunk a snapshot names exists (and, with
    /// --read-data, reads back with the right hash).
    Verify {
        /// A snapshot to check (id, prefix or `latest`); all when omitted.
        #[arg(value_name = "SNAPSHOT")]
        snapshot: Option<String>,
        #[command(flatten)]
        repo: RepoArg,
        /// Read every chunk and check its blake3 hash (reads the whole repository).
        #[arg(long)]
        read_data: bool,
    },
}

#[derive(Debug, Args)]
pub struct RepoArg {
    /// The repository, e.g. s3://backups/pachyderm.
    #[arg(long = "repo", short = 'r', env = "HAUL_REPO", value_name = "REPO")]
    pub url: String,
}
