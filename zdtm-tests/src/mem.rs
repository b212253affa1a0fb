//! Thin wrappers over `mmap(2)`, `mprotect(2)` and `munmap(2)` on plain
//! addresses, for tests that lay out mappings by hand.

use std::io;
use std::os::fd::RawFd;

/// `mmap(hint, len, prot, flags, fd, offset)`; returns the address.
pub fn mmap(
    hint: usize,
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: RawFd,
    offset: i64,
) -> io::Result<usize> {
    // SAFETY: creating a mapping cannot invalidate memory Rust owns unless
    // MAP_FIXED is passed over it; callers pass MAP_FIXED only on ranges they
    // mapped themselves.
    let p = unsafe { libc::mmap(hint as *mut libc::c_void, len, prot, flags, fd, offset) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as usize)
}

/// A private anonymous mapping of `len` bytes with `prot`.
pub fn mmap_anon(len: usize, prot: libc::c_int) -> io::Result<usize> {
    mmap(0, len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
}

/// `mprotect(addr, len, prot)` on a range the caller mapped.
pub fn mprotect(addr: usize, len: usize, prot: libc::c_int) -> io::Result<()> {
    // SAFETY: the caller owns the range; changing protection of memory no
    // Rust reference points into is memory-safe (a bad access faults).
    let r = unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `munmap(addr, len)` on a range the caller mapped and no longer uses.
pub fn munmap(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and holds no reference into it.
    let r = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_protect_unmap() {
        let ps = crate::page_size();
        let a = mmap_anon(2 * ps, libc::PROT_READ | libc::PROT_WRITE).unwrap();
        mprotect(a, ps, libc::PROT_READ).unwrap();
        let maps = crate::maps::read_self().unwrap();
        assert_eq!(crate::maps::find(&maps, a).unwrap().perms, "r--p");
        assert_eq!(crate::maps::find(&maps, a + ps).unwrap().perms, "rw-p");
        munmap(a, 2 * ps).unwrap();
        assert!(mprotect(a, ps, libc::PROT_READ).is_err());
    }
}
