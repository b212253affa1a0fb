//! maps_protnone: inaccessible (PROT_NONE) memory keeps its contents.
//!
//! Maps 8 private anonymous pages, writes an address-derived pattern into
//! pages 0..6 (page 6 and 7 stay untouched), then makes the whole range
//! `PROT_NONE`. The engine cannot read such pages from inside the task and
//! must still save them. After restore `/proc/self/maps` must show the range
//! as `---p`; after `mprotect(PROT_READ)` the written pages must hold their
//! pattern and the untouched ones zero.

use zdtmtst::{check_eq, fail, maps, mem, pattern, Checker};

const SEED: u64 = 0x9e07_0001;
const PAGES: usize = 8;
const WRITTEN: usize = 6;

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let len = PAGES * ps;
    let base = mem::mmap_anon(len, libc::PROT_READ | libc::PROT_WRITE)
        .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // SAFETY: the first WRITTEN pages lie in the read-write mapping above,
    // which nothing else references.
    pattern::fill(unsafe { pattern::words_mut(base, WRITTEN * ps) }, SEED);
    mem::mprotect(base, len, libc::PROT_NONE).unwrap_or_else(|e| fail(format!("mprotect: {e}")));
    let before = maps::read_self()
        .map(|m| maps::clipped(&m, base, base + len))
        .unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let Some(all) = c.ok("reading maps", maps::read_self()) else {
        c.finish();
    };
    let now = maps::clipped(&all, base, base + len);
    for d in maps::diff_range(&before, &now) {
        c.fail(d);
    }
    let summary: Vec<_> = now
        .iter()
        .map(|m| (m.start, m.end, m.perms.as_str()))
        .collect();
    check_eq!(
        c,
        summary,
        vec![(base, base + len, "---p")],
        "mappings over {base:#x}+{len:#x}"
    );
    if !c.passed() {
        c.finish();
    }
    if c.ok(
        "mprotect(PROT_READ) after restore",
        mem::mprotect(base, len, libc::PROT_READ),
    )
    .is_some()
    {
        for p in 0..PAGES {
            // SAFETY: the range is mapped and now readable.
            let words = unsafe { pattern::words(base + p * ps, ps) };
            let res = if p < WRITTEN {
                pattern::verify(words, SEED)
            } else {
                pattern::verify_zero(words)
            };
            if let Err(m) = res {
                c.fail(format!("page {p} {m}"));
            }
        }
    }
    c.finish();
}
