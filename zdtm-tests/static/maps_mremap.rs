//! maps_mremap: areas moved, grown and shrunk by `mremap` survive as they are.
//!
//! - E: 8 pages; A: 8 pages mapped elsewhere, then moved by `mremap` to end
//!   right where E ends. A moved area keeps the page offset of where it was
//!   born, so the kernel does not merge it with E: maps shows two areas.
//! - B: 4 pages grown to 8 by `mremap` (in place or moved).
//! - C: 8 pages shrunk to 3.
//!
//! After restore: E and A are still two mappings (a restore that maps A
//! afresh at its place lets the kernel merge it with E), each area has its
//! range and contents (B's new pages zero), and the areas are private:
//! writes land where they should.

use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const SEED: u64 = 0x3e3a_0001;

fn remap(old: usize, old_len: usize, new_len: usize, flags: libc::c_int, to: usize) -> usize {
    // SAFETY: mremap of a mapping this program made and holds no reference into.
    let r = unsafe {
        libc::mremap(
            old as *mut libc::c_void,
            old_len,
            new_len,
            flags,
            to as *mut libc::c_void,
        )
    };
    if r == libc::MAP_FAILED {
        fail(format!("mremap {old:#x}: {}", zdtmtst::last_err()));
    }
    r as usize
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // Room for E and A side by side, then E in its first half.
    let room = mem::mmap_anon(16 * ps, rw).unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // A is born elsewhere (before the hole exists, so not in it).
    let a0 = mem::mmap_anon(8 * ps, rw).unwrap_or_else(|e| fail(format!("mmap: {e}")));
    mem::munmap(room + 8 * ps, 8 * ps).unwrap_or_else(|e| fail(format!("munmap: {e}")));
    let e = room;
    // SAFETY: fresh areas of this program.
    unsafe {
        pattern::fill(pattern::words_mut(e, 8 * ps), SEED);
        pattern::fill(pattern::words_mut(a0, 8 * ps), SEED + 1);
    }
    let a = remap(
        a0,
        8 * ps,
        8 * ps,
        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
        e + 8 * ps,
    );
    let b0 = mem::mmap_anon(4 * ps, rw).unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // SAFETY: as above.
    unsafe { pattern::fill(pattern::words_mut(b0, 4 * ps), SEED + 2) };
    let b = remap(b0, 4 * ps, 8 * ps, libc::MREMAP_MAYMOVE, 0);
    let c0 = mem::mmap_anon(8 * ps, rw).unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // SAFETY: as above.
    unsafe { pattern::fill(pattern::words_mut(c0, 8 * ps), SEED + 3) };
    let c_area = remap(c0, 8 * ps, 3 * ps, 0, 0);
    let before = maps::read_self().unwrap_or_else(|e| fail(e));
    let two = maps::clipped(&before, e, e + 16 * ps);
    if two.len() != 2 {
        fail(format!("E and the moved A merged before the dump: {two:?}"));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let now = maps::read_self().unwrap_or_else(|e| fail(e));
    let got = maps::clipped(&now, e, e + 16 * ps);
    check_eq!(
        c,
        got.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>(),
        vec![(e, e + 8 * ps), (a, a + 8 * ps)],
        "E and the area moved next to it"
    );
    for (what, at, len) in [("B", b, 8 * ps), ("C", c_area, 3 * ps)] {
        match maps::find(&now, at) {
            Some(m) => {
                check_eq!(c, (m.start, m.end), (at, at + len), "{what} range");
            }
            None => c.fail(format!("{what} at {at:#x} is gone")),
        };
    }
    if !c.passed() {
        c.finish();
    }
    // SAFETY: every range below was checked mapped.
    unsafe {
        for (what, r) in [
            ("E", pattern::verify(pattern::words(e, 8 * ps), SEED)),
            // Moved areas hold the pattern of where they were written.
            (
                "A",
                pattern::verify_with(pattern::words(a, 8 * ps), |x| {
                    pattern::word(x - a + a0, SEED + 1)
                }),
            ),
            (
                "B",
                pattern::verify_with(pattern::words(b, 4 * ps), |x| {
                    pattern::word(x - b + b0, SEED + 2)
                }),
            ),
            (
                "B's new pages",
                pattern::verify_zero(pattern::words(b + 4 * ps, 4 * ps)),
            ),
            (
                "C",
                pattern::verify(pattern::words(c_area, 3 * ps), SEED + 3),
            ),
        ] {
            if let Err(m) = r {
                c.fail(format!("{what}: {m}"));
            }
        }
    }
    // A write to A lands in A only.
    // SAFETY: inside A, checked mapped.
    unsafe { std::ptr::write_volatile(a as *mut u64, 7) };
    // SAFETY: inside E, checked mapped.
    let e_last = unsafe { std::ptr::read_volatile((e + 8 * ps - 8) as *const u64) };
    check!(
        c,
        e_last == pattern::word(e + 8 * ps - 8, SEED),
        "a write to A changed E"
    );
    c.finish();
}
