//! Raw calls for file descriptions: moving file contents without a trip through user space
//! (`splice`, `copy_file_range`, `sendfile`), memfds, eventfds and locks.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(r: libc::c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `splice(fd_in, off_in, fd_out, off_out, len, flags)`; a `None` offset uses (and moves) the
/// descriptor's own position, as pipes require.
pub fn splice(
    fd_in: RawFd,
    off_in: Option<&mut i64>,
    fd_out: RawFd,
    off_out: Option<&mut i64>,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let p_in = off_in.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    let p_out = off_out.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    // SAFETY: the offset pointers are null or point to live i64s we exclusively borrow.
    let r = unsafe { libc::splice(fd_in, p_in, fd_out, p_out, len, flags) };
    cvt(r as libc::c_long)
}

/// `copy_file_range(fd_in, &off_in, fd_out, &off_out, len, 0)`
pub fn copy_file_range(
    fd_in: RawFd,
    off_in: &mut i64,
    fd_out: RawFd,
    off_out: &mut i64,
    len: usize,
) -> io::Result<usize> {
    // SAFETY: both offset pointers point to live i64s we exclusively borrow.
    let r = unsafe { libc::copy_file_range(fd_in, off_in, fd_out, off_out, len, 0) };
    cvt(r as libc::c_long)
}

/// `pread(fd, buf, off)`
pub fn pread(fd: RawFd, buf: &mut [u8], off: i64) -> io::Result<usize> {
    // SAFETY: buf is writable for its length.
    let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) };
    cvt(r as libc::c_long)
}

/// `pwrite(fd, buf, off)`
pub fn pwrite(fd: RawFd, buf: &[u8], off: i64) -> io::Result<usize> {
    // SAFETY: buf is readable for its length.
    let r = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) };
    cvt(r as libc::c_long)
}

/// `memfd_create(name, flags)`
pub fn memfd_create(name: &CStr, flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the result is a fresh fd we own.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    let fd = cvt(fd as libc::c_long)? as RawFd;
    // SAFETY: fresh descriptor from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fcntl(fd, cmd, arg)` for commands taking an integer (F_GET_SEALS, F_ADD_SEALS, F_GETFL).
pub fn fcntl_int(fd: RawFd, cmd: i32, arg: i32) -> io::Result<i32> {
    // SAFETY: only integer-argument commands are passed here.
    let r = unsafe { libc::fcntl(fd, cmd, arg) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

/// `eventfd(0, flags)`
pub fn eventfd(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only; the result is a fresh fd we own.
    let fd = unsafe { libc::eventfd(0, flags) };
    let fd = cvt(fd as libc::c_long)? as RawFd;
    // SAFETY: fresh descriptor from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `flock(fd, op)`
pub fn flock(fd: &OwnedFd, op: i32) -> io::Result<()> {
    // SAFETY: integers only.
    let r = unsafe { libc::flock(fd.as_raw_fd(), op) };
    cvt(r as libc::c_long).map(drop)
}

/// `fcntl(fd, F_OFD_SETLK, &{l_type, SEEK_SET, start, len})`
pub fn ofd_setlk(fd: &OwnedFd, write: bool, start: i64, len: i64) -> io::Result<()> {
    let fl = libc::flock {
        l_type: if write { libc::F_WRLCK } else { libc::F_RDLCK } as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    // SAFETY: fl is a valid struct flock for the duration of the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    cvt(r as libc::c_long).map(drop)
}

/// `renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)`: swaps two names atomically.
pub fn rename_exchange(a: &CStr, b: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    cvt(r as libc::c_long).map(drop)
}

/// `mknod(path, S_IFIFO | mode, 0)`
pub fn mkfifo(path: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: path is NUL-terminated.
    let r = unsafe { libc::mknod(path.as_ptr(), libc::S_IFIFO | (mode & 0o7777), 0) };
    cvt(r as libc::c_long).map(drop)
}

/// `fchown(fd, uid, gid)`, `fchmod(fd, mode)`
pub fn fchown_fchmod(fd: &OwnedFd, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: integers only.
    let r = unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) };
    cvt(r as libc::c_long)?;
    // SAFETY: integers only.
    let r = unsafe { libc::fchmod(fd.as_raw_fd(), mode & 0o7777) };
    cvt(r as libc::c_long).map(drop)
}

/// `futimens(fd, [atime, mtime])`
pub fn futimens(fd: &OwnedFd, atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let ts = |ns: i64| libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    };
    let times = [ts(atime_ns), ts(mtime_ns)];
    // SAFETY: times is an array of two timespecs, as futimens reads.
    let r = unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) };
    cvt(r as libc::c_long).map(drop)
}

/// `ftruncate(fd, len)`
pub fn ftruncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    // SAFETY: integers only.
    let r = unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) };
    cvt(r as libc::c_long).map(drop)
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 0)`: a descriptor of crust's own (say one given with
/// `--inherit-fd`) duplicated into one we own.
pub fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: integers only; on success the result is a fresh fd we own.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    let fd = cvt(r as libc::c_long)? as RawFd;
    // SAFETY: fresh descriptor from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `write(fd, buf)` once (eventfds and other objects without a file position).
pub fn write_once(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is readable for its length.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    cvt(r as libc::c_long)
}

/// `lseek(fd, off, whence)`; for `SEEK_DATA`/`SEEK_HOLE` (Linux 3.1) an `ENXIO` means "no
/// more data past `off`".
pub fn lseek(fd: RawFd, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: integers only.
    let r = unsafe { libc::lseek(fd, off, whence) };
    cvt(r as libc::c_long).map(|n| n as i64)
}

/// `linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW)`: with `from` a `/proc/PID/fd/N`
/// link, a new name for the file that descriptor holds (refused with `ENOENT` for a file
/// without links, unless it was made with `O_TMPFILE`).
pub fn link_follow(from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    cvt(r as libc::c_long).map(drop)
}
