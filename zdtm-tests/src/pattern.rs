//! Memory patterns derived from the address they are stored at.
//!
//! Every 8-byte word holds a hash of its own address and a seed, so a page
//! restored at the wrong address, a page from another mapping, a stale page
//! or a zero page all fail verification, and the report names the address,
//! the expected word and the word found.

use std::fmt;

/// A word that does not hold the expected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Address of the first differing word.
    pub addr: usize,
    /// What should be there.
    pub expected: u64,
    /// What is there.
    pub found: u64,
    /// How many words of the range differ.
    pub count: usize,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {:#x}: expected {:#018x}, found {:#018x} ({} word(s) differ)",
            self.addr, self.expected, self.found, self.count
        )
    }
}

/// The pattern word for address `addr` (splitmix64 of `addr ^ seed`).
pub fn word(addr: usize, seed: u64) -> u64 {
    let mut z = (addr as u64 ^ seed).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `words` with the pattern of their own addresses.
pub fn fill(words: &mut [u64], seed: u64) {
    for w in words.iter_mut() {
        let addr = w as *mut u64 as usize;
        // SAFETY: `w` is a valid, aligned, exclusive reference. The write is
        // volatile so it is not elided for memory the compiler cannot see
        // being read again (it is read by the kernel and after restore).
        unsafe { std::ptr::write_volatile(w, word(addr, seed)) };
    }
}

/// Checks that `words` hold the pattern of their own addresses.
pub fn verify(words: &[u64], seed: u64) -> Result<(), Mismatch> {
    verify_with(words, |addr| word(addr, seed))
}

/// Checks that `words` are all zero.
pub fn verify_zero(words: &[u64]) -> Result<(), Mismatch> {
    verify_with(words, |_| 0)
}

/// Checks `words` against `expected(address)`.
pub fn verify_with(words: &[u64], expected: impl Fn(usize) -> u64) -> Result<(), Mismatch> {
    let mut first: Option<Mismatch> = None;
    let mut count = 0;
    for w in words {
        let addr = w as *const u64 as usize;
        // SAFETY: `w` is a valid aligned reference; the read is volatile so
        // the compiler cannot reuse a value it believes it stored earlier.
        let found = unsafe { std::ptr::read_volatile(w) };
        let exp = expected(addr);
        if found != exp {
            count += 1;
            first.get_or_insert(Mismatch {
                addr,
                expected: exp,
                found,
                count: 0,
            });
        }
    }
    match first {
        None => Ok(()),
        Some(m) => Err(Mismatch { count, ..m }),
    }
}

/// Views `len` bytes at `addr` as words.
///
/// # Safety
/// `[addr, addr + len)` must be mapped readable and writable for the life of
/// the returned slice, `addr` 8-aligned, `len` a multiple of 8, and nothing
/// else may access the memory meanwhile.
pub unsafe fn words_mut<'a>(addr: usize, len: usize) -> &'a mut [u64] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u64, len / 8) }
}

/// Views `len` bytes at `addr` as read-only words.
///
/// # Safety
/// `[addr, addr + len)` must be mapped readable for the life of the returned
/// slice, `addr` 8-aligned and `len` a multiple of 8, and nothing may write
/// it meanwhile.
pub unsafe fn words<'a>(addr: usize, len: usize) -> &'a [u64] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(addr as *const u64, len / 8) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_changed_and_moved_words() {
        let mut a = vec![0u64; 64];
        fill(&mut a, 7);
        assert_eq!(verify(&a, 7), Ok(()));
        assert!(verify(&a, 8).is_err());
        let mut b = vec![0u64; 64];
        b.copy_from_slice(&a);
        // Same contents at another address: must not verify.
        assert_eq!(verify(&b, 7).unwrap_err().count, 64);
        a[5] ^= 1;
        let m = verify(&a, 7).unwrap_err();
        assert_eq!(m.addr, &a[5] as *const u64 as usize);
        assert_eq!(m.count, 1);
        assert_eq!(m.found ^ m.expected, 1);
        assert!(verify_zero(&[0, 0]).is_ok());
        assert!(verify_zero(&[0, 3]).is_err());
    }
}
