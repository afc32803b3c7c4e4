//! The command line (`docs/DESIGN.md` §8): one module per command. `--help` text comes from
//! the doc comments here. Exit codes: 0 ok, 1 a check failed, 2 usage or setup.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

pub mod audit;
pub mod check_proof;
pub mod erase;
pub mod keys;
pub mod limit_args;
pub mod open;
pub mod projections;
pub mod prove;
pub mod serve;
pub mod signing_key;
pub mod units;

/// hookledger: an event-sourced ledger of outbound webhook deliveries.
#[derive(Debug, Parser)]
#[command(name = "hookledger", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Log format on stderr.
    #[arg(long, global = true, env = "HOOKLEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Where the ledger lives; every command takes these.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Data directory: the embedded store's log, and with any backend this
    /// process's read model and admin socket (one per server process).
    #[arg(long, global = true, env = "HOOKLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,

    /// Where events are stored.
    #[arg(long, global = true, env = "HOOKLEDGER_BACKEND", value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,

    /// PostgreSQL connection URL (`postgres://user:password@host:port/db`) for
    /// `--backend postgres`. Never printed.
    #[arg(
        long,
        global = true,
        env = "HOOKLEDGER_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres_url: Option<Secret>,

    /// KurrentDB connection string for `--backend kurrentdb`:
    /// `esdb://host:2113?tls=false` for one node, `esdb+discover://…` for a
    /// cluster, with `user:password@` as the server needs. Never printed.
    #[arg(
        long,
        global = true,
        env = "HOOKLEDGER_KURRENTDB_URL",
        hide_env_values = true
    )]
    pub kurrentdb_url: Option<Secret>,

    /// The ledger's streams in KurrentDB are named `PREFIX:…`; several ledgers
    /// can share a server under different prefixes.
    #[arg(
        long,
        global = true,
        env = "HOOKLEDGER_KURRENTDB_PREFIX",
        default_value = "hookledger"
    )]
    pub kurrentdb_prefix: String,

    /// The KurrentDB server's maximum append size (its `MaxAppendSize`):
    /// larger appends are refused before they are sent.
    #[arg(long, global = true, env = "HOOKLEDGER_KURRENTDB_MAX_APPEND_BYTES", default_value_t = 1024 * 1024)]
    pub kurrentdb_max_append_bytes: usize,

    /// Memory for the read model's page cache (the model itself lives on
    /// disk in `DATA/model`). With the embedded backend the log's index
    /// shares it. Takes B, KiB, MiB, GiB.
    #[arg(long, global = true, env = "HOOKLEDGER_CACHE_SIZE", default_value = "256MiB", value_parser = units::parse_bytes)]
    pub cache_size: usize,

    /// How long an `Idempotency-Key` is kept: a key used again after this is
    /// a new request. At least 24h. Every process on one ledger must use the
    /// same value (it is part of how the log is folded).
    #[arg(long, global = true, env = "HOOKLEDGER_IDEMPOTENCY_TTL", default_value = "7d", value_parser = idempotency_ttl, allow_hyphen_values = true)]
    pub idempotency_ttl: std::time::Duration,
}

fn idempotency_ttl(text: &str) -> Result<std::time::Duration, String> {
    let ttl = units::parse_duration(text)?;
    if ttl < std::time::Duration::from_secs(24 * 3600) {
        return Err("must be at least 24h: clients retry for longer than that".into());
    }
    Ok(ttl)
}

impl StoreArgs {
    /// What every fold of this ledger shares.
    pub fn settings(&self) -> ::projections::Settings {
        ::projections::Settings {
            idempotency_ttl: i64::try_from(self.idempotency_ttl.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// Where this process keeps its read model, and how much memory it gets.
    pub fn projector_config(&self) -> crate::projector::Config {
        let memory = self.model_memory();
        let mut options = crate::model::Options {
            settings: self.settings(),
            ..crate::model::Options::default()
        };
        options.flushing.bytes = memory.overlay;
        crate::projector::Config {
            file: Some(crate::model::file_in(&self.data)),
            cache_bytes: memory.page_cache,
            payload_cache_bytes: memory.payloads,
            options,
        }
    }

    /// How the read model spends its share of `--cache-size`.
    pub fn model_memory(&self) -> crate::model::Memory {
        crate::model::Memory::of(self.model_cache())
    }

    /// The read model's share of `--cache-size`: all of it, but for the
    /// quarter the embedded log's index takes.
    pub fn model_cache(&self) -> usize {
        match self.backend {
            Backend::Embedded => self.cache_size - self.cache_size / 4,
            Backend::Postgres | Backend::Kurrentdb => self.cache_size,
        }
    }

    /// The embedded log index's share of `--cache-size`.
    pub fn log_cache(&self) -> usize {
        self.cache_size / 4
    }
}

/// The storage backends the command line can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The segment log in the data directory; one server process at a time.
    Embedded,
    /// A PostgreSQL database that several server processes can share.
    Postgres,
    /// A KurrentDB server or cluster that several server processes can share
    /// (in builds with the `kurrentdb` feature).
    Kurrentdb,
}

/// A setting that may hold a password: its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    ///
    /// Besides the limits set by the options below, a client can reach these:
    /// a request body of 1 MiB (413; a larger Content-Length is refused before
    /// the body is read), a request target of 64 KB (414), 100 headers or
    /// 400 KB of them (431) and 250 items per list page (`?limit=`). Every
    /// refusal is problem+json.
    Serve(serve::ServeArgs),
    /// Issue and revoke API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Rebuild read models from the log.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// Replay, verify, digest and export the history; prove and check proofs.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Show or rotate the keys tree heads are signed with.
    #[command(subcommand)]
    SigningKey(signing_key::SigningKeyCommand),
    /// Erase every payload and response body an organization has recorded
    /// (offboarding). The erasure is recorded in its history and every hash
    /// still verifies; the bodies leave the disk before this returns, or, if
    /// a server holds the ledger, in its background.
    Erase(erase::EraseArgs),
    /// Remove from the disk every erased body not yet removed, while the
    /// server is stopped (a running server does this in the background).
    Compact,
}

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Exit 2: the setup is wrong (arguments, data directory, a store that won't open).
    #[error("{0}")]
    Setup(String),
    /// Exit 1: a check ran and found a problem; the report was printed.
    #[error("{0}")]
    CheckFailed(String),
}

impl Error {
    pub fn setup(context: &str, e: impl std::fmt::Display) -> Self {
        Error::Setup(format!("{context}: {e}"))
    }
}

/// Runs the command. The caller reports the result with [`report`] once the
/// command's log lines are out, so that the verdict is the last line on stderr.
pub async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Serve(args) => serve::run(&cli.store, args).await,
        Command::Keys(command) => keys::run(&cli.store, command).await,
        Command::Projections(command) => projections::run(&cli.store, command).await,
        Command::Audit(command) => audit::run(&cli.store, command).await,
        Command::SigningKey(command) => signing_key::run(&cli.store, command),
        Command::Erase(args) => erase::erase(&cli.store, args).await,
        Command::Compact => erase::compact(&cli.store).await,
    }
}

/// Prints a failure on stderr and gives the exit code for `result`.
pub fn report(result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::CheckFailed(message)) => {
            eprintln!("hookledger: {message}");
            ExitCode::from(1)
        }
        Err(Error::Setup(message)) => {
            eprintln!("hookledger: {message}");
            ExitCode::from(2)
        }
    }
}
