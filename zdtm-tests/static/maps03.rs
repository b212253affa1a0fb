//! maps03: a sparse area larger than 4 GiB survives.
//!
//! A 16 GiB private anonymous area (`MAP_NORESERVE`) with a few written
//! places: its first and last pages, a run of 64 pages across the 4 GiB
//! boundary, single pages just past 8 GiB and at 12 GiB + 5 pages. Offsets
//! and page counts above 32 bits must not be truncated anywhere.
//!
//! After restore the area has its range and flags, the written pages hold
//! their pattern and samples of the unwritten ones read zero.

use zdtmtst::{check_eq, fail, maps, mem, pattern, Checker};

const GIB: usize = 1 << 30;
const SEED: u64 = 0x4b16_0001;

fn written(ps: usize) -> Vec<(usize, usize)> {
    vec![
        (0, ps),
        (4 * GIB - 32 * ps, 64 * ps),
        (8 * GIB + ps, ps),
        (12 * GIB + 5 * ps, ps),
        (16 * GIB - ps, ps),
    ]
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let len = 16 * GIB;
    let base = mem::mmap(
        0,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    )
    .unwrap_or_else(|e| fail(format!("mmap of 16 GiB: {e}")));
    for (off, n) in written(ps) {
        // SAFETY: pages of the area mapped above.
        pattern::fill(unsafe { pattern::words_mut(base + off, n) }, SEED);
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let all = maps::read_self().unwrap_or_else(|e| fail(e));
    match maps::clipped(&all, base, base + len).as_slice() {
        [m] => {
            check_eq!(c, (m.start, m.end), (base, base + len), "area range");
        }
        other => c.fail(format!(
            "expected one mapping, found {} pieces",
            other.len()
        )),
    };
    if !c.passed() {
        c.finish();
    }
    for (off, n) in written(ps) {
        // SAFETY: inside the area, checked mapped.
        if let Err(m) = pattern::verify(unsafe { pattern::words(base + off, n) }, SEED) {
            c.fail(format!("written pages at +{off:#x}: {m}"));
        }
    }
    for off in [
        ps,
        GIB,
        4 * GIB + 32 * ps,
        8 * GIB,
        8 * GIB + 2 * ps,
        15 * GIB,
    ] {
        // SAFETY: as above; reading an unwritten page maps the zero page.
        if let Err(m) = pattern::verify_zero(unsafe { pattern::words(base + off, ps) }) {
            c.fail(format!("unwritten page at +{off:#x}: {m}"));
        }
    }
    c.finish();
}
