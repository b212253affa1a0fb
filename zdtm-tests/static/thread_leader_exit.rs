//! thread_leader_exit: a process whose main thread has exited keeps running
//! in its other thread.
//!
//! The main thread starts a worker and ends itself with the raw `exit(2)`
//! system call (only the calling thread ends; glibc's `pthread_exit` would
//! unwind through Rust frames). The leader stays a zombie in its thread
//! group while the worker runs the whole protocol: it waits until the
//! leader shows state Z, writes the pidfile, waits for SIGTERM (which now
//! can only go to it) and checks: `getpid` and `gettid` unchanged,
//! `/proc/self/task` still lists exactly the zombie leader and itself, the
//! leader still a zombie, and its thread-local and stack pattern intact.

use std::cell::Cell;
use std::time::{Duration, Instant};

use zdtmtst::tree::{self, gettid};
use zdtmtst::{check_eq, fail, pattern, Checker};

const SEED: u64 = 0x1ead_e817;

thread_local! {
    static TLS: Cell<u64> = const { Cell::new(0) };
}

fn tasks() -> std::io::Result<Vec<i32>> {
    let mut v: Vec<i32> = std::fs::read_dir("/proc/self/task")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    v.sort();
    Ok(v)
}

/// State letter of thread `tid` of this process.
fn thread_state(pid: i32, tid: i32) -> std::io::Result<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))?;
    zdtmtst::proc::stat_field_in(&text, 3)
        .and_then(|s| s.chars().next())
        .ok_or_else(|| std::io::Error::other("cannot parse the state"))
}

fn worker(pid: i32) {
    let tid = gettid();
    let tls = pattern::word(tid as usize, SEED);
    TLS.with(|t| t.set(tls));
    let mut frame = [0u64; 32];
    pattern::fill(&mut frame, SEED);
    std::hint::black_box(&mut frame);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match thread_state(pid, pid) {
            Ok('Z') => break,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            other => fail(format!(
                "the main thread did not become a zombie: {other:?}"
            )),
        }
    }
    let before = tasks().unwrap_or_else(|e| fail(format!("/proc/self/task: {e}")));
    if before != [pid, tid] {
        fail(format!(
            "threads after the leader exited: {before:?}, expected [{pid}, {tid}]"
        ));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    check_eq!(c, tree::getpid(), pid, "getpid");
    check_eq!(c, gettid(), tid, "gettid of the worker");
    if let Some(now) = c.ok("listing /proc/self/task", tasks()) {
        check_eq!(c, now, before, "thread ids in /proc/self/task");
    }
    if let Some(s) = c.ok("the leader's stat", thread_state(pid, pid)) {
        check_eq!(c, s, 'Z', "state of the exited leader {pid}");
    }
    check_eq!(
        c,
        format!("{:#x}", TLS.with(|t| t.get())),
        format!("{tls:#x}"),
        "worker thread-local"
    );
    std::hint::black_box(&mut frame);
    if let Err(m) = pattern::verify(&frame, SEED) {
        c.fail(format!("worker stack frame {m}"));
    }
    c.finish();
}

fn main() {
    zdtmtst::start();
    let pid = tree::getpid();
    if let Err(e) = std::thread::Builder::new().spawn(move || worker(pid)) {
        fail(format!("spawning the worker: {e}"));
    }
    // SAFETY: exit(2) ends only this thread; nothing of its stack is
    // referenced by the worker, which owns everything it uses.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("exit(2) returned");
}
