//! maps_droppable: a `MAP_DROPPABLE` area (Linux 6.11) stays droppable.
//!
//! 16 pages mapped `MAP_DROPPABLE`, which the kernel may empty under memory
//! pressure, hold a pattern. After restore the area must be in place with the
//! droppable flag (`dp`) and the flags it implies, and each page must hold
//! its pattern (or zeroes, if the kernel dropped it, which it may do at any
//! time before or after the dump).

use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const PAGES: usize = 16;
const SEED: u64 = 0xd20b_0001;
const MAP_DROPPABLE: libc::c_int = 0x08;
const IGNORED: &[&str] = &["ac", "sd", "um", "uw", "ui"];

fn flags(start: usize) -> Vec<String> {
    let mut f = maps::vmflags(start).ok().flatten().unwrap_or_default();
    f.retain(|x| !IGNORED.contains(&x.as_str()));
    f.sort();
    f
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let base = mem::mmap(
        0,
        PAGES * ps,
        libc::PROT_READ | libc::PROT_WRITE,
        MAP_DROPPABLE | libc::MAP_ANONYMOUS,
        -1,
        0,
    )
    .unwrap_or_else(|e| fail(format!("mmap MAP_DROPPABLE: {e} (Linux 6.11 needed)")));
    // SAFETY: the area mapped above.
    pattern::fill(unsafe { pattern::words_mut(base, PAGES * ps) }, SEED);
    let before = flags(base);
    if !before.iter().any(|f| f == "dp") {
        fail(format!("no dp flag: {before:?}"));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let all = maps::read_self().unwrap_or_else(|e| fail(e));
    match maps::clipped(&all, base, base + PAGES * ps).as_slice() {
        [m] => {
            check_eq!(c, (m.start, m.end), (base, base + PAGES * ps), "area range");
        }
        other => c.fail(format!("expected one mapping, found {other:?}")),
    };
    check_eq!(c, flags(base), before, "VmFlags");
    if c.passed() {
        for p in 0..PAGES {
            // SAFETY: a page of the area, checked mapped.
            let w = unsafe { pattern::words(base + p * ps, ps) };
            check!(
                c,
                pattern::verify(w, SEED).is_ok() || pattern::verify_zero(w).is_ok(),
                "page {p}: neither its pattern nor dropped"
            );
        }
    }
    c.finish();
}
