//! memfd_mmap: memfd mappings, shared with a child, survive as one memfd.
//!
//! The root creates a 16-page memfd named `crust-memfd-mmap`, writes an
//! address-independent pattern (a hash of the file offset) into pages 0..12
//! with `pwrite`, seals it against shrinking, maps it whole `MAP_SHARED` and
//! pages 4..8 `MAP_PRIVATE`, writes its own pattern into private page 1
//! (copied on write), closes the descriptor (only the mappings keep the memfd
//! alive) and forks a member that inherits both mappings.
//!
//! After restore, in every process: both mappings are in place and named
//! `/memfd:crust-memfd-mmap (deleted)`; the shared one holds the file
//! pattern (and zeroes past page 12); the private one holds the copied page
//! and the file's pages elsewhere; the memfd (reopened through
//! `/proc/self/map_files`) is 16 pages long and still sealed. Then sharing:
//! the root writes a probe through its shared mapping; the member must see
//! it, and must also see it through its private mapping at a page it never
//! wrote (private pages not yet copied read the file); the member answers in
//! another page, which the root must see.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const NAME: &str = "crust-memfd-mmap";
const PAGES: usize = 16;
const FILLED: usize = 12;
const PRIV_OFF: usize = 4;
const PRIV_PAGES: usize = 4;
const PRIV_WRITTEN: usize = 1;
const SEED_PRIV: u64 = 0x3e3f_0001;
/// Shared page of the probe (word 0) and the member's answer (word 1); inside
/// the private window, at a private page never written.
const PROBE_PAGE: usize = PRIV_OFF + 2;
const PROBE: u64 = 0x1357_9bdf_0246_8ace;

fn file_word(off: usize) -> u64 {
    pattern::word(off, 0x3e3f_da7a)
}

fn word_at(addr: usize) -> &'static AtomicU64 {
    // SAFETY: an aligned word inside a mapping that lives until exit.
    unsafe { &*(addr as *const AtomicU64) }
}

fn check_view(c: &mut Checker, shared: usize, private: usize, who: &str) {
    let ps = zdtmtst::page_size();
    let want = format!("/memfd:{NAME} (deleted)");
    let all = match maps::read_self() {
        Ok(a) => a,
        Err(e) => return c.fail(format!("{who}: maps: {e}")),
    };
    for (what, at, len, perms) in [
        ("shared", shared, PAGES * ps, "rw-s"),
        ("private", private, PRIV_PAGES * ps, "rw-p"),
    ] {
        match maps::clipped(&all, at, at + len).as_slice() {
            [m] => {
                check_eq!(c, (m.start, m.end), (at, at + len), "{who}: {what} range");
                check_eq!(c, m.perms.as_str(), perms, "{who}: {what} perms");
                check_eq!(c, m.path.as_str(), want.as_str(), "{who}: {what} backing");
            }
            other => c.fail(format!(
                "{who}: {what}: expected one mapping, found {other:?}"
            )),
        }
    }
    if !c.passed() {
        return;
    }
    for p in 0..PAGES {
        // SAFETY: inside the shared mapping checked above.
        let words = unsafe { pattern::words(shared + p * ps, ps) };
        let r = if p < FILLED {
            pattern::verify_with(words, |a| file_word(a - shared))
        } else {
            pattern::verify_zero(words)
        };
        if let Err(m) = r {
            if p != PROBE_PAGE {
                c.fail(format!("{who}: shared page {p} {m}"));
            }
        }
    }
    for p in 0..PRIV_PAGES {
        // SAFETY: inside the private mapping checked above.
        let words = unsafe { pattern::words(private + p * ps, ps) };
        let r = if p == PRIV_WRITTEN {
            pattern::verify(words, SEED_PRIV)
        } else {
            pattern::verify_with(words, |a| file_word(a - private + PRIV_OFF * ps))
        };
        if let Err(m) = r {
            if p != PROBE_PAGE - PRIV_OFF {
                c.fail(format!("{who}: private page {p} {m}"));
            }
        }
    }
    // The memfd itself.
    let link = format!(
        "/proc/self/map_files/{:x}-{:x}",
        shared,
        shared + PAGES * ps
    );
    match std::fs::File::open(&link) {
        Ok(f) => {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            check_eq!(c, len, (PAGES * ps) as u64, "{who}: memfd size");
            // SAFETY: F_GET_SEALS on a descriptor we own.
            let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
            check!(
                c,
                seals >= 0 && seals & libc::F_SEAL_SHRINK != 0,
                "{who}: memfd seals {seals:#x}, expected F_SEAL_SHRINK"
            );
        }
        Err(e) => c.fail(format!("{who}: opening {link}: {e}")),
    }
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let cname = std::ffi::CString::new(NAME).unwrap_or_else(|e| fail(e));
    // SAFETY: a valid C string; the result is a fresh descriptor.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        fail(format!("memfd_create: {}", zdtmtst::last_err()));
    }
    // SAFETY: fresh descriptor owned by nobody else.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len((PAGES * ps) as u64)
        .unwrap_or_else(|e| fail(format!("ftruncate: {e}")));
    let data: Vec<u8> = (0..FILLED * ps / 8)
        .flat_map(|i| file_word(i * 8).to_ne_bytes())
        .collect();
    file.write_all_at(&data, 0)
        .unwrap_or_else(|e| fail(format!("pwrite: {e}")));
    // SAFETY: F_ADD_SEALS on our own memfd.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } < 0 {
        fail(format!("F_ADD_SEALS: {}", zdtmtst::last_err()));
    }
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let shared = mem::mmap(0, PAGES * ps, rw, libc::MAP_SHARED, fd, 0)
        .unwrap_or_else(|e| fail(format!("mmap shared: {e}")));
    let private = mem::mmap(
        0,
        PRIV_PAGES * ps,
        rw,
        libc::MAP_PRIVATE,
        fd,
        (PRIV_OFF * ps) as i64,
    )
    .unwrap_or_else(|e| fail(format!("mmap private: {e}")));
    // SAFETY: a page of the private mapping, copied on this write.
    pattern::fill(
        unsafe { pattern::words_mut(private + PRIV_WRITTEN * ps, ps) },
        SEED_PRIV,
    );
    drop(file);

    let member = tree::member("member", Spawn::Fork, &[], move |up| {
        if up.ready().is_err() {
            return 11;
        }
        tree::serve(&up, || {
            let mut c = Checker::new();
            check_view(&mut c, shared, private, "member");
            let probe = shared + PROBE_PAGE * ps;
            let seen = word_at(probe).load(Ordering::SeqCst);
            check!(
                c,
                seen == PROBE,
                "member: the root's probe is not in the shared mapping ({seen:#x})"
            );
            let through_private =
                word_at(private + (PROBE_PAGE - PRIV_OFF) * ps).load(Ordering::SeqCst);
            check!(
                c,
                through_private == PROBE,
                "member: the probe is not visible through the private mapping ({through_private:#x})"
            );
            word_at(probe + 8).store(!PROBE, Ordering::SeqCst);
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
    check_view(&mut c, shared, private, "root");
    if c.passed() {
        let probe = shared + PROBE_PAGE * ps;
        word_at(probe).store(PROBE, Ordering::SeqCst);
        tree::check_all(&members, &mut c);
        let answer = word_at(probe + 8).load(Ordering::SeqCst);
        check!(
            c,
            answer == !PROBE,
            "root: the member's answer is not visible ({answer:#x}): the memfd is not shared"
        );
    }
    tree::finish(members, &mut c);
    c.finish();
}
