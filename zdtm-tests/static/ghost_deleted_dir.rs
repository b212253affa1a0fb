//! ghost_deleted_dir: files open inside a removed directory survive.
//!
//! Creates directory D with a file F, keeps F open (write-only, appending)
//! and D open (`O_DIRECTORY`), unlinks F and removes D. After restore the
//! descriptors must name `D/F (deleted)` and `D (deleted)`, F must keep its
//! contents, mode and append flag, D must be a directory with no links, and D
//! must not exist again.

use std::os::unix::fs::PermissionsExt;

use zdtmtst::files::open;
use zdtmtst::{check, check_eq, fail, fd, Checker};

fn main() {
    zdtmtst::start();
    let dir = zdtmtst::temp_path("ghost_deleted_dir.d");
    let file = dir.join("inner");
    let setup = || -> std::io::Result<(i32, i32)> {
        std::fs::create_dir(&dir)?;
        std::fs::write(&file, b"lived in a directory that is gone\n")?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604))?;
        let f = open(&file, libc::O_WRONLY | libc::O_APPEND, 0)?;
        let d = open(&dir, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        std::fs::remove_file(&file)?;
        std::fs::remove_dir(&dir)?;
        Ok((f, d))
    };
    let (f, d) = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));
    let (f_link, d_link) = (
        fd::link(f).unwrap_or_else(|e| fail(e)),
        fd::link(d).unwrap_or_else(|e| fail(e)),
    );
    let fl = fd::fcntl(f, libc::F_GETFL, 0).unwrap_or_else(|e| fail(e));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(l) = c.ok("readlink", fd::link(f)) {
        check_eq!(c, l, f_link, "the file's /proc/self/fd link");
    }
    if let Some(l) = c.ok("readlink", fd::link(d)) {
        check_eq!(c, l, d_link, "the directory's /proc/self/fd link");
    }
    if let Some(now) = c.ok("F_GETFL", fd::fcntl(f, libc::F_GETFL, 0)) {
        check_eq!(c, now, fl, "the file's F_GETFL");
    }
    if let Some(st) = c.ok("fstat", fd::fstat(f)) {
        check_eq!(c, st.st_nlink, 0, "the file's st_nlink");
        check_eq!(c, st.st_mode & 0o7777, 0o604, "the file's mode");
    }
    if let Some(st) = c.ok("fstat", fd::fstat(d)) {
        check!(
            c,
            st.st_mode & libc::S_IFMT == libc::S_IFDIR,
            "fd {d} is no directory: mode {:o}",
            st.st_mode
        );
        check_eq!(c, st.st_nlink, 0, "the directory's st_nlink");
    }
    check!(c, !dir.exists(), "{} exists again", dir.display());
    if c.ok("write", fd::write(f, b"more\n")).is_some() {
        let b = c.ok("readlink", std::fs::read(format!("/proc/self/fd/{f}")));
        check_eq!(
            c,
            b.unwrap_or_default(),
            b"lived in a directory that is gone\nmore\n".to_vec(),
            "contents after an append"
        );
    }
    c.finish();
}
