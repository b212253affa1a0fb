//! `cargo test` runs the zdtm suite: the same trials as `cargo zdtm run`, with the
//! same options (libtest's and the harness's), three dump/restore cycles each by
//! default.

use clap::Parser;
use std::process::ExitCode;
use zdtm::{Defaults, RunArgs};

fn main() -> ExitCode {
    let args = RunArgs::parse();
    let defaults = Defaults {
        iters: 3,
        launcher: env!("CARGO_BIN_EXE_cargo-zdtm").into(),
    };
    match zdtm::run(args, defaults) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zdtm suite: {e:#}");
            ExitCode::FAILURE
        }
    }
}
