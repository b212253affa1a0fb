//! Per-thread state helpers: names, scheduling, affinity, the TLS base,
//! futex waits.
//!
//! Everything here acts on the calling thread (pid argument 0 of the
//! `sched_*` calls, `PRIO_PROCESS` with the thread id) because these are
//! per-thread attributes a restore has to put back thread by thread.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `arch_prctl(ARCH_GET_FS)`: the calling thread's FS base, which holds
/// its thread pointer (TLS block and glibc's thread descriptor).
pub fn fs_base() -> io::Result<u64> {
    const ARCH_GET_FS: libc::c_int = 0x1003;
    let mut v = 0u64;
    // SAFETY: ARCH_GET_FS writes one u64 through the pointer.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut v as *mut u64) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Names the calling thread (`pthread_setname_np`, at most 15 bytes).
pub fn set_name(name: &str) -> io::Result<()> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `c` is NUL-terminated; pthread_self is the calling thread.
    let r = unsafe { libc::pthread_setname_np(libc::pthread_self(), c.as_ptr()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// The calling thread's name as `pthread_getname_np` reads it.
pub fn name() -> io::Result<String> {
    let mut buf = [0 as libc::c_char; 16];
    // SAFETY: `buf` is writable for its length.
    let r = unsafe { libc::pthread_getname_np(libc::pthread_self(), buf.as_mut_ptr(), buf.len()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: pthread_getname_np NUL-terminates on success.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(s.to_string_lossy().into_owned())
}

/// The name of thread `tid` of this process, from `/proc/self/task/TID/comm`.
pub fn comm(tid: libc::pid_t) -> io::Result<String> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))?;
    Ok(s.trim_end_matches('\n').to_string())
}

/// A thread's scheduling attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sched {
    /// `sched_getscheduler`: the policy, with `SCHED_RESET_ON_FORK` or'ed in.
    pub policy: libc::c_int,
    /// `sched_param.sched_priority` (1..99 for FIFO/RR, else 0).
    pub priority: libc::c_int,
    /// `getpriority(PRIO_PROCESS, tid)`: the nice value.
    pub nice: libc::c_int,
    /// The CPUs it may run on, ascending.
    pub cpus: Vec<usize>,
}

impl Sched {
    /// The calling thread's attributes.
    pub fn get() -> io::Result<Sched> {
        // SAFETY: sched_getscheduler(0) asks about the calling thread.
        let policy = cvt(unsafe { libc::sched_getscheduler(0) })?;
        let mut p = libc::sched_param { sched_priority: 0 };
        // SAFETY: `p` is a writable sched_param.
        cvt(unsafe { libc::sched_getparam(0, &mut p) })?;
        Ok(Sched {
            policy,
            priority: p.sched_priority,
            nice: nice()?,
            cpus: affinity()?,
        })
    }

    /// Applies policy, priority and nice to the calling thread, then the
    /// affinity. `EPERM` comes back as an error (e.g. real-time policies
    /// without CAP_SYS_NICE).
    pub fn apply(&self) -> io::Result<()> {
        let p = libc::sched_param {
            sched_priority: self.priority,
        };
        // SAFETY: `p` is a valid sched_param; 0 is the calling thread.
        cvt(unsafe { libc::sched_setscheduler(0, self.policy, &p) })?;
        set_nice(self.nice)?;
        set_affinity(&self.cpus)
    }
}

/// The calling thread's nice value.
pub fn nice() -> io::Result<libc::c_int> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // getpriority can return -1 legitimately: clear errno first.
    // SAFETY: errno is thread-local and writable.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: integer arguments.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(0) {
            return Err(e);
        }
    }
    Ok(r)
}

/// Sets the calling thread's nice value.
pub fn set_nice(n: libc::c_int) -> io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: integer arguments.
    cvt(unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, n) }).map(drop)
}

/// The calling thread's CPU affinity, ascending.
pub fn affinity() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable for the size passed.
    cvt(unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}

/// Restricts the calling thread to `cpus`.
pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &i in cpus {
        if i < libc::CPU_SETSIZE as usize {
            // SAFETY: `i` is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(i, &mut set) };
        }
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(drop)
}

/// `sched_getcpu()`: the CPU the calling thread runs on.
pub fn current_cpu() -> io::Result<usize> {
    // SAFETY: no arguments.
    cvt(unsafe { libc::sched_getcpu() }).map(|c| c as usize)
}

/// Sleeps in `FUTEX_WAIT` while `word` holds `value` (one call: it may
/// return early; callers loop on their condition).
pub fn futex_wait(word: &AtomicU32, value: u32) {
    // SAFETY: `word` is a live AtomicU32 (a valid futex word); a null
    // timeout waits without limit.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            value,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// Stores `value` in `word` and wakes every waiter.
pub fn futex_set_wake(word: &AtomicU32, value: u32) {
    word.store(value, Ordering::SeqCst);
    // SAFETY: `word` is a live AtomicU32; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sched_round_trip_on_a_thread() {
        std::thread::spawn(|| {
            let cpus = affinity().unwrap();
            assert!(!cpus.is_empty());
            let want = Sched {
                policy: libc::SCHED_BATCH,
                priority: 0,
                nice: 9,
                cpus: vec![cpus[0]],
            };
            want.apply().unwrap();
            assert_eq!(Sched::get().unwrap(), want);
            set_name("zdtm-sched").unwrap();
            assert_eq!(name().unwrap(), "zdtm-sched");
            // SAFETY: gettid has no preconditions.
            assert_eq!(comm(unsafe { libc::gettid() }).unwrap(), "zdtm-sched");
            assert_ne!(fs_base().unwrap(), 0);
        })
        .join()
        .unwrap();
    }
}
