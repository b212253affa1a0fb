//! file_offsets: open regular files keep their flags, fd flags and offsets.
//!
//! Opens regular files with `O_RDONLY`, `O_WRONLY|O_APPEND`,
//! `O_RDWR|O_NONBLOCK`, `O_RDWR|O_SYNC`, `O_RDONLY|O_CLOEXEC` and `O_PATH`,
//! moves each to its own offset (one past the end of the file) and writes
//! through the appending one. After restore each descriptor must have the
//! same number, `F_GETFL` status flags (`O_LARGEFILE` aside), `F_GETFD`
//! flags, offset and file (device and inode), reads must continue with the
//! right bytes, and an append must still land at the end of the file.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use zdtmtst::{check_eq, fail, Checker};

const DATA_LEN: usize = 64 << 10;

fn data_byte(i: usize) -> u8 {
    (zdtmtst::pattern::word(i, 0xf0) >> 13) as u8
}

/// One descriptor under test.
struct Fd {
    what: &'static str,
    fd: libc::c_int,
    file: usize,
    flags: libc::c_int,
    fd_flags: libc::c_int,
    /// Offset at the dump, `None` for O_PATH (no offset).
    pos: Option<i64>,
    dev_ino: (u64, u64),
}

fn open(path: &Path, flags: libc::c_int) -> libc::c_int {
    let c = CString::new(path.as_os_str().as_bytes())
        .unwrap_or_else(|_| fail(format!("path {} contains NUL", path.display())));
    // SAFETY: `c` is a valid NUL-terminated path; mode is given for O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o600) };
    if fd < 0 {
        fail(format!(
            "open {} {flags:#o}: {}",
            path.display(),
            zdtmtst::last_err()
        ));
    }
    fd
}

fn lseek(fd: libc::c_int, off: i64, whence: libc::c_int) -> std::io::Result<i64> {
    // SAFETY: lseek on an fd we own has no memory-safety preconditions.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(r)
}

fn fcntl(fd: libc::c_int, cmd: libc::c_int) -> std::io::Result<libc::c_int> {
    // SAFETY: F_GETFL/F_GETFD take no pointer argument.
    let r = unsafe { libc::fcntl(fd, cmd) };
    if r < 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(r)
}

fn dev_ino(fd: libc::c_int) -> std::io::Result<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok((st.st_dev, st.st_ino))
}

fn read_at_cur(fd: libc::c_int, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    // SAFETY: `buf` is a writable buffer of `n` bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n) };
    if r < 0 {
        return Err(zdtmtst::last_err());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn write_all(fd: libc::c_int, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: `data` is a readable buffer of `data.len()` bytes.
    let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if r < 0 {
        return Err(zdtmtst::last_err());
    }
    if r as usize != data.len() {
        return Err(std::io::Error::other(format!(
            "short write {r}/{}",
            data.len()
        )));
    }
    Ok(())
}

fn main() {
    zdtmtst::start();
    let data: Vec<u8> = (0..DATA_LEN).map(data_byte).collect();
    let small: Vec<u8> = (0..200u8).collect();
    let paths = [
        zdtmtst::temp_path("file_offsets-data"),
        zdtmtst::temp_path("file_offsets-small"),
        zdtmtst::temp_path("file_offsets-log"),
    ];
    for (p, contents) in paths.iter().zip([&data[..], &small[..], b"header\n"]) {
        std::fs::write(p, contents).unwrap_or_else(|e| fail(format!("{}: {e}", p.display())));
        zdtmtst::remove_at_exit(p);
    }

    // (what, file, open flags, seek to)
    let specs: [(&'static str, usize, libc::c_int, Option<i64>); 7] = [
        ("O_RDONLY", 0, libc::O_RDONLY, Some(1000)),
        (
            "O_WRONLY|O_APPEND",
            2,
            libc::O_WRONLY | libc::O_APPEND,
            None,
        ),
        (
            "O_RDWR|O_NONBLOCK",
            0,
            libc::O_RDWR | libc::O_NONBLOCK,
            Some(5000),
        ),
        ("O_RDWR|O_SYNC", 0, libc::O_RDWR | libc::O_SYNC, Some(3)),
        (
            "O_RDONLY|O_CLOEXEC",
            1,
            libc::O_RDONLY | libc::O_CLOEXEC,
            Some(77),
        ),
        ("O_RDONLY past EOF", 0, libc::O_RDONLY, Some(1 << 20)),
        ("O_PATH", 1, libc::O_PATH, None),
    ];
    let mut fds = Vec::new();
    for (what, file, flags, seek) in specs {
        let fd = open(&paths[file], flags);
        if let Some(off) = seek {
            lseek(fd, off, libc::SEEK_SET).unwrap_or_else(|e| fail(format!("{what}: lseek: {e}")));
        }
        fds.push(Fd {
            what,
            fd,
            file,
            flags: fcntl(fd, libc::F_GETFL).unwrap_or_else(|e| fail(e))
                & !zdtmtst::O_LARGEFILE_KERNEL,
            fd_flags: fcntl(fd, libc::F_GETFD).unwrap_or_else(|e| fail(e)),
            pos: None,
            dev_ino: dev_ino(fd).unwrap_or_else(|e| fail(e)),
        });
    }
    // Advance the O_RDWR one by reading, and append through the log fd.
    read_at_cur(fds[2].fd, 100).unwrap_or_else(|e| fail(format!("read: {e}")));
    write_all(fds[1].fd, b"APPENDED-1").unwrap_or_else(|e| fail(format!("append: {e}")));
    for f in fds.iter_mut().filter(|f| f.what != "O_PATH") {
        f.pos = Some(lseek(f.fd, 0, libc::SEEK_CUR).unwrap_or_else(|e| fail(e)));
    }
    // Sanity of the setup itself, so a wrong expectation is caught here.
    let expected_flags = [
        libc::O_RDONLY,
        libc::O_WRONLY | libc::O_APPEND,
        libc::O_RDWR | libc::O_NONBLOCK,
        libc::O_RDWR | libc::O_SYNC,
        libc::O_RDONLY,
        libc::O_RDONLY,
        libc::O_PATH,
    ];
    for (f, exp) in fds.iter().zip(expected_flags) {
        if f.flags != exp {
            fail(format!(
                "{}: F_GETFL {:#o} before the dump, expected {exp:#o}",
                f.what, f.flags
            ));
        }
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for f in &fds {
        let (what, fd) = (f.what, f.fd);
        if let Some(fl) = c.ok(
            &format!("{what}: fd {fd}: F_GETFL"),
            fcntl(fd, libc::F_GETFL),
        ) {
            check_eq!(
                c,
                fl & !zdtmtst::O_LARGEFILE_KERNEL,
                f.flags,
                "{what}: fd {fd}: F_GETFL"
            );
        }
        if let Some(fl) = c.ok(
            &format!("{what}: fd {fd}: F_GETFD"),
            fcntl(fd, libc::F_GETFD),
        ) {
            check_eq!(c, fl, f.fd_flags, "{what}: fd {fd}: F_GETFD");
        }
        if let Some(di) = c.ok(&format!("{what}: fd {fd}: fstat"), dev_ino(fd)) {
            check_eq!(c, di, f.dev_ino, "{what}: fd {fd}: (st_dev, st_ino)");
        }
        if let Some(pos) = f.pos {
            if let Some(now) = c.ok(
                &format!("{what}: fd {fd}: lseek(SEEK_CUR)"),
                lseek(fd, 0, libc::SEEK_CUR),
            ) {
                check_eq!(c, now, pos, "{what}: fd {fd}: offset");
            }
        }
    }
    if !c.passed() {
        c.finish();
    }

    // Reads continue where they were.
    for (i, n) in [(0usize, 16usize), (2, 64), (3, 8), (4, 16), (5, 16)] {
        let f = &fds[i];
        let pos = f.pos.unwrap_or(0) as usize;
        let src: &[u8] = if f.file == 0 { &data } else { &small };
        let expected = src.get(pos..).map_or(&[][..], |s| &s[..n.min(s.len())]);
        if let Some(got) = c.ok(&format!("{}: read", f.what), read_at_cur(f.fd, n)) {
            check_eq!(
                c,
                got,
                expected,
                "{}: fd {}: bytes read at {pos}",
                f.what,
                f.fd
            );
        }
    }
    // An append lands at the end whatever the offset says.
    let log = &fds[1];
    if c.ok("lseek log to 0", lseek(log.fd, 0, libc::SEEK_SET))
        .is_some()
        && c.ok("append after restore", write_all(log.fd, b"APPENDED-2"))
            .is_some()
    {
        match std::fs::read(&paths[2]) {
            Ok(b) => {
                check_eq!(
                    c,
                    String::from_utf8_lossy(&b),
                    "header\nAPPENDED-1APPENDED-2",
                    "log file contents"
                );
            }
            Err(e) => c.fail(format!("reading {}: {e}", paths[2].display())),
        }
    }
    c.finish();
}
