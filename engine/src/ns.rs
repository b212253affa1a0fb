//! Namespaces the dumped tree owns: pid, mount, net, ipc and uts.
//!
//! A tree whose root is the init of its own pid namespace (and has its own mount, net, ipc,
//! uts namespaces, as the zdtm `ns` flavor and container runtimes set up) is restored into
//! fresh namespaces of the same kinds: the root is created with `clone3(CLONE_NEW*)` and
//! `set_tid = [1, outer pid]`, every other task with `set_tid = [pid inside, outer pid]`, so
//! pids inside and outside are both the saved ones. Inside, the root makes the mount tree
//! private and mounts a `/proc` of the new pid namespace, sets the hostname and domain name,
//! and brings up loopback. What these namespaces contain beyond that (mounts, interfaces,
//! IPC objects) is not restored yet, and such a tree is dumped only if nothing else is in
//! them.

use std::path::PathBuf;

use crate::error::DumpError;
use crate::proc;

/// The namespace kinds crust recreates, with their clone flag.
pub(crate) const KINDS: [(&str, u64); 5] = [
    ("pid", libc::CLONE_NEWPID as u64),
    ("mnt", libc::CLONE_NEWNS as u64),
    ("net", libc::CLONE_NEWNET as u64),
    ("ipc", libc::CLONE_NEWIPC as u64),
    ("uts", libc::CLONE_NEWUTS as u64),
];

fn ns_id(pid: &str, kind: &str) -> Result<String, DumpError> {
    Ok(proc::readlink(format!("/proc/{pid}/ns/{kind}"))?)
}

/// Pids of a task or thread in every pid namespace it is in, outermost first (`NSpid:`).
pub(crate) fn nspids(path: &str) -> Result<Vec<i32>, DumpError> {
    Ok(nspids_in(&proc::read(path)?))
}

/// The `NSpid:` pids of a status text already read, outermost first.
pub(crate) fn nspids_in(status: &str) -> Vec<i32> {
    proc::status_field(status, "NSpid")
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// What the root of the tree owns.
#[derive(Debug, Default, Clone)]
pub(crate) struct Owned {
    pub flags: u64,
    pub hostname: String,
    pub domainname: String,
}

/// Finds which namespaces the root owns (differ from crust's own), and checks that every task
/// of the tree lives in the root's namespaces. `pids` and `view` (the root's own pid, or a live
/// thread of it when its leader has exited and shows no namespaces) are what /proc is read
/// through.
pub(crate) fn dump(root: i32, view: i32, pids: &[i32]) -> Result<Owned, DumpError> {
    let mut owned = Owned::default();
    for (kind, flag) in KINDS {
        let theirs = ns_id(&view.to_string(), kind)?;
        if theirs != ns_id("self", kind)? {
            owned.flags |= flag;
        }
        for &p in pids {
            if ns_id(&p.to_string(), kind)? != theirs {
                return Err(DumpError::Unsupported {
                    pid: p,
                    what: format!("a task in another {kind} namespace than the tree's root"),
                });
            }
        }
    }
    if owned.flags & libc::CLONE_NEWPID as u64 != 0 {
        let ns = nspids(&format!("/proc/{root}/status"))?;
        if ns.len() != 2 || ns[1] != 1 {
            return Err(DumpError::Unsupported {
                pid: root,
                what: format!(
                    "a tree in a pid namespace it does not start (NSpid {ns:?}; only a root that is init of its own namespace is)"
                ),
            });
        }
    }
    if owned.flags & libc::CLONE_NEWUTS as u64 != 0 {
        let path = PathBuf::from(format!("/proc/{view}/ns/uts"));
        let (h, d) = crate::sys::uts_names_of(&path).map_err(|source| DumpError::Io {
            pid: root,
            path,
            source,
        })?;
        owned.hostname = h;
        owned.domainname = d;
    }
    Ok(owned)
}
