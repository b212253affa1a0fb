//! maps_stack: a deep, grown main-thread stack survives.
//!
//! Recurses 400 frames deep, each frame holding a 1 KiB array filled with a
//! pattern derived from its address and depth, which grows the `[stack]`
//! mapping by about half a MiB. At the bottom it records the `[stack]`
//! mapping and waits for SIGTERM there. After restore the `[stack]` mapping
//! must be unchanged (range, protection, still growing down), every frame
//! must still hold its pattern as the recursion unwinds (and return
//! addresses must work, or the unwinding crashes), and the stack must still
//! grow: a deeper recursion afterwards must succeed.

use std::hint::black_box;

use zdtmtst::{check, check_eq, fail, maps, pattern, Checker};

const DEPTH: usize = 400;
const FRAME_WORDS: usize = 128;
const SEED: u64 = 0x57ac_0000;
const PREGROW: usize = 64 << 10;

fn stack_entry() -> Result<maps::MapEntry, String> {
    let m = maps::read_self().map_err(|e| e.to_string())?;
    maps::find_named(&m, "[stack]")
        .cloned()
        .ok_or_else(|| "no [stack] mapping".to_string())
}

/// Touches `PREGROW` bytes of stack below the caller, so that what runs at
/// the bottom afterwards (waiting, reading maps) needs no further growth
/// and the `[stack]` mapping recorded there stays put.
#[inline(never)]
fn pregrow() {
    let mut pad = [0u8; PREGROW];
    black_box(&mut pad);
}

fn at_bottom(c: &mut Checker) {
    pregrow();
    let before = stack_entry().unwrap_or_else(|e| fail(e));
    let sp = &before as *const maps::MapEntry as usize;
    if !before.contains(sp) {
        fail(format!("stack pointer {sp:#x} outside [stack] {before}"));
    }
    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();
    if let Some(now) = c.ok("finding [stack]", stack_entry()) {
        check_eq!(c, now, before, "[stack] mapping");
        if let Some(flags) = c.ok("reading smaps", maps::vmflags(now.start)) {
            check!(
                c,
                flags.as_ref().is_some_and(|f| f.iter().any(|x| x == "gd")),
                "[stack] VmFlags {flags:?} lack gd (grows down)"
            );
        }
    }
}

#[inline(never)]
fn descend(depth: usize, max: usize, c: &mut Checker, bottom: &mut dyn FnMut(&mut Checker)) {
    let seed = SEED ^ depth as u64;
    let mut frame = [0u64; FRAME_WORDS];
    pattern::fill(&mut frame, seed);
    black_box(&mut frame);
    if depth == max {
        bottom(c);
    } else {
        descend(depth + 1, max, c, bottom);
    }
    black_box(&mut frame);
    if let Err(m) = pattern::verify(&frame, seed) {
        c.fail(format!("frame {depth} {m}"));
    }
}

fn main() {
    zdtmtst::start();
    let mut c = Checker::new();
    descend(0, DEPTH, &mut c, &mut at_bottom);
    if c.passed() {
        // Grow past the depth reached before the dump.
        let mut reached = false;
        descend(0, DEPTH * 3, &mut c, &mut |_| reached = true);
        check!(
            c,
            reached,
            "deeper recursion after restore did not reach the bottom"
        );
    }
    c.finish();
}
