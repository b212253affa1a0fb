//! A task's root directory (`chroot`), dump side; restore `chroot`s the task by path in
//! `restore::task_main`, after its working directory.
//!
//! `/proc/PID/root` reads the root as a path from the root of the task's mount namespace
//! (d_path walks up to the namespace's root mount when crust's own root is not on the way),
//! which is where the restored task resolves it. A path is only worth saving if it leads
//! back to the same directory, so it is resolved from a process of the same mount
//! namespace whose root is that namespace's root (crust itself, on the host, or a task of
//! the tree) and compared by device and inode. A removed root, or one that does not
//! resolve to itself (under a mount detached since, or over-mounted), is refused: restoring
//! the task under another root would change what it sees without a word.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use crate::error::DumpError;
use crate::proc;

/// Checks that `root`, what `/proc/PID/root` reads for the frozen task `pid`, brings the same
/// directory back at restore; `tree` are the pids of the dumped tree.
pub(crate) fn check(pid: i32, root: &str, tree: &HashSet<i32>) -> Result<(), DumpError> {
    if root == "/" {
        return Ok(());
    }
    let refuse = |why: String| DumpError::Root {
        pid,
        path: root.to_string(),
        why,
    };
    let link = format!("/proc/{pid}/root");
    let md = std::fs::metadata(&link).map_err(|source| DumpError::Io {
        pid,
        path: link.clone().into(),
        source,
    })?;
    if root.ends_with(" (deleted)") && md.nlink() == 0 {
        return Err(refuse("it was removed".into()));
    }
    if !root.starts_with('/') {
        return Err(refuse("not a path".into()));
    }
    let ns = |who: &str| std::fs::metadata(format!("/proc/{who}/ns/mnt")).map(|m| m.ino());
    let own_ns = ns(&pid.to_string()).map_err(|source| DumpError::Io {
        pid,
        path: format!("/proc/{pid}/ns/mnt").into(),
        source,
    })?;
    let mut viewers: Vec<String> = vec!["self".into()];
    let mut pids: Vec<i32> = tree.iter().copied().filter(|&p| p != pid).collect();
    pids.sort_unstable();
    viewers.extend(pids.iter().map(|p| p.to_string()));
    for v in viewers {
        let at_ns_root = ns(&v).ok() == Some(own_ns)
            && proc::readlink(format!("/proc/{v}/root")).ok().as_deref() == Some("/");
        if !at_ns_root {
            continue;
        }
        return match std::fs::metadata(format!("/proc/{v}/root{root}")) {
            Ok(m) if (m.dev(), m.ino()) == (md.dev(), md.ino()) => Ok(()),
            Ok(_) => Err(refuse(
                "the path leads to another directory in its mount namespace".into(),
            )),
            Err(e) => Err(refuse(format!(
                "the path does not resolve in its mount namespace ({e})"
            ))),
        };
    }
    Err(refuse(
        "no process of its mount namespace sits at the namespace's root to check the path from"
            .into(),
    ))
}
