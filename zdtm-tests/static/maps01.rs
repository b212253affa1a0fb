//! maps01: shared anonymous memory inherited across fork stays one object.
//!
//! The root maps 64 pages `MAP_SHARED | MAP_ANONYMOUS`, writes an
//! address-derived pattern into the first 32, and forks two members that
//! inherit the mapping; member 1 then writes its own pattern into pages
//! 40..44, which the root and member 0 must see too. Page 63 is written by
//! nobody.
//!
//! After restore every process checks the mapping (same range, `rw-s`,
//! `/dev/zero (deleted)`) and its contents. Then the sharing itself: the
//! root writes a probe word, each member checks it sees the probe and writes
//! an answer into its own slot, and the root checks it sees both answers. A
//! restore that gives each task its own copy fails the probe.

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const SEED: u64 = 0x5a4e_0101;
const SEED_MEMBER: u64 = 0x5a4e_0102;
const PAGES: usize = 64;
const WRITTEN: usize = 32;
/// Pages written by member 1 after the fork.
const MEMBER_PAGES: std::ops::Range<usize> = 40..44;
/// Page holding the probe (word 0) and the answers (word 1 + member).
const PROBE_PAGE: usize = 50;
const PROBE: u64 = 0x0123_4567_89ab_cdef;

fn word_at(addr: usize) -> &'static std::sync::atomic::AtomicU64 {
    // SAFETY: `addr` is an aligned word inside the shared mapping, which
    // lives until the process exits; atomics make the cross-process
    // accesses well defined.
    unsafe { &*(addr as *const std::sync::atomic::AtomicU64) }
}

/// What every process checks of its own view.
fn check_view(c: &mut Checker, base: usize, who: &str) {
    let ps = zdtmtst::page_size();
    let len = PAGES * ps;
    match maps::read_self() {
        Ok(all) => match maps::clipped(&all, base, base + len).as_slice() {
            [m] => {
                check_eq!(
                    c,
                    (m.start, m.end),
                    (base, base + len),
                    "{who}: mapping range"
                );
                check_eq!(c, m.perms.as_str(), "rw-s", "{who}: mapping perms");
                check_eq!(
                    c,
                    m.path.as_str(),
                    "/dev/zero (deleted)",
                    "{who}: mapping backing"
                );
            }
            other => c.fail(format!("{who}: expected one mapping, found {other:?}")),
        },
        Err(e) => c.fail(format!("{who}: reading maps: {e}")),
    }
    if !c.passed() {
        return;
    }
    for p in 0..WRITTEN {
        // SAFETY: inside the mapping checked above.
        if let Err(m) = pattern::verify(unsafe { pattern::words(base + p * ps, ps) }, SEED) {
            c.fail(format!("{who}: page {p} {m}"));
        }
    }
    for p in MEMBER_PAGES {
        // SAFETY: as above.
        let words = unsafe { pattern::words(base + p * ps, ps) };
        if let Err(m) = pattern::verify(words, SEED_MEMBER) {
            c.fail(format!("{who}: page {p} (written by member 1) {m}"));
        }
    }
    // SAFETY: as above.
    if let Err(m) = pattern::verify_zero(unsafe { pattern::words(base + 63 * ps, ps) }) {
        c.fail(format!("{who}: untouched page 63 {m}"));
    }
}

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
    // SAFETY: the first pages of the mapping above, not yet shared.
    pattern::fill(unsafe { pattern::words_mut(base, WRITTEN * ps) }, SEED);
    let probe = base + PROBE_PAGE * ps;

    let mut members = Vec::new();
    for k in 0..2usize {
        let m = tree::member(&format!("member {k}"), Spawn::Fork, &[], move |up| {
            if k == 1 {
                let start = base + MEMBER_PAGES.start * ps;
                let n = MEMBER_PAGES.len() * ps;
                // SAFETY: pages of the shared mapping only this member writes.
                pattern::fill(unsafe { pattern::words_mut(start, n) }, SEED_MEMBER);
            }
            if up.ready().is_err() {
                return 11;
            }
            tree::serve(&up, || {
                let mut c = Checker::new();
                let who = format!("member {k}");
                check_view(&mut c, base, &who);
                if c.passed() {
                    let seen = word_at(probe).load(std::sync::atomic::Ordering::SeqCst);
                    check!(
                        c,
                        seen == PROBE,
                        "{who}: the root's probe is not visible ({seen:#x}): the mapping is not shared"
                    );
                    word_at(probe + 8 * (1 + k)).store(
                        PROBE ^ (k as u64 + 1),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                }
                c
            })
        })
        .unwrap_or_else(|e| fail(format!("fork: {e}")));
        members.push(m);
    }
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(tree::chain(&e));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    check_view(&mut c, base, "root");
    if c.passed() {
        word_at(probe).store(PROBE, std::sync::atomic::Ordering::SeqCst);
        tree::check_all(&members, &mut c);
        for k in 0..2usize {
            let got = word_at(probe + 8 * (1 + k)).load(std::sync::atomic::Ordering::SeqCst);
            check!(
                c,
                got == PROBE ^ (k as u64 + 1),
                "root: member {k}'s answer is not visible ({got:#x}): the mapping is not shared"
            );
        }
    }
    tree::finish(members, &mut c);
    c.finish();
}
