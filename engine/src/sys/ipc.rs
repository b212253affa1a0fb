//! System V shared memory calls, made by crust itself (from a thread that entered the tree's
//! IPC namespace with `setns`).

use std::io;
use std::os::fd::OwnedFd;

/// `shmctl(id, SHM_STAT_ANY, buf)` (Linux 4.17): like `SHM_STAT`, without the read
/// permission check.
const SHM_STAT_ANY: i32 = 15;

/// What `SHM_STAT_ANY` tells of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShmStat {
    pub shmid: i32,
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// `shm_perm.mode`: permission bits plus `SHM_DEST`, `SHM_LOCKED`, ...
    pub mode: u32,
    pub size: u64,
    pub nattch: u64,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `shmctl(0, IPC_INFO, buf)`: the highest index in use in the kernel's segment table.
pub fn shm_max_index() -> io::Result<i32> {
    // struct shminfo is 9 longs; a larger buffer of the alignment of shmid_ds.
    let mut buf = [0u64; 16];
    // SAFETY: buf is 128 bytes, more than the 72 of struct shminfo the kernel writes.
    let r = unsafe { libc::shmctl(0, libc::IPC_INFO, buf.as_mut_ptr().cast()) };
    check(r)
}

/// `shmctl(index, SHM_STAT_ANY, &ds)`: the segment at `index` of the table, if any.
pub fn shm_stat_index(index: i32) -> io::Result<ShmStat> {
    // SAFETY: shmid_ds is plain data; all zeroes is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a shmid_ds the kernel fills.
    let id = check(unsafe { libc::shmctl(index, SHM_STAT_ANY, &mut ds) })?;
    Ok(ShmStat {
        shmid: id,
        key: ds.shm_perm.__key,
        uid: ds.shm_perm.uid,
        gid: ds.shm_perm.gid,
        cuid: ds.shm_perm.cuid,
        cgid: ds.shm_perm.cgid,
        mode: ds.shm_perm.mode as u32,
        size: ds.shm_segsz as u64,
        nattch: ds.shm_nattch,
    })
}

/// `shmget(key, size, flags)`
pub fn shmget(key: i32, size: u64, flags: i32) -> io::Result<i32> {
    // SAFETY: integers only.
    check(unsafe { libc::shmget(key, size as usize, flags) })
}

/// `shmctl(shmid, IPC_SET, {uid, gid, mode})`: owner and permission bits.
pub fn shm_set(shmid: i32, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: shmid_ds is plain data; all zeroes is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = mode as _;
    // SAFETY: the kernel reads only shm_perm.{uid,gid,mode} of ds.
    check(unsafe { libc::shmctl(shmid, libc::IPC_SET, &mut ds) })?;
    Ok(())
}

/// `shmctl(shmid, SHM_LOCK, NULL)`
pub fn shm_lock(shmid: i32) -> io::Result<()> {
    // SAFETY: SHM_LOCK takes no buffer.
    check(unsafe { libc::shmctl(shmid, libc::SHM_LOCK, std::ptr::null_mut()) })?;
    Ok(())
}

/// `shmctl(shmid, IPC_RMID, NULL)`
pub fn shm_remove(shmid: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no buffer.
    check(unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) })?;
    Ok(())
}

/// `shmat(shmid, NULL, rdonly ? SHM_RDONLY : 0)` in crust, `open("/proc/self/map_files/A-B")`
/// and `shmdt`: a descriptor of the segment's shmem file, for `pread`/`pwrite` and
/// `SEEK_DATA`, that does not keep it attached.
pub fn shm_file(shmid: i32, size: u64, write: bool) -> io::Result<OwnedFd> {
    let flags = if write { 0 } else { libc::SHM_RDONLY };
    // SAFETY: the kernel picks a free address; nothing in crust refers to the attachment and it
    // is detached below, before anything could.
    let at = unsafe { libc::shmat(shmid, std::ptr::null(), flags) };
    if at as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    let start = at as u64;
    let end = start + size.next_multiple_of(4096);
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(format!("/proc/self/map_files/{start:x}-{end:x}"));
    // SAFETY: detaching exactly the attachment made above.
    unsafe { libc::shmdt(at) };
    Ok(opened?.into())
}
