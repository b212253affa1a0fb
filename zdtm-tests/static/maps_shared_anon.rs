//! maps_shared_anon: a shared anonymous mapping survives.
//!
//! Maps 16 pages `MAP_SHARED | MAP_ANONYMOUS` (shmem behind the scenes),
//! writes an address-derived pattern into the first 8 and leaves the rest
//! untouched. After restore the mapping must still be shared (`rw-s`,
//! backed by `/dev/zero (deleted)`), cover the same range, hold the pattern
//! in the written pages and zeros in the others, and writes must still go
//! to shared memory (visible through a second mapping of the same object
//! made with `mremap`). The inode number of the shmem object is not compared:
//! a restore creates the object anew.

use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const SEED: u64 = 0x5a4e_0001;
const PAGES: usize = 16;
const WRITTEN: usize = 8;

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let len = PAGES * ps;
    let base = mem::mmap(
        0,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        -1,
        0,
    )
    .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // SAFETY: the first pages of the shared mapping above, ours alone.
    pattern::fill(unsafe { pattern::words_mut(base, WRITTEN * ps) }, SEED);
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
    // The shmem object is created anew by a restore: its inode number is the
    // one thing that may change.
    let anon = |m: &[maps::MapEntry]| -> Vec<maps::MapEntry> {
        m.iter()
            .map(|e| maps::MapEntry {
                inode: 0,
                ..e.clone()
            })
            .collect()
    };
    for d in maps::diff_range(&anon(&before), &anon(&now)) {
        c.fail(d);
    }
    match now.as_slice() {
        [m] => {
            check_eq!(c, (m.start, m.end), (base, base + len), "mapping range");
            check_eq!(c, m.perms.as_str(), "rw-s", "mapping perms");
            check!(
                c,
                m.path.starts_with("/dev/zero") || m.path.starts_with("/SYSV"),
                "mapping is backed by {:?}, not shared anonymous memory",
                m.path
            );
        }
        other => c.fail(format!(
            "expected one mapping over the range, found {other:?}"
        )),
    }
    if !c.passed() {
        c.finish();
    }
    for p in 0..PAGES {
        // SAFETY: the mapping was checked above to be in place, rw-s.
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
    // A second view of the same shmem object: mremap with old_size 0
    // duplicates a shared mapping.
    // SAFETY: mremap with old_size 0 and MREMAP_MAYMOVE creates a new
    // mapping of the same pages and leaves the old one alone.
    let alias = unsafe { libc::mremap(base as *mut libc::c_void, 0, len, libc::MREMAP_MAYMOVE) };
    if alias == libc::MAP_FAILED {
        c.fail(format!("mremap alias: {}", zdtmtst::last_err()));
    } else {
        let alias = alias as usize;
        let probe = 0x0123_4567_89ab_cdefu64;
        // SAFETY: both addresses are inside live read-write mappings of
        // the same shared object; volatile so neither access is elided.
        let seen = unsafe {
            std::ptr::write_volatile((base + WRITTEN * ps) as *mut u64, probe);
            std::ptr::read_volatile((alias + WRITTEN * ps) as *const u64)
        };
        check!(
            c,
            seen == probe,
            "a write to {:#x} is not visible through the alias {:#x}: the mapping is not shared",
            base + WRITTEN * ps,
            alias + WRITTEN * ps
        );
    }
    c.finish();
}
