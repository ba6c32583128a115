//! `ringvault completions SHELL`: prints a completion script for bash, zsh or fish (and
//! elvish, PowerShell), generated from the command definitions so it never drifts.
use std::process::ExitCode;

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

/// Options of `ringvault completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsOptions {
    /// The shell (bash, zsh, fish, elvish, powershell).
    pub shell: clap_complete::Shell,
}

/// Writes the script to standard output.
pub fn run(o: CompletionsOptions) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    // Generated into memory, then written: a closed pipe is an error, not a panic.
    let mut script = Vec::new();
    clap_complete::generate(o.shell, &mut cmd, "ringvault", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => r
            .context("writing the completion script")
            .map(|()| ExitCode::SUCCESS),
    }
}
