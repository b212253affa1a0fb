//! threads_futex: threads blocked in different ways keep their per-thread
//! state.
//!
//! Five threads besides the main one, each blocked its own way:
//!
//! | thread   | blocked in                         | scheduling (fallback without privilege) | CPUs  |
//! |----------|------------------------------------|------------------------------------------|-------|
//! | `futex`  | `FUTEX_WAIT` on a word             | SCHED_OTHER + RESET_ON_FORK, nice 5      | first |
//! | `cond`   | `pthread_cond_wait`                | SCHED_BATCH, nice 7                      | last  |
//! | `joiner` | `pthread_join` on `spinner`        | SCHED_FIFO 10 (SCHED_OTHER, nice 3)      | all   |
//! | `reader` | `read(2)` on an empty pipe         | SCHED_RR 3 (SCHED_BATCH, nice 11)        | all   |
//! | `spinner`| nothing: it spins, counting        | SCHED_IDLE, nice 15                      | all   |
//!
//! Each thread names itself (`pthread_setname_np`), blocks SIGTERM (so it
//! goes to the main thread), SIGUSR1 and two real-time signals of its own,
//! stores a value in a `thread_local!` and notes its FS base. The main
//! thread then queues to each thread one of its blocked real-time signals
//! with a value (`rt_tgsigqueueinfo`), a second one to `cond`, and a
//! `tgkill` SIGUSR1 to `reader`: per-thread pending signals.
//!
//! After restore the main thread checks the thread ids, that each thread is
//! back in its system call (`/proc/self/task/TID/syscall`) and that the
//! spinner still counts; then it wakes them all and each thread checks its
//! own tid, name (`pthread_getname_np` and `comm`), signal mask, pending
//! set and the queued signals in order with their `si_code`, `si_pid` and
//! value, policy/priority/nice/affinity, TLS value and address and FS base,
//! and that its blocking call ended only because it was woken.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zdtmtst::sig::{self, bit, rtmin};
use zdtmtst::thread::{self, Sched};
use zdtmtst::tree::{self, gettid};
use zdtmtst::{check, check_eq, fail, pattern, Checker};

const SEED: u64 = 0x7f7e_0000_0000;

thread_local! {
    static TLS: Cell<u64> = const { Cell::new(0) };
}

static RELEASE: AtomicU32 = AtomicU32::new(0);
static SPINS: AtomicU64 = AtomicU64::new(0);
/// How many threads finished setting themselves up (or failed to).
static SET_UP: AtomicU32 = AtomicU32::new(0);
static SETUP_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A pthread mutex, condition variable and predicate, shared by `cond` and
/// the main thread.
struct Cond {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    cond: UnsafeCell<libc::pthread_cond_t>,
    flag: UnsafeCell<bool>,
}

// SAFETY: the pthread objects are made for sharing between threads, and
// `flag` is only accessed with `mutex` held.
unsafe impl Sync for Cond {}

static COND: Cond = Cond {
    mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    cond: UnsafeCell::new(libc::PTHREAD_COND_INITIALIZER),
    flag: UnsafeCell::new(false),
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Futex,
    Cond,
    Joiner,
    Reader,
    Spinner,
}

impl Role {
    const ALL: [Role; 5] = [
        Role::Futex,
        Role::Cond,
        Role::Joiner,
        Role::Reader,
        Role::Spinner,
    ];

    fn name(self) -> &'static str {
        match self {
            Role::Futex => "futex",
            Role::Cond => "cond",
            Role::Joiner => "joiner",
            Role::Reader => "reader",
            Role::Spinner => "spinner",
        }
    }

    /// 1-based: its real-time signals are SIGRTMIN+n and SIGRTMIN+10+n.
    fn n(self) -> i32 {
        Role::ALL.iter().position(|&r| r == self).unwrap_or(0) as i32 + 1
    }

    fn mask(self) -> u64 {
        bit(libc::SIGTERM) | bit(libc::SIGUSR1) | bit(rtmin(self.n())) | bit(rtmin(10 + self.n()))
    }

    /// The system call it sleeps in (None: it spins).
    fn syscall(self) -> Option<i64> {
        match self {
            Role::Futex | Role::Cond | Role::Joiner => Some(libc::SYS_futex),
            Role::Reader => Some(libc::SYS_read),
            Role::Spinner => None,
        }
    }

    /// The scheduling it asks for, and the fallback when refused.
    fn sched(self, cpus: &[usize]) -> (Sched, Option<Sched>) {
        let all = cpus.to_vec();
        let first = vec![cpus[0]];
        let last = vec![cpus[cpus.len() - 1]];
        let s = |policy, priority, nice, cpus| Sched {
            policy,
            priority,
            nice,
            cpus,
        };
        match self {
            Role::Futex => (
                s(libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, 0, 5, first),
                None,
            ),
            Role::Cond => (s(libc::SCHED_BATCH, 0, 7, last), None),
            Role::Joiner => (
                s(libc::SCHED_FIFO, 10, 0, all.clone()),
                Some(s(libc::SCHED_OTHER, 0, 3, all)),
            ),
            Role::Reader => (
                s(libc::SCHED_RR, 3, 0, all.clone()),
                Some(s(libc::SCHED_BATCH, 0, 11, all)),
            ),
            Role::Spinner => (s(libc::SCHED_IDLE, 0, 15, all), None),
        }
    }

    /// What is queued to it: (signal, si_code, value), in dequeue order.
    fn queued(self) -> Vec<(i32, i32, u64)> {
        let rt = rtmin(self.n());
        let v = |k: u64| (self.n() as u64) << 8 | k;
        match self {
            Role::Cond => vec![(rt, libc::SI_QUEUE, v(1)), (rt, libc::SI_QUEUE, v(2))],
            // Standard signals are dequeued before real-time ones.
            Role::Reader => vec![
                (libc::SIGUSR1, libc::SI_TKILL, 0),
                (rt, libc::SI_QUEUE, v(1)),
            ],
            _ => vec![(rt, libc::SI_QUEUE, v(1))],
        }
    }
}

/// What a thread noted about itself before blocking.
struct Noted {
    tid: i32,
    sched: Sched,
    fs_base: u64,
    tls_addr: usize,
}

fn tls_addr() -> usize {
    TLS.with(|t| t as *const Cell<u64> as usize)
}

/// Sets up the calling thread's own state.
fn set_up(role: Role, cpus: &[usize]) -> Result<Noted, String> {
    let n = role.name();
    thread::set_name(&format!("zdtm-{n}")).map_err(|e| format!("{n}: naming: {e}"))?;
    sig::set_mask(role.mask()).map_err(|e| format!("{n}: rt_sigprocmask: {e}"))?;
    TLS.with(|t| t.set(pattern::word(role.n() as usize, SEED)));
    let (want, fallback) = role.sched(cpus);
    let sched = match (want.apply(), fallback) {
        (Ok(()), _) => want,
        (Err(e), Some(f)) if e.raw_os_error() == Some(libc::EPERM) => {
            f.apply()
                .map_err(|e| format!("{n}: fallback scheduling {f:?}: {e}"))?;
            f
        }
        (Err(e), _) => return Err(format!("{n}: scheduling {want:?}: {e}")),
    };
    match Sched::get() {
        Ok(got) if got == sched => {}
        Ok(got) => return Err(format!("{n}: asked for {sched:?}, got {got:?}")),
        Err(e) => return Err(format!("{n}: reading scheduling: {e}")),
    }
    Ok(Noted {
        tid: gettid(),
        sched,
        fs_base: thread::fs_base().map_err(|e| format!("{n}: ARCH_GET_FS: {e}"))?,
        tls_addr: tls_addr(),
    })
}

/// The checks every thread runs on itself once woken.
fn check_self(c: &mut Checker, role: Role, noted: &Noted, root: i32) {
    let n = role.name();
    check_eq!(c, gettid(), noted.tid, "{n}: gettid");
    let want_name = format!("zdtm-{n}");
    if let Some(s) = c.ok("pthread_getname_np", thread::name()) {
        check_eq!(c, s, want_name, "{n}: pthread_getname_np");
    }
    if let Some(s) = c.ok("reading comm", thread::comm(noted.tid)) {
        check_eq!(c, s, want_name, "{n}: /proc/self/task/{}/comm", noted.tid);
    }
    if let Some(m) = c.ok("rt_sigprocmask", sig::mask()) {
        check_eq!(
            c,
            format!("{m:#x}"),
            format!("{:#x}", role.mask()),
            "{n}: signal mask"
        );
    }
    let queued = role.queued();
    let want_pending = queued.iter().fold(0, |m, q| m | bit(q.0));
    if let Some(p) = c.ok("rt_sigpending", sig::pending()) {
        check_eq!(
            c,
            format!("{p:#x}"),
            format!("{want_pending:#x}"),
            "{n}: pending signals (its own queue and the process's)"
        );
    }
    let mut got = Vec::new();
    while let Ok(Some(info)) = sig::timedwait(role.mask() & !bit(libc::SIGTERM), Duration::ZERO) {
        got.push((info.signo, info.code, info.value, info.pid));
        if got.len() > 8 {
            break;
        }
    }
    let want: Vec<_> = queued
        .iter()
        .map(|&(s, code, v)| (s, code, v, root))
        .collect();
    check_eq!(
        c,
        got,
        want,
        "{n}: dequeued signals (signo, si_code, value, si_pid)"
    );
    if let Some(s) = c.ok("reading scheduling", Sched::get()) {
        check_eq!(c, s, noted.sched, "{n}: scheduling");
    }
    check_eq!(
        c,
        format!("{:#x}", TLS.with(|t| t.get())),
        format!("{:#x}", pattern::word(role.n() as usize, SEED)),
        "{n}: thread-local value"
    );
    check_eq!(c, tls_addr(), noted.tls_addr, "{n}: thread-local address");
    if let Some(fs) = c.ok("ARCH_GET_FS", thread::fs_base()) {
        check_eq!(c, fs, noted.fs_base, "{n}: FS base");
    }
}

/// Blocks the calling thread its role's way until released; failures of
/// the blocking itself are recorded.
fn block(c: &mut Checker, role: Role, pipe_r: i32) {
    match role {
        Role::Futex => {
            while RELEASE.load(Ordering::SeqCst) == 0 {
                thread::futex_wait(&RELEASE, 0);
            }
        }
        Role::Cond => {
            // SAFETY: the statics are initialized pthread objects; `flag`
            // is read with the mutex held.
            unsafe {
                libc::pthread_mutex_lock(COND.mutex.get());
                while !*COND.flag.get() {
                    libc::pthread_cond_wait(COND.cond.get(), COND.mutex.get());
                }
                libc::pthread_mutex_unlock(COND.mutex.get());
            }
        }
        Role::Reader => loop {
            match zdtmtst::fd::read(pipe_r, 1) {
                Ok(b) => {
                    check_eq!(c, b, b"R".to_vec(), "reader: bytes read");
                    break;
                }
                Err(e) => {
                    c.fail(format!("reader: read(2) failed: {e}"));
                    if e.raw_os_error() != Some(libc::EINTR) {
                        break;
                    }
                }
            }
        },
        Role::Spinner => {
            while RELEASE.load(Ordering::SeqCst) == 0 {
                SPINS.fetch_add(1, Ordering::Relaxed);
                std::hint::spin_loop();
            }
        }
        Role::Joiner => {}
    }
    if role != Role::Joiner {
        check!(
            c,
            RELEASE.load(Ordering::SeqCst) != 0,
            "{}: woke up before being released",
            role.name()
        );
    }
}

fn setup_failed(why: String) -> Result<(i32, Vec<String>), String> {
    SETUP_ERRORS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(why.clone());
    SET_UP.fetch_add(1, Ordering::SeqCst);
    Err(why)
}

fn worker(
    role: Role,
    cpus: Vec<usize>,
    pipe_r: i32,
    root: i32,
) -> Result<(i32, Vec<String>), String> {
    let noted = match set_up(role, &cpus) {
        Ok(n) => n,
        Err(why) => {
            if role == Role::Joiner {
                // Nobody will start the spinner: count it too.
                let _ = setup_failed("spinner: not started".into());
            }
            return setup_failed(why);
        }
    };
    let tid = noted.tid;
    let spinner = if role == Role::Joiner {
        let cpus = cpus.clone();
        match std::thread::Builder::new().spawn(move || worker(Role::Spinner, cpus, pipe_r, root)) {
            Ok(h) => Some(h),
            Err(e) => {
                let _ = setup_failed("spinner: not started".into());
                return setup_failed(format!("joiner: spawning the spinner: {e}"));
            }
        }
    } else {
        None
    };
    SET_UP.fetch_add(1, Ordering::SeqCst);
    let mut c = Checker::new();
    block(&mut c, role, pipe_r);
    let mut failures = Vec::new();
    if let Some(h) = spinner {
        match h.join() {
            Ok(Ok((_, f))) => failures.extend(f),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("spinner panicked".into()),
        }
        check!(
            c,
            RELEASE.load(Ordering::SeqCst) != 0,
            "joiner: pthread_join returned before the release"
        );
    }
    check_self(&mut c, role, &noted, root);
    failures.extend(c.failures().iter().cloned());
    Ok((tid, failures))
}

fn tasks() -> std::io::Result<Vec<i32>> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc/self/task")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    Ok(v)
}

fn thread_ids() -> Vec<(Role, i32)> {
    let mut out = Vec::new();
    if let Ok(ts) = tasks() {
        for t in ts {
            if let Ok(comm) = thread::comm(t) {
                for r in Role::ALL {
                    if comm == format!("zdtm-{}", r.name()) {
                        out.push((r, t));
                    }
                }
            }
        }
    }
    out
}

fn spinner_moves() -> bool {
    let start = SPINS.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if SPINS.load(Ordering::Relaxed) != start {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn main() {
    zdtmtst::start();
    let root = tree::getpid();
    let cpus = thread::affinity().unwrap_or_else(|e| fail(format!("sched_getaffinity: {e}")));
    let main_sched = Sched::get().unwrap_or_else(|e| fail(format!("sched_getscheduler: {e}")));
    let main_mask = sig::mask().unwrap_or_else(|e| fail(format!("rt_sigprocmask: {e}")));
    let (pipe_r, pipe_w) = zdtmtst::fd::pipe(0).unwrap_or_else(|e| fail(format!("pipe: {e}")));
    let handles: Vec<_> = Role::ALL
        .iter()
        .filter(|&&r| r != Role::Spinner)
        .map(|&r| {
            let cpus = cpus.clone();
            let h = std::thread::Builder::new()
                .spawn(move || worker(r, cpus, pipe_r, root))
                .unwrap_or_else(|e| fail(format!("spawning {}: {e}", r.name())));
            (r, h)
        })
        .collect();
    let deadline = Instant::now() + tree::ANSWER_TIMEOUT;
    while SET_UP.load(Ordering::SeqCst) < Role::ALL.len() as u32 {
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
    let ids = thread_ids();
    if ids.len() != Role::ALL.len() {
        fail(format!("threads after setup: {ids:?}"));
    }
    for &(r, tid) in &ids {
        for (s, code, v) in r.queued() {
            let res = if code == libc::SI_TKILL {
                // SAFETY: tgkill with integers, to a thread of this process.
                match unsafe { libc::syscall(libc::SYS_tgkill, root, tid, s) } {
                    0 => Ok(()),
                    _ => Err(zdtmtst::last_err()),
                }
            } else {
                sig::tgsigqueue(tid, s, v)
            };
            if let Err(e) = res {
                fail(format!("queueing signal {s} to {} ({tid}): {e}", r.name()));
            }
        }
    }
    for &(r, tid) in &ids {
        if let Some(nr) = r.syscall() {
            if !tree::wait_in_syscall(tid, nr, tree::ANSWER_TIMEOUT) {
                fail(format!(
                    "{} ({tid}) did not block in system call {nr}",
                    r.name()
                ));
            }
        }
    }
    if !spinner_moves() {
        fail("the spinner does not spin");
    }
    let before = tasks().unwrap_or_else(|e| fail(format!("/proc/self/task: {e}")));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(now) = c.ok("listing /proc/self/task", tasks()) {
        check_eq!(c, now, before, "thread ids in /proc/self/task");
    }
    check_eq!(c, gettid(), root, "main thread: gettid");
    if let Some(s) = c.ok("main thread: scheduling", Sched::get()) {
        check_eq!(c, s, main_sched, "main thread: scheduling");
    }
    if let Some(m) = c.ok("main thread: rt_sigprocmask", sig::mask()) {
        check_eq!(c, m, main_mask, "main thread: signal mask");
    }
    for &(r, tid) in &ids {
        // A released thread re-enters its call once it is scheduled: give it the time.
        if let Some(nr) = r.syscall() {
            tree::wait_in_syscall(tid, nr, tree::ANSWER_TIMEOUT);
        }
        match tree::blocked_syscall(tid) {
            Ok(n) => check!(
                c,
                n == r.syscall(),
                "{} ({tid}): in system call {n:?}, expected {:?}",
                r.name(),
                r.syscall()
            ),
            Err(e) => check!(c, false, "{} ({tid}): /proc/{tid}/syscall: {e}", r.name()),
        };
    }
    check!(
        c,
        spinner_moves(),
        "the spinner stopped spinning after restore"
    );

    thread::futex_set_wake(&RELEASE, 1);
    // SAFETY: the statics are initialized pthread objects; `flag` is written
    // with the mutex held.
    unsafe {
        libc::pthread_mutex_lock(COND.mutex.get());
        *COND.flag.get() = true;
        libc::pthread_cond_broadcast(COND.cond.get());
        libc::pthread_mutex_unlock(COND.mutex.get());
    }
    if let Err(e) = zdtmtst::fd::write(pipe_w, b"R") {
        c.fail(format!("writing to the reader's pipe: {e}"));
    }
    for (r, h) in handles {
        match h.join() {
            Ok(Ok((tid, failures))) => {
                check!(
                    c,
                    before.contains(&tid),
                    "{} had tid {tid}, not among {before:?}",
                    r.name()
                );
                for f in failures {
                    c.fail(f);
                }
            }
            Ok(Err(e)) => c.fail(e),
            Err(_) => c.fail(format!("{} panicked", r.name())),
        }
    }
    c.finish();
}
