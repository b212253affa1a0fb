//! maps_file_private: a private, copy-on-write file mapping survives.
//!
//! Creates a 16-page file whose every word encodes its file offset, maps
//! pages 4..12 of it `MAP_PRIVATE` read-write (so the mapping has a non-zero
//! offset), writes an address-derived pattern into some pages (fully, and the
//! first bytes of one page only) and leaves the others alone, then closes the
//! file: the engine must find it again through the mapping.
//!
//! After restore: written pages hold what was written (the rest of the
//! partly written page still holds file data), untouched pages hold the
//! file's data, the file on disk is unchanged (the private writes never reach
//! it), and `/proc/self/maps` shows the same range, `rw-p`, offset, inode and
//! path.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use zdtmtst::{check, check_eq, fail, maps, mem, pattern, Checker};

const SEED: u64 = 0xf11e_0001;
const FILE_PAGES: usize = 16;
const MAP_OFF_PAGES: usize = 4;
const MAP_PAGES: usize = 8;
/// Pages of the mapping written in full.
const WRITTEN: &[usize] = &[1, 3, 6];
/// Page of the mapping whose first bytes only are written.
const PARTIAL: usize = 5;
const PARTIAL_WORDS: usize = 13;

/// The file's word at byte offset `off`.
fn file_word(off: usize) -> u64 {
    pattern::word(off, 0xf11e_da7a)
}

fn file_contents(len: usize) -> Vec<u8> {
    (0..len / 8)
        .flat_map(|i| file_word(i * 8).to_ne_bytes())
        .collect()
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let path = zdtmtst::temp_path("maps_file_private");
    let contents = file_contents(FILE_PAGES * ps);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap_or_else(|e| fail(format!("creating {}: {e}", path.display())));
    zdtmtst::remove_at_exit(&path);
    (&file)
        .write_all(&contents)
        .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
    let ino = file.metadata().map(|m| m.ino()).unwrap_or_else(|e| fail(e));

    let len = MAP_PAGES * ps;
    let file_off = MAP_OFF_PAGES * ps;
    let base = mem::mmap(
        0,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE,
        file.as_raw_fd(),
        file_off as i64,
    )
    .unwrap_or_else(|e| fail(format!("mmap {}: {e}", path.display())));
    drop(file);

    for &p in WRITTEN {
        // SAFETY: the page lies in the private read-write mapping above,
        // which nothing else references.
        pattern::fill(unsafe { pattern::words_mut(base + p * ps, ps) }, SEED);
    }
    // SAFETY: as above, for the first words of one page.
    pattern::fill(
        unsafe { pattern::words_mut(base + PARTIAL * ps, PARTIAL_WORDS * 8) },
        SEED,
    );
    let before = maps::read_self()
        .map(|m| maps::clipped(&m, base, base + len))
        .unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let Some(all) = c.ok("reading maps", maps::read_self()) else {
        c.finish();
    };
    let now = maps::clipped(&all, base, base + len);
    for d in maps::diff_range(&before, &now) {
        c.fail(d);
    }
    match now.as_slice() {
        [m] => {
            check_eq!(c, (m.start, m.end), (base, base + len), "mapping range");
            check_eq!(c, m.perms.as_str(), "rw-p", "mapping perms");
            check_eq!(c, m.offset, file_off as u64, "mapping file offset");
            check_eq!(c, m.inode, ino, "mapping inode");
            check_eq!(
                c,
                m.path.as_str(),
                path.to_str().unwrap_or(""),
                "mapping path"
            );
        }
        other => c.fail(format!(
            "expected one mapping over {base:#x}+{len:#x}, found {other:?}"
        )),
    }
    if !c.passed() {
        c.finish();
    }

    for p in 0..MAP_PAGES {
        let addr = base + p * ps;
        // SAFETY: the mapping was checked above to be still in place, rw-p.
        let words = unsafe { pattern::words(addr, ps) };
        let file_at = |a: usize| file_word(file_off + a - base);
        let res = if WRITTEN.contains(&p) {
            pattern::verify(words, SEED)
        } else if p == PARTIAL {
            pattern::verify_with(words, |a| {
                if a < addr + PARTIAL_WORDS * 8 {
                    pattern::word(a, SEED)
                } else {
                    file_at(a)
                }
            })
        } else {
            pattern::verify_with(words, file_at)
        };
        if let Err(m) = res {
            c.fail(format!("mapping page {p} {m}"));
        }
    }
    match std::fs::read(&path) {
        Ok(disk) => {
            let pos = disk.iter().zip(&contents).position(|(a, b)| a != b);
            check!(
                c,
                disk.len() == contents.len() && pos.is_none(),
                "file {} changed on disk: {} bytes (expected {}), first difference at {pos:?}",
                path.display(),
                disk.len(),
                contents.len()
            );
        }
        Err(e) => c.fail(format!("reading {}: {e}", path.display())),
    }
    c.finish();
}
