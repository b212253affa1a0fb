//! cow00: private memory shared copy-on-write across fork stays shared.
//!
//! The root fills 4096 private anonymous pages (16 MiB) with a pattern and
//! forks member A; A writes its own pattern into pages 0..16 and forks B
//! (which shares everything with A); then the root writes its own pattern
//! into pages 16..32. So pages 32.. are one physical copy shared by all
//! three processes, pages 0..32 are shared by A and B, and the root has 32
//! pages of its own.
//!
//! After restore each process checks the contents (the root: its pattern in
//! 16..32, the original elsewhere; A and B: theirs in 0..16, the original
//! elsewhere), then the footprint of the area from `/proc/self/smaps`: with
//! the sharing intact its Pss is about a third of its Rss in each process
//! (0.34 for the root, 0.33 for A and B); a restore that writes each
//! process's memory separately makes them equal. The same holds before the
//! dump, which the setup checks first (so the test measures what it means
//! to). Writes after restore must still be private: the root writes a page
//! and the members must not see it.

use zdtmtst::tree::{self, Member, Spawn, Up};
use zdtmtst::{check, fail, mem, pattern, Checker};

const PAGES: usize = 4096;
const SEED: u64 = 0xc0a0_0001;
const SEED_ROOT: u64 = 0xc0a0_0002;
const SEED_A: u64 = 0xc0a0_0003;
const ROOT_PAGES: std::ops::Range<usize> = 16..32;
const A_PAGES: std::ops::Range<usize> = 0..16;
/// Largest Pss/Rss of the area a process may show with the sharing intact.
const MAX_RATIO: f64 = 0.45;
const AFTER_PAGE: usize = 100;

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

fn check_footprint(c: &mut Checker, base: usize, who: &str) {
    match footprint(base) {
        Ok((rss, pss)) => {
            let ratio = pss as f64 / rss.max(1) as f64;
            check!(
                c,
                rss >= (PAGES * 4) as u64 && ratio <= MAX_RATIO,
                "{who}: area at {base:#x}: Rss {rss} kB, Pss {pss} kB (Pss/Rss {ratio:.2}, at most {MAX_RATIO} when shared copy-on-write)"
            );
        }
        Err(e) => c.fail(format!("{who}: {e}")),
    }
}

fn check_contents(c: &mut Checker, base: usize, who: &str, own: std::ops::Range<usize>, seed: u64) {
    let ps = zdtmtst::page_size();
    for p in 0..PAGES {
        let s = if own.contains(&p) { seed } else { SEED };
        // SAFETY: a page of the area, mapped for the life of the process.
        let words = unsafe { pattern::words(base + p * ps, ps) };
        if let Err(m) = pattern::verify(words, s) {
            c.fail(format!("{who}: page {p} {m}"));
            return;
        }
    }
}

/// A's and B's checks.
fn member_check(base: usize, who: &str) -> Checker {
    let mut c = Checker::new();
    let ps = zdtmtst::page_size();
    check_contents(&mut c, base, who, A_PAGES, SEED_A);
    check_footprint(&mut c, base, who);
    // The root's write after restore must not show here.
    // SAFETY: a page of the area.
    let words = unsafe { pattern::words(base + AFTER_PAGE * ps, ps) };
    check!(
        c,
        pattern::verify(words, SEED).is_ok(),
        "{who}: the root's write after restore shows here: the area is shared, not private"
    );
    c
}

fn body_b(up: Up, base: usize) -> i32 {
    if up.ready().is_err() {
        return 11;
    }
    tree::serve(&up, || member_check(base, "B"))
}

fn body_a(up: Up, base: usize) -> i32 {
    let ps = zdtmtst::page_size();
    // SAFETY: pages of A's own copy of the area.
    pattern::fill(
        unsafe { pattern::words_mut(base + A_PAGES.start * ps, A_PAGES.len() * ps) },
        SEED_A,
    );
    let b = match tree::member("B", Spawn::Fork, &[], move |up| body_b(up, base)) {
        Ok(b) => b,
        Err(_) => return 12,
    };
    let mut kids: Vec<Member> = vec![b];
    if tree::await_all_ready(&mut kids).is_err() || up.ready().is_err() {
        return 13;
    }
    let code = tree::serve(&up, || {
        let mut c = member_check(base, "A");
        tree::check_all(&kids, &mut c);
        c
    });
    let mut c = Checker::new();
    tree::finish(kids, &mut c);
    if c.passed() {
        code
    } else {
        14
    }
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let base = mem::mmap_anon(PAGES * ps, libc::PROT_READ | libc::PROT_WRITE)
        .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // No huge pages: their sharing is accounted differently.
    // SAFETY: madvise on the area just mapped.
    unsafe { libc::madvise(base as *mut libc::c_void, PAGES * ps, libc::MADV_NOHUGEPAGE) };
    // SAFETY: the area just mapped, ours alone.
    pattern::fill(unsafe { pattern::words_mut(base, PAGES * ps) }, SEED);

    let a = tree::member("A", Spawn::Fork, &[], move |up| body_a(up, base))
        .unwrap_or_else(|e| fail(format!("fork: {e}")));
    let mut members = vec![a];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(tree::chain(&e));
    }
    // SAFETY: pages of the root's copy of the area.
    pattern::fill(
        unsafe { pattern::words_mut(base + ROOT_PAGES.start * ps, ROOT_PAGES.len() * ps) },
        SEED_ROOT,
    );
    let mut setup = Checker::new();
    check_footprint(&mut setup, base, "root before the dump");
    if let Some(s) = setup.summary() {
        fail(format!("setup: {s}"));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    check_contents(&mut c, base, "root", ROOT_PAGES, SEED_ROOT);
    check_footprint(&mut c, base, "root");
    if c.passed() {
        // SAFETY: a page of the root's area; copied on this write.
        pattern::fill(
            unsafe { pattern::words_mut(base + AFTER_PAGE * ps, ps) },
            SEED_ROOT,
        );
    }
    tree::check_all(&members, &mut c);
    tree::finish(members, &mut c);
    c.finish();
}
