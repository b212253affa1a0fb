//! Write tracking for incremental dumps, without soft-dirty bits: a userfaultfd in
//! asynchronous write-protect mode (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7).
//!
//! Arming, while the task is frozen: a remote `userfaultfd()` in the task, `UFFDIO_API` with
//! `WP_ASYNC`, `UFFDIO_REGISTER` in write-protect mode over every area whose pages the images
//! hold, then `PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING` from crust write-protects the pages
//! present there. From then on the kernel itself lifts the protection of a page on its first
//! write (no fault reaches any reader), so a later `PAGEMAP_SCAN` reports exactly the pages
//! written since: not `PAGE_IS_WRITTEN` means unchanged. Pages that move (`mremap` clears the
//! protection when no remap event is asked for, Linux 6.13), new mappings (not registered) and
//! new pages all report as written, so an error is always on the side of saving too much.
//!
//! Closing the last descriptor of the userfaultfd unregisters everything, and a descriptor left
//! in the task would be visible to it (and to anyone comparing its descriptors). So crust takes
//! a copy (`pidfd_getfd`) and closes the task's own at once; when the dump is over, a small
//! detached keeper process ([`crate::sys::mem::spawn_keeper`]) holds the copies until the next
//! dump takes them back through the abstract unix socket whose name the images record
//! (`MmEntry.track`), or until every tracked task has exited.

use std::os::fd::{AsRawFd, OwnedFd};

use parasite::{RemoteAddr, Tracee};

use crate::dump::remote_in as remote;
use crate::error::DumpError;
use crate::sys::{self, mem as sysmem};

const UFFD_USER_MODE_ONLY: u64 = 1;
const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `_IOWR(0xaa, 0x3f, struct uffdio_api)`
const UFFDIO_API: u64 = 0xc018_aa3f;
/// `_IOWR(0xaa, 0x00, struct uffdio_register)`
const UFFDIO_REGISTER: u64 = 0xc020_aa00;

/// A fresh name for the keeper of this dump's trackers.
pub(crate) fn keeper_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("crust-track-{}-{now}", std::process::id())
}

/// The trackers a previous dump left with its keeper `name`, by pid; none if it is gone.
/// With `lend`, the keeper keeps its copies until the tasks exit (see [`retire`]).
pub(crate) fn take_back(name: &str, lend: bool) -> Vec<(i32, OwnedFd)> {
    match sysmem::take_from_keeper(name, lend) {
        Ok(v) => {
            crate::debug!("{} write trackers taken back from {name}", v.len());
            v
        }
        Err(e) => {
            crate::warn!("write trackers of {name} not taken back ({e}): this dump is full");
            Vec::new()
        }
    }
}

/// Hands `trackers` to a new keeper listening on `name`.
pub(crate) fn keep(name: &str, trackers: &[(i32, OwnedFd)]) {
    if trackers.is_empty() {
        return;
    }
    let mut pidfds = Vec::new();
    for (pid, _) in trackers {
        match sys::pidfd_open(*pid) {
            Ok(p) => pidfds.push(p),
            Err(e) => crate::warn!("pid {pid}: no pidfd for the tracking keeper: {e}"),
        }
    }
    let held: Vec<(i32, i32)> = trackers.iter().map(|(p, f)| (*p, f.as_raw_fd())).collect();
    let raw: Vec<i32> = pidfds.iter().map(|p| p.as_raw_fd()).collect();
    match sysmem::spawn_keeper(name, &held, &raw) {
        Ok(()) => crate::debug!("write trackers of {} tasks kept by {name}", held.len()),
        Err(e) => crate::warn!("write tracking lost, the next dump is full: {e}"),
    }
}

/// Arms write tracking in the frozen task over `ranges` (whole VMAs) and write-protects the
/// pages present there. Returns crust's descriptor of the tracker; the task keeps none. A
/// range that cannot be registered (tracked by someone else, a kind userfaultfd refuses) is
/// left untracked: its pages always count as written.
pub(crate) fn arm(
    t: &mut Tracee,
    pid: i32,
    scratch: RemoteAddr,
    ranges: &[(u64, u64)],
) -> Result<OwnedFd, DumpError> {
    let fd = remote(
        t,
        pid,
        "userfaultfd for write tracking",
        libc::SYS_userfaultfd,
        [
            (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY,
            0,
            0,
            0,
            0,
            0,
        ],
    )?;
    let result = (|| {
        let mut api = [0u8; 24];
        api[..8].copy_from_slice(&UFFD_API.to_ne_bytes());
        api[8..16].copy_from_slice(&UFFD_FEATURE_WP_ASYNC.to_ne_bytes());
        t.write_mem(scratch, &api)?;
        remote(
            t,
            pid,
            "UFFDIO_API with async write-protect",
            libc::SYS_ioctl,
            [fd, UFFDIO_API, scratch.0, 0, 0, 0],
        )?;
        let mut registered = Vec::with_capacity(ranges.len());
        for &(start, end) in ranges {
            let mut reg = [0u8; 32];
            reg[..8].copy_from_slice(&start.to_ne_bytes());
            reg[8..16].copy_from_slice(&(end - start).to_ne_bytes());
            reg[16..24].copy_from_slice(&UFFDIO_REGISTER_MODE_WP.to_ne_bytes());
            t.write_mem(scratch, &reg)?;
            match t.syscall_ok(libc::SYS_ioctl, [fd, UFFDIO_REGISTER, scratch.0, 0, 0, 0]) {
                Ok(_) => registered.push((start, end)),
                Err(e) => crate::debug!("pid {pid}: {start:#x}-{end:#x} not tracked: {e}"),
            }
        }
        let pidfd = sys::pidfd_open(pid).map_err(|source| DumpError::Io {
            pid,
            path: format!("pidfd of {pid}").into(),
            source,
        })?;
        let ours =
            sysmem::pidfd_getfd(pidfd.as_raw_fd(), fd as i32).map_err(|source| DumpError::Io {
                pid,
                path: format!("write-tracking fd {fd} of {pid}").into(),
                source,
            })?;
        protect(pid, &registered)?;
        Ok::<_, DumpError>(ours)
    })();
    // The task never keeps it.
    remote(
        t,
        pid,
        "close of the write-tracking userfaultfd",
        libc::SYS_close,
        [fd, 0, 0, 0, 0, 0],
    )?;
    result
}

/// Arms again the tracker `fd` crust took back from the task's keeper: the ranges are
/// registered (again: new VMAs too) from crust's own copy, which acts on the task's address
/// space, and the pages present are write-protected again. Cheaper than a new tracker, which
/// would need the old one gone first, and the kernel lifts the protection of every page of a
/// tracker that goes (see [`retire`]).
pub(crate) fn rearm(pid: i32, fd: &OwnedFd, ranges: &[(u64, u64)]) -> Result<(), DumpError> {
    let mut registered = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges {
        match sysmem::uffd_register_wp(fd.as_raw_fd(), start, end - start) {
            Ok(()) => registered.push((start, end)),
            Err(e) => crate::debug!("pid {pid}: {start:#x}-{end:#x} not tracked: {e}"),
        }
    }
    protect(pid, &registered)
}

/// Trackers no longer needed, closed when crust exits (see [`retire`]).
static RETIRED: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// Lets go of trackers no longer needed without making anyone wait: closing the last
/// descriptor of a tracker makes the kernel lift the protection of every page of its task,
/// under its mmap lock, which is downtime while the tree is frozen and work for nothing when
/// it is being killed. `lent` trackers (borrowed from a keeper that holds them until their
/// tasks exit, as a dump that kills the tree does) are closed now: never the last close.
/// Others are closed as crust exits, the tree running again by then.
pub(crate) fn retire(trackers: Vec<(i32, OwnedFd)>, lent: bool) {
    if !lent {
        RETIRED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(trackers.into_iter().map(|t| t.1));
    }
}

/// Write-protects the present pages of `ranges` (registered with the task's tracker).
fn protect(pid: i32, ranges: &[(u64, u64)]) -> Result<(), DumpError> {
    if ranges.is_empty() {
        return Ok(());
    }
    let path = format!("/proc/{pid}/pagemap");
    let pagemap = std::fs::File::open(&path).map_err(|source| DumpError::Io {
        pid,
        path: path.clone().into(),
        source,
    })?;
    let mut out = Vec::new();
    for &(start, end) in ranges {
        out.clear();
        sysmem::scan(
            pagemap.as_raw_fd(),
            start,
            end,
            sysmem::Scan {
                flags: sysmem::PM_SCAN_WP_MATCHING | sysmem::PM_SCAN_CHECK_WPASYNC,
                required: 0,
                // Guard markers stay what they are.
                excluded: sysmem::guard_category(),
                anyof: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
                report: sys::PAGE_IS_PRESENT,
            },
            &mut out,
        )
        .map_err(|source| DumpError::Io {
            pid,
            path: format!("{path}: write-protecting {start:#x}-{end:#x}").into(),
            source,
        })?;
    }
    Ok(())
}
