//! maps02: madvise state of anonymous areas survives.
//!
//! Eight areas of 8 private anonymous pages, apart from each other, each
//! given one advice: `MADV_DONTFORK` (`dc`), `MADV_DONTDUMP` (`dd`),
//! `MADV_WIPEONFORK` (`wf`), `MADV_HUGEPAGE` (`hg`), `MADV_NOHUGEPAGE`
//! (`nh`), `MADV_RANDOM` (`rr`), `MADV_SEQUENTIAL` (`sr`) and, where the
//! kernel has KSM, `MADV_MERGEABLE` (`mg`); each holds a pattern.
//!
//! After restore each area must show the same `VmFlags` as before (the
//! advice flag included) and its pattern. Then the advice must act: a child
//! forked now must not have the `dc` area at all, must read zeroes in the
//! `wf` area, and must see the pattern everywhere else.

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, fail, maps, mem, pattern, Checker};

const PAGES: usize = 8;
const SEED: u64 = 0xad71_0001;

/// Flags that legitimately change across a restore (see engine::inspect).
const IGNORED: &[&str] = &["ac", "sd", "um", "uw", "ui"];

struct Area {
    flag: &'static str,
    advice: libc::c_int,
    base: usize,
    before: Vec<String>,
}

fn flags(start: usize) -> Result<Vec<String>, String> {
    let mut f = maps::vmflags(start)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no mapping at {start:#x}"))?;
    f.retain(|x| !IGNORED.contains(&x.as_str()));
    f.sort();
    Ok(f)
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let advice = [
        ("dc", libc::MADV_DONTFORK),
        ("dd", libc::MADV_DONTDUMP),
        ("wf", libc::MADV_WIPEONFORK),
        ("hg", libc::MADV_HUGEPAGE),
        ("nh", libc::MADV_NOHUGEPAGE),
        ("rr", libc::MADV_RANDOM),
        ("sr", libc::MADV_SEQUENTIAL),
        ("mg", libc::MADV_MERGEABLE),
    ];
    let stride = (PAGES + 1) * ps;
    let all = mem::mmap_anon(advice.len() * stride, libc::PROT_READ | libc::PROT_WRITE)
        .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    let mut areas = Vec::new();
    for (i, &(flag, adv)) in advice.iter().enumerate() {
        let base = all + i * stride;
        // A hole after each area keeps them apart.
        mem::munmap(base + PAGES * ps, ps).unwrap_or_else(|e| fail(format!("munmap: {e}")));
        // SAFETY: the area's own pages, mapped above.
        pattern::fill(unsafe { pattern::words_mut(base, PAGES * ps) }, SEED);
        // SAFETY: advice on a range this program owns.
        if unsafe { libc::madvise(base as *mut libc::c_void, PAGES * ps, adv) } != 0 {
            if flag == "mg" {
                // No KSM in this kernel.
                continue;
            }
            fail(format!("madvise {flag}: {}", zdtmtst::last_err()));
        }
        let before = flags(base).unwrap_or_else(|e| fail(e));
        if !before.iter().any(|f| f == flag) {
            fail(format!("madvise did not set {flag}: {before:?}"));
        }
        areas.push(Area {
            flag,
            advice: adv,
            base,
            before,
        });
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for a in &areas {
        match flags(a.base) {
            Ok(now) => {
                check!(
                    c,
                    now == a.before,
                    "area {} at {:#x}: VmFlags {} before, {} now",
                    a.flag,
                    a.base,
                    a.before.join(" "),
                    now.join(" ")
                );
            }
            Err(e) => c.fail(format!("area {}: {e}", a.flag)),
        }
        // SAFETY: the area checked mapped above.
        if let Err(m) = pattern::verify(unsafe { pattern::words(a.base, PAGES * ps) }, SEED) {
            c.fail(format!("area {}: {m}", a.flag));
        }
    }
    if c.passed() {
        let bases: Vec<(&'static str, usize, libc::c_int)> =
            areas.iter().map(|a| (a.flag, a.base, a.advice)).collect();
        let child = tree::fork_then(Spawn::Fork, move || {
            let maps = match maps::read_self() {
                Ok(m) => m,
                Err(_) => return 20,
            };
            for (i, &(flag, base, _)) in bases.iter().enumerate() {
                let mapped = maps::find(&maps, base).is_some();
                let code = 21 + i as i32 * 3;
                match flag {
                    "dc" if mapped => return code,
                    "dc" => {}
                    "wf" => {
                        // SAFETY: the wf area is mapped in the child (zero-filled).
                        let w = unsafe { pattern::words(base, PAGES * ps) };
                        if !mapped || pattern::verify_zero(w).is_err() {
                            return code + 1;
                        }
                    }
                    _ => {
                        // SAFETY: every other area is inherited by the child.
                        let w = unsafe { pattern::words(base, PAGES * ps) };
                        if !mapped || pattern::verify(w, SEED).is_err() {
                            return code + 2;
                        }
                    }
                }
            }
            0
        });
        match child.and_then(|pid| tree::wait_pid(pid, 0)) {
            Ok(0) => {}
            Ok(st) => {
                let code = libc::WEXITSTATUS(st);
                let which = areas
                    .get(((code - 21) / 3).max(0) as usize)
                    .map_or("?", |a| a.flag);
                c.fail(format!(
                    "a child forked after restore sees area {which} wrongly ({}; 0 = dontfork area present, 1 = wipeonfork area not zero, 2 = area missing or changed)",
                    (code - 21) % 3
                ));
            }
            Err(e) => c.fail(format!("fork after restore: {e}")),
        }
    }
    c.finish();
}
