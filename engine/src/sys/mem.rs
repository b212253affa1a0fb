//! Raw memory syscalls for [`crate::mm`]: `PAGEMAP_SCAN` with write-protection, anonymous
//! shared memory created in crust, and the calls a restore child makes on its own address
//! space before crust takes it over. Each wrapper's doc line is the call it makes.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::PageRegion;

/// Page was written since it was write-protected (or was never protected).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// Page is mapped through a transparent huge page.
pub const PAGE_IS_HUGE: u64 = 1 << 6;
/// Page is a guard region marker (`MADV_GUARD_INSTALL`, Linux 6.13).
pub const PAGE_IS_GUARD: u64 = 1 << 8;

/// [`PAGE_IS_GUARD`] where this kernel knows it (6.14), else 0: an unknown category makes
/// `PAGEMAP_SCAN` fail with EINVAL.
pub fn guard_category() -> u64 {
    static KNOWN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KNOWN.get_or_init(|| {
        let Ok(f) = std::fs::File::open("/proc/self/pagemap") else {
            return 0;
        };
        let probe = 0u64;
        let at = &probe as *const u64 as u64 & !4095;
        let s = Scan {
            required: PAGE_IS_GUARD,
            report: PAGE_IS_GUARD,
            ..Default::default()
        };
        let mut out = Vec::new();
        use std::os::fd::AsRawFd;
        match scan(f.as_raw_fd(), at, at + 4096, s, &mut out) {
            Ok(()) => PAGE_IS_GUARD,
            Err(_) => 0,
        }
    })
}

/// Write-protect the matching pages while scanning.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail with EPERM unless the area is registered for async write-protection.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

#[repr(C)]
#[derive(Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;

/// What a [`scan`] selects and reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scan {
    /// `PM_SCAN_*` flags.
    pub flags: u64,
    /// Pages must have every one of these categories...
    pub required: u64,
    /// ...none of these...
    pub excluded: u64,
    /// ...and at least one of these (0: no condition).
    pub anyof: u64,
    /// Categories reported in [`PageRegion::categories`].
    pub report: u64,
}

/// `ioctl(pagemap_fd, PAGEMAP_SCAN, &arg)` over `[start, end)` (Linux 6.7), repeated until the
/// whole range is walked; appends matching regions (split where reported categories change).
///
/// A range of [`SCAN_SPLIT`] or more is walked in two halves at once, the upper one on a
/// thread of its own (the walk holds the mm lock for reading only): a region crossing the
/// middle comes in two pieces.
pub fn scan(
    pagemap: RawFd,
    start: u64,
    end: u64,
    s: Scan,
    out: &mut Vec<PageRegion>,
) -> io::Result<()> {
    // Page-table (2 MiB) aligned, so that no huge page is cut.
    let mid = (start + (end - start) / 2) & !((2 << 20) - 1);
    if end - start < SCAN_SPLIT || mid <= start || mid >= end {
        return scan_range(pagemap, start, end, s, out);
    }
    let mut upper = Vec::new();
    let (low, high) = std::thread::scope(|sc| {
        let high = sc.spawn(|| scan_range(pagemap, mid, end, s, &mut upper));
        super::leave_cpu();
        let low = scan_range(pagemap, start, mid, s, out);
        (low, high.join())
    });
    low?;
    high.map_err(|_| io::Error::other("pagemap scan thread panicked"))??;
    out.extend_from_slice(&upper);
    Ok(())
}

/// Smallest range [`scan`] walks in two halves.
pub const SCAN_SPLIT: u64 = 256 << 20;

fn scan_range(
    pagemap: RawFd,
    start: u64,
    end: u64,
    s: Scan,
    out: &mut Vec<PageRegion>,
) -> io::Result<()> {
    let mut vec = vec![PageRegion::default(); 4096];
    let mut cur = start;
    while cur < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: s.flags,
            start: cur,
            end,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            category_inverted: s.excluded,
            category_mask: s.required | s.excluded,
            category_anyof_mask: s.anyof,
            return_mask: s.report,
            ..Default::default()
        };
        // SAFETY: `arg` is a properly sized pm_scan_arg and `vec` holds vec_len page_regions
        // that outlive the call.
        let n = unsafe { libc::ioctl(pagemap, PAGEMAP_SCAN as _, &mut arg as *mut PmScanArg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = &vec[..n as usize];
        out.extend_from_slice(got);
        // walk_end is where the walk stopped, but 6.18 may report it short of regions it
        // already returned (a partial last batch): never walk those again.
        let next = got.last().map_or(arg.walk_end, |r| r.end.max(arg.walk_end));
        if next <= cur {
            break;
        }
        cur = next;
    }
    Ok(())
}

/// `process_vm_readv(pid, [buf], remote)`: the ranges `remote` of the target, one after the
/// other into `buf` (which is at least their total length). Returns the bytes read: a short
/// count stops at the first range the target cannot read.
pub fn process_vm_read_iov(pid: i32, buf: &mut [u8], remote: &[(u64, u64)]) -> io::Result<usize> {
    let total: u64 = remote.iter().map(|r| r.1).sum();
    if total as usize > buf.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: total as usize,
    };
    let rem: Vec<libc::iovec> = remote
        .iter()
        .map(|&(a, l)| libc::iovec {
            iov_base: a as *mut libc::c_void,
            iov_len: l as usize,
        })
        .collect();
    // SAFETY: `local` describes the first `total` bytes of `buf`, which we exclusively borrow
    // (checked long enough above); the remote iovecs are only interpreted by the kernel in the
    // target's address space.
    let r = unsafe {
        libc::process_vm_readv(pid, &local, 1, rem.as_ptr(), rem.len() as libc::c_ulong, 0)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `ioctl(uffd, UFFDIO_REGISTER, {start, len, UFFDIO_REGISTER_MODE_WP})` on crust's copy of
/// a task's userfaultfd: registers the range in that task's address space.
pub fn uffd_register_wp(uffd: RawFd, start: u64, len: u64) -> io::Result<()> {
    let mut reg = [start, len, 1 << 1, 0u64];
    // SAFETY: `reg` is a struct uffdio_register (range, mode, ioctls) that outlives the call.
    let r = unsafe { libc::ioctl(uffd, 0xc020_aa00_u64 as libc::c_ulong, reg.as_mut_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)` in crust,
/// then `open("/proc/self/map_files/A-B", O_RDWR)` and `munmap`: a descriptor of a new
/// anonymous shmem object, the very kind of object a task's `MAP_SHARED | MAP_ANONYMOUS`
/// mapping has (it shows as `/dev/zero (deleted)` wherever it is mapped).
pub fn anon_shmem(size: u64) -> io::Result<OwnedFd> {
    let len = size as usize;
    if len == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a fresh mapping at a kernel-chosen address; nothing in crust refers to it and it
    // is unmapped below, before anything could.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = at as u64;
    let path = format!("/proc/self/map_files/{:x}-{:x}", start, start + size);
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path);
    // SAFETY: unmapping exactly the mapping made above; the object lives on in the fd.
    unsafe { libc::munmap(at, len) };
    Ok(opened?.into())
}

/// `userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY)` then `ioctl(UFFDIO_API, {UFFD_API,
/// UFFD_FEATURE_WP_ASYNC})` in crust itself: whether this kernel tracks writes without
/// soft-dirty bits (Linux 6.7).
pub fn probe_wp_async() -> io::Result<()> {
    // SAFETY: integers only; a returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | 1) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from the kernel.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut api = [0xaau64, 1 << 15, 0];
    // SAFETY: `api` is a struct uffdio_api (three u64) that outlives the call.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            0xc018_aa3f_u64 as libc::c_ulong,
            api.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`
pub fn memfd(name: &str) -> io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    memfd_create(
        c.as_c_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(io::Error::from)
}

/// `pidfd_getfd(pidfd, fd, 0)`: a copy of another task's descriptor.
pub fn pidfd_getfd(pidfd: RawFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: integers only; on success the kernel returns a new fd that we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `fallocate(file, mode, off, len)`
pub fn fallocate(file: &std::fs::File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integers only, on a descriptor the borrowed file keeps open.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, off as i64, len as i64) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `fcntl(fd, F_GET_SEALS)`
pub fn get_seals(fd: RawFd) -> io::Result<u32> {
    // SAFETY: F_GET_SEALS takes no argument.
    let r = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u32)
    }
}

/// `fcntl(fd, F_ADD_SEALS, seals)`
pub fn add_seals(fd: RawFd, seals: u32) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS takes an integer.
    let r = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals as libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode)`
pub fn create_excl(path: &std::ffi::CStr, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: path is NUL-terminated; the result is a fresh fd we own.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Calls a restore child makes on its own address space, between its fork and its SIGSTOP:
/// plain syscalls, no allocation, the errno as error.
pub mod child {
    fn ret(r: i64) -> Result<i64, i32> {
        if r < 0 {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(r)
        }
    }

    /// `mmap(addr, len, prot, flags | MAP_FIXED_NOREPLACE, -1, 0)`: an anonymous mapping at
    /// exactly `addr`, never over an existing one.
    pub fn map_anon_at(addr: u64, len: u64, prot: i32, flags: i32) -> Result<(), i32> {
        const MAP_FIXED_NOREPLACE: i32 = 0x100000;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping, so nothing crust's copy of
        // itself uses can be disturbed; the new range is used only through syscalls.
        let r = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len as usize,
                prot,
                flags | libc::MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(ret(-1).unwrap_err());
        }
        if r as u64 != addr {
            // Kernels before 4.17 ignore the flag and may map elsewhere.
            // SAFETY: unmapping the mapping just made, which nothing uses.
            unsafe { libc::munmap(r, len as usize) };
            return Err(libc::EEXIST);
        }
        Ok(())
    }

    /// `mmap(NULL, len, prot, flags, -1, 0)`: an anonymous mapping where the kernel likes.
    pub fn map_anon_anywhere(len: u64, prot: i32, flags: i32) -> Result<u64, i32> {
        // SAFETY: a new mapping at a kernel-chosen free place disturbs nothing.
        let r = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                prot,
                (flags | libc::MAP_ANONYMOUS) & !libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(ret(-1).unwrap_err());
        }
        Ok(r as u64)
    }

    /// `mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to)`
    pub fn move_to(from: u64, len: u64, to: u64) -> Result<(), i32> {
        // SAFETY: moves a mapping this task made for the restored image to a range the caller
        // checked free; crust's own code never refers to either range.
        let r = unsafe {
            libc::mremap(
                from as *mut libc::c_void,
                len as usize,
                len as usize,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to as *mut libc::c_void,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(ret(-1).unwrap_err());
        }
        Ok(())
    }

    /// `munmap(addr, len)`
    pub fn unmap(addr: u64, len: u64) -> Result<(), i32> {
        // SAFETY: the range belongs to the restored image, never to crust's own code or data.
        ret(unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) } as i64).map(drop)
    }

    /// `madvise(addr, len, advice)`
    pub fn advise(addr: u64, len: u64, advice: i32) -> Result<(), i32> {
        // SAFETY: the range belongs to the restored image; advice values used here only drop
        // or tune pages of that range.
        ret(unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, advice) } as i64)
            .map(drop)
    }

    /// `pread(fd, addr, len, off)` until `len` bytes are in: fills memory of the restored image
    /// straight from a pages file.
    pub fn read_into(fd: i32, addr: u64, len: u64, off: u64) -> Result<(), i32> {
        let mut done = 0u64;
        while done < len {
            // SAFETY: [addr, addr + len) is a private read-write mapping made for the restored
            // image (checked by the caller's plan); crust's copy of itself never reads it.
            let r = unsafe {
                libc::pread(
                    fd,
                    (addr + done) as *mut libc::c_void,
                    (len - done) as usize,
                    (off + done) as libc::off_t,
                )
            };
            match ret(r as i64) {
                Ok(0) => return Err(libc::EIO),
                Ok(n) => done += n as u64,
                Err(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Forks a detached keeper process that holds `held` (pid, descriptor) pairs for a later
/// crust: it listens on the abstract unix socket `name` and hands every pair to a client that
/// connects (one `SCM_RIGHTS` message each: the pid, then the descriptor). The client's first
/// byte says what follows: [`KEEPER_TAKE`], the keeper closes its own copies and exits;
/// [`KEEPER_LEND`], it keeps them and goes on waiting. It exits once every process of
/// `pidfds` has exited. A double fork: the keeper is nobody's
/// child but the nearest subreaper's, and leaves no zombie behind in crust.
///
/// The keeper runs only raw system calls on memory prepared before the fork, so forking from
/// a multithreaded crust is safe.
/// A client of [`spawn_keeper`] takes the descriptors over: the keeper goes.
pub const KEEPER_TAKE: u8 = b'T';
/// A client of [`spawn_keeper`] borrows copies: the keeper keeps its own until its processes
/// have exited, so that the client closing its copies is never the last close.
pub const KEEPER_LEND: u8 = b'L';

pub fn spawn_keeper(name: &str, held: &[(i32, RawFd)], pidfds: &[RawFd]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // The listening socket, bound before the fork so a bind error is crust's to report.
    let listener = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let addr =
        nix::sys::socket::UnixAddr::new_abstract(name.as_bytes()).map_err(io::Error::from)?;
    nix::sys::socket::bind(listener.as_raw_fd(), &addr).map_err(io::Error::from)?;
    nix::sys::socket::listen(
        &listener,
        nix::sys::socket::Backlog::new(4).map_err(io::Error::from)?,
    )
    .map_err(io::Error::from)?;
    let lfd = listener.as_raw_fd();

    // Everything the keeper touches, allocated now.
    let mut keep: Vec<RawFd> = vec![lfd];
    keep.extend(held.iter().map(|h| h.1));
    keep.extend(pidfds);
    keep.sort_unstable();
    keep.dedup();
    let mut polls: Vec<libc::pollfd> = std::iter::once(lfd)
        .chain(pidfds.iter().copied())
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Control buffers of u64, for the alignment of struct cmsghdr.
    let mut msgs: Vec<([u8; 4], Vec<u64>)> = held
        .iter()
        .map(|&(pid, _)| (pid.to_ne_bytes(), vec![0u64; 8]))
        .collect();

    // SAFETY: fork from a possibly multithreaded crust: the child runs only the raw system
    // calls below, on memory allocated before the fork, and leaves with _exit.
    let first = unsafe { libc::fork() };
    if first < 0 {
        return Err(io::Error::last_os_error());
    }
    if first > 0 {
        drop(listener);
        let mut st = 0;
        // SAFETY: reaping our own child; st is a valid out pointer.
        unsafe { libc::waitpid(first, &mut st, libc::__WALL) };
        return if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
            Ok(())
        } else {
            Err(io::Error::other("the tracking keeper could not start"))
        };
    }
    // SAFETY: everything below runs in the forked children only: raw calls, no allocation.
    unsafe {
        if libc::setsid() < 0 || libc::fork() != 0 {
            libc::_exit(0);
        }
        // Only the keeper's own descriptors stay open.
        let mut from = 0u32;
        for &fd in &keep {
            if fd as u32 > from {
                libc::syscall(libc::SYS_close_range, from, fd as u32 - 1, 0);
            }
            from = fd as u32 + 1;
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0);
        let mut alive = polls.len() - 1;
        loop {
            let r = libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1);
            if r < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(1);
            }
            for p in polls.iter_mut().skip(1) {
                if p.fd >= 0 && p.revents != 0 {
                    p.fd = -1;
                    alive -= 1;
                }
            }
            if !polls.is_empty() && polls[0].revents != 0 {
                let conn = libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), 0);
                if conn >= 0 {
                    // What the client wants, within a second (none: it takes them).
                    let mut ask = libc::pollfd {
                        fd: conn,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    let mut mode = KEEPER_TAKE;
                    if libc::poll(&mut ask, 1, 1000) == 1 {
                        libc::recv(conn, (&mut mode as *mut u8).cast(), 1, libc::MSG_DONTWAIT);
                    }
                    for (i, (pid, cbuf)) in msgs.iter_mut().enumerate() {
                        let mut iov = libc::iovec {
                            iov_base: pid.as_mut_ptr().cast(),
                            iov_len: 4,
                        };
                        let mut msg: libc::msghdr = std::mem::zeroed();
                        msg.msg_iov = &mut iov;
                        msg.msg_iovlen = 1;
                        msg.msg_control = cbuf.as_mut_ptr().cast();
                        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
                        let c = libc::CMSG_FIRSTHDR(&msg);
                        (*c).cmsg_level = libc::SOL_SOCKET;
                        (*c).cmsg_type = libc::SCM_RIGHTS;
                        (*c).cmsg_len = libc::CMSG_LEN(4) as _;
                        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), held[i].1);
                        libc::sendmsg(conn, &msg, libc::MSG_NOSIGNAL);
                    }
                    if mode == KEEPER_LEND {
                        libc::close(conn);
                        continue;
                    }
                    // Ours go before the client sees the end: its copies must be the last.
                    for &(_, fd) in held {
                        libc::close(fd);
                    }
                    libc::close(conn);
                    libc::_exit(0);
                }
            }
            if alive == 0 {
                libc::_exit(0);
            }
        }
    }
}

/// Connects to the keeper at abstract unix socket `name` and takes every (pid, descriptor)
/// pair it holds, or borrows copies with `lend` (see [`spawn_keeper`]); none when no keeper
/// answers.
pub fn take_from_keeper(name: &str, lend: bool) -> io::Result<Vec<(i32, OwnedFd)>> {
    use nix::sys::socket::{
        connect, recvmsg, socket, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
        UnixAddr,
    };
    use std::os::fd::AsRawFd;
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(io::Error::from)?;
    match connect(sock.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(nix::errno::Errno::ECONNREFUSED) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    }
    let mode = [if lend { KEEPER_LEND } else { KEEPER_TAKE }];
    nix::sys::socket::send(sock.as_raw_fd(), &mode, MsgFlags::MSG_NOSIGNAL)
        .map_err(io::Error::from)?;
    let mut out = Vec::new();
    loop {
        let mut pid = [0u8; 4];
        let mut iov = [io::IoSliceMut::new(&mut pid)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        if msg.bytes == 0 {
            break;
        }
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(f) = c {
                fds.extend(f);
            }
        }
        let bytes = msg.bytes;
        for fd in fds {
            // SAFETY: a descriptor just received over SCM_RIGHTS, owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if bytes == 4 {
                out.push((i32::from_ne_bytes(pid), fd));
            }
        }
    }
    Ok(out)
}

/// A page-aligned buffer of crust's own: an anonymous private mapping, as `O_DIRECT` writes
/// need (`mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)`).
pub struct PageBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves that
// ownership.
unsafe impl Send for PageBuf {}

impl PageBuf {
    pub fn new(len: usize) -> io::Result<PageBuf> {
        if len == 0 {
            return Ok(PageBuf {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address; it aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(PageBuf {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live read-write mapping of `len` bytes (or dangling with len 0)
        // that only this value refers to, borrowed mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: the mapping made in `new`, no longer borrowed (we own it mutably).
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// `sendmsg(sock, [0], SCM_RIGHTS [fd])`: one descriptor over a unix socket.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let iov = [io::IoSlice::new(&[0u8])];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .map_err(io::Error::from)
}
