#![deny(unsafe_code)]
//! zdtm: the checkpoint/restore test harness.
//!
//! Test programs speak the zdtm protocol: started as `PROG --pidfile=P
//! --outfile=O [args]`, a program sets up its state, writes its pid to P, waits
//! for SIGTERM, checks its state and writes `PASS` or `FAIL: why` to O. Each
//! program has a YAML [descriptor](descriptor::Descriptor) beside it. The harness
//! runs every program in each of its flavors (a *trial*, named
//! `static/<name>/<flavor>`) through checkpoint and restore with the engine's
//! command line, compares the tree's [inspection](engine::inspect) before and
//! after, and reads the verdict.
//!
//! Entry points: [`runner::run`] (used by the `cargo-zdtm` binary and by the
//! `cargo test` suite in `tests/suite.rs`) and [`trial::run_trial`] for one trial.
//! See `docs/zdtm.md` for how to write a test.

pub mod descriptor;
pub mod discover;
pub mod driver;
pub mod launch;
pub mod process;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod trial;

pub use runner::{run, Defaults, RunArgs};
