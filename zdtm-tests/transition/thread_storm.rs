//! thread_storm: a process that creates and joins threads without a pause
//! keeps doing so across dumps.
//!
//! The main thread starts four threads, joins them and starts over, all
//! the time, also while it is being dumped: a dump may catch threads being
//! created, running, or exiting (a joiner waits for the kernel to clear the
//! thread id word at `CLONE_CHILD_CLEARTID` and wake it, so a restored
//! thread that lost that address would hang the join). Each thread stores
//! a value derived from its round in a `thread_local!`, computes a checksum
//! over a pattern on its stack, checks both and returns its tid, thread
//! local and checksum; the main thread checks every result and that the
//! four tids of a round differ from each other and from its own.
//!
//! On SIGTERM it runs 50 more rounds, then fails if any result was wrong,
//! any spawn or join failed, or no round completed between the pidfile
//! and SIGTERM.

use std::cell::Cell;

use zdtmtst::tree::gettid;
use zdtmtst::{check, pattern, Checker};

const THREADS: u64 = 4;
const AFTER: u64 = 50;
const KEEP: usize = 8;
const SEED: u64 = 0x5707_3000;

thread_local! {
    static TLS: Cell<u64> = const { Cell::new(0) };
}

/// What a thread of round `r`, slot `k` must return: (tls, checksum).
fn expected(r: u64, k: u64) -> (u64, u64) {
    let tls = pattern::word((r * THREADS + k) as usize, SEED);
    (tls, tls.rotate_left(7) ^ 0x5a5a)
}

fn body(r: u64, k: u64) -> (i32, u64, u64) {
    let (tls, _) = expected(r, k);
    TLS.with(|t| t.set(tls));
    let mut frame = [0u64; 64];
    pattern::fill(&mut frame, tls);
    std::hint::black_box(&mut frame);
    std::thread::yield_now();
    let ok = pattern::verify(&frame, tls).is_ok();
    let got = TLS.with(|t| t.get());
    let sum = if ok { got.rotate_left(7) ^ 0x5a5a } else { 0 };
    (gettid(), got, sum)
}

struct Storm {
    rounds: u64,
    failures: Vec<String>,
    failed: u64,
}

impl Storm {
    fn fail(&mut self, msg: String) {
        self.failed += 1;
        if self.failures.len() < KEEP {
            self.failures.push(msg);
        }
    }

    fn round(&mut self) {
        let r = self.rounds;
        let mut handles = Vec::new();
        for k in 0..THREADS {
            match std::thread::Builder::new().spawn(move || body(r, k)) {
                Ok(h) => handles.push((k, h)),
                Err(e) => self.fail(format!("round {r}: spawning thread {k}: {e}")),
            }
        }
        let me = gettid();
        let mut tids = Vec::new();
        for (k, h) in handles {
            match h.join() {
                Ok((tid, tls, sum)) => {
                    let (want_tls, want_sum) = expected(r, k);
                    if (tls, sum) != (want_tls, want_sum) {
                        self.fail(format!(
                            "round {r} thread {k} (tid {tid}): thread-local {tls:#x} checksum {sum:#x}, expected {want_tls:#x} {want_sum:#x}"
                        ));
                    }
                    if tid == me || tids.contains(&tid) {
                        self.fail(format!("round {r} thread {k}: tid {tid} not unique"));
                    }
                    tids.push(tid);
                }
                Err(_) => self.fail(format!("round {r}: thread {k} panicked")),
            }
        }
        self.rounds += 1;
    }
}

fn main() {
    zdtmtst::start();
    let mut s = Storm {
        rounds: 0,
        failures: Vec::new(),
        failed: 0,
    };
    while s.rounds < 20 {
        s.round();
    }
    let at_ready = s.rounds;
    zdtmtst::ready();
    while !zdtmtst::sigterm_received() {
        s.round();
    }
    let at_term = s.rounds;
    while s.rounds < at_term + AFTER {
        s.round();
    }

    let mut c = Checker::new();
    check!(
        c,
        at_term > at_ready,
        "no round completed between the pidfile and SIGTERM ({at_ready} before, {at_term} after)"
    );
    check!(
        c,
        s.failed == 0,
        "{} failures in {} rounds: {}",
        s.failed,
        s.rounds,
        s.failures.join("; ")
    );
    // A joined thread has cleared its tid word but may still be finishing its exit (listed
    // in /proc a little longer): give it a moment to go.
    let count = || std::fs::read_dir("/proc/self/task").map(|d| d.count());
    let mut tasks = count();
    for _ in 0..100 {
        if !matches!(tasks, Ok(n) if n > 1) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        tasks = count();
    }
    check!(
        c,
        matches!(tasks, Ok(1)),
        "threads left after the storm: {tasks:?}"
    );
    c.finish();
}
