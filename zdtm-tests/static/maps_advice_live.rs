//! maps_advice_live: the advice of a large area, changed all the time, comes back as it was
//! when the task was frozen.
//!
//! A 320 MiB private anonymous area (large enough that a dump learns its flags before
//! freezing the tree) is advised as a whole, over and over until SIGTERM, into one of four
//! states: `MADV_DONTFORK` or `MADV_DOFORK` (`dc`), `MADV_HUGEPAGE` or `MADV_NOHUGEPAGE`
//! (`hg`/`nh`). Each round first checks, by forking, that the area's `dc` flag is the one it
//! set last, then advises the next state. A dump that took the flags from a read made while
//! the area was still changing restores a state the task never ended in: the next round
//! sees it.

use std::sync::atomic::{AtomicBool, Ordering};

use zdtmtst::{check, fail, mem, Checker};

const LEN: usize = 320 << 20;

/// Set when a round found flags that are neither the last state nor the next one.
static WRONG: AtomicBool = AtomicBool::new(false);

/// (dontfork, hugepage) of state `k`.
fn bits(k: u32) -> (bool, bool) {
    (k & 1 != 0, k & 2 != 0)
}

fn advise(base: usize, advice: libc::c_int) {
    // SAFETY: advice on the area this program mapped.
    if unsafe { libc::madvise(base as *mut libc::c_void, LEN, advice) } != 0 {
        fail(format!("madvise({advice}): {}", zdtmtst::last_err()));
    }
}

/// Whether a child forked now has the area (no `MADV_DONTFORK`): it asks `mincore`, which
/// fails on an unmapped range. No descriptor is opened: one open at the moment the task is
/// frozen would be dumped with it.
fn forked_child_has(base: usize) -> Option<bool> {
    // SAFETY: the child only calls mincore and _exit.
    match unsafe { libc::fork() } {
        0 => {
            let mut v = 0u8;
            // SAFETY: one page of address space probed, one byte of vector.
            let r = unsafe { libc::mincore(base as *mut libc::c_void, 4096, &mut v) };
            // SAFETY: exit of the child without running the parent's atexit handlers.
            unsafe { libc::_exit(if r == 0 { 0 } else { 1 }) }
        }
        -1 => None,
        pid => {
            let mut st = 0;
            loop {
                // SAFETY: waits for the child forked above.
                let r = unsafe { libc::waitpid(pid, &mut st, 0) };
                if r == pid {
                    break;
                }
                if r < 0 && zdtmtst::last_err().raw_os_error() != Some(libc::EINTR) {
                    return None;
                }
            }
            libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st) == 0)
        }
    }
}

fn main() {
    zdtmtst::start();
    let base = mem::mmap_anon(LEN, libc::PROT_READ | libc::PROT_WRITE)
        .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // A few pages written, one per 64 MiB.
    for at in (0..LEN).step_by(64 << 20) {
        // SAFETY: inside the area mapped above.
        unsafe { *((base + at) as *mut u8) = 1 };
    }
    let set = |k: u32| {
        let (dontfork, huge) = bits(k);
        advise(
            base,
            if dontfork {
                libc::MADV_DONTFORK
            } else {
                libc::MADV_DOFORK
            },
        );
        advise(
            base,
            if huge {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            },
        );
    };
    let mut k = 0u32;
    set(k);
    let mut seen = String::new();
    zdtmtst::ready();
    while !zdtmtst::sigterm_received() {
        // A round frozen in the middle has finished by now (the interrupted madvise
        // completes after restore): the flags are those set last.
        let (dontfork, _) = bits(k);
        let has = forked_child_has(base);
        if has != Some(!dontfork) && !WRONG.swap(true, Ordering::Relaxed) {
            seen = format!(
                "round {k}: dontfork set {dontfork}, and a forked child has the area: {has:?}"
            );
        }
        k = k.wrapping_add(1);
        set(k);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut c = Checker::new();
    check!(
        c,
        !WRONG.load(Ordering::Relaxed),
        "the area's advice came back wrong: {seen}"
    );
    c.finish();
}
