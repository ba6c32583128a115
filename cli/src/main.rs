//! `ringvault`: the operator's command line. It is a gRPC client of the coordinator; every
//! command prints for humans or, with `--output json`, for programs, and exits with a code
//! per class of outcome ([`commands::exit`]) so scripts can tell "not found" from
//! "unavailable".
mod commands;
mod output;
mod units;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version go to stdout and succeed; usage errors are bad input.
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() {
                commands::exit::INVALID
            } else {
                commands::exit::OK
            });
        }
    };
    match commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            let (code, msg) = commands::describe_failure(&e);
            eprintln!("error: {msg}");
            std::process::ExitCode::from(code)
        }
    }
}
