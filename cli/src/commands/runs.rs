//! `ringvault runs list|show|watch|cancel`.
use std::process::ExitCode;

use super::Client;
use clap::Subcommand;
use ringvault_proto::v1 as pb;

use super::status;
use crate::output::{self, Format, ProgressPrinter};

/// Run commands.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Newest runs first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One run: nodes, tables, files, bytes, state, errors.
    Show { run: String },
    /// Follow a run until it ends.
    Watch { run: String },
    /// Ask a running run to stop.
    Cancel { run: String },
}

/// Runs a `runs` subcommand.
pub async fn run(mut client: Client, cmd: RunsCommand, format: Format) -> anyhow::Result<ExitCode> {
    match cmd {
        RunsCommand::List { limit } => {
            let runs = client
                .list_runs(pb::ListRunsRequest { limit })
                .await
                .map_err(status)?
                .into_inner()
                .runs;
            match format {
                Format::Json => output::print_json(&serde_json::Value::Array(
                    runs.iter().map(output::run_json).collect(),
                )),
                Format::Human => output::print_run_table(&runs),
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Show { run } => {
            let r = client
                .get_run(pb::GetRunRequest { run_id: run })
                .await
                .map_err(status)?
                .into_inner();
            match format {
                Format::Json => output::print_json(&output::run_json(&r)),
                Format::Human => output::print_run(&r),
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Watch { run } => watch(&mut client, &run, format, true).await,
        RunsCommand::Cancel { run } => {
            let r = client
                .cancel_run(pb::GetRunRequest { run_id: run })
                .await
                .map_err(status)?
                .into_inner();
            match format {
                Format::Json => output::print_json(&output::run_json(&r)),
                Format::Human => println!("cancel requested for run {}", r.id),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// After a start: prints the new run (and returns) or, with `wait`, follows it to its end.
pub async fn started(
    client: &mut Client,
    run_id: &str,
    kind: &str,
    wait: bool,
    format: Format,
) -> anyhow::Result<ExitCode> {
    if wait {
        if format == Format::Human {
            println!("{kind} run {run_id} started");
        }
        return watch(client, run_id, format, false).await;
    }
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run_id.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    match format {
        Format::Json => output::print_json(&output::run_json(&run)),
        Format::Human => println!(
            "started {kind} run {} (tag {}, state {})",
            run.id, run.tag, run.state
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a run to its end; JSON prints one object per update (the last is final), human
/// output redraws per-node progress with throughput and ETA, then a summary.
pub async fn watch(
    client: &mut Client,
    run_id: &str,
    format: Format,
    json_lines: bool,
) -> anyhow::Result<ExitCode> {
    let mut stream = client
        .watch_run(pb::GetRunRequest {
            run_id: run_id.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut printer = ProgressPrinter::new();
    let mut last: Option<pb::Run> = None;
    while let Some(r) = stream.message().await.map_err(status)? {
        match format {
            Format::Json if json_lines => println!("{}", output::run_json(&r)),
            Format::Json => {}
            Format::Human => printer.update(&r),
        }
        last = Some(r);
    }
    let last =
        last.ok_or_else(|| anyhow::anyhow!("the coordinator sent nothing for run {run_id}"))?;
    let last = if last.state == "RUNNING" {
        client
            .get_run(pb::GetRunRequest {
                run_id: run_id.to_string(),
            })
            .await
            .map_err(status)?
            .into_inner()
    } else {
        last
    };
    match format {
        Format::Json if !json_lines => output::print_json(&output::run_json(&last)),
        Format::Json => {}
        Format::Human => {
            printer.finish();
            output::print_summary(&last);
        }
    }
    Ok(exit_for(&last))
}

fn exit_for(r: &pb::Run) -> ExitCode {
    match r.state.as_str() {
        "DONE" | "RUNNING" => ExitCode::SUCCESS,
        _ => ExitCode::from(super::exit::FAILED),
    }
}
