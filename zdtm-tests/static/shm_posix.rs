//! shm_posix: shared file mappings keep their contents in the file and stay
//! shared: a regular file, a POSIX shared memory object under `/dev/shm`,
//! and one that was unlinked (`shm_unlink`) while mapped.
//!
//! For each of the three, the root writes a pattern of the file offset into
//! the file (pages 0..6 of 8), maps it whole `MAP_SHARED` read-write, writes
//! an address pattern into page 2 through the mapping, closes the
//! descriptor, and forks one member that inherits all three mappings.
//!
//! After restore, in every process: each mapping is in place with its path
//! (the unlinked one with ` (deleted)`), `rw-s`, and holds the contents. The
//! files that still have a name must hold page 2's write when read with
//! `pread` (the data lives in the file, not in the images). Then sharing: the
//! root writes a probe into page 7 of each mapping; the member must see it
//! and answers in another word, which the root must see; for the named files
//! a `pread` must see the probe too (the mapping is the file's).

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const PAGES: usize = 8;
const FILLED: usize = 6;
const WRITTEN_PAGE: usize = 2;
const PROBE_PAGE: usize = 7;
const SEED: u64 = 0x5f5e_0001;

fn file_word(off: usize, k: usize) -> u64 {
    pattern::word(off, 0x5f5e_da7a + k as u64)
}

fn word_at(addr: usize) -> &'static AtomicU64 {
    // SAFETY: an aligned word inside a mapping that lives until exit.
    unsafe { &*(addr as *const AtomicU64) }
}

struct Area {
    what: &'static str,
    path: PathBuf,
    base: usize,
    unlinked: bool,
}

fn probe_of(k: usize) -> u64 {
    0x7777_0000_0000_0000 | k as u64
}

fn check_view(c: &mut Checker, areas: &[Area], who: &str) {
    let ps = zdtmtst::page_size();
    let all = match maps::read_self() {
        Ok(a) => a,
        Err(e) => return c.fail(format!("{who}: maps: {e}")),
    };
    for (k, a) in areas.iter().enumerate() {
        let len = PAGES * ps;
        let mut want = a.path.display().to_string();
        if a.unlinked {
            want.push_str(" (deleted)");
        }
        match maps::clipped(&all, a.base, a.base + len).as_slice() {
            [m] => {
                check_eq!(
                    c,
                    (m.start, m.end),
                    (a.base, a.base + len),
                    "{who}: {} range",
                    a.what
                );
                check_eq!(c, m.perms.as_str(), "rw-s", "{who}: {} perms", a.what);
                check_eq!(c, m.path.as_str(), want.as_str(), "{who}: {} path", a.what);
            }
            other => {
                c.fail(format!(
                    "{who}: {}: expected one mapping, found {other:?}",
                    a.what
                ));
                continue;
            }
        }
        for p in 0..PROBE_PAGE {
            // SAFETY: inside the mapping checked above.
            let words = unsafe { pattern::words(a.base + p * ps, ps) };
            let r = if p == WRITTEN_PAGE {
                pattern::verify(words, SEED + k as u64)
            } else if p < FILLED {
                pattern::verify_with(words, |x| file_word(x - a.base, k))
            } else {
                pattern::verify_zero(words)
            };
            if let Err(m) = r {
                c.fail(format!("{who}: {} page {p} {m}", a.what));
            }
        }
    }
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let regular = zdtmtst::temp_path("shm_posix_file");
    // Named after a fresh random scratch name, not the pid: every `ns` trial's pid is 1, and a
    // trial killed before its cleanup must not block the next one.
    let tag = regular
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let shm = PathBuf::from(format!("/dev/shm/crust-{tag}"));
    let gone = PathBuf::from(format!("/dev/shm/crust-unlinked-{tag}"));
    let mut areas = Vec::new();
    for (k, (what, path, unlinked)) in [
        ("regular file", regular, false),
        ("POSIX shm", shm, false),
        ("unlinked POSIX shm", gone, true),
    ]
    .into_iter()
    .enumerate()
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap_or_else(|e| fail(format!("creating {}: {e}", path.display())));
        zdtmtst::remove_at_exit(&path);
        let data: Vec<u8> = (0..FILLED * ps / 8)
            .flat_map(|i| file_word(i * 8, k).to_ne_bytes())
            .collect();
        f.write_all_at(&data, 0)
            .and_then(|_| f.set_len((PAGES * ps) as u64))
            .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
        let base = mem::mmap(
            0,
            PAGES * ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
        .unwrap_or_else(|e| fail(format!("mmap {}: {e}", path.display())));
        // SAFETY: a page of the shared mapping above.
        pattern::fill(
            unsafe { pattern::words_mut(base + WRITTEN_PAGE * ps, ps) },
            SEED + k as u64,
        );
        if unlinked {
            std::fs::remove_file(&path)
                .unwrap_or_else(|e| fail(format!("unlinking {}: {e}", path.display())));
        }
        areas.push(Area {
            what,
            path,
            base,
            unlinked,
        });
    }
    let bases: Vec<(usize, PathBuf, bool)> = areas
        .iter()
        .map(|a| (a.base, a.path.clone(), a.unlinked))
        .collect();

    let member = tree::member("member", Spawn::Fork, &[], move |up| {
        if up.ready().is_err() {
            return 11;
        }
        let areas: Vec<Area> = bases
            .iter()
            .zip(["regular file", "POSIX shm", "unlinked POSIX shm"])
            .map(|((base, path, unlinked), what)| Area {
                what,
                path: path.clone(),
                base: *base,
                unlinked: *unlinked,
            })
            .collect();
        tree::serve(&up, || {
            let mut c = Checker::new();
            check_view(&mut c, &areas, "member");
            for (k, a) in areas.iter().enumerate() {
                let probe = a.base + PROBE_PAGE * ps;
                let seen = word_at(probe).load(Ordering::SeqCst);
                check!(
                    c,
                    seen == probe_of(k),
                    "member: {}: the root's probe is not visible ({seen:#x})",
                    a.what
                );
                word_at(probe + 8).store(!probe_of(k), Ordering::SeqCst);
            }
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
    check_view(&mut c, &areas, "root");
    // The named files hold the write made through the mapping.
    for (k, a) in areas.iter().enumerate().filter(|(_, a)| !a.unlinked) {
        match std::fs::File::open(&a.path) {
            Ok(f) => {
                let mut b = [0u8; 8];
                let off = WRITTEN_PAGE * ps;
                let ok = f.read_exact_at(&mut b, off as u64).is_ok()
                    && u64::from_ne_bytes(b) == pattern::word(a.base + off, SEED + k as u64);
                check!(
                    c,
                    ok,
                    "root: {}: the file lacks the write made through its mapping",
                    a.what
                );
            }
            Err(e) => c.fail(format!("root: opening {}: {e}", a.path.display())),
        }
    }
    if c.passed() {
        for (k, a) in areas.iter().enumerate() {
            word_at(a.base + PROBE_PAGE * ps).store(probe_of(k), Ordering::SeqCst);
        }
        tree::check_all(&members, &mut c);
        for (k, a) in areas.iter().enumerate() {
            let answer = word_at(a.base + PROBE_PAGE * ps + 8).load(Ordering::SeqCst);
            check!(
                c,
                answer == !probe_of(k),
                "root: {}: the member's answer is not visible ({answer:#x}): not shared",
                a.what
            );
            if !a.unlinked {
                let mut b = [0u8; 8];
                let seen = std::fs::File::open(&a.path)
                    .and_then(|f| f.read_exact_at(&mut b, (PROBE_PAGE * ps) as u64))
                    .map(|_| u64::from_ne_bytes(b));
                check!(
                    c,
                    seen.as_ref().is_ok_and(|&v| v == probe_of(k)),
                    "root: {}: pread does not see the probe ({seen:?}): the mapping is not the file's",
                    a.what
                );
            }
        }
    }
    tree::finish(members, &mut c);
    c.finish();
}
