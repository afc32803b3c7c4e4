//! The `hookledger` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hookledger::cli::Cli::parse();
    hookledger::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hookledger: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(hookledger::cli::run(cli))
}
