//! The `haul` command. Parses arguments into validated objects, runs the
//! command, and maps errors to a message, a hint and an exit code:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | failed: nothing was committed (see the message) |
//! | 2 | bad usage (unknown flag, missing argument) |
//! | 3 | the data is damaged: `verify` found problems, a restore skipped damaged objects, or restored row counts differ from the snapshot's |
//! | 4 | the cluster could not be resumed after a paused backup: run the commands printed |
//! | 129, 130, 131, 143 | interrupted by SIGHUP, SIGINT, SIGQUIT, SIGTERM (a paused cluster was resumed first) |
//!
//! ```text
//! main: signals ─▶ Cancel ┐
//!       args ─▶ context (validated) ─▶ commands ─▶ haul-snapshot / haul-mover / haul-helm
//!       events ◀─ procedures (printed on stderr) ┘      error ─▶ message, hint, exit code
//! ```

// Doc comments there are `--help` text, where `[[store]]` means a TOML section.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]
mod args;
mod commands;
mod config;
mod context;
mod error;
mod job;
mod keys;
mod output;
mod signals;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::Cli;

/// Caps glibc's malloc at one arena. glibc gives threads that contend for
/// the allocator arenas of their own, up to eight per core, and memory freed
/// into an arena stays with it. haul's buffers are megabytes, allocated and
/// freed on whichever of dozens of threads (runtime workers, CPU jobs,
/// blocking file reads) ran the step, so each arena kept its own high-water
/// mark: peak RSS of a 2 GiB backup from local files was 268-295 MiB with a
/// 128 MiB budget, and 152-164 MiB with one arena, for no more CPU (glibc's
/// per-thread cache still serves small allocations without the lock).
/// BENCHMARKS.md has the measurement, with mimalloc and jemalloc beside it.
/// An explicit `MALLOC_ARENA_MAX` in the environment wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt is glibc's documented tuning call; it takes its own
        // lock, and runs here first in main, before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// Everything haul writes is private to its user: a `file://` repository
/// (dumps, roles, Helm values), `--helm-values-out`, a restore into a
/// local folder. Files get 0600 and folders 0700 whatever umask haul was
/// started with (the usual 022 made them world-readable).
#[cfg(unix)]
fn private_files() {
    // SAFETY: umask only sets the process's file-creation mask; it cannot
    // fail, and runs here first in main, before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::umask(0o077);
    }
}

/// A PostgreSQL password given on the command line is visible to every
/// user of the machine (`ps`): said once, with the ways that are not.
fn warn_password_in_argv() {
    let shown = std::env::args()
        .skip(1)
        .any(|a| a.contains("://") && haul_pg::redact_url(&a) != a);
    if shown {
        tracing::warn!(
            "a password is on the command line, where other users of this machine can read it \
             (ps, /proc): prefer PGPASSWORD, a passfile (~/.pgpass, mode 0600) or the config file"
        );
    }
}

fn main() -> ExitCode {
    one_malloc_arena();
    #[cfg(unix)]
    private_files();
    let cli = Cli::parse();
    let default_level = match cli.global.verbose {
        0 => "warn",
        1 => "info,haul=info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("HAUL_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_target(false)
        // Its own report of a failed write is an eprintln!, which panics on
        // a closed stderr (a dropped SSH session): a lost log line is better.
        .log_internal_errors(false)
        .init();
    warn_password_in_argv();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.global.json;
    let result = runtime.block_on(async {
        let cancel = signals::install()?;
        let ctx = context::Context::new(
            &cli.global,
            cancel,
            std::sync::Arc::new(output::PrintEvents),
        )?;
        Box::pin(commands::run(cli, ctx)).await
    });
    match result {
        Ok(error::Outcome::Done) => ExitCode::SUCCESS,
        Ok(error::Outcome::Damaged) => ExitCode::from(error::EXIT_DAMAGED),
        Err(e) => {
            let (chain, hint, code) = (e.chain(), e.hint(), e.exit_code());
            let components = e.components();
            output::say_error(&chain, hint.as_deref(), components);
            if json {
                // `--json` always prints one document, a failure too.
                output::emit_error(&chain, hint.as_deref(), code, components);
            }
            ExitCode::from(code)
        }
    }
}
