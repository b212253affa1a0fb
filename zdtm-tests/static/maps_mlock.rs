//! maps_mlock: locked areas stay locked.
//!
//! Area A (16 pages) is locked with `mlock` (`lo`) and holds a pattern; area
//! B (16 pages) is locked with `mlock2(MLOCK_ONFAULT)` (`lo lf`) and only its
//! first 4 pages are touched. After restore both keep their `VmFlags`, the
//! process's `VmLck` is what it was, A is entirely resident and B's first 4
//! pages hold their pattern while the others are not resident (locking on
//! fault must not have populated them).

use zdtmtst::{check, check_eq, fail, maps, mem, pattern, proc, Checker};

const PAGES: usize = 16;
const TOUCHED: usize = 4;
const SEED: u64 = 0x10c4_0001;
const IGNORED: &[&str] = &["ac", "sd", "um", "uw", "ui"];

fn flags(start: usize) -> Vec<String> {
    let mut f = maps::vmflags(start).ok().flatten().unwrap_or_default();
    f.retain(|x| !IGNORED.contains(&x.as_str()));
    f.sort();
    f
}

/// Resident pages of `[start, start + n pages)`, from mincore.
fn resident(start: usize, n: usize) -> Vec<bool> {
    let mut v = vec![0u8; n];
    // SAFETY: the range is a mapping of this program; `v` has one byte per page.
    let r = unsafe {
        libc::mincore(
            start as *mut libc::c_void,
            n * zdtmtst::page_size(),
            v.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Vec::new();
    }
    v.iter().map(|b| b & 1 != 0).collect()
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let a = mem::mmap_anon(PAGES * ps, rw).unwrap_or_else(|e| fail(format!("mmap: {e}")));
    let b = mem::mmap_anon(PAGES * ps, rw).unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // SAFETY: mlock and mlock2 on areas this program mapped.
    unsafe {
        if libc::mlock(a as *const libc::c_void, PAGES * ps) != 0 {
            fail(format!("mlock: {}", zdtmtst::last_err()));
        }
        if libc::syscall(libc::SYS_mlock2, b, PAGES * ps, libc::MLOCK_ONFAULT) != 0 {
            fail(format!("mlock2: {}", zdtmtst::last_err()));
        }
    }
    // SAFETY: the areas mapped above.
    pattern::fill(unsafe { pattern::words_mut(a, PAGES * ps) }, SEED);
    // SAFETY: as above.
    pattern::fill(unsafe { pattern::words_mut(b, TOUCHED * ps) }, SEED);
    let (fa, fb) = (flags(a), flags(b));
    if !fa.iter().any(|f| f == "lo") || !fb.iter().any(|f| f == "lf") {
        fail(format!("locks not in place: {fa:?} {fb:?}"));
    }
    let lck = proc::status_field("VmLck").unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    check_eq!(c, flags(a), fa, "mlocked area VmFlags");
    check_eq!(c, flags(b), fb, "lock-on-fault area VmFlags");
    match proc::status_field("VmLck") {
        Ok(now) => {
            check_eq!(c, now, lck, "VmLck");
        }
        Err(e) => c.fail(e.to_string()),
    };
    check!(
        c,
        resident(a, PAGES).iter().all(|&r| r),
        "mlocked area not all resident: {:?}",
        resident(a, PAGES)
    );
    let rb = resident(b, PAGES);
    check!(
        c,
        rb.len() == PAGES && rb[..TOUCHED].iter().all(|&r| r) && !rb[TOUCHED..].iter().any(|&r| r),
        "lock-on-fault area residency {rb:?}: the first {TOUCHED} pages only were expected"
    );
    // SAFETY: the areas checked mapped above.
    if let Err(m) = pattern::verify(unsafe { pattern::words(a, PAGES * ps) }, SEED) {
        c.fail(format!("mlocked area {m}"));
    }
    // SAFETY: as above.
    if let Err(m) = pattern::verify(unsafe { pattern::words(b, TOUCHED * ps) }, SEED) {
        c.fail(format!("lock-on-fault area {m}"));
    }
    c.finish();
}
