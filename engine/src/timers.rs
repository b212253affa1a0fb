//! Interval timers (`setitimer`): ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF of a process,
//! read with a remote `getitimer` and armed again with a remote `setitimer` in the restored
//! task. ITIMER_REAL keeps counting while the tree is frozen and stored, like a signal would
//! see it; the CPU-time timers only count while the task runs.

use images::pb::ITimer;
use parasite::{RemoteAddr, Tracee};

use crate::error::{DumpError, RestoreError};
use crate::remote::{Batch, Ran};

fn to_us(sec: u64, usec: u64) -> u64 {
    sec.saturating_mul(1_000_000).saturating_add(usec)
}

/// Adds the `getitimer` calls of the three timers to `batch`; [`timers_of`] takes the answers.
pub(crate) fn ask(batch: &mut Batch) -> Vec<(u32, usize, u64)> {
    [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF]
        .into_iter()
        .map(|which| {
            let out = batch.out(32);
            let i = batch.push(
                "getitimer",
                libc::SYS_getitimer,
                [which as u64, out, 0, 0, 0, 0],
            );
            (which as u32, i, out)
        })
        .collect()
}

/// The armed timers among those [`ask`] asked for.
pub(crate) fn timers_of(ran: &Ran, asked: &[(u32, usize, u64)]) -> Result<Vec<ITimer>, DumpError> {
    let mut out = Vec::new();
    for &(which, i, at) in asked {
        ran.ok(i)?;
        let timer = ITimer {
            which,
            interval_us: to_us(ran.word(at, 0), ran.word(at, 1)),
            value_us: to_us(ran.word(at, 2), ran.word(at, 3)),
        };
        if timer.interval_us != 0 || timer.value_us != 0 {
            out.push(timer);
        }
    }
    Ok(out)
}

fn set(
    t: &mut Tracee,
    pid: i32,
    data: RemoteAddr,
    which: u32,
    interval_us: u64,
    value_us: u64,
) -> Result<u64, RestoreError> {
    let mut raw = Vec::with_capacity(32);
    for v in [
        interval_us / 1_000_000,
        interval_us % 1_000_000,
        value_us / 1_000_000,
        value_us % 1_000_000,
    ] {
        raw.extend_from_slice(&v.to_ne_bytes());
    }
    t.write_mem(data, &raw)?;
    let old = RemoteAddr(data.0 + 32);
    crate::mm::rsys(
        t,
        pid,
        libc::SYS_setitimer,
        [which as u64, data.0, 0, 0, 0, 0],
        || format!("setitimer({which})"),
    )?;
    crate::mm::rsys(
        t,
        pid,
        libc::SYS_getitimer,
        [which as u64, old.0, 0, 0, 0, 0],
        || format!("getitimer({which})"),
    )?;
    let mut back = [0u8; 32];
    t.read_mem(old, &mut back)?;
    let w = |i: usize| u64::from_ne_bytes(back[i * 8..i * 8 + 8].try_into().expect("8"));
    Ok(to_us(w(2), w(3)))
}

pub(crate) fn restore(
    t: &mut Tracee,
    pid: i32,
    data: RemoteAddr,
    timers: &[ITimer],
) -> Result<(), RestoreError> {
    for it in timers {
        let got = set(t, pid, data, it.which, it.interval_us, it.value_us)?;
        // The kernel adds a tick to a CPU-time timer when it is armed, so that it never
        // fires early; without taking it back every restore would delay the timer by a tick.
        let extra = got.saturating_sub(it.value_us);
        if it.which != libc::ITIMER_REAL as u32 && extra > 0 && it.value_us > extra {
            set(t, pid, data, it.which, it.interval_us, it.value_us - extra)?;
        }
    }
    Ok(())
}
