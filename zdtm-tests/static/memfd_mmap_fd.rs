//! memfd_mmap_fd: a memfd both open and mapped stays one memfd.
//!
//! The root creates a 4-page memfd `crust-memfd-both`, keeps its descriptor
//! open, maps it `MAP_SHARED`, writes a pattern through the mapping and
//! forks a member holding both. After restore the descriptor and the
//! mappings must still be one object: a `pwrite` through the root's
//! descriptor shows in the root's and the member's mappings, a write through
//! the member's mapping shows in a `pread` of the root's descriptor, and the
//! descriptor and the mapping name the same inode.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, check_eq, fail, mem, pattern, Checker};

const PAGES: usize = 4;
const SEED: u64 = 0x3e3f_0101;
const FROM_FD: u64 = 0x0f0f_1111_2222_3333;
const FROM_MAP: u64 = 0x7777_8888_9999_aaaa;

fn word_at(addr: usize) -> &'static AtomicU64 {
    // SAFETY: an aligned word inside a mapping that lives until exit.
    unsafe { &*(addr as *const AtomicU64) }
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let name = std::ffi::CString::new("crust-memfd-both").unwrap_or_else(|e| fail(e));
    // SAFETY: a valid C string; the result is a fresh descriptor.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        fail(format!("memfd_create: {}", zdtmtst::last_err()));
    }
    // SAFETY: fresh descriptor owned by nobody else.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len((PAGES * ps) as u64)
        .unwrap_or_else(|e| fail(format!("ftruncate: {e}")));
    let base = mem::mmap(
        0,
        PAGES * ps,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fd,
        0,
    )
    .unwrap_or_else(|e| fail(format!("mmap: {e}")));
    // SAFETY: the first pages of the mapping above.
    pattern::fill(unsafe { pattern::words_mut(base, 2 * ps) }, SEED);

    let member = tree::member("member", Spawn::Fork, &[], move |up| {
        if up.ready().is_err() {
            return 11;
        }
        tree::serve(&up, || {
            let mut c = Checker::new();
            let seen = word_at(base + 2 * ps).load(Ordering::SeqCst);
            check!(
                c,
                seen == FROM_FD,
                "member: the root's pwrite is not in the mapping ({seen:#x})"
            );
            word_at(base + 3 * ps).store(FROM_MAP, Ordering::SeqCst);
            c
        })
    })
    .unwrap_or_else(|e| fail(format!("fork: {e}")));
    let mut members = vec![member];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(tree::chain(&e));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    // SAFETY: the mapping made above (the maps check of the harness covers its place).
    if let Err(m) = pattern::verify(unsafe { pattern::words(base, 2 * ps) }, SEED) {
        c.fail(format!("mapping {m}"));
    }
    let link = format!("/proc/self/map_files/{:x}-{:x}", base, base + PAGES * ps);
    match (std::fs::metadata(&link), file.metadata()) {
        (Ok(m), Ok(f)) => {
            check_eq!(
                c,
                m.ino(),
                f.ino(),
                "inode of the mapping and of fd {}",
                file.as_raw_fd()
            );
        }
        (a, b) => c.fail(format!("stat: {a:?} {b:?}")),
    }
    if let Err(e) = file.write_all_at(&FROM_FD.to_ne_bytes(), (2 * ps) as u64) {
        c.fail(format!("pwrite: {e}"));
    }
    let mine = word_at(base + 2 * ps).load(Ordering::SeqCst);
    check!(
        c,
        mine == FROM_FD,
        "root: the pwrite is not in the mapping ({mine:#x})"
    );
    tree::check_all(&members, &mut c);
    let mut b = [0u8; 8];
    let through_fd = file
        .read_exact_at(&mut b, (3 * ps) as u64)
        .map(|_| u64::from_ne_bytes(b));
    check!(
        c,
        through_fd.as_ref().is_ok_and(|&v| v == FROM_MAP),
        "root: the member's write through its mapping is not seen through the descriptor ({through_fd:?})"
    );
    tree::finish(members, &mut c);
    c.finish();
}
