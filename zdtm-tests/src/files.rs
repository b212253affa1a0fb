//! Helpers for the file tests: opening by path with raw flags, and reading what
//! `/proc/self/fdinfo` says about a descriptor (its locks above all).

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `open(path, flags, mode)`.
pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<RawFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The text of `/proc/self/fdinfo/FD`.
pub fn fdinfo(fd: RawFd) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
}

/// One lock as fdinfo lists it, without its sequence number and device:
/// `(kind, type, pid, start, end)`, e.g. `("POSIX", "WRITE", 42, "0", "EOF")`.
pub type Lock = (String, String, i32, String, String);

/// The `lock:` lines of `/proc/self/fdinfo/FD`.
pub fn locks(fd: RawFd) -> io::Result<Vec<Lock>> {
    let mut out = Vec::new();
    for line in fdinfo(fd)?.lines() {
        let Some(rest) = line.strip_prefix("lock:") else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        if w.len() < 8 {
            return Err(io::Error::other(format!("unreadable lock line {line:?}")));
        }
        out.push((
            w[1].to_string(),
            w[3].to_string(),
            w[4].parse().unwrap_or(0),
            w[6].to_string(),
            w[7].to_string(),
        ));
    }
    Ok(out)
}

/// A value of the fdinfo line `key:` (trimmed), if present.
pub fn fdinfo_field(fd: RawFd, key: &str) -> io::Result<Option<String>> {
    Ok(fdinfo(fd)?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    }))
}
