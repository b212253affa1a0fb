//! maps_thp: areas backed by transparent huge pages are backed by them again.
//!
//! Two 2 MiB-aligned private anonymous areas full of a pattern: A (8 MiB)
//! with `MADV_HUGEPAGE`, whose pages are huge from the first touch, and B
//! (4 MiB) without any advice, collapsed into huge pages with `MADV_COLLAPSE`
//! (Linux 6.1). Both show `AnonHugePages` in smaps.
//!
//! After restore both must still be backed by huge pages (as many as before),
//! keep their advice flags (A `hg`, B none) and their contents. A restore
//! that writes the pages one by one into B gets small pages.

use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const HUGE: usize = 2 << 20;
const SEED: u64 = 0x7409_0001;
const MADV_COLLAPSE: libc::c_int = 25;

/// AnonHugePages in kB of the VMA starting at `start`.
fn anon_huge(start: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let head = format!("{start:x}-");
    let mut inside = false;
    for line in text.lines() {
        if line.contains('-') && line.starts_with(|c: char| c.is_ascii_hexdigit()) {
            inside = line.starts_with(&head);
        } else if inside {
            if let Some(v) = line.strip_prefix("AnonHugePages:") {
                return v.split_whitespace().next()?.parse().ok();
            }
        }
    }
    None
}

/// A `len`-byte area aligned to a huge page.
fn aligned(len: usize) -> usize {
    let raw = mem::mmap_anon(len + HUGE, libc::PROT_READ | libc::PROT_WRITE)
        .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    let start = raw.next_multiple_of(HUGE);
    if start > raw {
        mem::munmap(raw, start - raw).unwrap_or_else(|e| fail(format!("munmap: {e}")));
    }
    mem::munmap(start + len, raw + len + HUGE - start - len)
        .unwrap_or_else(|e| fail(format!("munmap: {e}")));
    start
}

fn main() {
    zdtmtst::start();
    let a = aligned(4 * HUGE);
    // SAFETY: advice on an area of this program.
    if unsafe { libc::madvise(a as *mut libc::c_void, 4 * HUGE, libc::MADV_HUGEPAGE) } != 0 {
        fail(format!("MADV_HUGEPAGE: {}", zdtmtst::last_err()));
    }
    // SAFETY: the area mapped above.
    pattern::fill(unsafe { pattern::words_mut(a, 4 * HUGE) }, SEED);
    let b = aligned(2 * HUGE);
    // SAFETY: as above.
    pattern::fill(unsafe { pattern::words_mut(b, 2 * HUGE) }, SEED + 1);
    // SAFETY: advice on an area of this program.
    if unsafe { libc::madvise(b as *mut libc::c_void, 2 * HUGE, MADV_COLLAPSE) } != 0 {
        fail(format!("MADV_COLLAPSE: {}", zdtmtst::last_err()));
    }
    let (ha, hb) = (anon_huge(a).unwrap_or(0), anon_huge(b).unwrap_or(0));
    if ha == 0 || hb == 0 {
        fail(format!(
            "no transparent huge pages to test (AnonHugePages {ha} kB and {hb} kB): THP disabled?"
        ));
    }
    let fa = maps::vmflags(a).ok().flatten().unwrap_or_default();
    let fb = maps::vmflags(b).ok().flatten().unwrap_or_default();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    check_eq!(
        c,
        anon_huge(a),
        Some(ha),
        "AnonHugePages (kB) of the MADV_HUGEPAGE area"
    );
    check_eq!(
        c,
        anon_huge(b),
        Some(hb),
        "AnonHugePages (kB) of the collapsed area"
    );
    let now_a = maps::vmflags(a).ok().flatten().unwrap_or_default();
    let now_b = maps::vmflags(b).ok().flatten().unwrap_or_default();
    check!(
        c,
        now_a.iter().any(|f| f == "hg"),
        "area A lost hg: {now_a:?} (was {fa:?})"
    );
    check!(
        c,
        !now_b.iter().any(|f| f == "hg"),
        "area B gained hg: {now_b:?} (was {fb:?})"
    );
    if c.passed() {
        // SAFETY: the areas, checked mapped through their smaps entries.
        unsafe {
            if let Err(m) = pattern::verify(pattern::words(a, 4 * HUGE), SEED) {
                c.fail(format!("area A {m}"));
            }
            if let Err(m) = pattern::verify(pattern::words(b, 2 * HUGE), SEED + 1) {
                c.fail(format!("area B {m}"));
            }
        }
    }
    c.finish();
}
