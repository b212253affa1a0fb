//! maps_anon_sparse: a huge, sparsely populated anonymous mapping survives.
//!
//! Maps 1 GiB of private anonymous read-write memory and writes an
//! address-derived pattern into every 97th page and the first and last
//! pages; the rest is never touched. After restore the touched pages must
//! hold their pattern (a page restored at another address fails), every
//! untouched page must read as zero, and `/proc/self/maps` must show the same
//! mapping(s) over the range with `rw-p`.
//!
//! Optional argument `--size-mib=N` changes the size.

use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const SEED: u64 = 0x5a5a_0001;
const STRIDE: usize = 97;

fn touched(page: usize, pages: usize) -> bool {
    page % STRIDE == 0 || page == pages - 1
}

fn main() {
    let args = zdtmtst::start();
    let mut size_mib = 1024usize;
    for a in args.extra_strings() {
        match a.strip_prefix("--size-mib=").map(str::parse) {
            Some(Ok(n)) if n > 0 => size_mib = n,
            _ => fail(format!("unknown argument {a:?}")),
        }
    }
    let ps = zdtmtst::page_size();
    let len = size_mib << 20;
    let pages = len / ps;
    let base = mem::mmap_anon(len, libc::PROT_READ | libc::PROT_WRITE)
        .unwrap_or_else(|e| fail(format!("mmap {len} bytes: {e}")));

    for p in (0..pages).filter(|&p| touched(p, pages)) {
        // SAFETY: the page lies in the mapping created above, which is
        // read-write and referenced nowhere else.
        pattern::fill(unsafe { pattern::words_mut(base + p * ps, ps) }, SEED);
    }
    let before = maps::read_self()
        .map(|m| maps::clipped(&m, base, base + len))
        .unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(all) = c.ok("reading maps", maps::read_self()) {
        let now = maps::clipped(&all, base, base + len);
        for d in maps::diff_range(&before, &now) {
            c.fail(d);
        }
        check_eq!(
            c,
            maps::find(&all, base).map(|m| (m.perms.as_str(), m.start <= base)),
            Some(("rw-p", true)),
            "mapping at {base:#x}"
        );
        check!(
            c,
            now.iter().all(|m| m.perms == "rw-p" && m.inode == 0),
            "range {base:#x}+{len:#x} is not all anonymous rw-p: {now:?}"
        );
        let covered: usize = now.iter().map(|m| m.end - m.start).sum();
        check_eq!(c, covered, len, "bytes of {base:#x}+{len:#x} still mapped");
        if covered != len {
            c.finish();
        }
    }
    let mut bad_touched = 0;
    let mut bad_zero = 0;
    for p in 0..pages {
        let addr = base + p * ps;
        // SAFETY: the range was checked above to be still mapped rw-p.
        let words = unsafe { pattern::words(addr, ps) };
        let (res, what) = if touched(p, pages) {
            (pattern::verify(words, SEED), "touched")
        } else {
            (pattern::verify_zero(words), "untouched (zero)")
        };
        if let Err(m) = res {
            if touched(p, pages) {
                bad_touched += 1;
            } else {
                bad_zero += 1;
            }
            if bad_touched + bad_zero <= 8 {
                c.fail(format!("{what} page {p} {m}"));
            }
        }
    }
    check!(
        c,
        bad_touched + bad_zero == 0,
        "{bad_touched} touched and {bad_zero} untouched pages wrong"
    );
    c.finish();
}
