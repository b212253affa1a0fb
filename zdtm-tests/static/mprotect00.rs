//! mprotect00: per-page protections set with mprotect survive.
//!
//! One 8-page anonymous mapping is filled with an address-derived pattern
//! and then split by `mprotect(2)` into `r--`, `rw-`, `r-x`, `--x` and
//! `rw-` pieces; two separate mappings are made `r--` and write-only
//! (`-w-`). After restore `/proc/self/maps` must show exactly the same
//! pieces with the same protections, and (after making everything readable)
//! every page must hold its pattern.

use zdtmtst::{check_eq, fail, maps, mem, pattern, Checker};

const SEED: u64 = 0x3270_0001;
const R: libc::c_int = libc::PROT_READ;
const W: libc::c_int = libc::PROT_WRITE;
const X: libc::c_int = libc::PROT_EXEC;

/// One mapping: its pieces as (first page, pages, prot, expected perms).
struct Area {
    pieces: &'static [(usize, usize, libc::c_int, &'static str)],
}

const AREAS: &[Area] = &[
    Area {
        pieces: &[
            (0, 2, R, "r--p"),
            (2, 2, R | W, "rw-p"),
            (4, 2, R | X, "r-xp"),
            (6, 1, X, "--xp"),
            (7, 1, R | W, "rw-p"),
        ],
    },
    Area {
        pieces: &[(0, 2, R, "r--p")],
    },
    Area {
        pieces: &[(0, 3, W, "-w-p")],
    },
];

impl Area {
    fn pages(&self) -> usize {
        self.pieces.iter().map(|p| p.0 + p.1).max().unwrap_or(0)
    }
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();

    // Reserve one PROT_NONE range and carve the areas out of it, leaving a
    // PROT_NONE guard page after each, so they can never merge.
    let total: usize = AREAS.iter().map(|a| a.pages() + 1).sum();
    let reserve = mem::mmap_anon(total * ps, libc::PROT_NONE)
        .unwrap_or_else(|e| fail(format!("mmap reserve: {e}")));
    let mut bases = Vec::new();
    let mut next = reserve;
    for a in AREAS {
        let len = a.pages() * ps;
        let base = mem::mmap(
            next,
            len,
            R | W,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
        .unwrap_or_else(|e| fail(format!("mmap at {next:#x}: {e}")));
        // SAFETY: the area was just mapped read-write at `base`, which lies
        // in our own reservation; nothing else refers to it.
        pattern::fill(unsafe { pattern::words_mut(base, len) }, SEED);
        for &(first, n, prot, _) in a.pieces {
            mem::mprotect(base + first * ps, n * ps, prot)
                .unwrap_or_else(|e| fail(format!("mprotect {:#x}: {e}", base + first * ps)));
        }
        bases.push(base);
        next += (a.pages() + 1) * ps;
    }
    let span = (reserve, reserve + total * ps);
    let before = maps::read_self()
        .map(|m| maps::clipped(&m, span.0, span.1))
        .unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let Some(all) = c.ok("reading maps", maps::read_self()) else {
        c.finish();
    };
    for d in maps::diff_range(&before, &maps::clipped(&all, span.0, span.1)) {
        c.fail(d);
    }
    for (a, &base) in AREAS.iter().zip(&bases) {
        for &(first, n, _, perms) in a.pieces {
            let (s, e) = (base + first * ps, base + (first + n) * ps);
            let found: Vec<_> = maps::clipped(&all, s, e)
                .into_iter()
                .map(|m| (m.start, m.end, m.perms))
                .collect();
            check_eq!(
                c,
                found,
                vec![(s, e, perms.to_string())],
                "mappings over {s:#x}-{e:#x}"
            );
        }
    }
    if !c.passed() {
        c.finish();
    }
    for (a, &base) in AREAS.iter().zip(&bases) {
        let len = a.pages() * ps;
        if c.ok(
            "mprotect(PROT_READ) after restore",
            mem::mprotect(base, len, R),
        )
        .is_some()
        {
            // SAFETY: the area is mapped (checked above) and now readable.
            if let Err(m) = pattern::verify(unsafe { pattern::words(base, len) }, SEED) {
                c.fail(format!("area at {base:#x} {m}"));
            }
        }
    }
    c.finish();
}
