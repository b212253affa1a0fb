//! threads00: a multi-threaded process keeps its threads and their state.
//!
//! Three threads besides the main one; each names itself with
//! `PR_SET_NAME`, blocks its own set of signals (and SIGTERM, so that it
//! goes to the main thread), stores a value in a thread-local and a pattern
//! in its stack frame, and then sleeps in `FUTEX_WAIT` until the main thread
//! releases it. After restore: `/proc/self/task` must list the same thread
//! ids, and each thread, once released, must find its `gettid`, name, signal
//! mask, thread-local and stack contents unchanged.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};

use zdtmtst::sig::{self, bit, rtmin};
use zdtmtst::{check, check_eq, fail, pattern, Checker};

const THREADS: usize = 3;
const SEED: u64 = 0x7412_0000;

thread_local! {
    static TLS: Cell<u64> = const { Cell::new(0) };
}

static RELEASE: AtomicU32 = AtomicU32::new(0);

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn name() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `buf`.
    unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(16);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Sleeps in FUTEX_WAIT until RELEASE becomes non-zero.
fn wait_release() {
    while RELEASE.load(Ordering::SeqCst) == 0 {
        // SAFETY: the futex word is a live static AtomicU32; a null timeout
        // waits without limit. Spurious returns are handled by the loop.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                RELEASE.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
}

fn thread_main(i: usize, barrier: Arc<Barrier>) -> (i32, Vec<String>) {
    let mut c = Checker::new();
    let tid = gettid();
    let my_name = format!("zdtm-thr-{i}");
    let cname = std::ffi::CString::new(my_name.clone()).unwrap_or_default();
    // SAFETY: `cname` is NUL-terminated and shorter than 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, cname.as_ptr()) };
    let mask = bit(libc::SIGTERM)
        | bit(rtmin(i as i32))
        | if i % 2 == 0 {
            bit(libc::SIGUSR1)
        } else {
            bit(libc::SIGUSR2)
        };
    if let Err(e) = sig::set_mask(mask) {
        c.fail(format!("thread {i}: rt_sigprocmask: {e}"));
    }
    let tls = pattern::word(i, SEED);
    TLS.with(|t| t.set(tls));
    let mut frame = [0u64; 64];
    pattern::fill(&mut frame, SEED ^ i as u64);
    std::hint::black_box(&mut frame);

    barrier.wait();
    wait_release();

    check_eq!(c, gettid(), tid, "thread {i}: gettid");
    check_eq!(c, name(), my_name, "thread {i}: PR_GET_NAME");
    if let Some(m) = c.ok("rt_sigprocmask", sig::mask()) {
        check_eq!(
            c,
            format!("{m:#x}"),
            format!("{mask:#x}"),
            "thread {i}: signal mask"
        );
    }
    check_eq!(
        c,
        format!("{:#x}", TLS.with(|t| t.get())),
        format!("{tls:#x}"),
        "thread {i}: thread-local"
    );
    std::hint::black_box(&mut frame);
    if let Err(m) = pattern::verify(&frame, SEED ^ i as u64) {
        c.fail(format!("thread {i}: stack frame {m}"));
    }
    if let Some(s) = c.ok(
        "reading comm",
        std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")),
    ) {
        check_eq!(
            c,
            s.trim_end(),
            my_name,
            "thread {i}: /proc/self/task/{tid}/comm"
        );
    }
    (tid, c.failures().to_vec())
}

fn tasks() -> std::io::Result<Vec<i32>> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc/self/task")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    Ok(v)
}

fn main() {
    zdtmtst::start();
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let b = barrier.clone();
            std::thread::Builder::new()
                .spawn(move || thread_main(i + 1, b))
                .unwrap_or_else(|e| fail(format!("spawning thread {}: {e}", i + 1)))
        })
        .collect();
    barrier.wait();
    let before = tasks().unwrap_or_else(|e| fail(e));
    if before.len() != THREADS + 1 {
        fail(format!("expected {} tasks, found {before:?}", THREADS + 1));
    }
    let main_tid = gettid();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(now) = c.ok("listing /proc/self/task", tasks()) {
        check_eq!(c, now, before, "thread ids in /proc/self/task");
    }
    check_eq!(c, gettid(), main_tid, "main thread gettid");
    RELEASE.store(1, Ordering::SeqCst);
    // SAFETY: wakes every waiter on the live static futex word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            RELEASE.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok((tid, failures)) => {
                check!(c, before.contains(&tid), "thread {} had tid {tid}", i + 1);
                for f in failures {
                    c.fail(f);
                }
            }
            Err(_) => c.fail(format!("thread {} panicked", i + 1)),
        }
    }
    c.finish();
}
