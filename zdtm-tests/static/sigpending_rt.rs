//! sigpending_rt: queued signals, with their siginfo, survive.
//!
//! Blocks SIGUSR1, SIGRTMIN+3 and SIGRTMIN+4, then queues to the process
//! (`sigqueue`) SIGRTMIN+3 three times with values 101, 102, 103 and SIGUSR1
//! once with value 7, and to the thread (`rt_tgsigqueueinfo`) SIGRTMIN+4
//! with value 201. After restore: `rt_sigpending` and `ShdPnd`/`SigPnd` of
//! `/proc/self/status` show them in the right (process or thread) queue,
//! and `sigtimedwait` returns exactly the three SIGRTMIN+3 instances in
//! order, then SIGUSR1, then SIGRTMIN+4, each with its value, `si_code`
//! `SI_QUEUE`, and `si_pid` and `si_uid` of this process; nothing more.

use zdtmtst::sig::{self, bit, rtmin};
use zdtmtst::{check_eq, fail, proc, Checker};

fn sigqueue(s: libc::c_int, value: usize) -> std::io::Result<()> {
    let v = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    // SAFETY: sigqueue to self; `v` is passed by value.
    if unsafe { libc::sigqueue(libc::getpid(), s, v) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(())
}

/// Queues `s` with `value` to this thread only, with si_code SI_QUEUE.
fn thread_queue(s: libc::c_int, value: usize) -> std::io::Result<()> {
    // SAFETY: an all-zero siginfo is a valid starting value.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    si.si_signo = s;
    si.si_code = libc::SI_QUEUE;
    // The SI_QUEUE layout after the 16-byte header: pid, uid, then sigval.
    // SAFETY: siginfo_t is 128 bytes; offsets 16..32 lie inside it and are
    // suitably aligned for i32/u32/usize.
    unsafe {
        let base = (&mut si as *mut libc::siginfo_t).cast::<u8>();
        *base.add(16).cast::<i32>() = libc::getpid();
        *base.add(20).cast::<u32>() = libc::getuid();
        *base.add(24).cast::<usize>() = value;
    }
    // SAFETY: `si` is a valid siginfo; tgid and tid are our own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::gettid(),
            s,
            &si as *const libc::siginfo_t,
        )
    };
    if r != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(())
}

/// A dequeued signal: signo, si_code, si_value, si_pid, si_uid.
#[derive(Debug, PartialEq, Eq)]
struct Taken(i32, i32, usize, i32, u32);

/// One `sigtimedwait` with a zero timeout: `Ok(None)` when nothing of `s`
/// is pending.
fn take(s: libc::c_int) -> std::io::Result<Option<Taken>> {
    // SAFETY: an all-zero sigset/siginfo are valid values to fill in.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `set` is ours; sigemptyset/sigaddset only write it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, s);
    }
    // SAFETY: all pointers are to live locals of the right types.
    let r = unsafe { libc::sigtimedwait(&set, &mut si, &zero) };
    if r < 0 {
        let e = zdtmtst::last_err();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the kernel filled `si`; the SI_QUEUE fields are read only.
    let (value, pid, uid) = unsafe { (si.si_value().sival_ptr as usize, si.si_pid(), si.si_uid()) };
    Ok(Some(Taken(r, si.si_code, value, pid, uid)))
}

fn main() {
    zdtmtst::start();
    let (rt3, rt4) = (rtmin(3), rtmin(4));
    let set = bit(libc::SIGUSR1) | bit(rt3) | bit(rt4);
    sig::block(set).unwrap_or_else(|e| fail(format!("blocking: {e}")));
    let setup = || -> std::io::Result<()> {
        for v in [101, 102, 103] {
            sigqueue(rt3, v)?;
        }
        sigqueue(libc::SIGUSR1, 7)?;
        thread_queue(rt4, 201)
    };
    setup().unwrap_or_else(|e| fail(format!("queueing: {e}")));
    let shd = proc::status_hex("ShdPnd").unwrap_or_else(|e| fail(e));
    let pnd = proc::status_hex("SigPnd").unwrap_or_else(|e| fail(e));
    if shd != bit(libc::SIGUSR1) | bit(rt3) || pnd != bit(rt4) {
        fail(format!("after queueing: ShdPnd {shd:#x} SigPnd {pnd:#x}"));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(p) = c.ok("rt_sigpending", sig::pending()) {
        check_eq!(c, p & set, set, "pending set (rt_sigpending)");
    }
    if let Some(p) = c.ok("ShdPnd", proc::status_hex("ShdPnd")) {
        check_eq!(c, p, shd, "ShdPnd (process-wide pending)");
    }
    if let Some(p) = c.ok("SigPnd", proc::status_hex("SigPnd")) {
        check_eq!(c, p, pnd, "SigPnd (thread pending)");
    }
    // SAFETY: getpid/getuid have no preconditions.
    let (me, uid) = unsafe { (libc::getpid(), libc::getuid()) };
    let expected = [
        (rt3, 101),
        (rt3, 102),
        (rt3, 103),
        (libc::SIGUSR1, 7),
        (rt4, 201),
    ];
    let mut n = 0;
    for s in [rt3, libc::SIGUSR1, rt4] {
        while let Some(Some(got)) = c.ok(&format!("sigtimedwait({s})"), take(s)) {
            let want = expected
                .get(n)
                .map(|&(ws, wv)| Taken(ws, libc::SI_QUEUE, wv, me, uid));
            check_eq!(
                c,
                Some(got),
                want,
                "dequeued signal #{n} (signo, code, value, pid, uid)"
            );
            n += 1;
            if n > expected.len() {
                break;
            }
        }
    }
    check_eq!(c, n, expected.len(), "number of signals dequeued");
    if let Some(p) = c.ok("rt_sigpending", sig::pending()) {
        check_eq!(c, p & set, 0, "pending set after dequeueing");
    }
    c.finish();
}
