//! The `hookledger` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: replaying the log and answering
/// attempts allocate and free many small strings, often on different threads,
/// and glibc's free and fastbin consolidation weighed heavily in those
/// profiles (BENCHMARKS.md, "What the profiles showed").
/// The benches use the same allocator, built without transparent huge pages
/// (see the workspace `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = hookledger::cli::Cli::parse();
    let log = hookledger::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hookledger: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(hookledger::cli::run(cli));
    // Every task's last line is queued once the runtime is gone; the guard
    // writes them out before the verdict.
    drop(runtime);
    drop(log);
    hookledger::cli::report(result)
}
