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

/// A `siginfo_t` as the kernel lays it out on x86_64 (128 bytes), with the
/// fields of the `kill`/`sigqueue`/`SIGCHLD` unions that tests read.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SigInfo {
    /// `si_signo`.
    pub signo: i32,
    /// `si_errno`.
    pub errno: i32,
    /// `si_code`.
    pub code: i32,
    _pad: i32,
    /// `si_pid`.
    pub pid: i32,
    /// `si_uid`.
    pub uid: u32,
    /// `si_value` for queued signals, `si_status` (low 32 bits) for `SIGCHLD`.
    pub value: u64,
    _rest: [u8; 96],
}

impl Default for SigInfo {
    fn default() -> SigInfo {
        SigInfo {
            signo: 0,
            errno: 0,
            code: 0,
            _pad: 0,
            pid: 0,
            uid: 0,
            value: 0,
            _rest: [0; 96],
        }
    }
}

impl std::fmt::Debug for SigInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{{signo {}, code {}, pid {}, uid {}, value {:#x}}}",
            self.signo, self.code, self.pid, self.uid, self.value
        )
    }
}

impl SigInfo {
    /// `si_status` of a `SIGCHLD`-style siginfo: the exit code or the signal.
    pub fn status(&self) -> i32 {
        self.value as u32 as i32
    }
}

/// `rt_sigtimedwait(set, info, timeout)`: takes one signal of `set` that is
/// pending (or arrives within `timeout`); `Ok(None)` when none did.
pub fn timedwait(set: u64, timeout: std::time::Duration) -> io::Result<Option<SigInfo>> {
    let mut info = SigInfo::default();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    loop {
        // SAFETY: `set`, `info` and `ts` are live locals of the sizes the
        // kernel expects (8-byte sigset, 128-byte siginfo).
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &set as *const u64,
                &mut info as *mut SigInfo,
                &ts as *const libc::timespec,
                KSIGSET_SIZE,
            )
        };
        if r > 0 {
            return Ok(Some(info));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            // A handled signal outside `set` interrupted the wait; the
            // timeout restarts, which only makes the wait longer.
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// `rt_tgsigqueueinfo(tgid, tid, sig, info)` with `si_code` `SI_QUEUE`,
/// this process's pid and uid, and `value`: queues `sig` to one thread of
/// this process.
pub fn tgsigqueue(tid: libc::pid_t, sig: libc::c_int, value: u64) -> io::Result<()> {
    // SAFETY: getpid and getuid have no preconditions.
    let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
    let info = SigInfo {
        signo: sig,
        code: libc::SI_QUEUE,
        pid,
        uid,
        value,
        ..SigInfo::default()
    };
    // SAFETY: `info` is a live 128-byte siginfo; the target is a thread of
    // this process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            pid,
            tid,
            sig,
            &info as *const SigInfo,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

    #[test]
    fn siginfo_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<SigInfo>(), 128);
    }

    #[test]
    fn queued_thread_signal_comes_back_with_its_value() {
        // Runs on its own thread, so blocking the signal here disturbs nobody.
        std::thread::spawn(|| {
            let s = rtmin(7);
            let old = block(bit(s)).unwrap();
            // SAFETY: gettid has no preconditions.
            tgsigqueue(unsafe { libc::gettid() }, s, 0x1234).unwrap();
            let got = timedwait(bit(s), std::time::Duration::ZERO)
                .unwrap()
                .unwrap();
            assert_eq!(
                (got.signo, got.code, got.value),
                (s, libc::SI_QUEUE, 0x1234)
            );
            assert_eq!(got.pid, std::process::id() as i32);
            assert!(timedwait(bit(s), std::time::Duration::ZERO)
                .unwrap()
                .is_none());
            set_mask(old).unwrap();
        })
        .join()
        .unwrap();
    }
}
