//! Signal dispositions and queued signals of a task.
//!
//! Dispositions are read and written with remote `rt_sigaction` (the kernel `struct
//! sigaction`: handler, flags, restorer, mask). Queued signals are read with
//! `PTRACE_PEEKSIGINFO` and queued again by the restored task itself with
//! `rt_sigqueueinfo`/`rt_tgsigqueueinfo`, which keeps si_code and the value (the kernel lets a
//! task queue any siginfo to itself).

use images::pb::{SigInfo, SigactionEntry};
use parasite::{RemoteAddr, Tracee};

use crate::error::{DumpError, RestoreError};

/// Highest signal number on Linux.
pub(crate) const NSIG: u32 = 64;

fn catchable(sig: u32) -> bool {
    sig != libc::SIGKILL as u32 && sig != libc::SIGSTOP as u32
}

/// Dispositions of every catchable signal that is not SIG_DFL with no flags.
///
/// Only signals that are caught or ignored (`SigCgt`/`SigIgn` of /proc/PID/status) and SIGCHLD
/// (whose SA_NOCLDWAIT/SA_NOCLDSTOP matter even at SIG_DFL) are asked for, one remote syscall
/// each; flags set on a default disposition of another signal change nothing the task can
/// observe but `sigaction()`'s report, and are not kept.
pub(crate) fn dump_actions(
    t: &mut Tracee,
    pid: i32,
    scratch: RemoteAddr,
    status: &str,
) -> Result<Vec<SigactionEntry>, DumpError> {
    let set = |key| {
        crate::proc::status_field(status, key)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(u64::MAX)
    };
    let interesting = set("SigCgt") | set("SigIgn") | 1 << (libc::SIGCHLD - 1);
    let mut out = Vec::new();
    for sig in (1..=NSIG).filter(|&s| catchable(s) && interesting & (1 << (s - 1)) != 0) {
        t.syscall_ok(libc::SYS_rt_sigaction, [sig as u64, 0, scratch.0, 8, 0, 0])
            .map_err(|source| DumpError::Remote {
                pid,
                what: "rt_sigaction",
                source,
            })?;
        let mut raw = [0u8; 32];
        t.read_mem(scratch, &mut raw)?;
        let w = |i: usize| u64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let e = SigactionEntry {
            sig,
            handler: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3),
        };
        if e.handler != 0 || e.flags != 0 || e.mask != 0 {
            out.push(e);
        }
    }
    Ok(out)
}

pub(crate) fn restore_actions(
    t: &mut Tracee,
    pid: i32,
    scratch: RemoteAddr,
    actions: &[SigactionEntry],
) -> Result<(), RestoreError> {
    for a in actions.iter().filter(|a| catchable(a.sig) && a.sig <= NSIG) {
        let mut raw = Vec::with_capacity(32);
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            raw.extend_from_slice(&w.to_ne_bytes());
        }
        t.write_mem(scratch, &raw)?;
        crate::mm::rsys(
            t,
            pid,
            libc::SYS_rt_sigaction,
            [a.sig as u64, scratch.0, 0, 8, 0, 0],
            || format!("rt_sigaction({})", a.sig),
        )?;
    }
    Ok(())
}

/// Queues `pending` again in the restored thread `tid` of process `tgid` (both as the task
/// sees them, inside its pid namespace); `shared` selects the process-wide queue. `pid` names
/// the task in errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore_pending(
    t: &mut Tracee,
    pid: i32,
    tgid: i32,
    tid: i32,
    scratch: RemoteAddr,
    pending: &[SigInfo],
    shared: bool,
) -> Result<(), RestoreError> {
    for si in pending {
        if si.raw.len() != parasite::SIGINFO_SIZE {
            return Err(RestoreError::Layout {
                pid,
                what: format!("queued siginfo of {} bytes", si.raw.len()),
            });
        }
        let sig = i32::from_ne_bytes(si.raw[..4].try_into().expect("4 bytes"));
        if !(1..=NSIG as i32).contains(&sig) || !catchable(sig as u32) {
            continue;
        }
        t.write_mem(scratch, &si.raw)?;
        let (nr, args) = if shared {
            (
                libc::SYS_rt_sigqueueinfo,
                [tgid as u64, sig as u64, scratch.0, 0, 0, 0],
            )
        } else {
            (
                libc::SYS_rt_tgsigqueueinfo,
                [tgid as u64, tid as u64, sig as u64, scratch.0, 0, 0],
            )
        };
        crate::mm::rsys(t, pid, nr, args, || format!("queue signal {sig}"))?;
    }
    Ok(())
}
