//! cow01: private memory two siblings share copy-on-write, which their
//! parent no longer holds, stays shared.
//!
//! The root forks A. A maps two private anonymous areas, X (8192 pages,
//! 32 MiB) and Y (2048 pages), fills each with a pattern and forks B and C,
//! which leave both untouched. Then A unmaps X and writes its own pattern
//! over all of Y. So B and C share one physical copy of X and of Y that
//! no other process maps: in each of them Pss is half of Rss for both
//! areas. A restore that writes each process's memory separately makes them
//! equal; one that keeps what A carried for them in A leaves X mapped in A.
//!
//! After restore A checks that X is gone and Y holds its own pattern, then
//! orders B to check itself, then C. Each checks the contents and the
//! footprint of both areas; B then writes one page of X, which C (checked
//! after it) must not see: the sharing is copy-on-write, not shared memory.
//! A checks the same footprints once before the dump too (after its own
//! unmap and write), so the test measures what it means to.

use std::time::Duration;

use zdtmtst::tree::{self, Member, Spawn, Up, ORDER_CHECK};
use zdtmtst::{check, fail, maps, mem, pattern, Checker};

const X_PAGES: usize = 8192;
const Y_PAGES: usize = 2048;
const SEED_X: u64 = 0xc0a1_0001;
const SEED_Y: u64 = 0xc0a1_0002;
const SEED_A: u64 = 0xc0a1_0003;
const SEED_B: u64 = 0xc0a1_0004;
/// Largest Pss/Rss of an area B or C may show with the sharing intact
/// (0.5 when only the two of them map it).
const MAX_RATIO: f64 = 0.6;
/// The page of X that B writes after checking itself.
const B_PAGE: usize = 100;
/// How long A waits for a sibling's verdict (checking 40 MiB of patterns).
const ANSWER: Duration = Duration::from_secs(30);

/// Where the areas are.
#[derive(Clone, Copy)]
struct Areas {
    x: usize,
    y: usize,
}

/// Rss and Pss in kB of the VMA starting at `start`, from /proc/self/smaps.
fn footprint(start: usize) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string("/proc/self/smaps").map_err(|e| e.to_string())?;
    let head = format!("{start:x}-");
    let mut inside = false;
    let (mut rss, mut pss) = (None, None);
    for line in text.lines() {
        if line.starts_with(|c: char| c.is_ascii_hexdigit()) && line.contains('-') {
            if inside {
                break;
            }
            inside = line.starts_with(&head);
            continue;
        }
        if !inside {
            continue;
        }
        let value = |l: &str| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        };
        if line.starts_with("Rss:") {
            rss = value(line);
        } else if line.starts_with("Pss:") {
            pss = value(line);
        }
    }
    match (rss, pss) {
        (Some(r), Some(p)) => Ok((r, p)),
        _ => Err(format!("no VMA at {start:#x} in smaps")),
    }
}

fn check_shared(c: &mut Checker, base: usize, pages: usize, who: &str, name: &str) {
    match footprint(base) {
        Ok((rss, pss)) => {
            let ratio = pss as f64 / rss.max(1) as f64;
            check!(
                c,
                rss >= (pages * 4) as u64 && ratio <= MAX_RATIO,
                "{who}: area {name} at {base:#x}: Rss {rss} kB, Pss {pss} kB (Pss/Rss {ratio:.2}, at most {MAX_RATIO} when shared copy-on-write with the sibling)"
            );
        }
        Err(e) => c.fail(format!("{who}: area {name}: {e}")),
    }
}

/// Checks `pages` pages at `base` hold `seed`'s pattern, except page `other.0` which may
/// hold `other.1`'s.
fn check_contents(
    c: &mut Checker,
    base: usize,
    pages: usize,
    seed: u64,
    other: Option<(usize, u64)>,
    what: &str,
) {
    let ps = zdtmtst::page_size();
    for p in 0..pages {
        // SAFETY: a page of the area, mapped for the life of the process.
        let words = unsafe { pattern::words(base + p * ps, ps) };
        let ok = pattern::verify(words, seed).or_else(|e| match other {
            Some((page, s)) if page == p => pattern::verify(words, s),
            _ => Err(e),
        });
        if let Err(m) = ok {
            c.fail(format!("{what}: page {p} {m}"));
            return;
        }
    }
}

/// B's and C's checks; B (`writer`) then writes its page of X.
fn sibling_check(a: Areas, who: &str, writer: bool) -> Checker {
    let mut c = Checker::new();
    let ps = zdtmtst::page_size();
    let own = writer.then_some((B_PAGE, SEED_B));
    check_contents(&mut c, a.x, X_PAGES, SEED_X, own, &format!("{who}: X"));
    check_contents(&mut c, a.y, Y_PAGES, SEED_Y, None, &format!("{who}: Y"));
    check_shared(&mut c, a.x, X_PAGES, who, "X");
    check_shared(&mut c, a.y, Y_PAGES, who, "Y");
    if writer && c.passed() {
        // SAFETY: a page of B's copy of X; copied on this write.
        pattern::fill(unsafe { pattern::words_mut(a.x + B_PAGE * ps, ps) }, SEED_B);
    }
    c
}

fn body_sibling(up: Up, a: Areas, who: &'static str, writer: bool) -> i32 {
    if up.ready().is_err() {
        return 11;
    }
    tree::serve(&up, || sibling_check(a, who, writer))
}

/// Orders each sibling to check itself in turn, so that C checks after B wrote.
fn check_siblings(kids: &[Member], c: &mut Checker) {
    for m in kids {
        match m.order(ORDER_CHECK) {
            Ok(()) => m.collect(c, ANSWER),
            Err(e) => c.fail(tree::chain(&e)),
        }
    }
}

/// A's own checks: X gone, Y its own.
fn a_check(a: Areas) -> Checker {
    let mut c = Checker::new();
    let ps = zdtmtst::page_size();
    match maps::read_self() {
        Ok(m) => {
            let left = maps::overlapping(&m, a.x, a.x + X_PAGES * ps);
            check!(
                c,
                left.is_empty(),
                "A: area X at {:#x} was unmapped but is mapped: {left:?}",
                a.x
            );
        }
        Err(e) => c.fail(format!("A: maps: {e}")),
    }
    check_contents(&mut c, a.y, Y_PAGES, SEED_A, None, "A: Y");
    c
}

/// Maps `pages` private anonymous pages with an unmapped page on both sides,
/// so the area is a VMA of its own, and fills it with `seed`'s pattern.
fn map_area(pages: usize, seed: u64) -> std::io::Result<usize> {
    let ps = zdtmtst::page_size();
    let all = mem::mmap_anon((pages + 2) * ps, libc::PROT_READ | libc::PROT_WRITE)?;
    mem::munmap(all, ps)?;
    mem::munmap(all + (pages + 1) * ps, ps)?;
    let base = all + ps;
    // No huge pages: their sharing is accounted differently.
    // SAFETY: madvise on the area just mapped.
    unsafe { libc::madvise(base as *mut libc::c_void, pages * ps, libc::MADV_NOHUGEPAGE) };
    // SAFETY: the area just mapped, ours alone.
    pattern::fill(unsafe { pattern::words_mut(base, pages * ps) }, seed);
    Ok(base)
}

fn body_a(up: Up) -> i32 {
    let ps = zdtmtst::page_size();
    let (Ok(x), Ok(y)) = (map_area(X_PAGES, SEED_X), map_area(Y_PAGES, SEED_Y)) else {
        return 12;
    };
    let a = Areas { x, y };
    let mut kids = Vec::new();
    for (who, writer) in [("B", true), ("C", false)] {
        match tree::member(who, Spawn::Fork, &[], move |up| {
            body_sibling(up, a, who, writer)
        }) {
            Ok(m) => kids.push(m),
            Err(_) => return 13,
        }
    }
    if tree::await_all_ready(&mut kids).is_err() {
        return 14;
    }
    // The siblings are the only holders of X, and of the original Y.
    if mem::munmap(a.x, X_PAGES * ps).is_err() {
        return 15;
    }
    // SAFETY: A's own copy of Y.
    pattern::fill(unsafe { pattern::words_mut(a.y, Y_PAGES * ps) }, SEED_A);
    let mut setup = a_check(a);
    check_siblings(&kids, &mut setup);
    let sent = match setup.summary() {
        None => up.ready(),
        Some(s) => up.send(&format!("FAIL: setup: {s}")),
    };
    if sent.is_err() || !setup.passed() {
        return 16;
    }
    let code = tree::serve(&up, || {
        let mut c = a_check(a);
        check_siblings(&kids, &mut c);
        c
    });
    let mut c = Checker::new();
    tree::finish(kids, &mut c);
    if c.passed() {
        code
    } else {
        17
    }
}

fn main() {
    zdtmtst::start();
    let a =
        tree::member("A", Spawn::Fork, &[], body_a).unwrap_or_else(|e| fail(format!("fork: {e}")));
    let mut members = vec![a];
    for m in members.iter_mut() {
        if let Err(e) = m.await_ready(ANSWER) {
            fail(tree::chain(&e));
        }
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for m in &members {
        match m.order(ORDER_CHECK) {
            Ok(()) => m.collect(&mut c, 2 * ANSWER),
            Err(e) => c.fail(tree::chain(&e)),
        }
    }
    tree::finish(members, &mut c);
    c.finish();
}
