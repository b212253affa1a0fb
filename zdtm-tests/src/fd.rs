//! Thin wrappers over descriptor system calls on raw fd numbers, which
//! tests need as plain integers (their numbers are part of the state).

use std::io;
use std::os::fd::RawFd;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `fcntl(fd, cmd, arg)` for commands taking an integer (or nothing).
pub fn fcntl(fd: RawFd, cmd: libc::c_int, arg: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: only integer-argument commands are passed through here.
    cvt(unsafe { libc::fcntl(fd, cmd, arg) })
}

/// `lseek(fd, off, whence)`.
pub fn lseek(fd: RawFd, off: i64, whence: libc::c_int) -> io::Result<i64> {
    // SAFETY: lseek takes no pointers.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// One `read(fd, n)`; the result is truncated to what was read.
pub fn read(fd: RawFd, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    // SAFETY: `buf` is writable for `n` bytes.
    let got = cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n) })?;
    buf.truncate(got);
    Ok(buf)
}

/// One `pread(fd, n, off)`.
pub fn pread(fd: RawFd, n: usize, off: i64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    // SAFETY: `buf` is writable for `n` bytes.
    let got = cvt_size(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), n, off) })?;
    buf.truncate(got);
    Ok(buf)
}

/// One `write(fd, data)`; returns how much was written.
pub fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is readable for its length.
    cvt_size(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) })
}

/// `fstat(fd)`.
pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable stat buffer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// `pipe2(flags)`: (read end, write end).
pub fn pipe(flags: libc::c_int) -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) })?;
    Ok((fds[0], fds[1]))
}

/// `close(fd)`.
pub fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller owns `fd` and no longer uses it.
    cvt(unsafe { libc::close(fd) }).map(drop)
}

/// `ioctl(fd, FIONREAD)`: bytes ready to read.
pub fn nread(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(n as usize)
}

/// Where `/proc/self/fd/FD` points.
pub fn link(fd: RawFd) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_round_trip() {
        let (r, w) = pipe(libc::O_NONBLOCK).unwrap();
        assert_eq!(write(w, b"abc").unwrap(), 3);
        assert_eq!(nread(r).unwrap(), 3);
        assert_eq!(read(r, 10).unwrap(), b"abc");
        let e = read(r, 10).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        assert_eq!(fstat(r).unwrap().st_ino, fstat(w).unwrap().st_ino);
        assert!(link(r).unwrap().to_string_lossy().starts_with("pipe:["));
        close(r).unwrap();
        close(w).unwrap();
        assert!(fcntl(r, libc::F_GETFD, 0).is_err());
    }
}
