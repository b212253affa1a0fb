//! `files-data.img`: the raw contents saved for files (pipe and fifo queues, unlinked files,
//! memfds), each a byte range that a `files.img` or `pipes-data.img` record names.
//!
//! Contents move between the kernel objects and this file without passing through crust's
//! memory where the kernel allows it: a pipe's queue is `tee`d into a private pipe and
//! `splice`d into the image, and spliced back into the new pipe at restore; file contents go
//! with `copy_file_range(2)` (or `sendfile(2)` across file systems that refuse it).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use images::pb::DataRange;
use images::ImageDir;

use crate::sys::fileops;

/// Appends contents to `files-data.img.tmp` during a dump.
pub(crate) struct DataWriter {
    file: File,
    off: u64,
}

fn fallback(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF)
    )
}

/// Copies `len` bytes of `src` at `src_off` into `dst` at `dst_off`, in the kernel where it can.
/// Returns how many bytes were copied (fewer than `len` when `src` is shorter).
fn copy(
    src: RawFd,
    mut src_off: i64,
    dst: RawFd,
    mut dst_off: i64,
    len: u64,
) -> std::io::Result<u64> {
    let mut left = len;
    let mut kernel = true;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        let n = if kernel {
            match fileops::copy_file_range(src, &mut src_off, dst, &mut dst_off, chunk) {
                Ok(n) => n,
                Err(e) if fallback(&e) => {
                    kernel = false;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        } else {
            let mut buf = vec![0u8; chunk.min(1 << 20)];
            let n = fileops::pread(src, &mut buf, src_off)?;
            let mut done = 0;
            while done < n {
                done += fileops::pwrite(dst, &buf[done..n], dst_off + done as i64)?;
            }
            src_off += n as i64;
            dst_off += n as i64;
            n
        };
        if n == 0 {
            break;
        }
        left -= n as u64;
    }
    Ok(len - left)
}

impl DataWriter {
    pub(crate) fn create(dir: &ImageDir) -> Result<DataWriter, images::ImageError> {
        Ok(DataWriter {
            file: dir.create_files_data()?,
            off: 0,
        })
    }

    /// Saves `len` bytes of the file `src` from offset 0.
    pub(crate) fn save_file(&mut self, src: RawFd, len: u64) -> std::io::Result<DataRange> {
        self.save_range(src, 0, len)
    }

    /// Saves `len` bytes of the file `src` from offset `from`.
    pub(crate) fn save_range(
        &mut self,
        src: RawFd,
        from: u64,
        len: u64,
    ) -> std::io::Result<DataRange> {
        let n = copy(
            src,
            from as i64,
            self.file.as_raw_fd(),
            self.off as i64,
            len,
        )?;
        if n != len {
            return Err(std::io::Error::other(format!(
                "{n} bytes read of {len}: the file shrank while frozen"
            )));
        }
        Ok(self.take(n))
    }

    /// Saves everything queued in the pipe `src` (which crust owns; it is drained).
    ///
    /// The bytes start on a page boundary of the image: spliced back, each page of the file
    /// becomes one pipe buffer, so a queue that filled its pipe fits in it again (unaligned,
    /// it would straddle one page more than the pipe has buffers).
    pub(crate) fn save_pipe(&mut self, src: RawFd, queued: usize) -> std::io::Result<DataRange> {
        self.off = self.off.next_multiple_of(images::PAGE_SIZE);
        let start = self.off;
        let mut off = self.off as i64;
        let mut left = queued;
        while left > 0 {
            match fileops::splice(src, None, self.file.as_raw_fd(), Some(&mut off), left, 0) {
                Ok(0) => break,
                Ok(n) => left -= n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        self.off = start;
        Ok(self.take(off as u64 - start))
    }

    fn take(&mut self, n: u64) -> DataRange {
        let r = DataRange {
            offset: self.off,
            len: n,
        };
        self.off += n;
        r
    }

    /// Closes the file and gives it its final name.
    pub(crate) fn commit(self, dir: &ImageDir) -> Result<(), images::ImageError> {
        drop(self.file);
        dir.commit_files_data()
    }
}

/// Reads contents back from `files-data.img` during a restore.
pub(crate) struct DataReader {
    path: PathBuf,
    file: Option<(File, u64)>,
}

impl DataReader {
    pub(crate) fn new(dir: &ImageDir) -> DataReader {
        DataReader {
            path: dir.files_data_path(),
            file: None,
        }
    }

    /// The open image and the range checked against its size.
    fn check(&mut self, r: &DataRange) -> Result<RawFd, crate::error::RestoreError> {
        if self.file.is_none() {
            let f = File::open(&self.path).map_err(|source| crate::error::RestoreError::File {
                path: self.path.display().to_string(),
                source,
            })?;
            let len = f
                .metadata()
                .map_err(|source| crate::error::RestoreError::File {
                    path: self.path.display().to_string(),
                    source,
                })?
                .len();
            self.file = Some((f, len));
        }
        let (f, len) = self.file.as_ref().expect("opened above");
        if r.offset.checked_add(r.len).is_none_or(|end| end > *len) {
            return Err(crate::error::RestoreError::BadImage {
                image: self.path.clone(),
                what: format!(
                    "range {}+{} lies outside the file ({len} bytes)",
                    r.offset, r.len
                ),
            });
        }
        Ok(f.as_raw_fd())
    }

    /// Writes the range into the file `dst` from its offset 0.
    pub(crate) fn copy_to_file(
        &mut self,
        r: &DataRange,
        dst: RawFd,
        what: &str,
    ) -> Result<(), crate::error::RestoreError> {
        self.copy_to_file_at(r, dst, 0, what)
    }

    /// Writes the range into the file `dst` at offset `at`, leaving the rest of it alone (so
    /// that holes between ranges stay holes).
    pub(crate) fn copy_to_file_at(
        &mut self,
        r: &DataRange,
        dst: RawFd,
        at: u64,
        what: &str,
    ) -> Result<(), crate::error::RestoreError> {
        let src = self.check(r)?;
        let err = |source| crate::error::RestoreError::File {
            path: what.to_string(),
            source,
        };
        let at =
            i64::try_from(at).map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        let n = copy(src, r.offset as i64, dst, at, r.len).map_err(err)?;
        if n != r.len {
            return Err(err(std::io::Error::other("short copy from files-data.img")));
        }
        Ok(())
    }

    /// Splices the range into the pipe `dst`, which must have room for it.
    pub(crate) fn fill_pipe(
        &mut self,
        r: &DataRange,
        dst: RawFd,
        what: &str,
    ) -> Result<(), crate::error::RestoreError> {
        let src = self.check(r)?;
        let err = |source| crate::error::RestoreError::File {
            path: what.to_string(),
            source,
        };
        let mut off = r.offset as i64;
        let end = (r.offset + r.len) as i64;
        while off < end {
            let left = (end - off) as usize;
            match fileops::splice(
                src,
                Some(&mut off),
                dst,
                None,
                left,
                libc::SPLICE_F_NONBLOCK,
            ) {
                Ok(0) => return Err(err(std::io::Error::other("short splice"))),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // No pipe buffer left (the range is not page aligned, as in an image of
                // another writer): copy the rest, which packs pages fully.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    let mut buf = vec![0u8; left];
                    let n = fileops::pread(src, &mut buf, off).map_err(err)?;
                    let mut done = 0;
                    while done < n {
                        done += fileops::write_once(dst, &buf[done..n]).map_err(err)?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }
}
