//! Thin wrappers over the raw ptrace requests crust uses. Each wrapper's doc line is the call.
//!
//! Constants are spelled out here because not every libc release carries the newer ones
//! (PTRACE_GET_RSEQ_CONFIGURATION arrived in Linux 5.13).

use std::io;

use crate::{Tid, UserRegs};

pub const PTRACE_SEIZE: libc::c_uint = 0x4206;
pub const PTRACE_INTERRUPT: libc::c_uint = 0x4207;
pub const PTRACE_GETREGSET: libc::c_uint = 0x4204;
pub const PTRACE_SETREGSET: libc::c_uint = 0x4205;
pub const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
pub const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
pub const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
pub const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
pub const PTRACE_CONT: libc::c_uint = 7;
pub const PTRACE_SINGLESTEP: libc::c_uint = 9;
pub const PTRACE_DETACH: libc::c_uint = 17;
pub const PTRACE_EVENT_STOP: i32 = 128;
pub const PTRACE_EVENT_CLONE: i32 = 3;
pub const PTRACE_SETOPTIONS: libc::c_uint = 0x4200;
pub const PTRACE_GETEVENTMSG: libc::c_uint = 0x4201;
pub const PTRACE_O_TRACECLONE: u32 = 8;
pub const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
pub const NT_PRSTATUS: usize = 1;
pub const NT_X86_XSTATE: usize = 0x202;

/// Largest XSAVE area the kernel can report (AMX tiles included) fits well in this.
pub const XSTATE_MAX: usize = 16 * 1024;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn raw(req: libc::c_uint, tid: Tid, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes either plain integers or pointers to buffers it owns that are
    // large enough for the request (documented at each call site); the kernel validates the rest.
    let ret = unsafe {
        libc::ptrace(
            req as _,
            tid.0,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    check(ret)
}

/// `ptrace(PTRACE_SEIZE, tid, 0, opts)`
pub fn seize(tid: Tid, opts: u32) -> io::Result<()> {
    raw(PTRACE_SEIZE, tid, 0, opts as usize).map(drop)
}

/// `ptrace(PTRACE_SETOPTIONS, tid, 0, opts)`
pub fn set_options(tid: Tid, opts: u32) -> io::Result<()> {
    raw(PTRACE_SETOPTIONS, tid, 0, opts as usize).map(drop)
}

/// `ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg)`
pub fn event_msg(tid: Tid) -> io::Result<u64> {
    let mut msg = 0u64;
    raw(PTRACE_GETEVENTMSG, tid, 0, &mut msg as *mut u64 as usize)?;
    Ok(msg)
}

/// `ptrace(PTRACE_INTERRUPT, tid, 0, 0)`
pub fn interrupt(tid: Tid) -> io::Result<()> {
    raw(PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// `ptrace(PTRACE_CONT, tid, 0, sig)`
pub fn cont(tid: Tid, sig: i32) -> io::Result<()> {
    raw(PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// `ptrace(PTRACE_SINGLESTEP, tid, 0, 0)`
pub fn singlestep(tid: Tid) -> io::Result<()> {
    raw(PTRACE_SINGLESTEP, tid, 0, 0).map(drop)
}

/// `ptrace(PTRACE_DETACH, tid, 0, sig)`
pub fn detach(tid: Tid, sig: i32) -> io::Result<()> {
    raw(PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

/// `ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov)`
pub fn get_regs(tid: Tid) -> io::Result<UserRegs> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: UserRegs = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut UserRegs).cast(),
        iov_len: std::mem::size_of::<UserRegs>(),
    };
    raw(
        PTRACE_GETREGSET,
        tid,
        NT_PRSTATUS,
        &mut iov as *mut libc::iovec as usize,
    )?;
    Ok(regs)
}

/// `ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, &iov)`
pub fn set_regs(tid: Tid, regs: &UserRegs) -> io::Result<()> {
    let mut copy = *regs;
    let mut iov = libc::iovec {
        iov_base: (&mut copy as *mut UserRegs).cast(),
        iov_len: std::mem::size_of::<UserRegs>(),
    };
    raw(
        PTRACE_SETREGSET,
        tid,
        NT_PRSTATUS,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(drop)
}

/// `ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &iov)`; returns the area the kernel filled.
pub fn get_xstate(tid: Tid) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    raw(
        PTRACE_GETREGSET,
        tid,
        NT_X86_XSTATE,
        &mut iov as *mut libc::iovec as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// `ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &iov)`
pub fn set_xstate(tid: Tid, area: &[u8]) -> io::Result<()> {
    let mut buf = area.to_vec();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    raw(
        PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(drop)
}

/// `ptrace(PTRACE_GETSIGMASK, tid, 8, &mask)`
pub fn get_sigmask(tid: Tid) -> io::Result<u64> {
    let mut mask = 0u64;
    raw(PTRACE_GETSIGMASK, tid, 8, &mut mask as *mut u64 as usize)?;
    Ok(mask)
}

/// `ptrace(PTRACE_SETSIGMASK, tid, 8, &mask)`
pub fn set_sigmask(tid: Tid, mask: u64) -> io::Result<()> {
    let mut m = mask;
    raw(PTRACE_SETSIGMASK, tid, 8, &mut m as *mut u64 as usize).map(drop)
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Size of one `siginfo_t` as the kernel copies it.
pub const SIGINFO_SIZE: usize = 128;

/// `ptrace(PTRACE_PEEKSIGINFO, tid, &args, buf)`, repeated until the queue is read whole.
pub fn peek_siginfo(tid: Tid, shared: bool) -> io::Result<Vec<[u8; SIGINFO_SIZE]>> {
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let mut args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
        let n = raw(
            PTRACE_PEEKSIGINFO,
            tid,
            &mut args as *mut PeekSiginfoArgs as usize,
            buf.as_mut_ptr() as usize,
        )? as usize;
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// The rseq area a thread registered, as `PTRACE_GET_RSEQ_CONFIGURATION` reports it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RseqConfiguration {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// `ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, sizeof(conf), &conf)`
pub fn get_rseq_configuration(tid: Tid) -> io::Result<RseqConfiguration> {
    let mut conf = RseqConfiguration::default();
    raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        std::mem::size_of::<RseqConfiguration>(),
        &mut conf as *mut RseqConfiguration as usize,
    )?;
    Ok(conf)
}

/// Status of one `waitpid(tid, &status, __WALL)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// A ptrace stop: the stop signal and the event (status >> 16).
    Stopped {
        sig: i32,
        event: i32,
    },
    Exited(i32),
    Signaled(i32),
}

/// `waitpid(tid, &status, __WALL)`, retried on EINTR.
pub fn wait(tid: Tid) -> io::Result<WaitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer for the duration of the call.
        let r = unsafe { libc::waitpid(tid.0, &mut status, libc::__WALL) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(decode_status(status));
    }
}

/// Decodes a raw wait status word.
pub fn decode_status(status: i32) -> WaitStatus {
    if libc::WIFSTOPPED(status) {
        WaitStatus::Stopped {
            sig: libc::WSTOPSIG(status),
            event: (status >> 16) & 0xff,
        }
    } else if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled(libc::WTERMSIG(status))
    } else {
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    }
}
