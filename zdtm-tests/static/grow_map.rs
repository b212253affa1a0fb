//! grow_map: a `MAP_GROWSDOWN` area keeps growing down after restore.
//!
//! A 4-page `MAP_GROWSDOWN` area is placed at the top of a 16 MiB hole, and
//! grown by one page (a write just below it) before the dump. After restore
//! the area must be in place with its `gd` flag and its contents, and a write
//! one page below its start must grow it again (and not fault).

use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const PAGES: usize = 4;
const SEED: u64 = 0x960d_0001;

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let hole = 16 << 20;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // Find room with nothing below it for the area to grow into.
    let room = mem::mmap_anon(hole, libc::PROT_NONE).unwrap_or_else(|e| fail(format!("mmap: {e}")));
    mem::munmap(room, hole).unwrap_or_else(|e| fail(format!("munmap: {e}")));
    let top = room + hole - PAGES * ps;
    let base = mem::mmap(
        top,
        PAGES * ps,
        rw,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_GROWSDOWN | libc::MAP_FIXED_NOREPLACE,
        -1,
        0,
    )
    .unwrap_or_else(|e| fail(format!("mmap growsdown: {e}")));
    // Grow once before the dump.
    // SAFETY: the page below a growsdown area with free room below: the kernel grows it.
    unsafe { std::ptr::write_volatile((base - 8) as *mut u64, 1) };
    let start = base - ps;
    // SAFETY: the area, now one page larger.
    pattern::fill(unsafe { pattern::words_mut(start, (PAGES + 1) * ps) }, SEED);
    let flags = maps::vmflags(start).ok().flatten().unwrap_or_default();
    if !flags.iter().any(|f| f == "gd") {
        fail(format!("no growsdown area at {start:#x}: {flags:?}"));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let all = maps::read_self().unwrap_or_else(|e| fail(e));
    match maps::find(&all, start) {
        Some(m) => {
            check_eq!(
                c,
                (m.start, m.end),
                (start, base + PAGES * ps),
                "area range"
            );
        }
        None => c.fail(format!("no area at {start:#x}")),
    };
    let now = maps::vmflags(start).ok().flatten().unwrap_or_default();
    check!(
        c,
        now.iter().any(|f| f == "gd"),
        "area lost its gd flag: {now:?}"
    );
    if !c.passed() {
        c.finish();
    }
    // SAFETY: checked mapped above.
    if let Err(m) = pattern::verify(unsafe { pattern::words(start, (PAGES + 1) * ps) }, SEED) {
        c.fail(format!("area {m}"));
    }
    // SAFETY: the page below the growsdown area, with free room: the kernel grows it. If it
    // does not, this faults and the test dies without a PASS.
    unsafe { std::ptr::write_volatile((start - 8) as *mut u64, 2) };
    let all = maps::read_self().unwrap_or_else(|e| fail(e));
    check!(
        c,
        maps::find(&all, start - ps).is_some_and(|m| m.start == start - ps),
        "the area did not grow down to {:#x}",
        start - ps
    );
    c.finish();
}
