//! One function per command: validated inputs in, a printed result out.
//! The two long ones, with their databases, have their own modules.

mod backup_cmd;
mod restore_cmd;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use haul_manifest::Snapshot;
use haul_mover::Repository;
use haul_snapshot::SnapshotError;
use haul_snapshot::pause::{DEFAULT_PAUSE_TIMEOUT, PauseStep, Processes};
use serde::Serialize;

use crate::args::{Cli, Command, JobCmd};
use crate::config::{merge_databases, parse_duration};
use crate::context::{Context, pause_spec};
use crate::error::{CliError, Outcome, Result};
use crate::output::{ProgressView, bytes, emit, say};

/// Runs `work` unless cancelled first. For commands that hold nothing to
/// undo: dropping their work is a clean stop (a multipart upload in flight
/// aborts itself).
async fn interruptible(
    ctx: &Context,
    work: impl Future<Output = Result<Outcome>>,
) -> Result<Outcome> {
    tokio::select! {
        r = work => r,
        signal = ctx.cancel.cancelled() => Err(SnapshotError::Interrupted { signal }.into()),
    }
}

pub async fn run(cli: Cli, ctx: Context) -> Result<Outcome> {
    match cli.command {
        Command::Init {
            repo,
            insecure_no_encryption,
            pack_size,
            dump_chunk_kib,
            object_lock,
            object_lock_mode,
        } => {
            let tune = InitTuning {
                pack_size,
                dump_chunk_kib,
                object_lock: object_lock.map(|days| haul_manifest::ObjectLock {
                    days,
                    mode: haul_manifest::LockMode::parse(&object_lock_mode)
                        .unwrap_or(haul_manifest::LockMode::Governance),
                }),
            };
            interruptible(&ctx, init(&ctx, &repo, insecure_no_encryption, tune)).await
        }
        Command::Key { cmd } => interruptible(&ctx, key(&ctx, cmd)).await,
        Command::Forget {
            ids,
            repo,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            keep_label,
            dry_run,
            prune,
            grace,
        } => {
            let flags = KeepFlags {
                last: keep_last,
                hourly: keep_hourly,
                daily: keep_daily,
                weekly: keep_weekly,
                monthly: keep_monthly,
                yearly: keep_yearly,
                within: keep_within,
                labels: keep_label,
            };
            let repo_url = ctx.repo_url(&repo, false)?;
            let prune = prune.then(|| prune_options(&grace, dry_run)).transpose()?;
            interruptible(
                &ctx,
                Box::pin(forget(&ctx, &repo_url, &ids, flags, dry_run, prune)),
            )
            .await
        }
        Command::Prune {
            repo,
            grace,
            dry_run,
        } => {
            let repo_url = ctx.repo_url(&repo, false)?;
            let opts = prune_options(&grace, dry_run)?;
            interruptible(&ctx, Box::pin(prune(&ctx, &repo_url, opts))).await
        }
        Command::Backup {
            source,
            repo,
            db,
            db_globals,
            no_role_passwords,
            dry_run,
            label,
            cluster,
            shards,
        } => {
            let file = &ctx.file.cluster;
            let repo_url = ctx.repo_url(&repo, false)?;
            let db = merge_databases(&file.databases, &db);
            let mut labels: Vec<String> = file
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.extend(label);
            let args = backup_cmd::BackupArgs {
                source: source.as_deref().or(file.source.as_deref()),
                repo_url: &repo_url,
                db: &db,
                db_globals: db_globals.as_deref().or(file.db_globals.as_deref()),
                role_passwords: !(no_role_passwords || file.no_role_passwords),
                dry_run,
                labels: &labels,
                cluster: backup_cmd::ClusterChoice::merge(cluster, file)?,
                shards,
            };
            backup_cmd::backup(&ctx, args).await
        }
        Command::Snapshots { repo } => {
            interruptible(&ctx, snapshots(&ctx, &ctx.repo_url(&repo, true)?)).await
        }
        Command::Restore {
            snapshot,
            repo,
            to,
            db,
            db_globals,
            clean,
            no_owner,
            delete_extraneous,
            dry_run,
            helm_values_out,
            pause,
            context,
            namespace,
            pause_timeout,
            drop_previous,
            shard,
        } => {
            let file = &ctx.file.restore;
            let shard = shard
                .map(|s| {
                    let index = std::env::var("JOB_COMPLETION_INDEX").ok();
                    haul_manifest::shard::parse_shard(&s, index.as_deref()).map_err(CliError::Usage)
                })
                .transpose()?;
            let pause = pause_spec(
                pause.or(file.pause.clone()),
                context.or(file.context.clone()),
                namespace.or(file.namespace.clone()),
                pause_timeout.or(file.pause_timeout.clone()),
                "restore (a refresh)",
            )?;
            let repo_url = ctx.repo_url(&repo, true)?;
            // A shard restores its range of the bucket, and only that.
            let (db, db_globals, helm_values_out, pause) = match shard {
                Some(_) => (Vec::new(), None, None, None),
                None => (
                    merge_databases(&file.databases, &db),
                    db_globals.or(file.db_globals.clone()),
                    helm_values_out.or(file.helm_values_out.clone()),
                    pause,
                ),
            };
            let args = restore_cmd::RestoreArgs {
                spec: &snapshot,
                repo_url: &repo_url,
                to: to.as_deref().or(file.to.as_deref()),
                db: &db,
                db_globals: db_globals.as_deref(),
                clean: clean || file.clean,
                no_owner: no_owner || file.no_owner,
                delete_extraneous: delete_extraneous || file.delete_extraneous,
                dry_run,
                helm_values_out,
                pause,
                drop_previous: drop_previous || file.drop_previous,
                shard,
            };
            Box::pin(restore_cmd::restore(&ctx, args)).await
        }
        Command::Resume {
            repo,
            force,
            pause_timeout,
        } => {
            let repo_url = ctx.repo_url(&repo, false)?;
            let timeout = match pause_timeout {
                Some(t) => parse_duration(&t)
                    .map_err(|e| CliError::Usage(format!("--pause-timeout: {e}")))?,
                None => DEFAULT_PAUSE_TIMEOUT,
            };
            // Not interruptible: a resume half done is worse than a late exit.
            resume(&ctx, &repo_url, timeout, force).await
        }
        Command::Verify {
            snapshot,
            repo,
            read_data,
        } => {
            let repo_url = ctx.repo_url(&repo, true)?;
            interruptible(
                &ctx,
                verify(&ctx, snapshot.as_deref(), &repo_url, read_data),
            )
            .await
        }
        Command::Job { what } => job(&ctx, what),
    }
}

/// `haul job backup|restore`: the manifests of a sharded run, printed.
fn job(ctx: &Context, what: JobCmd) -> Result<Outcome> {
    use crate::job::{JobKind, JobSpec};
    if ctx.config_path.is_none() {
        return Err(CliError::Usage(
            "haul job needs the config file the pods will read: -c FILE (its [cluster] or \
             [restore] section names the repository and the bucket)"
                .into(),
        ));
    }
    let (kind, a) = match what {
        JobCmd::Backup { job } => {
            let c = &ctx.file.cluster;
            if c.repo.is_none() || c.source.is_none() {
                return Err(CliError::Usage(
                    "haul job backup: the config's [cluster] section must name repo and source"
                        .into(),
                ));
            }
            let staging = match &job.staging {
                Some(id) => id
                    .parse::<haul_manifest::SnapshotId>()
                    .map_err(|_| {
                        CliError::Usage(format!("--staging {id:?}: expected 16 hex digits"))
                    })?
                    .to_string(),
                None => haul_mover::new_snapshot_id()?.to_string(),
            };
            (JobKind::Backup { staging }, job)
        }
        JobCmd::Restore { snapshot, job } => {
            let r = &ctx.file.restore;
            if r.to.is_none() || (r.repo.is_none() && ctx.file.cluster.repo.is_none()) {
                return Err(CliError::Usage(
                    "haul job restore: the config's [restore] section must name `to` (and a repo, \
                     there or in [cluster])"
                        .into(),
                ));
            }
            let run = haul_mover::new_snapshot_id()?.to_string();
            (JobKind::Restore { snapshot, run }, job)
        }
    };
    let spec = JobSpec {
        kind,
        shards: a.shards,
        image: a
            .image
            .unwrap_or_else(|| format!("haul:{}", env!("CARGO_PKG_VERSION"))),
        namespace: a.namespace,
        config_secret: a.config_secret,
        env_secret: a.env_secret,
        extra_args: ctx.limit_args(),
        limits: ctx.limits.clone(),
    };
    #[derive(Serialize)]
    struct Manifests {
        #[serde(skip_serializing_if = "Option::is_none")]
        staging: Option<String>,
        job: String,
        manifests: Vec<serde_json::Value>,
    }
    let staging = match &spec.kind {
        JobKind::Backup { staging } => Some(staging.clone()),
        JobKind::Restore { .. } => None,
    };
    let mut manifests = vec![spec.indexed_job()];
    manifests.extend(spec.commit_job());
    let out = Manifests {
        staging,
        job: spec.name(),
        manifests,
    };
    emit(ctx.json, &out, |w| write!(w, "{}", spec.yaml()));
    Ok(Outcome::Done)
}

/// `haul init`'s settings for the repository's chunks, as typed.
struct InitTuning {
    pack_size: Option<u32>,
    dump_chunk_kib: Option<u32>,
    object_lock: Option<haul_manifest::ObjectLock>,
}

async fn init(ctx: &Context, raw: &str, insecure: bool, tune: InitTuning) -> Result<Outcome> {
    let cred = crate::keys::from_env()?;
    match (&cred, insecure) {
        (None, false) => {
            return Err(CliError::Usage(format!(
                "no key to encrypt the repository with: set one of {} (`haul key generate FILE` \
                 makes a key file), or pass --insecure-no-encryption for a throwaway repository",
                crate::keys::KEY_VARS.join(", ")
            )));
        }
        (Some(_), true) => {
            return Err(CliError::Usage(
                "--insecure-no-encryption, but a key is set in the environment: choose one".into(),
            ));
        }
        _ => {}
    }
    let loc = ctx.open(raw, true)?;
    let mut id = [0u8; 16];
    haul_manifest::crypto::getrandom_error::fill(&mut id)
        .map_err(|e| CliError::Usage(format!("no randomness: {e}")))?;
    let mut config =
        haul_manifest::RepoConfig::new(haul_manifest::RepoId::from_random(id), chrono::Utc::now());
    if let Some(kib) = tune.dump_chunk_kib {
        let avg = kib << 10;
        config.cdc = haul_manifest::CdcParams {
            min: avg / 4,
            avg,
            max: avg.saturating_mul(4),
        };
        haul_pg::check_cdc(config.cdc)
            .map_err(|e| CliError::Usage(format!("--dump-chunk-kib {kib}: {e}")))?;
    }
    match tune.pack_size {
        None => {}
        Some(0) => config.pack = None,
        Some(mib) => {
            let size = mib << 20;
            let threshold = haul_manifest::pack::PackParams::DEFAULT.threshold.min(size);
            config.pack = Some(haul_manifest::pack::PackParams { threshold, size });
        }
    }
    config.object_lock = tune.object_lock;
    let repo = Repository::init_with(loc, ctx.engine(), cred.as_ref(), config).await?;
    #[derive(Serialize)]
    struct Out<'a> {
        repository: String,
        id: String,
        encrypted: bool,
        config: &'a haul_manifest::RepoConfig,
    }
    let out = Out {
        repository: repo.url(),
        id: repo.config().id.to_string(),
        encrypted: repo.encrypted(),
        config: repo.config(),
    };
    emit(ctx.json, &out, |w| {
        if !out.encrypted {
            writeln!(
                w,
                "NOT ENCRYPTED: whoever reads this repository reads its data"
            )?;
        }
        writeln!(w, "created repository {} (id {})", out.repository, out.id)?;
        if let Some(lock) = out.config.object_lock {
            writeln!(
                w,
                "Object Lock: every chunk and snapshot is kept {} days ({} mode)",
                lock.days,
                lock.mode.s3_name().to_lowercase()
            )?;
        }
        Ok(())
    });
    Ok(Outcome::Done)
}

/// `haul forget`'s `--keep-*` flags, as typed.
struct KeepFlags {
    last: Option<usize>,
    hourly: Option<usize>,
    daily: Option<usize>,
    weekly: Option<usize>,
    monthly: Option<usize>,
    yearly: Option<usize>,
    within: Option<String>,
    labels: Vec<String>,
}

impl KeepFlags {
    fn any(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ]
        .iter()
        .any(Option::is_some)
            || self.within.is_some()
            || !self.labels.is_empty()
    }

    /// The config file's `[retention]` section, as if given as flags.
    fn from_file(file: &crate::config::RetentionSection) -> Self {
        Self {
            last: file.keep_last,
            hourly: file.keep_hourly,
            daily: file.keep_daily,
            weekly: file.keep_weekly,
            monthly: file.keep_monthly,
            yearly: file.keep_yearly,
            within: file.keep_within.clone(),
            labels: file
                .keep_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        }
    }

    /// The policy these flags give.
    fn policy(&self) -> Result<haul_snapshot::retention::Policy> {
        use haul_snapshot::retention::Policy;
        let within = |s: &str| {
            parse_duration(s).map_err(CliError::Usage).and_then(|d| {
                chrono::Duration::from_std(d)
                    .map_err(|_| CliError::Usage(format!("{s:?} is too long a duration")))
            })
        };
        let mut labels = Vec::new();
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--keep-label {l:?}: write KEY=VALUE")))?;
            labels.push((k.to_owned(), v.to_owned()));
        }
        let p = Policy {
            last: self.last.unwrap_or(0),
            hourly: self.hourly.unwrap_or(0),
            daily: self.daily.unwrap_or(0),
            weekly: self.weekly.unwrap_or(0),
            monthly: self.monthly.unwrap_or(0),
            yearly: self.yearly.unwrap_or(0),
            within: self.within.as_deref().map(within).transpose()?,
            labels,
        };
        if p.is_empty() {
            return Err(CliError::Usage(
                "no retention policy: give --keep-last, --keep-daily, ... (or a [retention] section), \
                 or name the snapshots to forget"
                    .into(),
            ));
        }
        Ok(p)
    }
}

/// `haul forget`: snapshot roots a policy does not keep, or those named.
fn prune_options(grace: &str, dry_run: bool) -> Result<haul_mover::PruneOptions> {
    Ok(haul_mover::PruneOptions {
        grace: crate::config::parse_duration(grace)
            .map_err(|e| CliError::Usage(format!("--grace: {e}")))?,
        dry_run,
        host: haul_snapshot::hostname().unwrap_or_else(|| "unknown".into()),
        forgetting: Vec::new(),
    })
}

/// `haul prune`.
async fn prune(ctx: &Context, repo_url: &str, opts: haul_mover::PruneOptions) -> Result<Outcome> {
    let repo = ctx.repo(repo_url).await?;
    let report = prune_repo(ctx, &repo, &opts).await?;
    emit(ctx.json, &report, |w| write_prune(w, &report));
    Ok(Outcome::Done)
}

/// Prunes `repo`, then aborts the multipart uploads older than the grace
/// period in every restore target haul knows (a killed restore's). A
/// target that cannot be reached is reported, not fatal.
async fn prune_repo(
    ctx: &Context,
    repo: &haul_mover::Repository,
    opts: &haul_mover::PruneOptions,
) -> Result<haul_mover::PruneReport> {
    let view = ProgressView::start(repo.engine().progress.clone(), ctx.progress);
    let report = Box::pin(repo.prune(opts)).await;
    view.finish().await;
    let mut report = report?;
    if opts.dry_run {
        return Ok(report);
    }
    let before = haul_mover::grace_before(opts.grace);
    for url in repo.target_urls().await? {
        let aborted = match ctx.open(&url, false) {
            Ok(loc) => loc
                .abort_stale_uploads(before)
                .await
                .map_err(CliError::from),
            Err(e) => Err(e),
        };
        match aborted {
            Ok(n) => report.uploads_aborted += n,
            Err(e) => tracing::warn!(
                "restore target {url}: its incomplete uploads could not be checked: {e}"
            ),
        }
    }
    Ok(report)
}

/// What a prune did, for a person.
fn write_prune(w: &mut dyn std::io::Write, r: &haul_mover::PruneReport) -> std::io::Result<()> {
    let would = if r.dry_run { "would be " } else { "" };
    writeln!(
        w,
        "{} snapshot(s) reference {} chunks",
        r.snapshots, r.chunks_referenced
    )?;
    if r.marks_swept > 0 {
        writeln!(
            w,
            "swept {} mark(s): {} chunks and {} pack(s) {would}deleted ({} repacked into {}), {} {would}freed",
            r.marks_swept,
            r.chunks_deleted,
            r.packs_deleted,
            r.packs_repacked,
            r.packs_written,
            bytes(r.bytes_freed)
        )?;
    }
    if r.marked_chunks + r.marked_packs > 0 {
        writeln!(
            w,
            "{} unreferenced chunks ({} pack(s), {}) {}marked",
            r.marked_chunks,
            r.marked_packs,
            bytes(r.marked_bytes),
            would
        )?;
    } else {
        writeln!(w, "nothing new is unreferenced")?;
    }
    if let Some(t) = r.next_sweep {
        writeln!(
            w,
            "{} mark(s) wait for their grace period: the next prune after {} deletes what they name",
            r.marks_pending,
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
    }
    if r.runs_deleted > 0 {
        writeln!(w, "deleted {} old run record(s)", r.runs_deleted)?;
    }
    if let Some(until) = r.locked_until {
        writeln!(
            w,
            "{} unreferenced chunk(s) or pack(s) are under Object Lock: left until {} at the latest",
            r.locked,
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
    }
    if r.uploads_aborted > 0 {
        writeln!(
            w,
            "aborted {} incomplete multipart upload(s) older than the grace period",
            r.uploads_aborted
        )?;
    }
    if r.dry_run {
        writeln!(w, "dry run: nothing was changed")?;
    }
    Ok(())
}

async fn forget(
    ctx: &Context,
    repo_url: &str,
    ids: &[String],
    flags: KeepFlags,
    dry_run: bool,
    mut prune: Option<haul_mover::PruneOptions>,
) -> Result<Outcome> {
    use haul_snapshot::retention::{self, Decision};
    let repo = ctx.repo(repo_url).await?;
    let snaps = repo.snapshots().await?;
    let decisions: Vec<Decision> = if ids.is_empty() {
        // The flags when any is given, else the config file's section.
        let flags = if flags.any() {
            flags
        } else {
            KeepFlags::from_file(&ctx.file.retention)
        };
        let policy = flags.policy()?;
        retention::apply(&policy, &snaps)
    } else {
        if flags.any() {
            return Err(CliError::Usage(
                "name snapshots or give a policy (--keep-*), not both".into(),
            ));
        }
        let mut named = std::collections::HashSet::new();
        for spec in ids {
            named.insert(repo.find_snapshot(spec).await?.id);
        }
        snaps
            .iter()
            .map(|s| Decision {
                id: s.id,
                time: s.time,
                source: retention::source_of(s),
                reasons: if named.contains(&s.id) {
                    Vec::new()
                } else {
                    vec!["not named".into()]
                },
            })
            .collect()
    };
    let gone: Vec<&Decision> = decisions.iter().filter(|d| !d.kept()).collect();
    let mut removed = 0u64;
    // Roots under Object Lock retention stay until it passes.
    let mut locked: Vec<(String, chrono::DateTime<chrono::Utc>)> = Vec::new();
    for d in &gone {
        let path = haul_manifest::snapshot_path(&d.id);
        if let Some(until) = repo.object_locked_until(&path).await? {
            locked.push((d.id.to_string(), until));
        } else if !dry_run {
            repo.delete(&path).await?;
            removed += 1;
        }
    }
    let pruned = match &mut prune {
        Some(opts) => {
            // A dry run prunes as if the forgotten snapshots were gone.
            opts.forgetting = gone.iter().map(|d| d.id).collect();
            let mut r = prune_repo(ctx, &repo, opts).await?;
            r.snapshots_removed = removed;
            Some(r)
        }
        None => None,
    };
    #[derive(Serialize)]
    struct Row<'a> {
        id: String,
        time: String,
        source: &'a str,
        keep: bool,
        reasons: &'a [String],
    }
    #[derive(Serialize)]
    struct Out<'a> {
        repository: String,
        dry_run: bool,
        snapshots_removed: u64,
        snapshots_kept: usize,
        /// Snapshots the policy lets go that Object Lock keeps until a date.
        snapshots_locked: usize,
        snapshots: Vec<Row<'a>>,
        /// With --prune: what it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        prune: Option<&'a haul_mover::PruneReport>,
    }
    let out = Out {
        repository: repo.url(),
        dry_run,
        snapshots_removed: removed,
        snapshots_kept: decisions.len() - gone.len(),
        snapshots_locked: locked.len(),
        prune: pruned.as_ref(),
        snapshots: decisions
            .iter()
            .map(|d| Row {
                id: d.id.to_string(),
                time: d.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                source: &d.source,
                keep: d.kept(),
                reasons: &d.reasons,
            })
            .collect(),
    };
    emit(ctx.json, &out, |w| {
        let mut source = "";
        for r in &out.snapshots {
            if r.source != source {
                source = r.source;
                writeln!(w, "{source}")?;
            }
            if r.keep {
                writeln!(
                    w,
                    "  keep    {}  {}  {}",
                    r.id,
                    r.time,
                    r.reasons.join(", ")
                )?;
            } else {
                writeln!(w, "  forget  {}  {}", r.id, r.time)?;
            }
        }
        if out.dry_run {
            writeln!(
                w,
                "dry run: {} snapshot(s) would be forgotten, {} kept",
                gone.len(),
                out.snapshots_kept
            )?;
        } else if out.prune.is_some() {
            writeln!(
                w,
                "forgot {} snapshot(s), kept {}",
                out.snapshots_removed, out.snapshots_kept
            )?;
        } else {
            writeln!(
                w,
                "forgot {} snapshot(s), kept {} (the chunks only they referenced stay until `haul prune`)",
                out.snapshots_removed, out.snapshots_kept
            )?;
        }
        for (id, until) in &locked {
            writeln!(
                w,
                "snapshot {id} is under Object Lock until {}: it stays until then",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )?;
        }
        match out.prune {
            Some(p) => write_prune(w, p),
            None => Ok(()),
        }
    });
    Ok(Outcome::Done)
}

/// `haul key list | add | remove | generate`.
async fn key(ctx: &Context, cmd: crate::args::KeyCmd) -> Result<Outcome> {
    use crate::args::KeyCmd;
    use crate::keys;
    use haul_manifest::crypto::Credential;
    #[derive(Serialize)]
    struct Slots<'a> {
        repository: String,
        encrypted: bool,
        slots: &'a [haul_manifest::crypto::KeySlot],
    }
    match cmd {
        KeyCmd::Generate { file } => {
            keys::generate(&file)?;
            #[derive(Serialize)]
            struct Out {
                key_file: String,
            }
            let out = Out {
                key_file: file.display().to_string(),
            };
            emit(ctx.json, &out, |w| {
                writeln!(
                    w,
                    "wrote a new key file {} (mode 0600): keep a copy away from the repository",
                    out.key_file
                )
            });
        }
        KeyCmd::List { repo } => {
            let repo = ctx.repo(&ctx.repo_url(&repo, true)?).await?;
            let out = Slots {
                repository: repo.url(),
                encrypted: repo.encrypted(),
                slots: repo.slots(),
            };
            emit(ctx.json, &out, |w| {
                if !out.encrypted {
                    return writeln!(w, "{} is NOT ENCRYPTED: it has no keys", out.repository);
                }
                writeln!(w, "{:<8}  {:<9} {:<23}  LABEL", "ID", "KIND", "ADDED")?;
                for s in out.slots {
                    writeln!(w, "{}", keys::describe(s))?;
                }
                Ok(())
            });
        }
        KeyCmd::Add {
            repo,
            new_password_file,
            new_password_command,
            new_key_file,
            label,
        } => {
            let new = match (new_password_file, new_password_command, new_key_file) {
                (Some(f), _, _) => {
                    Credential::Password(keys::password_file(&f, "--new-password-file")?)
                }
                (_, Some(c), _) => {
                    Credential::Password(keys::password_command(&c, "--new-password-command")?)
                }
                (_, _, Some(f)) => Credential::KeyFile(keys::key_file(&f, "--new-key-file")?),
                _ => {
                    return Err(CliError::Usage(
                        "say what the new key is: --new-password-file, --new-password-command or --new-key-file"
                            .into(),
                    ));
                }
            };
            let repo = ctx.repo(&ctx.repo_url(&repo, true)?).await?;
            let slot = repo.add_slot(&new, &label).await?;
            emit(ctx.json, &slot, |w| {
                writeln!(w, "added key slot {}", keys::describe(&slot))
            });
        }
        KeyCmd::Remove { repo, id } => {
            let repo = ctx.repo(&ctx.repo_url(&repo, true)?).await?;
            let slot = repo.remove_slot(&id).await?;
            emit(ctx.json, &slot, |w| {
                writeln!(w, "removed key slot {}", keys::describe(&slot))
            });
        }
    }
    Ok(Outcome::Done)
}

async fn snapshots(ctx: &Context, repo_url: &str) -> Result<Outcome> {
    let repo = ctx.repo(repo_url).await?;
    if !ctx.json && !repo.encrypted() {
        say(&format!(
            "note: {} is NOT ENCRYPTED (format v{}{})",
            repo.url(),
            repo.config().version,
            if repo.config().version >= 2 {
                ", made with --insecure-no-encryption"
            } else {
                ""
            }
        ));
    }
    let snaps = repo.snapshots().await?;
    #[derive(Serialize)]
    struct Row {
        id: String,
        time: String,
        objects: u64,
        bytes: u64,
        parent: Option<String>,
        source: Option<String>,
        databases: Vec<String>,
    }
    let rows: Vec<Row> = snaps
        .iter()
        .map(|s: &Snapshot| Row {
            id: s.id.to_string(),
            time: s.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            objects: s.objects(),
            bytes: s.bytes(),
            parent: s.parent.map(|p| p.to_string()),
            source: s.bucket.as_ref().map(|b| b.url.clone()),
            databases: s.databases.iter().map(|d| d.name.clone()).collect(),
        })
        .collect();
    emit(ctx.json, &rows, |w| {
        if rows.is_empty() {
            return writeln!(w, "no snapshots in {}", repo.url());
        }
        writeln!(
            w,
            "{:<16}  {:<20}  {:>10}  {:>10}  {:<16}  source [databases]",
            "ID", "TIME", "OBJECTS", "SIZE", "PARENT"
        )?;
        for r in &rows {
            let dbs = if r.databases.is_empty() {
                String::new()
            } else {
                format!(" [{}]", r.databases.join(", "))
            };
            writeln!(
                w,
                "{:<16}  {:<20}  {:>10}  {:>10}  {:<16}  {}{dbs}",
                r.id,
                r.time,
                r.objects,
                bytes(r.bytes),
                r.parent.as_deref().unwrap_or("-"),
                r.source.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    });
    Ok(Outcome::Done)
}

async fn resume(ctx: &Context, repo_url: &str, timeout: Duration, force: bool) -> Result<Outcome> {
    let repo = ctx.repo(repo_url).await?;
    let r = haul_snapshot::resume::resume(
        &repo,
        Arc::new(Processes),
        timeout,
        force,
        ctx.events.as_ref(),
    )
    .await?;
    emit(ctx.json, &r, |w| {
        if r.resumed.is_empty() && r.left.is_empty() {
            return writeln!(w, "no paused cluster recorded in {}", repo.url());
        }
        for x in &r.resumed {
            writeln!(
                w,
                "resumed run {} ({}{}): {} step(s)",
                x.run,
                x.method.name(),
                x.context
                    .as_deref()
                    .map(|c| format!(", context {c}"))
                    .unwrap_or_default(),
                x.steps.len()
            )?;
            for s in &x.steps {
                match s {
                    PauseStep::Scale(w_) => writeln!(
                        w,
                        "  {} {} back to {} replica(s)",
                        w_.kind.as_str(),
                        w_.name,
                        w_.replicas
                    )?,
                    PauseStep::Unpause => writeln!(w, "  pachctl enterprise unpause")?,
                }
            }
        }
        for x in &r.left {
            writeln!(
                w,
                "left alone: run {} is still running (pid {} on {}); --force resumes it anyway",
                x.run, x.paused_by.pid, x.paused_by.host
            )?;
        }
        Ok(())
    });
    Ok(Outcome::Done)
}

async fn verify(
    ctx: &Context,
    spec: Option<&str>,
    repo_url: &str,
    read_data: bool,
) -> Result<Outcome> {
    let repo = ctx.repo(repo_url).await?;
    let snaps = match spec {
        Some(s) => vec![repo.find_snapshot(s).await?],
        None => repo.snapshots().await?,
    };
    let view = ProgressView::start(repo.engine().progress.clone(), ctx.progress);
    let result = haul_mover::verify::verify(&repo, &snaps, read_data).await;
    view.finish().await;
    let r = result?;
    emit(ctx.json, &r, |w| {
        writeln!(
            w,
            "checked {} snapshot(s), {} objects, {} chunks{}",
            r.snapshots,
            r.objects,
            r.chunks,
            if read_data {
                format!(", read {} ({})", r.chunks_read, bytes(r.bytes_read))
            } else {
                String::new()
            }
        )?;
        for m in &r.missing {
            writeln!(w, "MISSING chunk {m}")?;
        }
        for d in &r.damaged {
            writeln!(w, "DAMAGED {d}")?;
        }
        for s in &r.size_mismatches {
            writeln!(w, "WRONG SIZE {s}")?;
        }
        if r.ok() {
            writeln!(w, "ok: no problems found")
        } else {
            writeln!(w, "PROBLEMS FOUND")
        }
    });
    if !r.ok() {
        say(&format!(
            "error: {} missing and {} damaged chunk(s), {} wrong size(s) in {}",
            r.missing.len(),
            r.damaged.len(),
            r.size_mismatches.len(),
            repo.url()
        ));
        return Ok(Outcome::Damaged);
    }
    Ok(Outcome::Done)
}
