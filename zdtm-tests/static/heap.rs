//! heap: malloc'ed memory, the program break and the allocator survive.
//!
//! Allocates blocks of many sizes with `malloc(3)`, small ones from the brk
//! heap and ones above the mmap threshold (which get their own mappings),
//! fills each with an address-derived pattern, frees every third block to
//! leave holes in the allocator's lists, and grows the break with `sbrk(2)`
//! by hand, filling that area too.
//!
//! After restore: the kernel's break (`brk(0)`, read before anything can
//! allocate) must equal the value recorded at the dump and agree with the
//! one glibc caches for `sbrk(0)`, `start_brk` must be unchanged, every
//! surviving block and the hand-grown area must hold their pattern, and the
//! allocator and the break must still work: new allocations succeed and do
//! not disturb old blocks, `free` accepts old and new blocks, and moving the
//! break with `sbrk` moves it by exactly the amount asked.

use zdtmtst::proc::{self, STAT_START_BRK};
use zdtmtst::{check, fail, pattern, Checker};

const SEED: u64 = 0x4ea9_0000;
/// Sizes cycled through; the last ones are above glibc's default mmap
/// threshold (128 KiB).
const SIZES: &[usize] = &[
    8,
    24,
    40,
    104,
    256,
    1000,
    4096,
    8200,
    65536,
    200 << 10,
    1 << 20,
    3 << 20,
];
const BLOCKS: usize = 600;
const SBRK_GROW: usize = 256 << 10;

struct Block {
    ptr: *mut u64,
    words: usize,
}

impl Block {
    fn alloc(size: usize) -> Option<Block> {
        // SAFETY: malloc has no preconditions; a null result is handled.
        let ptr = unsafe { libc::malloc(size) }.cast::<u64>();
        if ptr.is_null() {
            return None;
        }
        let words = size / 8;
        // SAFETY: `ptr` came from malloc for at least `words * 8` bytes,
        // malloc aligns to 16, and nothing else refers to the block.
        pattern::fill(unsafe { std::slice::from_raw_parts_mut(ptr, words) }, SEED);
        Some(Block { ptr, words })
    }

    fn verify(&self) -> Result<(), pattern::Mismatch> {
        // SAFETY: as in `alloc`; the block is live until `free` consumes it.
        pattern::verify(
            unsafe { std::slice::from_raw_parts(self.ptr, self.words) },
            SEED,
        )
    }

    fn free(self) {
        // SAFETY: `ptr` came from malloc and is freed exactly once, here.
        unsafe { libc::free(self.ptr.cast()) }
    }
}

fn sbrk(incr: isize) -> usize {
    // SAFETY: sbrk only moves the break; the program uses memory between
    // old and new break only after a successful grow.
    unsafe { libc::sbrk(incr) as usize }
}

/// The kernel's program break (`brk(0)` as a raw system call; glibc's
/// `sbrk(0)` only returns its cached copy).
fn kernel_brk() -> usize {
    // SAFETY: brk(0) never moves the break; it only reports it.
    unsafe { libc::syscall(libc::SYS_brk, 0) as usize }
}

fn main() {
    zdtmtst::start();

    let mut blocks = Vec::with_capacity(BLOCKS);
    for i in 0..BLOCKS {
        let size = SIZES[i % SIZES.len()] + (i % 7) * 8;
        match Block::alloc(size) {
            Some(b) => blocks.push(Some(b)),
            None => fail(format!("malloc({size}) failed")),
        }
    }
    for (i, slot) in blocks.iter_mut().enumerate() {
        if i % 3 == 1 {
            if let Some(b) = slot.take() {
                b.free();
            }
        }
    }

    let grown = sbrk(SBRK_GROW as isize);
    if grown == usize::MAX {
        fail(format!("sbrk({SBRK_GROW}): {}", zdtmtst::last_err()));
    }
    if grown % 8 != 0 {
        fail(format!("sbrk returned unaligned {grown:#x}"));
    }
    // SAFETY: [grown, grown + SBRK_GROW) was just added to the heap by the
    // successful sbrk above, belongs to nobody else and is 8-aligned.
    pattern::fill(unsafe { pattern::words_mut(grown, SBRK_GROW) }, SEED);
    let start_brk = proc::stat_u64(STAT_START_BRK).unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    // Recorded after ready() so nothing allocates between this and the dump.
    let brk_before = kernel_brk();
    zdtmtst::wait_for_sigterm();
    let brk_after = kernel_brk();

    let mut c = Checker::new();
    check!(
        c,
        brk_after == brk_before,
        "program break (brk(0)): expected {brk_before:#x}, found {brk_after:#x}"
    );
    let cached = sbrk(0);
    check!(
        c,
        cached == brk_after,
        "glibc's cached break (sbrk(0)) {cached:#x} differs from brk(0) {brk_after:#x}"
    );
    if let Some(sb) = c.ok("reading start_brk", proc::stat_u64(STAT_START_BRK)) {
        check!(
            c,
            sb == start_brk,
            "start_brk: expected {start_brk:#x}, found {sb:#x}"
        );
    }
    for (i, b) in blocks.iter().enumerate() {
        if let Some(b) = b {
            if let Err(m) = b.verify() {
                c.fail(format!(
                    "block {i} ({} bytes at {:p}) {m}",
                    b.words * 8,
                    b.ptr
                ));
            }
        }
    }
    // Touch the hand-grown area only if the break still covers it.
    if brk_after == brk_before {
        // SAFETY: the area lies below the (unchanged) break, so it is mapped.
        let area = unsafe { pattern::words(grown, SBRK_GROW) };
        if let Err(m) = pattern::verify(area, SEED) {
            c.fail(format!("sbrk-grown area {grown:#x}+{SBRK_GROW:#x} {m}"));
        }
    }
    if !c.passed() {
        c.finish();
    }

    // The allocator and the break must still work.
    let mut fresh = Vec::new();
    for i in 0..200 {
        let size = SIZES[(i * 5) % SIZES.len()] + 16;
        match Block::alloc(size) {
            Some(b) => fresh.push(b),
            None => {
                c.fail(format!("malloc({size}) after restore failed"));
                break;
            }
        }
    }
    let here = kernel_brk();
    let step = 64 << 10;
    let old = sbrk(step as isize);
    check!(
        c,
        old == here,
        "sbrk({step}) after restore returned {old:#x}, expected {here:#x}"
    );
    let now = kernel_brk();
    check!(
        c,
        now == here + step,
        "break after sbrk({step}): expected {:#x}, found {now:#x}",
        here + step
    );
    if c.passed() {
        // SAFETY: [here, here + step) was just added to the heap.
        let area = unsafe { pattern::words_mut(here, step) };
        pattern::fill(area, SEED ^ 1);
        if let Err(m) = pattern::verify(area, SEED ^ 1) {
            c.fail(format!("new brk area {m}"));
        }
        let old = sbrk(-(step as isize));
        check!(c, old == here + step, "sbrk(-{step}) returned {old:#x}");
        let now = kernel_brk();
        check!(
            c,
            now == here,
            "break after shrinking: expected {here:#x}, found {now:#x}"
        );
    }
    for (i, b) in blocks.iter().enumerate() {
        if let Some(b) = b {
            if let Err(m) = b.verify() {
                c.fail(format!("block {i} after new allocations {m}"));
            }
        }
    }
    for b in fresh.iter() {
        if let Err(m) = b.verify() {
            c.fail(format!("new block at {:p} {m}", b.ptr));
        }
    }
    for b in fresh.into_iter().chain(blocks.into_iter().flatten()) {
        b.free();
    }
    c.finish();
}
