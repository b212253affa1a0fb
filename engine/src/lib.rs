#![deny(unsafe_code)]
//! crust engine: dump, restore, inspect.
//!
//! One module per kind of kernel object, each owning both directions: [`mm`] (memory),
//! [`files`] (fd table, regular files, pipes), [`signals`], [`regs`]. [`dump`] and [`restore`]
//! orchestrate them; [`inspect`] describes a live tree for comparison. The `crust` binary is a
//! thin command line over this library.

pub mod check;
pub mod dump;
pub mod error;
pub(crate) mod files;
pub mod inspect;
pub(crate) mod ipc;
pub mod log;
pub(crate) mod mm;
pub(crate) mod ns;
pub(crate) mod par;
pub mod predump;
pub(crate) mod proc;
pub(crate) mod regs;
pub(crate) mod remote;
pub mod restore;
pub(crate) mod signals;
pub(crate) mod sys;
pub(crate) mod timers;

pub use dump::{dump, DumpOpts, DumpReport};
pub use error::{DumpError, RestoreError};
pub use predump::{pre_dump, PreDumpOpts};
pub use restore::{restore, RestoreOpts, Restored};

/// Marks every descriptor above 2 close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`),
/// for launchers that exec a program which must not inherit theirs.
pub fn close_inherited_fds_on_exec() {
    sys::cloexec_above_stdio();
}
