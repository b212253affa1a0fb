#![deny(unsafe_code)]
//! `cargo zdtm`: the harness front end (`cargo zdtm run [FILTER...] [options]`).

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use zdtm::launch::LaunchArgs;
use zdtm::runner::{self, Defaults, RunArgs};

#[derive(Parser)]
#[command(name = "cargo zdtm", about = "zdtm: checkpoint/restore test harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run test programs through checkpoint and restore.
    Run(Box<RunArgs>),
    /// Print the inspection of a live process tree as JSON.
    Inspect {
        /// Root of the tree.
        pid: i32,
    },
    /// Start a test in its flavor (used by the harness itself).
    #[command(name = "__launch", hide = true)]
    Launch(LaunchArgs),
}

fn main() -> ExitCode {
    // As a cargo subcommand (`cargo-zdtm zdtm run ...`) the first argument is our name.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "zdtm") {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Cmd::Run(run) => runner::current_launcher()
            .and_then(|launcher| runner::run(*run, Defaults { iters: 1, launcher })),
        Cmd::Inspect { pid } => engine::inspect::inspect(pid)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::to_string_pretty(&t)?))
            .map(|json| {
                println!("{json}");
                ExitCode::SUCCESS
            }),
        Cmd::Launch(l) => match zdtm::launch::main(l) {
            Ok(never) => match never {},
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cargo zdtm: {e:#}");
            ExitCode::from(2)
        }
    }
}
