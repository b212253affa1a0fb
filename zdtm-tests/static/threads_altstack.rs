//! threads_altstack: per-thread alternate signal stacks and rseq
//! registrations survive.
//!
//! The main thread and three others each set their own `sigaltstack`:
//!
//! | thread | alternate stack                  |
//! |--------|----------------------------------|
//! | main   | 64 KiB, flags 0                  |
//! | 1      | 96 KiB, `SS_AUTODISARM`          |
//! | 2      | none (`SS_DISABLE`)              |
//! | 3      | 128 KiB, flags 0                 |
//!
//! Each thread also finds the rseq area glibc registered for it (thread
//! pointer + `__rseq_offset`) and the length it was registered with: a
//! second `rseq(2)` registration with the same area, length and signature
//! fails with `EBUSY` exactly when that registration is in place (a
//! different length or area gives `EINVAL`, none at all succeeds).
//! Each thread is pinned to one CPU before the dump.
//!
//! After restore every thread checks: `sigaltstack` returns its stack and
//! flags; a SIGUSR2 sent to itself runs the `SA_ONSTACK` handler on that
//! stack (or on the normal stack for thread 2), the handler sees
//! `SS_ONSTACK` (or `SS_DISABLE` for the auto-disarmed one) and the stack is
//! armed again afterwards; the rseq registration still answers `EBUSY`; and
//! once the thread moves to another CPU the kernel updates `cpu_id` in its
//! rseq area, which it only does for a registered area.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zdtmtst::sig::{self, bit};
use zdtmtst::thread;
use zdtmtst::tree::{self, gettid};
use zdtmtst::{check, check_eq, fail, mem, Checker};

extern "C" {
    /// Offset of the rseq area from the thread pointer (glibc 2.35).
    static __rseq_offset: isize;
    /// Size of the rseq area glibc registered, 0 if it did not.
    static __rseq_size: u32;
}

/// `SS_AUTODISARM` (4.7), absent from the libc crate.
const SS_AUTODISARM: i32 = 1 << 31;

/// glibc's rseq signature on x86.
const RSEQ_SIG: u32 = 0x5305_3053;

static RELEASE: AtomicU32 = AtomicU32::new(0);
static SET_UP: AtomicU32 = AtomicU32::new(0);
static SETUP_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    /// Address of a local of the SIGUSR2 handler's last run.
    static HANDLER_SP: Cell<usize> = const { Cell::new(0) };
    /// `sigaltstack` as the handler saw it: (sp, flags, size).
    static HANDLER_SS: Cell<(usize, i32, usize)> = const { Cell::new((0, 0, 0)) };
}

/// One thread's plan: alternate stack size (0: none) and flags.
const PLAN: [(usize, i32); 4] = [
    (64 << 10, 0),
    (96 << 10, SS_AUTODISARM),
    (0, libc::SS_DISABLE),
    (128 << 10, 0),
];

fn altstack() -> std::io::Result<(usize, i32, usize)> {
    // SAFETY: an all-zero stack_t is a valid value to be overwritten.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only queries; `old` is writable.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok((old.ss_sp as usize, old.ss_flags, old.ss_size))
}

/// A `sigaltstack` triple as `sp FLAGS size`, addresses in hex.
fn ss((sp, flags, size): (usize, i32, usize)) -> String {
    format!("sp {sp:#x} flags {flags:#x} size {size:#x}")
}

extern "C" fn on_usr2(_sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let local = 0u8;
    HANDLER_SP.with(|c| c.set(std::hint::black_box(&local) as *const u8 as usize));
    // SAFETY: as in `altstack`: a query with a writable out value; the
    // system call is async-signal-safe.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } == 0 {
        HANDLER_SS.with(|c| c.set((old.ss_sp as usize, old.ss_flags, old.ss_size)));
    }
}

/// The calling thread's rseq area.
fn rseq_area() -> Result<usize, String> {
    // SAFETY: glibc's exported constants, written once at startup.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return Err("glibc did not register rseq (__rseq_size is 0)".into());
    }
    let tp = thread::fs_base().map_err(|e| format!("ARCH_GET_FS: {e}"))?;
    Ok((tp as isize + off) as usize)
}

/// `rseq(area, len, 0, RSEQ_SIG)`: the errno (0 if it registered).
fn rseq_register(area: usize, len: u32) -> i32 {
    // SAFETY: registering an area that is this thread's own rseq area, in
    // memory that lives as long as the thread; if it succeeds the
    // registration is the one glibc made anyway.
    let r = unsafe { libc::syscall(libc::SYS_rseq, area, len, 0, RSEQ_SIG) };
    if r == 0 {
        0
    } else {
        zdtmtst::last_err().raw_os_error().unwrap_or(-1)
    }
}

/// The `cpu_id` field of the rseq area.
fn rseq_cpu_id(area: usize) -> u32 {
    // SAFETY: `area` is this thread's registered rseq area; cpu_id is the
    // aligned u32 at offset 4, written by the kernel.
    unsafe { std::ptr::read_volatile((area + 4) as *const u32) }
}

/// What a thread noted before the dump.
struct Noted {
    tid: i32,
    stack: (usize, i32, usize),
    rseq_area: usize,
    rseq_len: u32,
    cpu: usize,
}

fn set_up(i: usize, cpus: &[usize]) -> Result<Noted, String> {
    let (size, flags) = PLAN[i];
    let mut st: libc::stack_t = libc::stack_t {
        ss_sp: std::ptr::null_mut(),
        ss_flags: flags,
        ss_size: 0,
    };
    if size > 0 {
        let a = mem::mmap_anon(size, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| format!("thread {i}: mmap of the stack: {e}"))?;
        st.ss_sp = a as *mut libc::c_void;
        st.ss_size = size;
    }
    // SAFETY: `st` describes a mapping owned by this thread for the rest of
    // the program, or disables the alternate stack.
    if unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) } != 0 {
        return Err(format!("thread {i}: sigaltstack: {}", zdtmtst::last_err()));
    }
    let stack = altstack().map_err(|e| format!("thread {i}: sigaltstack: {e}"))?;
    let area = rseq_area().map_err(|e| format!("thread {i}: {e}"))?;
    // SAFETY: glibc's exported constant.
    let size = unsafe { __rseq_size };
    let mut lens = vec![size.max(32), 32, size];
    lens.dedup();
    let rseq_len = lens
        .iter()
        .copied()
        .find(|&l| rseq_register(area, l) == libc::EBUSY)
        .ok_or_else(|| {
            format!("thread {i}: no rseq registration of {area:#x} found (tried lengths {lens:?})")
        })?;
    let cpu = cpus[i % cpus.len()];
    thread::set_affinity(&[cpu]).map_err(|e| format!("thread {i}: sched_setaffinity: {e}"))?;
    Ok(Noted {
        tid: gettid(),
        stack,
        rseq_area: area,
        rseq_len,
        cpu,
    })
}

/// Waits (a little) until the rseq area's `cpu_id` says `cpu`.
fn cpu_id_becomes(area: usize, cpu: usize) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let id = rseq_cpu_id(area);
        if id as usize == cpu || Instant::now() >= deadline {
            return id;
        }
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
}

fn verify(i: usize, n: &Noted, cpus: &[usize]) -> Vec<String> {
    let mut c = Checker::new();
    let (sp, flags, size) = n.stack;
    check_eq!(c, gettid(), n.tid, "thread {i}: gettid");
    if let Some(s) = c.ok("sigaltstack", altstack()) {
        check_eq!(c, ss(s), ss(n.stack), "thread {i}: sigaltstack");
    }
    HANDLER_SP.with(|h| h.set(0));
    // SAFETY: tgkill to the calling thread; SIGUSR2 is handled.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, tree::getpid(), gettid(), libc::SIGUSR2) };
    check!(
        c,
        r == 0,
        "thread {i}: tgkill(SIGUSR2): {}",
        zdtmtst::last_err()
    );
    let at = HANDLER_SP.with(|h| h.get());
    let on_alt = at >= sp && at < sp + size;
    if size > 0 {
        check!(
            c,
            on_alt,
            "thread {i}: the SA_ONSTACK handler ran at {at:#x}, outside the alternate stack {sp:#x}+{size:#x}"
        );
        let seen = HANDLER_SS.with(|h| h.get());
        if flags & SS_AUTODISARM != 0 {
            check_eq!(
                c,
                seen.1,
                libc::SS_DISABLE,
                "thread {i}: sigaltstack flags inside the handler of an auto-disarmed stack"
            );
        } else {
            check_eq!(
                c,
                ss(seen),
                ss((sp, libc::SS_ONSTACK, size)),
                "thread {i}: sigaltstack inside the handler"
            );
        }
        if let Some(s) = c.ok("sigaltstack", altstack()) {
            check_eq!(
                c,
                ss(s),
                ss(n.stack),
                "thread {i}: sigaltstack after the handler"
            );
        }
    } else {
        check!(c, at != 0, "thread {i}: the SIGUSR2 handler did not run");
        let seen = HANDLER_SS.with(|h| h.get());
        check_eq!(
            c,
            seen.1,
            libc::SS_DISABLE,
            "thread {i}: sigaltstack flags inside the handler, without an alternate stack"
        );
    }
    check_eq!(
        c,
        thread::affinity().ok(),
        Some(vec![n.cpu]),
        "thread {i}: affinity"
    );
    if let Some(&other) = cpus.iter().find(|&&x| x != n.cpu) {
        if c.ok("sched_setaffinity", thread::set_affinity(&[other]))
            .is_some()
        {
            let id = cpu_id_becomes(n.rseq_area, other);
            check_eq!(
                c,
                id as usize,
                other,
                "thread {i}: rseq cpu_id after moving from CPU {} to CPU {other}",
                n.cpu
            );
        }
    } else {
        let id = rseq_cpu_id(n.rseq_area);
        check_eq!(c, id as usize, n.cpu, "thread {i}: rseq cpu_id");
    }
    // Last: a registration that was missing is made by this very probe.
    let e = rseq_register(n.rseq_area, n.rseq_len);
    check!(
        c,
        e == libc::EBUSY,
        "thread {i}: re-registering rseq at {:#x} (length {}) gave {}, expected EBUSY (still registered)",
        n.rseq_area,
        n.rseq_len,
        if e == 0 {
            "success: it was not registered".to_string()
        } else {
            std::io::Error::from_raw_os_error(e).to_string()
        }
    );
    c.failures().to_vec()
}

fn worker(i: usize, cpus: Vec<usize>) -> Result<Vec<String>, String> {
    let noted = set_up(i, &cpus);
    if let Err(e) = &noted {
        SETUP_ERRORS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e.clone());
    }
    SET_UP.fetch_add(1, Ordering::SeqCst);
    let noted = noted?;
    while RELEASE.load(Ordering::SeqCst) == 0 {
        thread::futex_wait(&RELEASE, 0);
    }
    Ok(verify(i, &noted, &cpus))
}

fn main() {
    zdtmtst::start();
    let cpus = thread::affinity().unwrap_or_else(|e| fail(format!("sched_getaffinity: {e}")));
    if let Err(e) = sig::set_action(
        libc::SIGUSR2,
        on_usr2 as *const () as usize,
        libc::SA_ONSTACK | libc::SA_SIGINFO,
        0,
    ) {
        fail(format!("sigaction(SIGUSR2): {e}"));
    }
    // Workers inherit this mask: SIGTERM goes to the main thread.
    let handles: Vec<_> = (1..PLAN.len())
        .map(|i| {
            let cpus = cpus.clone();
            let old = sig::block(bit(libc::SIGTERM)).unwrap_or_else(|e| fail(e));
            let h = std::thread::Builder::new()
                .spawn(move || worker(i, cpus))
                .unwrap_or_else(|e| fail(format!("spawning thread {i}: {e}")));
            let _ = sig::set_mask(old);
            h
        })
        .collect();
    let noted = set_up(0, &cpus).unwrap_or_else(|e| fail(e));
    let deadline = Instant::now() + tree::ANSWER_TIMEOUT;
    while SET_UP.load(Ordering::SeqCst) < (PLAN.len() - 1) as u32 {
        if Instant::now() >= deadline {
            fail("the threads did not finish their setup");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let errors = SETUP_ERRORS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !errors.is_empty() {
        fail(errors.join("; "));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for f in verify(0, &noted, &cpus) {
        c.fail(f);
    }
    thread::futex_set_wake(&RELEASE, 1);
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(failures)) => {
                c.check(true, String::new);
                for f in failures {
                    c.fail(f);
                }
            }
            Ok(Err(e)) => c.fail(e),
            Err(_) => c.fail(format!("thread {} panicked", i + 1)),
        }
    }
    c.finish();
}
