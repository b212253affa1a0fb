//! ptrace control of a foreign task.
//!
//! crust does not inject a code blob: on a modern kernel nearly everything a parasite used to
//! fetch has a direct interface (`PTRACE_GETREGSET`, `PTRACE_GETSIGMASK`, `PTRACE_PEEKSIGINFO`,
//! `PTRACE_GET_RSEQ_CONFIGURATION` (5.13), `/proc/PID/mem`, `pidfd_getfd` (5.6)). What is left is
//! done with one primitive, the *remote syscall*: the stopped thread is pointed at a `syscall`
//! instruction with the arguments in its registers and single-stepped over it. The single-step
//! trap arrives as a SIGTRAP signal-delivery-stop, i.e. the thread stops inside `get_signal()`,
//! so when the original registers are put back there and the thread resumed, the kernel's own
//! syscall-restart logic sees them exactly as it would have after the original interrupt: an
//! interrupted `read` restarts, a `nanosleep` resumes through its restart block.
//!
//! While crust works on a thread all signals are blocked with `PTRACE_SETSIGMASK`, so a pending
//! signal is never dequeued (and so never lost) by the remote syscalls; the original mask is put
//! back when the thread is released.

mod sys;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub use sys::{decode_status, RseqConfiguration, WaitStatus, SIGINFO_SIZE, XSTATE_MAX};

/// The general registers of an x86_64 thread (`struct user_regs_struct`).
pub type UserRegs = libc::user_regs_struct;

/// A thread id in the target's (crust's) pid namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tid(pub i32);

impl std::fmt::Display for Tid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An address in the target's address space; never dereferenced by crust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteAddr(pub u64);

impl std::fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// What went wrong controlling a task; every variant names the thread.
#[derive(Debug, thiserror::Error)]
pub enum ParasiteError {
    #[error("tid {tid}: cannot seize")]
    Seize {
        tid: Tid,
        #[source]
        source: io::Error,
    },
    #[error("tid {tid}: {op} failed")]
    Ptrace {
        tid: Tid,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("tid {tid}: exited during {op} (status {status:?})")]
    Gone {
        tid: Tid,
        op: &'static str,
        status: WaitStatus,
    },
    #[error("tid {tid}: unexpected stop during {op} (status {status:?})")]
    UnexpectedStop {
        tid: Tid,
        op: &'static str,
        status: WaitStatus,
    },
    #[error("tid {tid}: no syscall instruction found (no [vdso] mapping?)")]
    NoSyscallInsn { tid: Tid },
    #[error("tid {tid}: remote syscall {nr} ended at {rip:#x}, expected {expected:#x}")]
    StrayIp {
        tid: Tid,
        nr: i64,
        rip: u64,
        expected: u64,
    },
    #[error("tid {tid}: memory access at {addr} ({len} bytes)")]
    Mem {
        tid: Tid,
        addr: RemoteAddr,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("tid {tid}: short memory access at {addr}: {done} of {len} bytes")]
    ShortMem {
        tid: Tid,
        addr: RemoteAddr,
        len: usize,
        done: usize,
    },
}

pub type Result<T, E = ParasiteError> = std::result::Result<T, E>;

fn ptrace_err(tid: Tid, op: &'static str) -> impl FnOnce(io::Error) -> ParasiteError {
    move |source| ParasiteError::Ptrace { tid, op, source }
}

/// How a thread was found when it was seized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// Running (or sleeping) normally: stopped by `PTRACE_INTERRUPT`.
    Interrupted,
    /// In a group stop (SIGSTOP/SIGTSTP...): the signal that stopped it.
    GroupStop(i32),
}

/// A seized, stopped thread. Dropping it without [`Tracee::release`] or [`Tracee::detach_as_is`]
/// leaves the thread traced until crust exits, which then releases it: prefer the explicit calls.
#[derive(Debug)]
pub struct Tracee {
    tid: Tid,
    /// Registers as found at seize; restored by `release`.
    orig_regs: UserRegs,
    orig_sigmask: u64,
    stop: StopKind,
    syscall_ip: Option<RemoteAddr>,
    mem: Option<File>,
}

/// Bytes of one call in a syscall batch: nr, six arguments, result.
const BATCH_ENTRY: usize = 64;

/// The batch runner, run from its first byte with rbx = the call table, r12 = the number of
/// calls. It stops on its int3 after the last call or after the first call that fails (a
/// result in -4095..-1), like a sequence of calls checked one by one (x86-64):
///
/// ```text
/// 0x00  test r12, r12       ; 4d 85 e4
/// 0x03  jz   0x37           ; 74 32
/// 0x05  mov  rax, [rbx]     ; 48 8b 03            nr
/// 0x08  mov  rdi, [rbx+8]   ; 48 8b 7b 08         arguments 1..6
/// 0x0c  mov  rsi, [rbx+16]  ; 48 8b 73 10
/// 0x10  mov  rdx, [rbx+24]  ; 48 8b 53 18
/// 0x14  mov  r10, [rbx+32]  ; 4c 8b 53 20
/// 0x18  mov  r8,  [rbx+40]  ; 4c 8b 43 28
/// 0x1c  mov  r9,  [rbx+48]  ; 4c 8b 4b 30
/// 0x20  syscall             ; 0f 05
/// 0x22  mov  [rbx+56], rax  ; 48 89 43 38         result
/// 0x26  cmp  rax, -4095     ; 48 3d 01 f0 ff ff
/// 0x2c  jae  0x37           ; 73 09               failed: stop here
/// 0x2e  add  rbx, 64        ; 48 83 c3 40
/// 0x32  dec  r12            ; 49 ff cc
/// 0x35  jmp  0x00           ; eb c9
/// 0x37  int3                ; cc
/// ```
pub const BATCH_CODE: [u8; 56] = [
    0x4d, 0x85, 0xe4, 0x74, 0x32, 0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10,
    0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30,
    0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x09, 0x48, 0x83,
    0xc3, 0x40, 0x49, 0xff, 0xcc, 0xeb, 0xc9, 0xcc,
];

/// Bytes of call table [`Tracee::syscalls`] needs for `calls` calls.
pub const fn batch_len(calls: usize) -> usize {
    BATCH_ENTRY * calls
}

/// Signals crust blocks while it works on a thread: everything (SIGKILL/SIGSTOP cannot be).
const ALL_SIGNALS: u64 = !0;

impl Tracee {
    /// Seizes `tid` and stops it: `PTRACE_SEIZE` + `PTRACE_INTERRUPT`, then waits for the
    /// interrupt stop. A signal that is being delivered at that moment is let through to its
    /// handler first (so it is not lost), then the thread is stopped.
    pub fn seize(tid: Tid) -> Result<Tracee> {
        sys::seize(tid, 0).map_err(|source| ParasiteError::Seize { tid, source })?;
        sys::interrupt(tid).map_err(ptrace_err(tid, "PTRACE_INTERRUPT"))?;
        let stop = Self::wait_interrupt_stop(tid)?;
        Self::from_stopped(tid, stop)
    }

    /// Takes over a thread already seized by crust and sitting in a ptrace stop
    /// (e.g. a freshly created restore child stopped on its own SIGSTOP).
    pub fn from_stopped(tid: Tid, stop: StopKind) -> Result<Tracee> {
        let orig_regs = sys::get_regs(tid).map_err(ptrace_err(tid, "GETREGSET NT_PRSTATUS"))?;
        let orig_sigmask = sys::get_sigmask(tid).map_err(ptrace_err(tid, "PTRACE_GETSIGMASK"))?;
        sys::set_sigmask(tid, ALL_SIGNALS).map_err(ptrace_err(tid, "PTRACE_SETSIGMASK"))?;
        Ok(Tracee {
            tid,
            orig_regs,
            orig_sigmask,
            stop,
            syscall_ip: None,
            mem: None,
        })
    }

    /// Seizes a thread without stopping it (used for a child crust will see stop by itself).
    pub fn seize_running(tid: Tid) -> Result<()> {
        sys::seize(tid, 0).map_err(|source| ParasiteError::Seize { tid, source })
    }

    fn wait_interrupt_stop(tid: Tid) -> Result<StopKind> {
        loop {
            let status = sys::wait(tid).map_err(ptrace_err(tid, "waitpid"))?;
            match status {
                WaitStatus::Stopped {
                    sig,
                    event: sys::PTRACE_EVENT_STOP,
                } => {
                    return Ok(match sig {
                        libc::SIGTRAP => StopKind::Interrupted,
                        s => StopKind::GroupStop(s),
                    });
                }
                WaitStatus::Stopped { sig, event: 0 } => {
                    // Signal-delivery-stop: deliver it and wait for the pending interrupt.
                    sys::cont(tid, sig).map_err(ptrace_err(tid, "PTRACE_CONT"))?;
                }
                WaitStatus::Stopped { .. } => {
                    sys::cont(tid, 0).map_err(ptrace_err(tid, "PTRACE_CONT"))?;
                }
                WaitStatus::Exited(_) | WaitStatus::Signaled(_) => {
                    return Err(ParasiteError::Gone {
                        tid,
                        op: "seize",
                        status,
                    })
                }
            }
        }
    }

    /// Waits for a seized thread's next stop; used when crust created the thread itself.
    pub fn wait_stop(tid: Tid, op: &'static str) -> Result<WaitStatus> {
        let status = sys::wait(tid).map_err(ptrace_err(tid, "waitpid"))?;
        match status {
            WaitStatus::Stopped { .. } => Ok(status),
            _ => Err(ParasiteError::Gone { tid, op, status }),
        }
    }

    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// The registers as they were when the thread was seized.
    pub fn orig_regs(&self) -> &UserRegs {
        &self.orig_regs
    }

    /// The signal mask as it was when the thread was seized.
    pub fn orig_sigmask(&self) -> u64 {
        self.orig_sigmask
    }

    pub fn stop_kind(&self) -> StopKind {
        self.stop
    }

    /// Sets the mask `release` will put back (restore uses it to install the saved mask).
    pub fn set_final_sigmask(&mut self, mask: u64) {
        self.orig_sigmask = mask;
    }

    /// Sets the registers `release` will put back.
    pub fn set_final_regs(&mut self, regs: UserRegs) {
        self.orig_regs = regs;
    }

    pub fn get_regs(&self) -> Result<UserRegs> {
        sys::get_regs(self.tid).map_err(ptrace_err(self.tid, "GETREGSET NT_PRSTATUS"))
    }

    pub fn set_regs(&self, regs: &UserRegs) -> Result<()> {
        sys::set_regs(self.tid, regs).map_err(ptrace_err(self.tid, "SETREGSET NT_PRSTATUS"))
    }

    /// The XSAVE area (`NT_X86_XSTATE`): x87, SSE, AVX and later state.
    pub fn get_xstate(&self) -> Result<Vec<u8>> {
        sys::get_xstate(self.tid).map_err(ptrace_err(self.tid, "GETREGSET NT_X86_XSTATE"))
    }

    pub fn set_xstate(&self, area: &[u8]) -> Result<()> {
        sys::set_xstate(self.tid, area).map_err(ptrace_err(self.tid, "SETREGSET NT_X86_XSTATE"))
    }

    /// Queued signals, per-thread (`shared == false`) or process-wide, as raw 128-byte siginfo.
    pub fn pending_signals(&self, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>> {
        sys::peek_siginfo(self.tid, shared).map_err(ptrace_err(self.tid, "PTRACE_PEEKSIGINFO"))
    }

    /// The registered rseq area, if any (`rseq_abi_pointer == 0` means none).
    pub fn rseq_configuration(&self) -> Result<RseqConfiguration> {
        sys::get_rseq_configuration(self.tid)
            .map_err(ptrace_err(self.tid, "PTRACE_GET_RSEQ_CONFIGURATION"))
    }

    fn mem(&mut self) -> Result<&File> {
        if self.mem.is_none() {
            let path = format!("/proc/{}/mem", self.tid);
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|source| ParasiteError::Mem {
                    tid: self.tid,
                    addr: RemoteAddr(0),
                    len: 0,
                    source,
                })?;
            self.mem = Some(f);
        }
        Ok(self.mem.as_ref().expect("just set"))
    }

    /// Runs `op(mem, done)` until `len` bytes are transferred at `addr`: the loop shared by
    /// reads and writes through `/proc/PID/mem`.
    fn mem_transfer(
        &mut self,
        addr: RemoteAddr,
        len: usize,
        mut op: impl FnMut(&File, usize) -> io::Result<usize>,
    ) -> Result<()> {
        let tid = self.tid;
        let f = self.mem()?;
        let mut done = 0;
        while done < len {
            match op(f, done) {
                Ok(0) => {
                    return Err(ParasiteError::ShortMem {
                        tid,
                        addr,
                        len,
                        done,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ParasiteError::Mem {
                        tid,
                        addr,
                        len,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Reads target memory through `/proc/PID/mem` (works on PROT_NONE areas too).
    pub fn read_mem(&mut self, addr: RemoteAddr, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        self.mem_transfer(addr, len, |f, done| {
            f.read_at(&mut buf[done..], addr.0 + done as u64)
        })
    }

    /// Writes target memory through `/proc/PID/mem` (bypasses protections, like a debugger).
    pub fn write_mem(&mut self, addr: RemoteAddr, data: &[u8]) -> Result<()> {
        self.mem_transfer(addr, data.len(), |f, done| {
            f.write_at(&data[done..], addr.0 + done as u64)
        })
    }

    /// Drops the cached `/proc/PID/mem` handle (it pins the old mm across an exec-like change).
    pub fn forget_mem(&mut self) {
        self.mem = None;
    }

    /// Uses the `syscall` instruction at `ip` for remote syscalls from now on.
    pub fn set_syscall_ip(&mut self, ip: RemoteAddr) {
        self.syscall_ip = Some(ip);
    }

    /// Finds a `syscall` instruction (0f 05) in the thread's vDSO.
    pub fn find_syscall_ip(&mut self) -> Result<RemoteAddr> {
        if let Some(ip) = self.syscall_ip {
            return Ok(ip);
        }
        let tid = self.tid;
        let maps = std::fs::read_to_string(format!("/proc/{tid}/maps")).map_err(|source| {
            ParasiteError::Mem {
                tid,
                addr: RemoteAddr(0),
                len: 0,
                source,
            }
        })?;
        let (start, end) = maps
            .lines()
            .filter(|l| l.ends_with("[vdso]"))
            .find_map(|l| {
                let range = l.split_whitespace().next()?;
                let (a, b) = range.split_once('-')?;
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
            .ok_or(ParasiteError::NoSyscallInsn { tid })?;
        let mut code = vec![0u8; (end - start) as usize];
        self.read_mem(RemoteAddr(start), &mut code)?;
        let off = code
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .ok_or(ParasiteError::NoSyscallInsn { tid })?;
        let ip = RemoteAddr(start + off as u64);
        self.syscall_ip = Some(ip);
        Ok(ip)
    }

    /// Runs `syscall(nr, args...)` inside the thread and returns the raw result (a negative
    /// errno on failure, as the kernel returns it).
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64> {
        let ip = self.find_syscall_ip()?;
        let tid = self.tid;
        let mut regs = self.orig_regs;
        regs.rax = nr as u64;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs.rip = ip.0;
        // No syscall-restart processing of these registers on the way back to user mode.
        regs.orig_rax = u64::MAX;
        self.set_regs(&regs)?;
        sys::singlestep(tid).map_err(ptrace_err(tid, "PTRACE_SINGLESTEP"))?;
        wait_trap(tid, "remote syscall")?;
        let after = self.get_regs()?;
        if after.rip != ip.0 + 2 {
            return Err(ParasiteError::StrayIp {
                tid,
                nr,
                rip: after.rip,
                expected: ip.0 + 2,
            });
        }
        Ok(after.rax as i64)
    }

    /// Runs `calls` inside the thread one after the other, with a single resume instead of
    /// one single-step per call, and returns the raw results (a negative errno on failure) of
    /// those that ran: all of them, or those up to and including the first that failed.
    /// [`BATCH_CODE`] must be at `code` (mapped executable) and `table` must be memory of the
    /// task mapped writable, [`batch_len`]`(calls.len())` bytes, that no call's arguments point
    /// into.
    pub fn syscalls(
        &mut self,
        code: RemoteAddr,
        table: RemoteAddr,
        calls: &[(i64, [u64; 6])],
    ) -> Result<Vec<i64>> {
        let tid = self.tid;
        let mut buf = Vec::with_capacity(batch_len(calls.len()));
        for (nr, args) in calls {
            buf.extend_from_slice(&nr.to_ne_bytes());
            for a in args {
                buf.extend_from_slice(&a.to_ne_bytes());
            }
            buf.extend_from_slice(&(-(libc::ENOSYS as i64)).to_ne_bytes());
        }
        self.write_mem(table, &buf)?;
        let mut regs = self.orig_regs;
        regs.rip = code.0;
        regs.rbx = table.0;
        regs.r12 = calls.len() as u64;
        regs.orig_rax = u64::MAX;
        self.set_regs(&regs)?;
        // Every signal but SIGKILL/SIGSTOP stays blocked (ALL_SIGNALS since the seize): the
        // code runs to its int3 undisturbed.
        sys::cont(tid, 0).map_err(ptrace_err(tid, "PTRACE_CONT"))?;
        wait_trap(tid, "remote syscall batch")?;
        let end = code.0 + BATCH_CODE.len() as u64;
        let after = self.get_regs()?;
        if after.rip != end {
            return Err(ParasiteError::StrayIp {
                tid,
                nr: calls.first().map_or(-1, |c| c.0),
                rip: after.rip,
                expected: end,
            });
        }
        // rbx is left on the failed call, or past the last one.
        let ran = (after.rbx.saturating_sub(table.0) as usize / BATCH_ENTRY
            + usize::from(after.r12 != 0))
        .min(calls.len());
        let mut done = vec![0u8; ran * BATCH_ENTRY];
        self.read_mem(table, &mut done)?;
        Ok(done
            .chunks_exact(BATCH_ENTRY)
            .map(|e| i64::from_ne_bytes(e[56..64].try_into().expect("8 bytes")))
            .collect())
    }

    /// Runs `clone3(args, size)` inside the thread to create a new thread of its process, and
    /// returns the new thread, seized and stopped at its first instruction (right after the
    /// `syscall`). Needs nothing else from the caller: `PTRACE_O_TRACECLONE` is set here.
    pub fn clone_thread(&mut self, args: RemoteAddr, size: u64) -> Result<Result<Tracee, i64>> {
        let ip = self.find_syscall_ip()?;
        let tid = self.tid;
        sys::set_options(tid, sys::PTRACE_O_TRACECLONE)
            .map_err(ptrace_err(tid, "PTRACE_SETOPTIONS"))?;
        let mut regs = self.orig_regs;
        regs.rax = libc::SYS_clone3 as u64;
        regs.rdi = args.0;
        regs.rsi = size;
        regs.rip = ip.0;
        regs.orig_rax = u64::MAX;
        self.set_regs(&regs)?;
        sys::singlestep(tid).map_err(ptrace_err(tid, "PTRACE_SINGLESTEP"))?;
        let mut child = None;
        loop {
            let status = sys::wait(tid).map_err(ptrace_err(tid, "waitpid"))?;
            match status {
                WaitStatus::Stopped {
                    sig: libc::SIGTRAP,
                    event: sys::PTRACE_EVENT_CLONE,
                } => {
                    let new = sys::event_msg(tid).map_err(ptrace_err(tid, "PTRACE_GETEVENTMSG"))?;
                    child = Some(Tid(new as i32));
                    sys::singlestep(tid).map_err(ptrace_err(tid, "PTRACE_SINGLESTEP"))?;
                }
                WaitStatus::Stopped {
                    sig: libc::SIGTRAP,
                    event: 0,
                } => break,
                WaitStatus::Stopped { .. } => {
                    return Err(ParasiteError::UnexpectedStop {
                        tid,
                        op: "remote clone3",
                        status,
                    })
                }
                _ => {
                    return Err(ParasiteError::Gone {
                        tid,
                        op: "remote clone3",
                        status,
                    })
                }
            }
        }
        sys::set_options(tid, 0).map_err(ptrace_err(tid, "PTRACE_SETOPTIONS"))?;
        let ret = self.get_regs()?.rax as i64;
        let Some(new) = child else {
            return Ok(Err(ret));
        };
        // The new thread reports its first stop once it is scheduled.
        let status = sys::wait(new).map_err(ptrace_err(new, "waitpid"))?;
        match status {
            WaitStatus::Stopped { .. } => {}
            _ => {
                return Err(ParasiteError::Gone {
                    tid: new,
                    op: "new thread start",
                    status,
                })
            }
        }
        let mut t = Tracee::from_stopped(new, StopKind::Interrupted)?;
        t.syscall_ip = Some(ip);
        Ok(Ok(t))
    }

    /// Like [`Tracee::syscall`] but turns a negative result into an `io::Error`.
    pub fn syscall_ok(&mut self, nr: i64, args: [u64; 6]) -> Result<u64, RemoteSyscallError> {
        let r = self.syscall(nr, args).map_err(RemoteSyscallError::Ptrace)?;
        RemoteSyscallError::check(self.tid, nr, r)
    }

    /// Puts back the registers and signal mask (the original ones, or those set with
    /// `set_final_*`) and detaches. The thread resumes exactly where it was, or stays in its
    /// group stop if it was stopped.
    pub fn release(self) -> Result<()> {
        let tid = self.tid;
        self.set_regs(&self.orig_regs)?;
        sys::set_sigmask(tid, self.orig_sigmask).map_err(ptrace_err(tid, "PTRACE_SETSIGMASK"))?;
        let sig = match self.stop {
            StopKind::GroupStop(s) => s,
            StopKind::Interrupted => 0,
        };
        sys::detach(tid, sig).map_err(ptrace_err(tid, "PTRACE_DETACH"))
    }

    /// Detaches leaving registers and mask as they are now.
    pub fn detach_as_is(self) -> Result<()> {
        sys::detach(self.tid, 0).map_err(ptrace_err(self.tid, "PTRACE_DETACH"))
    }

    /// Kills the thread's process (SIGKILL) without waiting for it to finish exiting (freeing
    /// a large address space takes a while; the parent reaps it). When crust, the tracer, goes,
    /// the kernel drops the ptrace link by itself.
    pub fn kill_nowait(self) {
        // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
        unsafe { libc::kill(self.tid.0, libc::SIGKILL) };
    }

    /// Kills the thread's process (SIGKILL) and reaps the tracer's notification.
    pub fn kill(self) -> Result<()> {
        // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
        unsafe { libc::kill(self.tid.0, libc::SIGKILL) };
        loop {
            match sys::wait(self.tid) {
                Ok(WaitStatus::Exited(_)) | Ok(WaitStatus::Signaled(_)) => return Ok(()),
                Ok(WaitStatus::Stopped { .. }) => {
                    let _ = sys::cont(self.tid, 0);
                }
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(()),
                Err(source) => {
                    return Err(ParasiteError::Ptrace {
                        tid: self.tid,
                        op: "waitpid",
                        source,
                    })
                }
            }
        }
    }
}

/// Waits for the SIGTRAP stop that ends a remote call (single-step or int3) of `op`.
fn wait_trap(tid: Tid, op: &'static str) -> Result<()> {
    let status = sys::wait(tid).map_err(ptrace_err(tid, "waitpid"))?;
    match status {
        WaitStatus::Stopped {
            sig: libc::SIGTRAP,
            event: 0,
        } => Ok(()),
        WaitStatus::Stopped { .. } => Err(ParasiteError::UnexpectedStop { tid, op, status }),
        _ => Err(ParasiteError::Gone { tid, op, status }),
    }
}

/// A remote syscall that ran and failed, or could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RemoteSyscallError {
    #[error(transparent)]
    Ptrace(ParasiteError),
    #[error("tid {tid}: remote syscall {nr} failed")]
    Failed {
        tid: Tid,
        nr: i64,
        #[source]
        source: io::Error,
    },
}

impl RemoteSyscallError {
    /// The raw result `r` of syscall `nr` run in `tid`: its value, or the error it encodes
    /// (-4095..-1).
    pub fn check(tid: Tid, nr: i64, r: i64) -> Result<u64, RemoteSyscallError> {
        if (-4095..0).contains(&r) {
            Err(RemoteSyscallError::Failed {
                tid,
                nr,
                source: io::Error::from_raw_os_error(-r as i32),
            })
        } else {
            Ok(r as u64)
        }
    }

    /// The errno of a syscall that ran and failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RemoteSyscallError::Failed { source, .. } => source.raw_os_error(),
            RemoteSyscallError::Ptrace(_) => None,
        }
    }
}
