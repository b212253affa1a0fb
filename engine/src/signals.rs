//! Signal dispositions and queued signals of a task.
//!
//! Dispositions are read and written with remote `rt_sigaction` (the kernel `struct
//! sigaction`: handler, flags, restorer, mask). Queued signals are read with
//! `PTRACE_PEEKSIGINFO` and queued again by the restored task itself with
//! `rt_sigqueueinfo`/`rt_tgsigqueueinfo`, which keeps si_code and the value (the kernel lets a
//! task queue any siginfo to itself).

use images::pb::{SigInfo, SigactionEntry};
use parasite::Tracee;

use crate::error::{DumpError, RestoreError};
use crate::remote::{Batch, Queue, Ran};

/// Highest signal number on Linux.
pub(crate) const NSIG: u32 = 64;

fn catchable(sig: u32) -> bool {
    sig != libc::SIGKILL as u32 && sig != libc::SIGSTOP as u32
}

/// Dispositions of every catchable signal that is not SIG_DFL with no flags: the calls that
/// read them, added to `batch`; [`actions_of`] takes the answers.
///
/// Only signals that are caught or ignored (`SigCgt`/`SigIgn` of /proc/PID/status) and SIGCHLD
/// (whose SA_NOCLDWAIT/SA_NOCLDSTOP matter even at SIG_DFL) are asked for; flags set on a
/// default disposition of another signal change nothing the task can observe but
/// `sigaction()`'s report, and are not kept.
pub(crate) fn ask_actions(batch: &mut Batch, status: &str) -> Vec<(u32, usize, u64)> {
    let set = |key| {
        crate::proc::status_field(status, key)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(u64::MAX)
    };
    let interesting = set("SigCgt") | set("SigIgn") | 1 << (libc::SIGCHLD - 1);
    (1..=NSIG)
        .filter(|&s| catchable(s) && interesting & (1 << (s - 1)) != 0)
        .map(|sig| {
            let out = batch.out(32);
            let i = batch.push(
                "rt_sigaction",
                libc::SYS_rt_sigaction,
                [sig as u64, 0, out, 8, 0, 0],
            );
            (sig, i, out)
        })
        .collect()
}

/// The dispositions [`ask_actions`] asked for.
pub(crate) fn actions_of(
    ran: &Ran,
    asked: &[(u32, usize, u64)],
) -> Result<Vec<SigactionEntry>, DumpError> {
    let mut out = Vec::new();
    for &(sig, i, at) in asked {
        ran.ok(i)?;
        let e = SigactionEntry {
            sig,
            handler: ran.word(at, 0),
            flags: ran.word(at, 1),
            restorer: ran.word(at, 2),
            mask: ran.word(at, 3),
        };
        if e.handler != 0 || e.flags != 0 || e.mask != 0 {
            out.push(e);
        }
    }
    Ok(out)
}

/// Queues the `rt_sigaction` calls that set `actions` again.
pub(crate) fn restore_actions(
    t: &mut Tracee,
    pid: i32,
    q: &mut Queue,
    actions: &[SigactionEntry],
) -> Result<(), RestoreError> {
    for a in actions.iter().filter(|a| catchable(a.sig) && a.sig <= NSIG) {
        let mut raw = Vec::with_capacity(32);
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            raw.extend_from_slice(&w.to_ne_bytes());
        }
        let at = q.arg(t, pid, &raw)?;
        let sig = a.sig;
        q.push(
            t,
            pid,
            libc::SYS_rt_sigaction,
            [sig as u64, at, 0, 8, 0, 0],
            || format!("rt_sigaction({sig})"),
        )?;
    }
    Ok(())
}

/// Queues `pending` again in the restored thread `tid` of process `tgid` (both as the task
/// sees them, inside its pid namespace), through the remote call queue `q`; `shared` selects
/// the process-wide queue. `pid` names the task in errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore_pending(
    t: &mut Tracee,
    pid: i32,
    tgid: i32,
    tid: i32,
    q: &mut Queue,
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
        let at = q.arg(t, pid, &si.raw)?;
        let (nr, args) = if shared {
            (
                libc::SYS_rt_sigqueueinfo,
                [tgid as u64, sig as u64, at, 0, 0, 0],
            )
        } else {
            (
                libc::SYS_rt_tgsigqueueinfo,
                [tgid as u64, tid as u64, sig as u64, at, 0, 0],
            )
        };
        q.push(t, pid, nr, args, || format!("queue signal {sig}"))?;
    }
    Ok(())
}
