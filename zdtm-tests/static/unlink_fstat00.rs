//! unlink_fstat00: an open file whose name was removed survives.
//!
//! Creates a file, writes data, keeps it open read-write at an offset and
//! unlinks it. The engine cannot reopen it by name. After restore the fd
//! must still refer to an unlinked regular file (`st_nlink` 0) of the same
//! size and mode, `/proc/self/fd/N` must still name the old path with
//! ` (deleted)`, the offset and the contents must be intact, and the file
//! must still take writes.

use std::os::unix::fs::PermissionsExt;

use zdtmtst::{check, check_eq, fail, fd, Checker};

fn main() {
    zdtmtst::start();
    let path = zdtmtst::temp_path("unlink_fstat00");
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap_or_else(|e| fail(e));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
        .unwrap_or_else(|e| fail(e));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| fail(e));
    let f = std::os::fd::IntoRawFd::into_raw_fd(file);
    fd::lseek(f, 4321, libc::SEEK_SET).unwrap_or_else(|e| fail(e));
    std::fs::remove_file(&path).unwrap_or_else(|e| fail(e));
    let st = fd::fstat(f).unwrap_or_else(|e| fail(e));
    let link = fd::link(f).unwrap_or_else(|e| fail(e));
    if st.st_nlink != 0 {
        fail(format!("st_nlink {} after unlink", st.st_nlink));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(now) = c.ok("fstat", fd::fstat(f)) {
        check_eq!(c, now.st_nlink, 0, "fd {f}: st_nlink");
        check_eq!(c, now.st_size, data.len() as i64, "fd {f}: st_size");
        check_eq!(c, now.st_mode, st.st_mode, "fd {f}: st_mode");
    }
    if let Some(l) = c.ok("readlink", fd::link(f)) {
        check_eq!(c, l, link, "/proc/self/fd/{f}");
        check!(
            c,
            l.to_string_lossy().ends_with(" (deleted)"),
            "/proc/self/fd/{f} is {l:?}, not a deleted file"
        );
    }
    if let Some(off) = c.ok("lseek", fd::lseek(f, 0, libc::SEEK_CUR)) {
        check_eq!(c, off, 4321, "fd {f}: offset");
    }
    if let Some(b) = c.ok("pread", fd::pread(f, data.len() + 10, 0)) {
        let pos = b.iter().zip(&data).position(|(a, b)| a != b);
        check!(
            c,
            b.len() == data.len() && pos.is_none(),
            "contents: {} bytes (expected {}), first difference at {pos:?}",
            b.len(),
            data.len()
        );
    }
    if c.ok("write", fd::write(f, b"more")).is_some() {
        if let Some(b) = c.ok("pread", fd::pread(f, 4, 4321)) {
            check_eq!(c, b, b"more", "bytes written after restore");
        }
    }
    check!(c, !path.exists(), "{} exists again", path.display());
    c.finish();
}
