//! maps_guard: guard regions (`MADV_GUARD_INSTALL`, Linux 6.13) survive.
//!
//! A 16-page private anonymous area holds a pattern; pages 4..6 and 15 are
//! turned into guard regions (they drop their contents; any access faults).
//! Guard regions do not show in maps: the test probes them with
//! `process_vm_readv` on itself, which fails with EFAULT on a guard page and
//! succeeds on any other.
//!
//! After restore the same pages must be guards, and every other page must
//! hold its pattern.

use zdtmtst::{check, fail, mem, pattern, Checker};

const PAGES: usize = 16;
const GUARDS: &[usize] = &[4, 5, 15];
const SEED: u64 = 0x6a2d_0001;
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Whether the page at `addr` can be read (not a guard).
fn readable(addr: usize) -> bool {
    let mut b = [0u8; 8];
    let local = libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: reads 8 bytes of our own address space into `b`; a guard page makes the
    // kernel fail the call, never fault this process.
    unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) == 8 }
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let base = mem::mmap_anon(PAGES * ps, libc::PROT_READ | libc::PROT_WRITE)
        .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // SAFETY: the area mapped above.
    pattern::fill(unsafe { pattern::words_mut(base, PAGES * ps) }, SEED);
    for &g in GUARDS {
        // SAFETY: advice on a page of this program's area.
        let r =
            unsafe { libc::madvise((base + g * ps) as *mut libc::c_void, ps, MADV_GUARD_INSTALL) };
        if r != 0 {
            fail(format!(
                "MADV_GUARD_INSTALL: {} (Linux 6.13 needed)",
                zdtmtst::last_err()
            ));
        }
    }
    for p in 0..PAGES {
        if readable(base + p * ps) == GUARDS.contains(&p) {
            fail(format!("page {p}: guard probe does not work"));
        }
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for p in 0..PAGES {
        let guard = GUARDS.contains(&p);
        let r = readable(base + p * ps);
        check!(
            c,
            r != guard,
            "page {p} at {:#x}: {}",
            base + p * ps,
            if guard {
                "is no guard any more"
            } else {
                "has become unreadable"
            }
        );
        if r && !guard {
            // SAFETY: a readable page of the area.
            if let Err(m) = pattern::verify(unsafe { pattern::words(base + p * ps, ps) }, SEED) {
                c.fail(format!("page {p} {m}"));
            }
        }
    }
    c.finish();
}
