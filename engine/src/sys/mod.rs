//! Raw syscalls the engine needs that nix does not wrap. The only place in `engine` where
//! `unsafe` is allowed; each wrapper's doc line is the call it makes.
#![allow(unsafe_code)]

pub mod bpf;
pub mod fileops;
pub mod ipc;
pub mod mem;

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)`: 0 when both fds share one open file description.
pub fn kcmp_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> io::Result<i32> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp takes only integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_FILE,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
        )
    };
    check(r).map(|v| v as i32)
}

/// `pidfd_open(pid, 0)`
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only; on success the kernel returns a new fd that we take ownership of.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0) };
    let fd = check(r)? as RawFd;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `tee(fd_in, fd_out, len, SPLICE_F_NONBLOCK)`: duplicates pipe data without consuming it.
pub fn tee(fd_in: RawFd, fd_out: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: integers only.
    let r = unsafe { libc::tee(fd_in, fd_out, len, libc::SPLICE_F_NONBLOCK) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `process_vm_readv(pid, [buf], [remote])`: one copy from the target into `buf`.
pub fn process_vm_read(pid: i32, remote: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let rem = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which we exclusively borrow; `rem` is only interpreted by
    // the kernel in the target's address space.
    let r = unsafe { libc::process_vm_readv(pid, &local, 1, &rem, 1, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One region reported by `PAGEMAP_SCAN`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3({.exit_signal = exit_signal, .set_tid = [pid]})`: forks with a chosen pid. Returns 0 in
/// the child, the child's pid in the parent.
///
/// # Safety
/// The child runs on a copy of the calling thread only: it must restrict itself to
/// async-signal-safe work (no allocation, no locks) and leave with `_exit`.
pub unsafe fn clone3_with_pid(tids: &[i32], exit_signal: i32, flags: u64) -> io::Result<i32> {
    let args = CloneArgs {
        flags,
        exit_signal: exit_signal as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: tids.len() as u64,
        ..Default::default()
    };
    // SAFETY: args and tids outlive the call; the caller upholds the fork-safety contract.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    check(r).map(|v| v as i32)
}

/// Raw, allocation-free syscalls for the restore child between clone3 and its SIGSTOP.
pub mod child {
    use super::*;

    /// Result of a raw call: the value or the errno.
    pub type Raw = Result<i64, i32>;

    fn errno() -> i32 {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    }

    fn ret(r: i64) -> Raw {
        if r < 0 {
            Err(errno())
        } else {
            Ok(r)
        }
    }

    /// `dup2(old, new)`
    pub fn dup2(old: i32, new: i32) -> Raw {
        // SAFETY: integers only.
        ret(unsafe { libc::dup2(old, new) } as i64)
    }
    /// `fcntl(fd, F_DUPFD_CLOEXEC, min)`
    pub fn dup_above(fd: i32, min: i32) -> Raw {
        // SAFETY: integers only.
        ret(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) } as i64)
    }
    /// `close(fd)`
    pub fn close(fd: i32) -> Raw {
        // SAFETY: integers only.
        ret(unsafe { libc::close(fd) } as i64)
    }
    /// `pidfd_getfd(pidfd, fd, 0)`: a copy of descriptor `fd` of the process `pidfd` names,
    /// at the lowest free number, close-on-exec.
    pub fn pidfd_getfd(pidfd: i32, fd: i32) -> Raw {
        // SAFETY: integers only.
        ret(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) })
    }
    /// `mmap(at, len, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS |
    /// MAP_FIXED_NOREPLACE, -1, 0)`, then each `(offset, bytes)` of `code` copied in.
    pub fn map_code(at: u64, len: u64, code: &[(u64, &[u8])]) -> Raw {
        const MAP_FIXED_NOREPLACE: i32 = 0x100000;
        if code.iter().any(|(off, b)| off + b.len() as u64 > len) {
            return Err(libc::EINVAL);
        }
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: the call only adds memory.
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        if p as u64 != at {
            // A kernel without MAP_FIXED_NOREPLACE took it as a hint.
            // SAFETY: unmapping exactly the fresh mapping made above.
            unsafe { libc::munmap(p, len as usize) };
            return Err(libc::EEXIST);
        }
        for (off, bytes) in code {
            // SAFETY: the destination lies inside the fresh writable mapping of `len` bytes
            // (checked above), which nothing else refers to.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    p.cast::<u8>().add(*off as usize),
                    bytes.len(),
                )
            };
        }
        Ok(at as i64)
    }
    /// `close_range(first, last, 0)`
    pub fn close_range(first: u32, last: u32) -> Raw {
        // SAFETY: integers only.
        ret(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) })
    }
    /// `fcntl(fd, cmd, arg)`
    pub fn fcntl(fd: i32, cmd: i32, arg: i64) -> Raw {
        // SAFETY: the commands used (F_SETFD, F_SETFL, F_SETPIPE_SZ) take an integer argument.
        ret(unsafe { libc::fcntl(fd, cmd, arg) } as i64)
    }
    /// `write(fd, buf, len)` until all is written.
    pub fn write_all(fd: i32, mut buf: &[u8]) -> Raw {
        while !buf.is_empty() {
            // SAFETY: buf is a valid slice for its length.
            let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if r < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            buf = &buf[r as usize..];
        }
        Ok(0)
    }
    /// `chdir(path)`
    pub fn chdir(path: &CStr) -> Raw {
        // SAFETY: valid C string.
        ret(unsafe { libc::chdir(path.as_ptr()) } as i64)
    }
    /// `fchdir(fd)`
    pub fn fchdir(fd: i32) -> Raw {
        // SAFETY: integers only.
        ret(unsafe { libc::fchdir(fd) } as i64)
    }
    /// `chroot(path)`
    pub fn chroot(path: &CStr) -> Raw {
        // SAFETY: valid C string.
        ret(unsafe { libc::chroot(path.as_ptr()) } as i64)
    }
    /// `prctl(PR_SET_NAME, name)`
    pub fn set_name(name: &CStr) -> Raw {
        // SAFETY: valid C string; the kernel copies at most 16 bytes.
        ret(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } as i64)
    }
    /// `setsid()` if the task leads its session, else `setpgid(0, pgid)` (best effort: the
    /// group must exist in our session).
    ///
    /// `sid_leader`/`group_leader` say what the task leads; `pgid` is its group as the task
    /// sees it (inside its pid namespace).
    pub fn session(sid_leader: bool, group_leader: bool, pgid: i32) -> Raw {
        // SAFETY: integers only.
        unsafe {
            if sid_leader {
                libc::setsid();
            } else if group_leader {
                libc::setpgid(0, 0);
            } else {
                libc::setpgid(0, pgid);
            }
        }
        Ok(0)
    }
    /// `rt_sigaction(sig, {SIG_DFL, 0, 0, 0}, NULL, 8)` for every signal: all-zero, unlike
    /// glibc's `signal()`, which adds SA_RESTART and a mask.
    pub fn reset_signals(nsig: i32) {
        let zero = [0u64; 4];
        for sig in 1..=nsig {
            // SAFETY: `zero` is a valid kernel struct sigaction (handler, flags, restorer,
            // mask) for the duration of the call; the old action is not requested.
            unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, zero.as_ptr(), 0usize, 8usize) };
        }
    }
    /// `waitpid(pid, &status, __WALL)`, retried on EINTR: reaps a child whatever its exit
    /// signal.
    pub fn reap(pid: i32) -> Raw {
        loop {
            let mut st = 0;
            // SAFETY: st is a valid out pointer; integers otherwise.
            let r = unsafe { libc::waitpid(pid, &mut st, libc::__WALL) };
            match ret(r as i64) {
                Err(libc::EINTR) => continue,
                other => return other.map(|_| st as i64),
            }
        }
    }
    /// `kill(getpid(), SIGSTOP)`
    pub fn stop_self() -> Raw {
        // SAFETY: integers only.
        ret(unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) } as i64)
    }
    /// `_exit(code)`
    pub fn exit(code: i32) -> ! {
        // SAFETY: _exit never returns and runs no atexit handlers: safe in a forked child.
        unsafe { libc::_exit(code) }
    }
}

/// `pipe2(fds, O_CLOEXEC)`
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fcntl(fd, F_GETPIPE_SZ)`
pub fn pipe_size(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETPIPE_SZ takes no argument.
    let r = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    check(r as libc::c_long).map(|v| v as i32)
}

/// `fcntl(fd, F_SETPIPE_SZ, size)`
pub fn set_pipe_size(fd: RawFd, size: i32) -> io::Result<i32> {
    // SAFETY: F_SETPIPE_SZ takes an integer.
    let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) };
    check(r as libc::c_long).map(|v| v as i32)
}

/// `kill(pid, SIGKILL)` then `waitpid(pid, __WALL)`: for a child of crust that must go.
pub fn kill_and_reap(pid: i32) {
    // SAFETY: integers and a valid out pointer.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::__WALL);
    }
}

/// `waitpid(pid, &status, 0)`, retried on EINTR; returns the raw status.
pub fn waitpid(pid: i32) -> io::Result<i32> {
    loop {
        let mut st = 0;
        // SAFETY: st is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(st);
    }
}

/// Gives the allocator's free memory back and merges its free chunks, so that processes forked
/// afterwards do not each do it on their copy of the heap (touching, and so copying, its pages).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free chunks; it is
    // called from a single-threaded point, like the forks that follow it.
    unsafe { libc::malloc_trim(0) };
}

/// `madvise(start, len, MADV_COLLAPSE)`: backs the range with transparent huge pages now,
/// whatever the system's THP policy (Linux 6.1).
pub fn collapse_huge(start: u64, len: u64) -> io::Result<()> {
    const MADV_COLLAPSE: i32 = 25;
    // SAFETY: MADV_COLLAPSE changes how memory is backed, never its contents; a range that
    // is not fully mapped is refused with an error.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, len as usize, MADV_COLLAPSE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Forks a child with the pids `tids` (clone3 + set_tid: innermost pid namespace first) and
/// `flags` (CLONE_NEW* for a namespace root) that runs `child` and never returns.
/// Returns the child's pid in the parent.
///
/// `child` runs on a copy of the calling thread only. Callers fork from a single-threaded
/// point, where the copy is a whole process and may allocate; it must end in `_exit` (or a
/// stop crust turns into a new life), never return.
#[allow(unreachable_code, unused_variables)]
pub fn fork_with_pid(
    tids: &[i32],
    flags: u64,
    exit_signal: i32,
    child: impl FnOnce() -> std::convert::Infallible,
) -> io::Result<i32> {
    // SAFETY: the child branch only runs `child`, whose contract is stated above, and never
    // returns into the parent's stack frames.
    match unsafe { clone3_with_pid(tids, exit_signal, flags) }? {
        0 => {
            let never = child();
            match never {}
        }
        p => Ok(p),
    }
}

/// `process_vm_writev(pid, [buf], [remote])`: one copy from `buf` into the target.
pub fn process_vm_write(pid: i32, remote: u64, buf: &[u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let rem = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the kernel only reads through `local`, which describes `buf`; `rem` is
    // interpreted in the target's address space.
    let r = unsafe { libc::process_vm_writev(pid, &local, 1, &rem, 1, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// A read-only, private mapping of part of a file, unmapped on drop.
pub struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; sharing it between threads only
// allows concurrent reads.
unsafe impl Send for Mapped {}
// SAFETY: as above, only shared reads are possible.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// `mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, off)`
    pub fn file(fd: RawFd, off: u64, len: usize) -> io::Result<Mapped> {
        Self::map(fd, off, len, libc::MAP_POPULATE)
    }

    /// `mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0)`: a whole file, faulted in as read.
    pub fn whole(fd: RawFd, len: usize) -> io::Result<Mapped> {
        Self::map(fd, 0, len, 0)
    }

    fn map(fd: RawFd, off: u64, len: usize, extra: i32) -> io::Result<Mapped> {
        if len == 0 {
            return Ok(Mapped {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh read-only mapping at a kernel-chosen address; it aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | extra,
                fd,
                off as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    pub fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: ptr..ptr+len is a live read-only mapping owned by self. The file is an image
        // crust wrote and nobody truncates during restore; a truncation would raise SIGBUS,
        // not undefined behaviour in Rust terms of aliasing.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmapping exactly the range mapped in `file`.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

/// Scheduling state of one thread, read and set from crust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sched {
    pub policy: i32,
    pub priority: i32,
    pub nice: i32,
    /// CPU affinity as a bitmap of 64-bit words.
    pub affinity: Vec<u64>,
}

/// `sched_getscheduler(tid)`, `sched_getparam(tid)`, `getpriority(PRIO_PROCESS, tid)`,
/// `sched_getaffinity(tid)`
pub fn get_sched(tid: i32) -> io::Result<Sched> {
    // SAFETY: integer arguments and out pointers to locals that live across each call.
    unsafe {
        let policy = libc::sched_getscheduler(tid);
        if policy < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut param: libc::sched_param = std::mem::zeroed();
        if libc::sched_getparam(tid, &mut param) < 0 {
            return Err(io::Error::last_os_error());
        }
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut set = [0u64; 16];
        let r = libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            std::mem::size_of_val(&set),
            set.as_mut_ptr(),
        );
        let n = check(r)? as usize / 8;
        Ok(Sched {
            policy,
            priority: param.sched_priority,
            nice,
            affinity: set[..n].to_vec(),
        })
    }
}

/// `sched_setaffinity(tid)`, `sched_setscheduler(tid)`, `setpriority(PRIO_PROCESS, tid)`
pub fn set_sched(tid: i32, s: &Sched) -> io::Result<()> {
    // SAFETY: integer arguments and pointers to locals/slices valid for each call.
    unsafe {
        if !s.affinity.is_empty() {
            let r = libc::syscall(
                libc::SYS_sched_setaffinity,
                tid,
                s.affinity.len() * 8,
                s.affinity.as_ptr(),
            );
            check(r)?;
        }
        let param = libc::sched_param {
            sched_priority: s.priority,
        };
        if libc::sched_setscheduler(tid, s.policy, &param) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, s.nice) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Moves the calling thread to another CPU it may run on, keeping its affinity as it was.
/// Called right after spawning a thread meant to run beside the caller: the kernel queues a
/// new thread on its parent's CPU, where it waits for the parent's time slice to end or for
/// the next load balancing (measured here: 1.5-1.8 ms while the parent stays busy, against
/// 0.1-0.2 ms for this move). With one CPU, or when the move is refused, nothing changes.
pub fn leave_cpu() {
    // SAFETY: cpu_set_t is plain data that zeroed is a valid (empty) set; the calls get and
    // set the calling thread's own mask through pointers to locals.
    unsafe {
        let cpu = libc::sched_getcpu();
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if cpu < 0 || libc::sched_getaffinity(0, size, &mut all) < 0 {
            return;
        }
        let mut others = all;
        libc::CPU_CLR(cpu as usize, &mut others);
        if libc::CPU_COUNT(&others) == 0 || libc::sched_setaffinity(0, size, &others) < 0 {
            return;
        }
        libc::sched_setaffinity(0, size, &all);
    }
}

/// A thread that runs in `SCHED_IDLE` (only where a core has nothing else to do, so work done
/// beside the main thread never delays the tasks it waits for) until somebody needs its
/// result and lifts it back to normal scheduling for the wait ([`Idle::urgent`]): on a busy
/// machine an idle thread could otherwise starve.
pub struct Idle {
    state: std::sync::Arc<IdleState>,
}

#[derive(Default)]
struct IdleState {
    tid: std::sync::atomic::AtomicI32,
    urgent: std::sync::atomic::AtomicBool,
}

impl Idle {
    /// Runs `f` on a new thread in `SCHED_IDLE`.
    pub fn spawn<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> (Idle, std::thread::JoinHandle<T>) {
        use std::sync::atomic::Ordering::SeqCst;
        let state = std::sync::Arc::new(IdleState::default());
        let theirs = state.clone();
        let handle = std::thread::spawn(move || {
            theirs.tid.store(nix::unistd::gettid().as_raw(), SeqCst);
            set_policy(0, libc::SCHED_IDLE);
            // Awaited already, before the tid was known.
            if theirs.urgent.load(SeqCst) {
                set_policy(0, libc::SCHED_OTHER);
            }
            f()
        });
        (Idle { state }, handle)
    }

    /// Normal scheduling while its result is awaited (`on`), idle again after.
    pub fn urgent(&self, on: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.urgent.store(on, SeqCst);
        let tid = self.state.tid.load(SeqCst);
        if tid != 0 {
            set_policy(
                tid,
                if on {
                    libc::SCHED_OTHER
                } else {
                    libc::SCHED_IDLE
                },
            );
        }
    }
}

fn set_policy(tid: i32, policy: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: integer arguments and a pointer to a local; a thread that has exited is ESRCH.
    unsafe { libc::sched_setscheduler(tid, policy, &param) };
}

/// `get_robust_list(tid, &head, &len)`
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head = 0u64;
    let mut len = 0usize;
    // SAFETY: out pointers to locals.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    check(r)?;
    Ok((head, len as u64))
}

/// A page of futex words shared by crust and every task it forks during restore.
pub struct SharedWords {
    ptr: *mut u32,
    len: usize,
}

// SAFETY: the words are only accessed atomically (AtomicU32 views), so sharing is sound.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// `mmap(NULL, n * 4, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)`
    pub fn new(n: usize) -> io::Result<SharedWords> {
        let len = (n.max(1) * 4).next_multiple_of(4096);
        // SAFETY: a fresh anonymous mapping; nothing aliases it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedWords {
            ptr: ptr.cast(),
            len,
        })
    }

    fn word(&self, i: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(i * 4 < self.len, "shared word {i} out of range");
        // SAFETY: in bounds (checked above), 4-byte aligned (page-aligned base), and the
        // mapping lives as long as self.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.ptr.add(i)) }
    }

    /// The current value of word `i`.
    pub fn get(&self, i: usize) -> u32 {
        self.word(i).load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets word `i` to `v` and wakes its waiters: `futex(FUTEX_WAKE)`.
    pub fn set(&self, i: usize, v: u32) {
        let w = self.word(i);
        w.store(v, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: the futex word is valid shared memory.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                w.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                0usize,
                0usize,
                0u32,
            )
        };
    }

    /// Blocks until word `i` is at least `v`: `futex(FUTEX_WAIT)`.
    pub fn wait_at_least(&self, i: usize, v: u32) {
        let w = self.word(i);
        loop {
            let cur = w.load(std::sync::atomic::Ordering::SeqCst);
            if cur >= v {
                return;
            }
            // SAFETY: the futex word is valid shared memory; a null timeout waits forever.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    w.as_ptr(),
                    libc::FUTEX_WAIT,
                    cur,
                    0usize,
                    0usize,
                    0u32,
                )
            };
        }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `sigprocmask(SIG_SETMASK, all)`: blocks every signal in the calling thread.
pub fn block_all_signals() {
    // SAFETY: a full set built by sigfillset; the old mask is not requested.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// `waitid(P_PID, pid, WEXITED | WNOWAIT)` then `sigtimedwait({sig}, 0)`: waits until child
/// `pid` is a zombie, without reaping it, and swallows the `sig` its death raised.
pub fn await_zombie(pid: i32, sig: i32) {
    // SAFETY: out pointers to locals; integer arguments.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        while libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        ) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
        if sig > 0 {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
        }
    }
}

/// Ends the calling process the way a task did: `_exit(code)`, or death by `sig` (its
/// disposition reset to default and unblocked first, no core dump).
pub fn die_like(status: i32) -> ! {
    // SAFETY: plain syscalls on integers; _exit never returns.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)` on crust itself.
pub fn become_subreaper() {
    // SAFETY: integers only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// After a failed restore whose tasks were all sent SIGKILL: reaps every descendant as it dies
/// (crust is their subreaper), until none is left or `limit` has passed. (No second round of
/// kills: a reaped task's pid may already belong to someone else.)
pub fn reap_descendants(limit: std::time::Duration) {
    let until = std::time::Instant::now() + limit;
    loop {
        let mut st = 0;
        // SAFETY: out pointer to a local.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL | libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r < 0 || std::time::Instant::now() >= until {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `open(path, flags)`
pub fn open(path: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: path is NUL-terminated; the result is a fresh fd we own.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o600) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `lseek(fd, pos, SEEK_SET)`
pub fn seek(fd: &OwnedFd, pos: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integers only.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), pos as libc::off_t, libc::SEEK_SET) };
    check(r as libc::c_long).map(drop)
}

/// `fcntl(fd, F_SETFL, flags)`
pub fn set_status_flags(fd: &OwnedFd, flags: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integers only.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) };
    check(r as libc::c_long).map(drop)
}

/// `getrlimit(resource, &l)`
pub fn getrlimit(resource: u32, l: &mut libc::rlimit) -> i32 {
    // SAFETY: l is a valid out pointer.
    unsafe { libc::getrlimit(resource as _, l) }
}

/// Host and domain name of the UTS namespace at `ns_path` (`/proc/PID/ns/uts`): a helper
/// thread `setns`es into it and calls `uname`, so crust's own namespace is untouched.
pub fn uts_names_of(ns_path: &std::path::Path) -> io::Result<(String, String)> {
    let f = std::fs::File::open(ns_path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWUTS).map_err(io::Error::from)?;
            let u = nix::sys::utsname::uname().map_err(io::Error::from)?;
            // SAFETY: a zeroed utsname is valid; uname fills it.
            let mut raw: libc::utsname = unsafe { std::mem::zeroed() };
            // SAFETY: raw is a valid out pointer.
            unsafe { libc::uname(&mut raw) };
            let domain: Vec<u8> = raw
                .domainname
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            Ok((
                u.nodename().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&domain).into_owned(),
            ))
        })
        .join()
        .map_err(|_| io::Error::other("uts reader thread panicked"))?
    })
}

/// In a task that has just created its namespaces: private mount tree and a fresh `/proc`
/// (mount ns), host and domain names (uts ns), loopback up (net ns). Runs in the restored
/// root before it forks anything.
pub fn enter_new_namespaces(flags: u64, hostname: &str, domainname: &str) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    if flags & libc::CLONE_NEWNS as u64 != 0 {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
        if flags & libc::CLONE_NEWPID as u64 != 0 {
            mount(
                Some("proc"),
                "/proc",
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(io::Error::from)?;
        }
    }
    if flags & libc::CLONE_NEWUTS as u64 != 0 {
        nix::unistd::sethostname(hostname).map_err(io::Error::from)?;
        // SAFETY: the pointer and length describe `domainname`'s bytes.
        let r = unsafe { libc::setdomainname(domainname.as_ptr().cast(), domainname.len()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if flags & libc::CLONE_NEWNET as u64 != 0 {
        loopback_up()?;
    }
    Ok(())
}

/// `ioctl(SIOCSIFFLAGS, "lo", IFF_UP | IFF_RUNNING)` on a datagram socket.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket(2) call; the fd is closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is our own fresh socket.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *c as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    use std::os::fd::AsRawFd;
    // SAFETY: req is a valid ifreq for SIOCSIFFLAGS and outlives the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `close_range(3, ~0U, CLOSE_RANGE_CLOEXEC)`
pub fn cloexec_above_stdio() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: integers only; marking fds close-on-exec affects nothing until exec.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
}
