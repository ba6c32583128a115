//! `ringvault`: the operator's command line. It is a gRPC client of the coordinator; every
//! command prints for humans or, with `--output json`, for programs, and exits non-zero when
//! what it asked for did not succeed.
mod commands;
mod output;
mod units;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
