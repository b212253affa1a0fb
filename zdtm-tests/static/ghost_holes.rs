//! ghost_holes: an unlinked sparse file stays sparse.
//!
//! Makes a 64 MiB file with three small data extents (at 1 MiB, in the
//! middle, and in the last page) and holes everywhere else, keeps it open
//! read-write and unlinks it. Its stored data is far below the ghost limit
//! although its size is far above it. After restore the file must have the
//! same size and contents (the extents, and zeros in the holes), it must
//! still be sparse (its `st_blocks` no more than a few times what it was, and
//! nowhere near 64 MiB), and `SEEK_HOLE` from offset 0 must find a hole
//! before the first extent.

use std::os::fd::IntoRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use zdtmtst::{check, check_eq, fail, fd, Checker};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;

fn extents() -> Vec<(u64, Vec<u8>)> {
    let page = zdtmtst::page_size() as u64;
    vec![
        (MIB, vec![0x11; 8192]),
        (SIZE / 2 + 12345, b"the middle of nowhere".to_vec()),
        (SIZE - page, vec![0x7f; page as usize]),
    ]
}

fn main() {
    zdtmtst::start();
    let path = zdtmtst::temp_path("ghost_holes");
    let setup = || -> std::io::Result<i32> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)?;
        f.set_len(SIZE)?;
        for (off, data) in extents() {
            f.write_all_at(&data, off)?;
        }
        std::fs::remove_file(&path)?;
        Ok(f.into_raw_fd())
    };
    let f = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    let before = fd::fstat(f).unwrap_or_else(|e| fail(e));
    let pos = fd::lseek(f, 0, libc::SEEK_CUR).unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(st) = c.ok("fstat", fd::fstat(f)) {
        check_eq!(c, st.st_size as u64, SIZE, "st_size");
        check_eq!(c, st.st_nlink, 0, "st_nlink");
        check_eq!(c, st.st_mode & 0o7777, 0o640, "mode");
        // 512-byte blocks: the extents take a few dozen, 64 MiB would take 131072.
        let limit = (before.st_blocks * 4).max(before.st_blocks + 256);
        check!(
            c,
            st.st_blocks <= limit,
            "st_blocks {} after restore, {} before: the holes were filled",
            st.st_blocks,
            before.st_blocks
        );
    }
    if let Some(now) = c.ok("lseek", fd::lseek(f, 0, libc::SEEK_CUR)) {
        check_eq!(c, now, pos, "file position");
    }
    for (off, data) in extents() {
        if let Some(b) = c.ok("pread", fd::pread(f, data.len(), off as i64)) {
            check!(c, b == data, "contents of the extent at {off} differ");
        }
    }
    for off in [0, 5 * MIB, SIZE / 2 - 4096, SIZE - 2 * 4096] {
        if let Some(b) = c.ok("pread", fd::pread(f, 4096, off as i64)) {
            check!(c, b.iter().all(|&x| x == 0), "the hole at {off} holds data");
        }
    }
    if let Some(h) = c.ok("SEEK_HOLE", fd::lseek(f, 0, libc::SEEK_HOLE)) {
        check!(
            c,
            (h as u64) < MIB,
            "first hole at {h}, not before the first extent"
        );
    }
    c.finish();
}
