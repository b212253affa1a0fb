//! Errors of the engine's two operations. Every variant names what it concerns (pid, fd, path,
//! address, image file) so that the CLI can print it as one line.

use std::path::PathBuf;

use images::ImageError;
use parasite::{ParasiteError, RemoteSyscallError};

use crate::proc::ProcError;

/// Why a dump failed. The target tree has been left running as it was.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("pid {pid}: no such process")]
    NoSuchProcess { pid: i32 },
    #[error("pid {pid}: cannot seize")]
    Seize {
        pid: i32,
        #[source]
        source: ParasiteError,
    },
    #[error(transparent)]
    Parasite(#[from] ParasiteError),
    #[error("pid {pid}: {what}")]
    Remote {
        pid: i32,
        what: &'static str,
        #[source]
        source: RemoteSyscallError,
    },
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("pid {pid} fd {fd}: {target} not supported{}", why.as_deref().map(|w| format!(" ({w})")).unwrap_or_default())]
    UnsupportedFd {
        pid: i32,
        fd: i32,
        target: String,
        why: Option<String>,
    },
    #[error("pid {pid} fd {fd}: pipe:[{ino}] leads outside the dumped tree (pid {holder} fd {holder_fd} holds it): dump with --external pipe[{ino}], restore with --inherit-fd fd[N]:pipe:[{ino}]")]
    ExternalPipe {
        pid: i32,
        fd: i32,
        ino: u64,
        holder: i32,
        holder_fd: i32,
    },
    #[error("pid {pid} fd {fd}: unlinked file {path} holds {size} bytes, over the ghost limit of {limit} (raise it with --ghost-limit)")]
    GhostTooBig {
        pid: i32,
        fd: i32,
        path: String,
        size: u64,
        limit: u64,
    },
    #[error("{option}: {why}")]
    BadOption { option: String, why: String },
    #[error("pid {pid}: mapping {start:#x}-{end:#x} ({name}) not supported: {why}")]
    UnsupportedVma {
        pid: i32,
        start: u64,
        end: u64,
        name: String,
        why: &'static str,
    },
    #[error("pid {pid}: {what} not supported yet")]
    Unsupported { pid: i32, what: String },
    /// A root directory restore could not bring back as it was (removed, or out of reach
    /// of the mount namespace's root).
    #[error("pid {pid}: root directory {path} cannot be restored: {why}")]
    Root { pid: i32, path: String, why: String },
    /// A System V segment of an IPC namespace the tree does not own (the host's).
    #[error("pid {pid}: System V shared memory shmid {shmid} attached at {addr:#x} belongs to an IPC namespace outside the tree: not dumped")]
    SysvShmOutside { pid: i32, addr: u64, shmid: i32 },
    #[error("pid {pid}: {path}")]
    Io {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the dump itself (the pages image, the previous images) and no task's.
    #[error("{path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("fault injected at {0}")]
    Fault(&'static str),
}

/// Why a restore failed. Everything it created has been killed; the images are untouched.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{image}: {what}")]
    BadImage { image: PathBuf, what: String },
    #[error("pid {pid}: already in use (by {comm:?})")]
    PidTaken { pid: i32, comm: String },
    #[error("pid {pid}: cannot create task")]
    Clone {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("pid {pid}: setting up {what}")]
    ChildSetup {
        pid: i32,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{option}: {why}")]
    BadOption { option: String, why: String },
    #[error("{what} was outside the dumped tree: restore with --inherit-fd fd[N]:{what}")]
    External { what: String },
    #[error("{path}: changed since dump ({what})")]
    FileChanged { path: String, what: String },
    #[error("{path}: cannot use for restore")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parasite(#[from] ParasiteError),
    #[error("pid {pid}: {what}")]
    Remote {
        pid: i32,
        what: String,
        #[source]
        source: RemoteSyscallError,
    },
    #[error("pid {pid}: {what}")]
    Layout { pid: i32, what: String },
    #[error("pid {pid}: the vDSO of this kernel differs from the dumped one: {what}")]
    Vdso { pid: i32, what: String },
    #[error("pid {pid}: restored task exited before it was released ({status})")]
    Died { pid: i32, status: String },
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("fault injected at {0}")]
    Fault(&'static str),
}

/// Named points where `CRUST_FAULT=<name>` makes the engine fail, to test that a failure there
/// leaves everything as it must (target running after a failed dump, nothing left after a
/// failed restore).
pub mod fault {
    /// Every fault point the engine knows, for `crust check` and the harness.
    pub const POINTS: &[&str] = &[
        "dump-after-seize",
        "dump-after-pages",
        "dump-before-inventory",
        "restore-after-fork",
        "restore-after-mm",
        "restore-before-release",
    ];

    /// True when the environment asks for a failure at `point`.
    pub fn hit(point: &'static str) -> bool {
        std::env::var("CRUST_FAULT").is_ok_and(|v| v == point)
    }
}
