//! ghost_replaced: an unlinked open file whose name another file took survives.
//!
//! Writes file A, opens it twice (read-write at one offset, read-only at
//! another: two descriptions of one unlinked file), unlinks it, and creates a
//! new file B under the same name. After restore both descriptors must name
//! `PATH (deleted)`, be one file (same inode, `st_nlink` 0) with A's contents
//! and their own offsets; B must still be at PATH with its contents and inode,
//! and nothing else may be left in the directory.

use zdtmtst::files::open;
use zdtmtst::{check, check_eq, fail, fd, Checker};

fn main() {
    zdtmtst::start();
    let path = zdtmtst::temp_path("ghost_replaced");
    zdtmtst::remove_at_exit(&path);
    let a: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let setup = || -> std::io::Result<(i32, i32, std::path::PathBuf, u64)> {
        std::fs::write(&path, &a)?;
        let rw = open(&path, libc::O_RDWR, 0)?;
        let ro = open(&path, libc::O_RDONLY, 0)?;
        fd::lseek(rw, 1234, libc::SEEK_SET)?;
        fd::lseek(ro, 40_000, libc::SEEK_SET)?;
        std::fs::remove_file(&path)?;
        std::fs::write(&path, b"the new file")?;
        let ino = fd::fstat(open(&path, libc::O_RDONLY | libc::O_CLOEXEC, 0)?)?.st_ino;
        Ok((rw, ro, fd::link(rw)?, ino))
    };
    let (rw, ro, link, b_ino) = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    let dir_before: Vec<_> = std::fs::read_dir(".")
        .unwrap_or_else(|e| fail(e))
        .flatten()
        .map(|e| e.file_name())
        .collect();

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    let mut inos = Vec::new();
    for (f, off) in [(rw, 1234), (ro, 40_000)] {
        if let Some(l) = c.ok("readlink", fd::link(f)) {
            check_eq!(c, l, link, "/proc/self/fd/{f}");
        }
        if let Some(st) = c.ok("fstat", fd::fstat(f)) {
            check_eq!(c, st.st_nlink, 0, "fd {f}: st_nlink");
            check_eq!(c, st.st_size, a.len() as i64, "fd {f}: st_size");
            inos.push(st.st_ino);
        }
        if let Some(o) = c.ok("lseek", fd::lseek(f, 0, libc::SEEK_CUR)) {
            check_eq!(c, o, off, "fd {f}: offset");
        }
        if let Some(b) = c.ok("pread", fd::pread(f, a.len() + 1, 0)) {
            check!(c, b == a, "fd {f}: contents differ ({} bytes)", b.len());
        }
    }
    check!(
        c,
        inos.len() == 2 && inos[0] == inos[1],
        "the two descriptors are no longer one file: inodes {inos:?}"
    );
    match std::fs::read(&path) {
        Ok(b) => {
            check_eq!(c, b, b"the new file", "the file that took the name");
        }
        Err(e) => c.fail(format!("{}: {e}", path.display())),
    }
    if let Some(st) = c.ok("stat", std::fs::metadata(&path)) {
        use std::os::unix::fs::MetadataExt;
        check_eq!(c, st.ino(), b_ino, "inode of the file that took the name");
    }
    if let Some(rd) = c.ok("read_dir", std::fs::read_dir(".")) {
        let now: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        for n in &now {
            check!(
                c,
                dir_before.contains(n) || !n.to_string_lossy().contains("ghost"),
                "{n:?} left in the directory"
            );
        }
    }
    if c.ok("write", fd::write(rw, b"xyz")).is_some() {
        if let Some(b) = c.ok("pread", fd::pread(ro, 3, 1234)) {
            check_eq!(
                c,
                b,
                b"xyz",
                "a write through one descriptor seen by the other"
            );
        }
    }
    c.finish();
}
