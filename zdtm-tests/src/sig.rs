//! Signal helpers on the kernel's own 64-bit signal set.
//!
//! Masks go through the raw `rt_sigprocmask(2)`, `rt_sigsuspend(2)`,
//! `rt_sigpending(2)` and `rt_sigaction(2)` system calls so that what a test
//! sets and reads is exactly what the kernel holds, signals 32 and 33
//! (reserved by glibc for itself) included.

use std::io;

/// Size of the kernel's sigset on x86_64, passed as `sigsetsize`.
const KSIGSET_SIZE: usize = 8;

/// The bit of `sig` (1..=64) in a kernel sigset.
pub const fn bit(sig: libc::c_int) -> u64 {
    1u64 << (sig - 1)
}

/// The bits of every signal in `sigs`.
pub fn set_of(sigs: &[libc::c_int]) -> u64 {
    sigs.iter().fold(0, |m, &s| m | bit(s))
}

/// The signal numbers set in `mask`, ascending.
pub fn members(mask: u64) -> Vec<libc::c_int> {
    (1..=64).filter(|&s| mask & bit(s) != 0).collect()
}

fn sigprocmask(how: libc::c_int, set: Option<u64>) -> io::Result<u64> {
    let mut old = 0u64;
    let setp = set.as_ref().map_or(std::ptr::null(), |s| s as *const u64);
    // SAFETY: `setp` is null or points to a live u64, `old` is a writable
    // u64, and the size argument is the size of both.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            setp,
            &mut old as *mut u64,
            KSIGSET_SIZE,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// The calling thread's blocked mask.
pub fn mask() -> io::Result<u64> {
    sigprocmask(libc::SIG_BLOCK, None)
}

/// Replaces the blocked mask; returns the old one.
pub fn set_mask(m: u64) -> io::Result<u64> {
    sigprocmask(libc::SIG_SETMASK, Some(m))
}

/// Adds `m` to the blocked mask; returns the old one.
pub fn block(m: u64) -> io::Result<u64> {
    sigprocmask(libc::SIG_BLOCK, Some(m))
}

/// Removes `m` from the blocked mask; returns the old one.
pub fn unblock(m: u64) -> io::Result<u64> {
    sigprocmask(libc::SIG_UNBLOCK, Some(m))
}

/// `rt_sigsuspend(m)`: waits for a handled signal with mask `m`. Always
/// returns an error; `EINTR` is the normal outcome.
pub fn suspend(m: u64) -> io::Result<()> {
    // SAFETY: `m` is a live u64 of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigsuspend, &m as *const u64, KSIGSET_SIZE) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The set of signals pending for the thread or the process.
pub fn pending() -> io::Result<u64> {
    let mut set = 0u64;
    // SAFETY: `set` is a writable u64 of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigpending, &mut set as *mut u64, KSIGSET_SIZE) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(set)
}

/// The kernel's view of one signal disposition (`struct sigaction` as
/// `rt_sigaction(2)` takes it on x86_64).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KSigaction {
    /// Handler address, or `SIG_DFL` (0) / `SIG_IGN` (1).
    pub handler: usize,
    /// `SA_*` flags, `SA_RESTORER` included.
    pub flags: u64,
    /// The signal return trampoline set by libc.
    pub restorer: usize,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// Reads the disposition of `sig` straight from the kernel.
pub fn get_action(sig: libc::c_int) -> io::Result<KSigaction> {
    let mut old = KSigaction::default();
    // SAFETY: `old` is a writable struct with the kernel's layout; the new
    // action pointer is null, so nothing changes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<KSigaction>(),
            &mut old as *mut KSigaction,
            KSIGSET_SIZE,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// Installs a disposition through glibc's `sigaction` (which supplies the
/// restorer): `handler` (`SIG_DFL`, `SIG_IGN` or a function), `flags`, and
/// `mask` as a kernel sigset.
pub fn set_action(
    sig: libc::c_int,
    handler: libc::sighandler_t,
    flags: libc::c_int,
    mask: u64,
) -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty mask).
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = flags;
    for s in members(mask) {
        // SAFETY: `sa.sa_mask` is an initialized sigset_t owned by us.
        unsafe { libc::sigaddset(&mut sa.sa_mask, s) };
    }
    // SAFETY: `sa` is fully initialized; the caller vouches that `handler`
    // is SIG_DFL, SIG_IGN or an async-signal-safe function of the right type.
    if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// glibc's `SIGRTMIN + n`. glibc keeps signals 32 and 33 for itself, so its
/// `SIGRTMIN` is 34; tests use its numbering so that glibc functions
/// (`sigqueue`, `sigaction`...) accept the signals.
pub fn rtmin(n: libc::c_int) -> libc::c_int {
    libc::SIGRTMIN() + n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_members_round_trip() {
        let sigs = [1, 10, 32, 33, 64];
        assert_eq!(members(set_of(&sigs)), sigs);
        assert_eq!(bit(1), 1);
        assert_eq!(bit(64), 1 << 63);
    }

    #[test]
    fn get_action_reads_a_default_disposition() {
        // SIGKILL's disposition is always SIG_DFL.
        let a = get_action(libc::SIGKILL).unwrap();
        assert_eq!(a.handler, libc::SIG_DFL);
    }
}
