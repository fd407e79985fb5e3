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
/// AWS_PROFILE, AWS_ENDPOINT_URL, AWS_CA_BUNDLE); Azure's from
/// AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY (or
/// AZURE_STORAGE_SAS_KEY, AZURE_CLIENT_ID/SECRET/TENANT_ID),
/// AZURE_STORAGE_ENDPOINT; GCS's from GOOGLE_SERVICE_ACCOUNT or
/// GOOGLE_APPLICATION_CREDENTIALS. Per store, [[store]] sections of the
/// config file override them (see --config).
#[derive(Debug, Parser)]
#[command(name = "haul", version, propagate_version = true, max_term_width = 100)]
#[command(after_help = "Examples:
  haul init s3://backups/pachyderm
  haul backup --source s3://pachyderm-data --repo s3://backups/pachyderm \\
      --db pachyderm=postgresql://pachyderm@pg.internal/pachyderm?sslmode=verify-full \\
      --db dex=postgresql://pachyderm@pg.internal/dex?sslmode=verify-full
  haul snapshots --repo s3://backups/pachyderm
  haul restore latest --repo s3://backups/pachyderm --to s3://pachyderm-restored \\
      --db pachyderm=postgresql://pachyderm@pg-new/pachyderm --db dex=postgresql://pachyderm@pg-new/dex
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

    /// Config file (TOML). Its [[store]] sections give per-store endpoint
    /// and allow_http; for s3:// region, profile, payload and the names of
    /// credential variables (access_key_id_env, ...); for az:// account,
    /// access_key_env, use_emulator; for gs:// service_account_path; [cluster]
    /// describes what `haul backup` backs up, [restore] where `haul restore`
    /// restores it (flags override both), e.g.
    ///   [[store]]
    ///   url = "s3://prod-backups"
    ///   endpoint = "https://minio.internal:9000"
    ///   access_key_id_env = "BACKUP_AWS_ACCESS_KEY_ID"
    ///   secret_access_key_env = "BACKUP_AWS_SECRET_ACCESS_KEY"
    ///   [cluster]
    ///   repo = "s3://prod-backups/pachyderm"
    ///   source = "s3://pachyderm-data"
    ///   pause = "kubectl"
    ///   context = "prod"
    ///   max_downtime = "2m"
    ///   helm_values = "values.yaml"
    ///   [cluster.databases]
    ///   pachyderm = "postgresql://pachyderm@pg/pachyderm"
    ///   dex = "postgresql://pachyderm@pg/dex"
    ///   [restore]
    ///   to = "s3://pachyderm-data-restored"
    ///   helm_values_out = "restored-values.yaml"
    ///   [restore.databases]
    ///   pachyderm = "postgresql://postgres@pg-new/pachyderm"
    ///   dex = "postgresql://postgres@pg-new/dex"
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
    /// Memory budget for object data in flight, in MiB [default: 128].
    #[arg(long, global = true, value_name = "MIB", env = "HAUL_MEMORY_MIB")]
    pub memory_mib: Option<u64>,
    /// Objects in flight in the ordered pipeline [default: 1024].
    #[arg(long, global = true, value_name = "N")]
    pub window: Option<usize>,
    /// Ranges of a bucket listed at once, each one LIST request in flight,
    /// at most --requests [default: 16].
    #[arg(long, global = true, value_name = "N")]
    pub list_lanes: Option<usize>,
    /// Objects above this size (MiB) are written with multipart upload [default: 32].
    #[arg(long, global = true, value_name = "MIB")]
    pub multipart_threshold_mib: Option<u64>,
}

// Parsed once per run: the size of the largest variant (backup's flags)
// costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository at an empty location, encrypted with the key in
    /// the environment.
    ///
    /// Everything haul stores but haul-repo.json is sealed
    /// (XChaCha20-Poly1305) with a random master key, which the key you give
    /// unlocks: HAUL_PASSWORD, HAUL_PASSWORD_FILE, HAUL_PASSWORD_COMMAND (a
    /// command that prints it: a vault or KMS CLI) or HAUL_KEY_FILE (make
    /// one with `haul key generate FILE`). Keep that key apart from the
    /// repository: without it the backups cannot be read. More keys: `haul
    /// key add`.
    #[command(after_help = "Examples:
  haul key generate ~/.config/haul/prod.key
  HAUL_KEY_FILE=~/.config/haul/prod.key haul init s3://backups/pachyderm
  HAUL_PASSWORD_COMMAND='vault kv get -field=pw secret/haul' haul init s3://backups/pachyderm
  haul init file:///tmp/scratch --insecure-no-encryption
  haul init s3://backups/pachyderm --pack-size 16
  haul init s3://backups-locked/pachyderm --object-lock 30 --object-lock-mode compliance")]
    Init {
        /// Where: s3://bucket/prefix, gs://..., az://..., file:///abs/path.
        #[arg(value_name = "REPO")]
        repo: String,
        /// Store everything in plaintext: whoever can read the bucket reads
        /// the databases' secrets. For throwaway repositories only.
        #[arg(long)]
        insecure_no_encryption: bool,
        /// Gather chunks under 1 MiB (small objects, dump pieces, manifest
        /// segments) into packs of this many MiB, so a bucket of many small
        /// objects costs a few large writes instead of one per object
        /// [default: 8]. 0 stores every chunk as an object of its own.
        #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(0..=256))]
        pack_size: Option<u32>,
        /// Average size of a database dump's content-defined chunks, in KiB
        /// (chunks range from a quarter of it to four times it) [default:
        /// 128]. Smaller chunks upload less of a dump after a change (a 1%
        /// change re-uploads 2–3% of a dump at 128 KiB, ~10% at 1024), at
        /// the cost of more chunks per dump.
        #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(1..=16384))]
        dump_chunk_kib: Option<u32>,
        /// Immutable backups (S3 only, on a bucket created with Object Lock
        /// enabled): chunks, packs, indexes and snapshot roots are written
        /// with a retention of this many days, so nobody, not even haul's
        /// own credentials, can delete or overwrite them before it. forget
        /// and prune leave them until then and say so. The bucket is
        /// versioned: add a lifecycle rule that expires noncurrent versions
        /// so that what prune deletes after the retention frees its space.
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
        object_lock: Option<u32>,
        /// governance (users allowed to bypass governance retention may
        /// still delete early) or compliance (nobody may).
        #[arg(long, value_name = "MODE", default_value = "governance", requires = "object_lock",
              value_parser = ["governance", "compliance"])]
        object_lock_mode: String,
    },

    /// Forget snapshots: those a retention policy does not keep, or those named.
    ///
    /// A policy (flags, or the config file's [retention] section) keeps a
    /// snapshot when any rule keeps it: the N newest (--keep-last); the
    /// newest of each of the N newest hours, days, ISO weeks, months or
    /// years that hold one (--keep-hourly ... --keep-yearly, in UTC); every
    /// one within a duration of the newest (--keep-within); every one with a
    /// label (--keep-label). It applies to each source on its own (bucket
    /// and databases), so one repository can serve several clusters.
    /// Forgetting removes snapshot roots only: the chunks they alone
    /// referenced stay until `haul prune` (or --prune) reclaims them.
    #[command(after_help = "Examples:
  haul forget -r s3://backups/pachyderm --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  haul forget -c prod.toml                       # the [retention] section's policy
  haul forget -r s3://backups/pachyderm 3f9a1c2e  # one snapshot, by id or prefix
  haul forget -c prod.toml --prune               # nightly: forget, then prune (see haul prune --help)")]
    Forget {
        /// Snapshots to forget (id or prefix); instead of a policy.
        #[arg(value_name = "SNAPSHOT")]
        ids: Vec<String>,
        #[command(flatten)]
        repo: RepoArg,
        /// Keep the N newest snapshots.
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Keep the newest snapshot of each of the N newest hours that hold one.
        #[arg(long, value_name = "N")]
        keep_hourly: Option<usize>,
        /// Keep the newest snapshot of each of the N newest days (UTC) that hold one.
        #[arg(long, value_name = "N")]
        keep_daily: Option<usize>,
        /// Keep the newest snapshot of each of the N newest ISO weeks that hold one.
        #[arg(long, value_name = "N")]
        keep_weekly: Option<usize>,
        /// Keep the newest snapshot of each of the N newest months that hold one.
        #[arg(long, value_name = "N")]
        keep_monthly: Option<usize>,
        /// Keep the newest snapshot of each of the N newest years that hold one.
        #[arg(long, value_name = "N")]
        keep_yearly: Option<usize>,
        /// Keep every snapshot this close to the newest (e.g. 30d, 12h).
        #[arg(long, value_name = "DURATION")]
        keep_within: Option<String>,
        /// Keep every snapshot with this label (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        keep_label: Vec<String>,
        /// Say what would go and why each kept snapshot is kept; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Then prune: mark what no snapshot references any more, and delete
        /// what an earlier prune marked (see `haul prune --help`).
        #[arg(long)]
        prune: bool,
        /// With --prune: the grace period of marks (see `haul prune --help`).
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "20h",
            requires = "prune"
        )]
        grace: String,
    },

    /// Delete what no snapshot references: chunks, packs, old run records.
    ///
    /// Safe while backups run, without a lock, in two steps: each prune
    /// *marks* what no snapshot (or restore-target record) references, in a
    /// record under prune/, and *deletes* what an earlier mark named once
    /// the grace period has passed, if it is still unreferenced and was not
    /// written again since. A backup that starts after a mark never reuses a
    /// marked chunk (it stores it again); one that started before must
    /// commit within the grace period, so the grace must be longer than any
    /// backup runs. The default (20h) lets a nightly `forget --prune` delete
    /// what the previous night's marked. Packs at least half unreferenced
    /// are repacked (their referenced chunks copied into a new pack, checked
    /// first). The newest 100 run records of each kind are kept. One prune
    /// runs at a time: a second refuses while one runs (a record under
    /// pruning/, which a prune that died does not leave blocking).
    #[command(after_help = "Examples:
  haul prune -r s3://backups/pachyderm --dry-run   # what would be marked and deleted
  haul prune -c prod.toml                         # mark now; delete what was marked 20h+ ago
  haul forget -c prod.toml --prune                # nightly: the [retention] policy, then prune
  haul prune -r file:///srv/haul --grace 0        # no backup running: mark and delete at once")]
    Prune {
        #[command(flatten)]
        repo: RepoArg,
        /// How long a mark waits before what it names is deleted (e.g. 20h,
        /// 90m, 2d). 0 marks and deletes at once: only while no backup runs.
        #[arg(long, value_name = "DURATION", default_value = "20h")]
        grace: String,
        /// Count what would be marked and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
    },

    /// Manage the keys that open an encrypted repository.
    ///
    /// The repository's master key is wrapped by one or more key slots, each
    /// opened by one password or key file: adding or removing a slot never
    /// re-encrypts data. The current key comes from the environment
    /// (HAUL_PASSWORD, HAUL_PASSWORD_FILE, HAUL_PASSWORD_COMMAND,
    /// HAUL_KEY_FILE); a new one from a file or a command, never argv.
    #[command(after_help = "Examples:
  haul key list -r s3://backups/pachyderm
  haul key add -r s3://backups/pachyderm --new-key-file /secure/second.key --label 'DR site'
  haul key remove -r s3://backups/pachyderm 3f2a9c1d     # rotate: add the new key, then remove the old")]
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },

    /// Back up a bucket and/or PostgreSQL databases into a repository.
    ///
    /// Bucket: lists the source, compares it with the newest snapshot of the
    /// same source in the repository (key, size, ETag), reads only new and
    /// changed objects.
    ///
    /// Databases: first connects to every --db (and checks that pg_dump is
    /// at least as new as each server), so a wrong URL or password fails
    /// before anything is written. Then, while the bucket is copied, each
    /// database is dumped with `pg_dump --format=custom --compress=0` in an
    /// exported MVCC snapshot; the dump streams through content-defined
    /// chunking and zstd into the repository (no temporary file), so a dump
    /// that changed a little uploads a little. Every table's rows are
    /// counted in that same snapshot, for the restore to check.
    ///
    /// The snapshot exists only once everything is stored: an interrupted
    /// backup, a failed or killed pg_dump leaves no snapshot.
    ///
    /// A running cluster (--pause): the bucket is first copied while the
    /// cluster runs, in rounds that each copy what changed during the one
    /// before, until the delta stops shrinking (or, with --max-downtime,
    /// until the paused phase is predicted to fit). Then haul pauses the
    /// cluster, exports each database's snapshot, starts the dumps from them,
    /// copies the last delta and resumes the cluster at once, with its
    /// original replica counts, whatever happens: success, error, Ctrl-C,
    /// SIGTERM, SIGHUP, SIGQUIT. The dumps finish while it runs (they still
    /// show the databases at the pause); the snapshot is committed after
    /// them. Before the first change to the cluster a pause record is
    /// written into the repository: if haul is killed outright, `haul
    /// resume` (or the next backup) resumes the cluster from it. If resuming
    /// fails, haul prints the commands to run by hand and exits with 4.
    /// --dry-run predicts the rounds and the downtime from past runs.
    #[command(after_help = "Examples:
  # A running Pachyderm cluster, paused only for the last delta and the dumps
  haul backup --repo s3://backups/pach --source s3://pach-data --pause kubectl --context prod \\
      --namespace pachyderm --max-downtime 2m --helm-values values.yaml \\
      --db 'pachyderm=postgresql://pachyderm@pg.internal:5432/pachyderm?sslmode=verify-full&sslrootcert=/etc/pg/ca.pem' \\
      --db 'dex=postgresql://pachyderm@pg.internal:5432/dex?sslmode=verify-full&sslrootcert=/etc/pg/ca.pem'

  # The same, described once in a config file ([cluster] section; see --config)
  haul backup -c prod.toml
  haul backup -c prod.toml --dry-run     # plan, and the downtime predicted from past runs

  # Millions of objects: while paused, read Pachyderm's record of the chunks written
  # since the last pre-copy round instead of listing the bucket (downtime follows the change)
  haul backup -c prod.toml --final-pass pachyderm

  # A bucket too large for one machine: every pass by 16 pods of an Indexed Job (see `haul job`)
  haul backup -c prod.toml --shards 16 --executor kubernetes --image registry.internal/haul:0.1

  # An Enterprise Server (databases only), with the server's roles
  haul backup --repo s3://backups/enterprise --db pachyderm=postgresql://postgres@pg/pachyderm \\
      --db-globals postgresql://postgres@pg/postgres

Passwords: keep them out of the command line; libpq's PGPASSWORD or passfile
(~/.pgpass, or PGPASSFILE) is read when the URL has none. haul hands them to
pg_dump through its environment, never its arguments. pg_dump comes from
HAUL_PG_BIN (a directory) if set, else the newest found on PATH or in
/usr/lib/postgresql/*/bin.")]
    Backup {
        /// The bucket to back up, e.g. s3://pachyderm-data.
        #[arg(long, value_name = "URL")]
        source: Option<String>,
        /// A database to dump, under a name of your choice (repeatable):
        /// NAME=postgresql://USER@HOST:PORT/DATABASE?sslmode=... (sslmode,
        /// sslrootcert, sslcert, sslkey, connect_timeout as in libpq).
        #[arg(long = "db", value_name = "NAME=URL")]
        db: Vec<String>,
        /// Also capture the roles and tablespaces of this server
        /// (pg_dumpall --globals-only): needed to restore a database with its
        /// owners into a new server.
        #[arg(long, value_name = "URL")]
        db_globals: Option<String>,
        /// With --db-globals: leave the roles' password hashes out of the
        /// snapshot (pg_dumpall --no-role-passwords); restored roles then
        /// have no password until one is set.
        #[arg(long, requires = "db_globals")]
        no_role_passwords: bool,
        #[command(flatten)]
        repo: RepoArg,
        /// Show what would be read, without reading or writing anything.
        #[arg(long)]
        dry_run: bool,
        /// A label stored with the snapshot (repeatable), e.g. --label cluster=prod.
        #[arg(long, value_name = "KEY=VALUE")]
        label: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        shards: ShardArgs,
    },

    /// List the snapshots of a repository, oldest first.
    Snapshots {
        #[command(flatten)]
        repo: RepoArg,
    },

    /// Restore a snapshot's bucket and/or databases.
    ///
    /// First checks every target and prints a plan, changing nothing yet.
    /// Bucket (--to): objects missing from the target, different in it,
    /// unchanged, and extraneous (in the target, not in the snapshot). Only
    /// the missing and different objects are copied, checking the blake3
    /// hash of every chunk; an object whose data is damaged is never
    /// written. Extraneous objects are kept unless --delete-extraneous is
    /// given. Refreshing a target that holds an older snapshot costs only
    /// the difference.
    ///
    /// Databases (--db NAME=URL): NAME is a database of the snapshot, URL
    /// the database to restore it into, which may have another name; it is
    /// created when missing. A target that holds tables is refused unless
    /// --clean is given. pg_restore reads the dump from haul on its stdin
    /// in one transaction and stops at the first error, so a failed restore
    /// leaves the target as it was (a database haul created is dropped).
    /// Afterwards every table's row count is compared with the snapshot's;
    /// a difference is reported and the exit code is 3.
    #[command(after_help = "Examples:
  # A whole Pachyderm cluster into a new bucket and new databases, with its Helm values
  haul restore latest --repo s3://backups/pach --to s3://pach-data-restored \\
      --db pachyderm=postgresql://postgres@pg-new/pachyderm --db dex=postgresql://postgres@pg-new/dex \\
      --helm-values-out restored-values.yaml
  helm install pachyderm pachyderm/pachyderm -f restored-values.yaml

  # The same, with the targets in the config file's [restore] section
  haul restore latest -c prod.toml --dry-run    # the plan: copied, replaced, kept
  haul restore latest -c prod.toml

  # Refresh a RUNNING staging cluster from production's last snapshot: paused for seconds
  haul restore latest --repo s3://backups/pach --to s3://staging-data --pause kubectl --context staging \\
      --namespace pachyderm --db pachyderm=postgresql://postgres@pg-staging/pachyderm \\
      --db dex=postgresql://postgres@pg-staging/dex --delete-extraneous

  # Refresh staging's database from production's last snapshot, replacing it (staging stopped)
  haul restore latest --repo s3://backups/pach --db pachyderm=postgresql://postgres@pg-staging/pachyderm --clean

  # Into a new server: roles first (captured with backup --db-globals)
  haul restore 3f2a --repo s3://backups/pach --db-globals postgresql://postgres@pg-new/postgres \\
      --db pachyderm=postgresql://postgres@pg-new/pachyderm")]
    Restore {
        /// Snapshot id (or a unique prefix of one), or `latest`.
        #[arg(value_name = "SNAPSHOT")]
        snapshot: String,
        #[command(flatten)]
        repo: RepoArg,
        /// The bucket to restore into; it may already hold data.
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Restore the snapshot's database NAME into the database at URL
        /// (repeatable), e.g. pachyderm=postgresql://postgres@pg-new/pachyderm_copy.
        #[arg(long = "db", value_name = "NAME=URL")]
        db: Vec<String>,
        /// Replay the snapshot's roles and tablespaces on this server (statement by
        /// statement over the protocol; a psql meta-command in the record refuses it)
        /// before the databases. Roles that already exist are reported and updated.
        #[arg(long, value_name = "URL")]
        db_globals: Option<String>,
        /// Replace a target database's objects that the snapshot also holds
        /// (pg_restore --clean --if-exists), inside the restore's transaction.
        #[arg(long)]
        clean: bool,
        /// Restore without the original owners and privileges: the restoring
        /// user owns everything (pg_restore --no-owner --no-privileges). For a
        /// server that lacks the original roles.
        #[arg(long)]
        no_owner: bool,
        /// Delete objects of the target that are not in the snapshot, so the
        /// target ends up equal to the snapshot.
        #[arg(long)]
        delete_extraneous: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write the snapshot's Helm values (backup --helm-values) to FILE,
        /// pointed at the restore targets: PostgreSQL host, port, user and
        /// database names from --db, the bucket from --to. Other keys and
        /// comments are kept as they are.
        #[arg(long, value_name = "FILE")]
        helm_values_out: Option<PathBuf>,
        /// Refresh a RUNNING cluster (staging) with seconds of downtime:
        /// pachctl, kubectl or enterprise, as for backup (`[restore] pause`).
        /// While it runs, only the objects it lacks are added (no key is
        /// overwritten or deleted) and each --db is restored into a side
        /// database NAME_haul_next created like the live one; then haul
        /// pauses the cluster, overwrites what differs, swaps each database
        /// by rename (NAME -> NAME_haul_prev, NAME_haul_next -> NAME),
        /// deletes extraneous objects if asked, and resumes. A failure before
        /// the swap changes nothing; one during it is swapped back.
        #[arg(long, value_name = "METHOD")]
        pause: Option<String>,
        /// With --pause: the cluster's context (pachctl: must be active; kubectl: --context).
        #[arg(long, value_name = "NAME")]
        context: Option<String>,
        /// With --pause kubectl/enterprise: the cluster's namespace.
        #[arg(long, value_name = "NAME")]
        namespace: Option<String>,
        /// With --pause: how long to wait for pods to stop [default: 5m].
        #[arg(long, value_name = "DURATION")]
        pause_timeout: Option<String>,
        /// With --pause: drop the previous databases (NAME_haul_prev) once
        /// resumed, instead of keeping them until the next refresh.
        #[arg(long)]
        drop_previous: bool,
        /// Restore only shard K of N of the bucket (K counts from 0; auto/N
        /// reads JOB_COMPLETION_INDEX, as in the pods of `haul job
        /// restore`): one range of keys, cut from the snapshot's manifest
        /// (balanced by bytes) alike by every shard, so N of them together
        /// restore the whole bucket. The bucket only: databases, roles, Helm
        /// values and --pause are the business of a restore without --shard.
        #[arg(long, value_name = "K/N", conflicts_with_all = ["pause", "db", "db_globals", "helm_values_out"])]
        shard: Option<String>,
    },

    /// Resume a cluster that a killed backup or refresh left paused.
    ///
    /// When haul could not resume it itself (killed with SIGKILL, its
    /// machine lost), the pause record it wrote into the repository before
    /// pausing says what to undo. Each record lists
    /// the workloads scaled down with their original replica counts (or a
    /// `pachctl enterprise pause`); resuming restores exactly those, then
    /// removes the record. A record whose run still runs (same machine: its
    /// process; another machine: a heartbeat under two minutes old) is left
    /// alone unless --force. Every backup also does this first.
    #[command(after_help = "Examples:
  haul resume --repo s3://backups/pachyderm
  haul resume -c prod.toml --json")]
    Resume {
        #[command(flatten)]
        repo: RepoArg,
        /// Resume records of runs that still look alive, too.
        #[arg(long)]
        force: bool,
        /// How long to wait for `pachctl enterprise pause-status` to say
        /// unpaused (pachctl records) [default: 5m].
        #[arg(long, value_name = "DURATION")]
        pause_timeout: Option<String>,
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

    /// Print the Kubernetes manifests that run a backup or restore as N
    /// shards: an Indexed Job (one pod per shard, `--shard auto/N`) and, for
    /// a backup, the Job that commits it once every shard has finished.
    ///
    /// The pods read the config file from a Secret (mounted at /etc/haul)
    /// and take credentials and the repository's key as environment
    /// variables from another Secret; the printed header says how to create
    /// both. Nothing secret is printed. Pipe the output to `kubectl apply -f -`.
    #[command(after_help = "Examples:
  haul job backup -c prod.toml --shards 8 --image registry.internal/haul:0.1 -n backups \
      | kubectl apply -f -
  haul job restore latest -c prod.toml --shards 8 --image registry.internal/haul:0.1 --json")]
    Job {
        #[command(subcommand)]
        what: JobCmd,
    },
}

/// What `haul job` makes manifests for.
#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// A backup of the config's [cluster] source into its repository, by
    /// N shards (a new staged backup, committed by the commit Job).
    Backup {
        #[command(flatten)]
        job: JobArgs,
    },
    /// A restore of SNAPSHOT into the config's [restore] targets, by N shards.
    Restore {
        /// Snapshot id (or a unique prefix of one), or `latest`.
        #[arg(value_name = "SNAPSHOT")]
        snapshot: String,
        #[command(flatten)]
        job: JobArgs,
    },
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Shards (pods), each one range of the key space.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: u32,
    /// The container image holding haul (see the Dockerfile) [default: haul:VERSION].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// The namespace of the Jobs.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub namespace: Option<String>,
    /// The Secret holding the config file as `haul.toml`.
    #[arg(long, value_name = "NAME", default_value = "haul-config")]
    pub config_secret: String,
    /// The Secret of environment variables: the stores' credentials
    /// (AWS_ACCESS_KEY_ID, ...) and the repository's key (HAUL_PASSWORD).
    #[arg(long, value_name = "NAME", default_value = "haul-env")]
    pub env_secret: String,
    /// The staged backup's id (16 hex digits) [default: a new one].
    #[arg(long, value_name = "ID")]
    pub staging: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// The key slots: id, kind, when added, label.
    List {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Add a key slot for a new password or key file.
    Add {
        #[command(flatten)]
        repo: RepoArg,
        /// The new password: the first line of this file.
        #[arg(long, value_name = "FILE", group = "new")]
        new_password_file: Option<PathBuf>,
        /// The new password: the first line this command prints.
        #[arg(long, value_name = "COMMAND", group = "new")]
        new_password_command: Option<String>,
        /// The new key file (`haul key generate` makes one).
        #[arg(long, value_name = "FILE", group = "new")]
        new_key_file: Option<PathBuf>,
        /// Who or what holds the new key.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Remove a key slot (never the last).
    Remove {
        #[command(flatten)]
        repo: RepoArg,
        /// The slot's id, as `haul key list` shows it.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Write a new random key file (mode 0600; never over an existing file).
    Generate {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RepoArg {
    /// The repository, e.g. s3://backups/pachyderm (or `repo` in the config
    /// file's [cluster] section).
    #[arg(long = "repo", short = 'r', env = "HAUL_REPO", value_name = "REPO")]
    pub url: Option<String>,
}

/// Pausing a running cluster for a consistent backup.
/// A bucket too large for one machine: its key space cut into N ranges
/// (balanced by bytes, from the parent snapshot), each copied by its own
/// process; the repository is their only meeting point.
#[derive(Debug, Args)]
#[command(next_help_heading = "Shards (one bucket, several machines)")]
pub struct ShardArgs {
    /// Copy the bucket with N shards at once, on every pass (pre-copy
    /// rounds and the paused one): the rest (pause, dumps, commit, resume)
    /// is this process's, as without shards.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: Option<u32>,
    /// With --shards: where they run. local: N processes of this machine
    /// (this binary); kubernetes: an Indexed Job applied with `kubectl apply`
    /// (the manifests of `haul job backup`, with --context and --namespace),
    /// deleted afterwards [default: local].
    #[arg(long, value_name = "WHERE", requires = "shards")]
    pub executor: Option<String>,
    /// With --executor kubernetes: the image the shards' pods run (see the
    /// Dockerfile) [default: haul:VERSION]. The pods read the config from
    /// the Secret haul-config and credentials from the Secret haul-env, in
    /// the cluster's --namespace (see `haul job --help`).
    #[arg(long, value_name = "IMAGE", requires = "shards")]
    pub image: Option<String>,
    /// Back up only shard K of N of the bucket (K counts from 0; auto/N
    /// reads JOB_COMPLETION_INDEX, as in the pods of an Indexed Job) into
    /// the staged backup --staging, and commit nothing: `haul backup
    /// --commit ID` does, once all N have finished. Databases and the pause
    /// are left to the commit's side. A shard run again replaces its record.
    #[arg(long, value_name = "K/N", requires = "staging", conflicts_with_all = ["shards", "commit"])]
    pub shard: Option<String>,
    /// The staged backup a --shard writes into: the same 16-hex-digit id
    /// for all N (`haul job backup` prints one). The first shard writes its
    /// plan (the parent, and where the key space is cut); the others read it.
    #[arg(long, value_name = "ID", env = "HAUL_STAGING")]
    pub staging: Option<String>,
    /// Commit the staged backup ID: check that every shard finished, from
    /// the same plan, and write one snapshot (id ID) of their segments,
    /// concatenated. A missing or failed shard makes it refuse, naming it.
    #[arg(long, value_name = "ID", conflicts_with_all = ["shards", "shard"])]
    pub commit: Option<String>,
    /// Give up the staged backup ID (shards that failed for good, a run
    /// replaced by another): remove its plan and shard records, commit
    /// nothing. Its chunks are kept until the next `haul prune`.
    #[arg(long, value_name = "ID", conflicts_with_all = ["shards", "shard", "commit"])]
    pub abandon: Option<String>,
    /// How long --commit (and --shards with --executor kubernetes) waits for
    /// shards still running, e.g. 30m [default: --commit: none, commit now
    /// or refuse; kubernetes: 24h].
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterArgs {
    /// How to pause the cluster for the final pass and the dumps:
    /// pachctl (`pachctl enterprise pause`, checks the active context),
    /// kubectl (scale pachd and the pipeline workers to 0, then back),
    /// enterprise (an Enterprise Server: scale pach-enterprise; databases
    /// only), enterprise-pachctl (the same through pachctl and its active
    /// enterprise context), none (no pause, one pass) [default: none].
    #[arg(long, value_name = "METHOD", verbatim_doc_comment)]
    pub pause: Option<String>,
    /// pachctl: the context that must be active (haul refuses to pause
    /// another); kubectl: the context to use.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// kubectl: the namespace of pachd.
    #[arg(long, short = 'n', value_name = "NAME")]
    pub namespace: Option<String>,
    /// How long to wait for the cluster to pause (pods to stop) [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub pause_timeout: Option<String>,
    /// Pre-copy until the paused phase is predicted to take at most this
    /// (e.g. 90s, 2m); give up, leaving the cluster running, if the bucket
    /// changes too fast for it.
    #[arg(long, value_name = "DURATION")]
    pub max_downtime: Option<String>,
    /// At most this many live pre-copy rounds; 0 copies everything while
    /// paused [default: 8].
    #[arg(long, value_name = "N")]
    pub precopy_rounds: Option<u32>,
    /// How the paused pass finds what changed since the last pre-copy
    /// round: list (list the whole bucket; any application) or pachyderm
    /// (read Pachyderm's record of its chunk objects, storage.chunk_objects,
    /// in the paused `pachyderm` database, and list only the keys outside
    /// chunk/: the downtime no longer grows with the object count)
    /// [default: list].
    #[arg(long, value_name = "HOW")]
    pub final_pass: Option<String>,
    /// A Helm values file to store with the snapshot (restore
    /// --helm-values-out rewrites it for the restored cluster).
    #[arg(long, value_name = "FILE")]
    pub helm_values: Option<PathBuf>,
}
