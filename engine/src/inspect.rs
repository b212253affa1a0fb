//! Inspect: a normalized, comparable description of a live process tree.
//!
//! The zdtm harness takes one [`TreeState`] before dump and one after restore and
//! requires them to be equal (minus differences a test declares as expected), so
//! everything here is chosen to be *stable across a correct checkpoint/restore* and
//! *different after a wrong one*.
//!
//! Everything is read from `/proc` only: no ptrace, no signals, nothing that
//! perturbs the task (reading `smaps` takes the mmap lock for reading, like `ps`).
//! The files used and what is kept from each:
//!
//! - `/proc/PID/task/*/children` (CONFIG_PROC_CHILDREN, 4.2): the tree, walked depth
//!   first from the root, children in ascending pid order.
//! - `/proc/PID/stat`: ppid, pgid, sid. The root's parent is outside the tree (the
//!   harness, or a namespace launcher before dump and the harness after restore),
//!   so the root records no ppid.
//! - `/proc/PID/comm`, `/proc/PID/task/TID/comm`: process and thread names.
//! - `/proc/PID/exe`, `cwd`, `root`: link targets.
//! - `/proc/PID/status`: TracerPid (a restored task must not be left traced),
//!   Uid/Gid (real, effective, saved, fs), Groups, CapInh/CapPrm/CapEff/CapBnd/CapAmb,
//!   NoNewPrivs, Seccomp, Umask (4.7), SigIgn, SigCgt, ShdPnd; per thread from
//!   `/proc/PID/task/TID/status`: SigBlk and SigPnd (both are per thread).
//! - `/proc/PID/smaps`: each VMA's range, permissions, file offset, path (a
//!   ` (deleted)` suffix is kept: a restore that maps a live file where a deleted one
//!   was is a bug) and `VmFlags` (4.1). Device and inode numbers are dropped: anonymous
//!   shared memory and memfd get new inodes on restore. Of the VmFlags, these are
//!   dropped because they are kernel bookkeeping rather than state a program can
//!   observe, and legitimately change across a correct restore ([`IGNORED_VM_FLAGS`]):
//!   `ac` (VM_ACCOUNT: set depending on whether the area was ever private-writable
//!   and how it was created, e.g. mmap then mprotect), `sd` (soft-dirty: reset by
//!   memory tracking, set by any write) and `um`/`uw`/`ui` (userfaultfd registration,
//!   held transiently by a lazy-pages restore). The `mr`/`mw`/`me`/`ms` "may" flags are
//!   kept: they decide whether a later `mprotect` succeeds, so getting them wrong is
//!   visible to the program.
//! - `/proc/PID/fd/*` and `/proc/PID/fdinfo/*`: per descriptor the link target, the
//!   `flags` (octal, includes O_CLOEXEC) and `pos`. Targets naming an inode
//!   (`pipe:[N]`, `socket:[N]`, `net:[N]`...) are rewritten to stable labels numbered
//!   by first appearance in the tree (`pipe:[#1]`), so sharing is compared but inode
//!   numbers, which change on restore, are not. `mnt_id` and `ino` are dropped for the
//!   same reason.
//! - `/proc/PID/limits`: soft and hard limit of each resource.
//!
//! [`diff`] turns two states into readable lines, each tagged with a field name from
//! [`FIELDS`] so a test can declare an expected difference by field.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// VmFlags that are not compared (see the module docs for why).
pub const IGNORED_VM_FLAGS: &[&str] = &["ac", "sd", "um", "uw", "ui"];

/// Field names a [`Difference`] can carry. A name covers itself and every name
/// below it: `vmas` covers `vmas.perms`.
pub const FIELDS: &[&str] = &[
    "tree",
    "tree.tasks",
    "tree.ppid",
    "tree.threads",
    "ids",
    "ids.pgid",
    "ids.sid",
    "comm",
    "exe",
    "tracer",
    "vmas",
    "vmas.range",
    "vmas.perms",
    "vmas.offset",
    "vmas.path",
    "vmas.flags",
    "fds",
    "fds.target",
    "fds.flags",
    "fds.pos",
    "signals",
    "signals.blocked",
    "signals.pending",
    "signals.ignored",
    "signals.caught",
    "creds",
    "creds.uid",
    "creds.gid",
    "creds.groups",
    "creds.caps",
    "creds.no_new_privs",
    "creds.seccomp",
    "fs",
    "fs.cwd",
    "fs.root",
    "fs.umask",
    "rlimits",
];

/// Whether the difference field `field` is covered by the allowance `allowed`
/// (equal, or `allowed` is a parent of it: `vmas` covers `vmas.perms`).
pub fn field_covers(allowed: &str, field: &str) -> bool {
    field == allowed
        || (field.len() > allowed.len()
            && field.starts_with(allowed)
            && field.as_bytes()[allowed.len()] == b'.')
}

/// Errors of [`inspect`]. Each names the task and the `/proc` file concerned.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The root task does not exist (or is not visible in this pid namespace).
    #[error("inspect: pid {pid}: no such process")]
    NoProcess { pid: i32 },
    /// A `/proc` file or link could not be read.
    #[error("inspect: pid {pid}: cannot read {}", path.display())]
    Read {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A `/proc` file did not have the expected format.
    #[error("inspect: pid {pid}: {}: line {line}: {reason}", path.display())]
    Parse {
        pid: i32,
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The comparable state of a whole tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeState {
    /// Pid of the root task.
    pub root: i32,
    /// Root first, then descendants depth first, children in ascending pid order.
    pub tasks: Vec<TaskState>,
}

/// One process (thread group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    pub pid: i32,
    /// Parent pid; `None` for the root, whose parent is outside the tree.
    pub ppid: Option<i32>,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// Target of `/proc/PID/exe`.
    pub exe: String,
    pub tracer_pid: i32,
    /// Threads in ascending tid order (the leader included).
    pub threads: Vec<ThreadState>,
    pub vmas: Vec<Vma>,
    /// Descriptors in ascending order.
    pub fds: Vec<FdState>,
    pub signals: SignalState,
    pub creds: Creds,
    pub cwd: String,
    pub root: String,
    /// From the `Umask:` line; `None` on kernels before 4.7.
    pub umask: Option<u32>,
    pub rlimits: Vec<Rlimit>,
}

/// Per-thread state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: i32,
    pub comm: String,
    /// `SigBlk`: the blocked mask.
    pub blocked: u64,
    /// `SigPnd`: signals pending for this thread only.
    pub pending: u64,
}

/// Process-wide signal state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalState {
    /// `SigIgn`
    pub ignored: u64,
    /// `SigCgt`
    pub caught: u64,
    /// `ShdPnd`: signals pending for the whole process.
    pub shared_pending: u64,
}

/// Credentials as `/proc/PID/status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    /// Real, effective, saved and filesystem uid.
    pub uid: Vec<u32>,
    /// Real, effective, saved and filesystem gid.
    pub gid: Vec<u32>,
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// Seccomp mode: 0 disabled, 1 strict, 2 filter.
    pub seccomp: u32,
}

/// One VMA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// `rwxp`/`rwxs` as in maps.
    pub perms: String,
    /// File offset in bytes.
    pub offset: u64,
    /// Path or pseudo name (`[heap]`, `[stack]`...); empty for anonymous memory.
    pub path: String,
    /// VmFlags minus [`IGNORED_VM_FLAGS`], sorted.
    pub flags: Vec<String>,
}

/// One file descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdState {
    pub fd: i32,
    /// Normalized link target (`pipe:[#1]` instead of `pipe:[12345]`).
    pub target: String,
    /// `flags` of fdinfo (open flags plus O_CLOEXEC).
    pub flags: u32,
    /// `pos` of fdinfo.
    pub pos: u64,
}

/// One resource limit; `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Name as in `/proc/PID/limits` ("Max open files").
    pub name: String,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// Reads the state of the tree rooted at `pid`.
pub fn inspect(pid: i32) -> Result<TreeState, InspectError> {
    let proc_root = Path::new("/proc");
    if !proc_root.join(pid.to_string()).is_dir() || pid <= 0 {
        return Err(InspectError::NoProcess { pid });
    }
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        order.push(p);
        let mut kids = match children(p) {
            Ok(k) => k,
            Err(e) if p != pid && vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        kids.sort_unstable();
        // Reverse so the smallest pid is visited first.
        stack.extend(kids.into_iter().rev());
    }
    let mut labels = Labeler::default();
    let mut tasks = Vec::with_capacity(order.len());
    for &p in &order {
        let mut task = match read_task(p, &mut labels) {
            Ok(t) => t,
            // A descendant that exited while we looked is not part of the tree.
            Err(e) if p != pid && vanished(&e) => continue,
            Err(e) => return Err(e),
        };
        if p == pid {
            task.ppid = None;
        }
        tasks.push(task);
    }
    Ok(TreeState { root: pid, tasks })
}

fn proc_path(pid: i32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

fn read_text(pid: i32, path: &Path) -> Result<String, InspectError> {
    std::fs::read_to_string(path).map_err(|source| InspectError::Read {
        pid,
        path: path.to_path_buf(),
        source,
    })
}

fn read_link(pid: i32, path: &Path) -> Result<String, InspectError> {
    std::fs::read_link(path)
        .map(|t| t.to_string_lossy().into_owned())
        .map_err(|source| InspectError::Read {
            pid,
            path: path.to_path_buf(),
            source,
        })
}

/// True for errors meaning "this thread or fd went away while we looked".
fn vanished(e: &InspectError) -> bool {
    match e {
        InspectError::Read { source, .. } => {
            source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH)
        }
        _ => false,
    }
}

fn parse_err(pid: i32, path: &Path, e: LineError) -> InspectError {
    InspectError::Parse {
        pid,
        path: path.to_path_buf(),
        line: e.line,
        reason: e.reason,
    }
}

/// Sorted numeric entries of a `/proc` directory.
fn numeric_entries(pid: i32, dir: &Path) -> Result<Vec<i32>, InspectError> {
    let rd = std::fs::read_dir(dir).map_err(|source| InspectError::Read {
        pid,
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| InspectError::Read {
            pid,
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn children(pid: i32) -> Result<Vec<i32>, InspectError> {
    let mut out = Vec::new();
    for tid in numeric_entries(pid, &proc_path(pid, "task"))? {
        let path = proc_path(pid, &format!("task/{tid}/children"));
        match read_text(pid, &path) {
            Ok(text) => out.extend(parse_children(&text).map_err(|e| parse_err(pid, &path, e))?),
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn read_task(pid: i32, labels: &mut Labeler) -> Result<TaskState, InspectError> {
    let stat_path = proc_path(pid, "stat");
    let stat =
        parse_stat(&read_text(pid, &stat_path)?).map_err(|e| parse_err(pid, &stat_path, e))?;
    let status_path = proc_path(pid, "status");
    let status = parse_status(&read_text(pid, &status_path)?)
        .map_err(|e| parse_err(pid, &status_path, e))?;
    let comm = read_text(pid, &proc_path(pid, "comm"))?
        .trim_end_matches('\n')
        .to_string();

    let mut threads = Vec::new();
    for tid in numeric_entries(pid, &proc_path(pid, "task"))? {
        match read_thread(pid, tid) {
            Ok(t) => threads.push(t),
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        }
    }

    let smaps_path = proc_path(pid, "smaps");
    let vmas =
        parse_smaps(&read_text(pid, &smaps_path)?).map_err(|e| parse_err(pid, &smaps_path, e))?;

    let mut fds = Vec::new();
    for fd in numeric_entries(pid, &proc_path(pid, "fd"))? {
        match read_fd(pid, fd, labels) {
            Ok(f) => fds.push(f),
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(e),
        }
    }

    let limits_path = proc_path(pid, "limits");
    let rlimits = parse_limits(&read_text(pid, &limits_path)?)
        .map_err(|e| parse_err(pid, &limits_path, e))?;

    let cwd = read_fs_link(pid, "cwd", &threads)?;
    let root = read_fs_link(pid, "root", &threads)?;
    Ok(TaskState {
        pid,
        ppid: Some(stat.ppid),
        pgid: stat.pgid,
        sid: stat.sid,
        comm,
        exe: read_link(pid, &proc_path(pid, "exe")).unwrap_or_default(),
        tracer_pid: status.tracer_pid,
        threads,
        vmas,
        fds,
        signals: SignalState {
            ignored: status.sig_ign,
            caught: status.sig_cgt,
            shared_pending: status.shd_pnd,
        },
        creds: status.creds,
        cwd,
        root,
        umask: status.umask,
        rlimits,
    })
}

/// `cwd` or `root` of a process; through a live thread when the leader has exited (its own
/// links are gone then).
fn read_fs_link(pid: i32, name: &str, threads: &[ThreadState]) -> Result<String, InspectError> {
    let first = read_link(pid, &proc_path(pid, name));
    if first.is_ok() {
        return first;
    }
    threads
        .iter()
        .find_map(|t| read_link(pid, &proc_path(pid, &format!("task/{}/{name}", t.tid))).ok())
        .map_or(first, Ok)
}

fn read_thread(pid: i32, tid: i32) -> Result<ThreadState, InspectError> {
    let path = proc_path(pid, &format!("task/{tid}/status"));
    let status = parse_status(&read_text(pid, &path)?).map_err(|e| parse_err(pid, &path, e))?;
    let comm = read_text(pid, &proc_path(pid, &format!("task/{tid}/comm")))?
        .trim_end_matches('\n')
        .to_string();
    Ok(ThreadState {
        tid,
        comm,
        blocked: status.sig_blk,
        pending: status.sig_pnd,
    })
}

fn read_fd(pid: i32, fd: i32, labels: &mut Labeler) -> Result<FdState, InspectError> {
    let target = read_link(pid, &proc_path(pid, &format!("fd/{fd}")))?;
    let info_path = proc_path(pid, &format!("fdinfo/{fd}"));
    let info =
        parse_fdinfo(&read_text(pid, &info_path)?).map_err(|e| parse_err(pid, &info_path, e))?;
    Ok(FdState {
        fd,
        target: labels.normalize(&target),
        flags: info.flags,
        pos: info.pos,
    })
}

/// A parse failure inside one `/proc` file: 1-based line and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl LineError {
    fn new(line: usize, reason: impl Into<String>) -> Self {
        LineError {
            line,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Fields of `/proc/PID/stat` the inspection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
}

/// Parses `/proc/PID/stat`. The comm field may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Result<StatFields, LineError> {
    let close = text
        .rfind(')')
        .ok_or_else(|| LineError::new(1, "no `)` closing the comm field"))?;
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is the state, then ppid, pgrp, session.
    let field = |i: usize, name: &str| -> Result<i32, LineError> {
        rest.get(i)
            .ok_or_else(|| LineError::new(1, format!("missing {name}")))?
            .parse()
            .map_err(|_| LineError::new(1, format!("bad {name} {:?}", rest[i])))
    };
    Ok(StatFields {
        ppid: field(1, "ppid")?,
        pgid: field(2, "pgrp")?,
        sid: field(3, "session")?,
    })
}

/// Fields of `/proc/PID/status` the inspection uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFields {
    pub tracer_pid: i32,
    pub umask: Option<u32>,
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    pub creds: Creds,
}

/// Parses `/proc/PID/status` (or `/proc/PID/task/TID/status`). Lines not used are
/// skipped; a used line with a malformed value is an error.
pub fn parse_status(text: &str) -> Result<StatusFields, LineError> {
    let mut s = StatusFields::default();
    let mut seen_sigs = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let hex = |v: &str| {
            u64::from_str_radix(v, 16)
                .map_err(|_| LineError::new(n, format!("{key}: bad hex {v:?}")))
        };
        let ids = |v: &str| -> Result<Vec<u32>, LineError> {
            v.split_whitespace()
                .map(|x| {
                    x.parse()
                        .map_err(|_| LineError::new(n, format!("{key}: bad id {x:?}")))
                })
                .collect()
        };
        match key {
            "TracerPid" => {
                s.tracer_pid = value
                    .parse()
                    .map_err(|_| LineError::new(n, format!("TracerPid: bad value {value:?}")))?
            }
            "Umask" => {
                s.umask = Some(
                    u32::from_str_radix(value, 8)
                        .map_err(|_| LineError::new(n, format!("Umask: bad octal {value:?}")))?,
                )
            }
            "Uid" => s.creds.uid = ids(value)?,
            "Gid" => s.creds.gid = ids(value)?,
            "Groups" => s.creds.groups = ids(value)?,
            "SigPnd" => {
                s.sig_pnd = hex(value)?;
                seen_sigs += 1;
            }
            "ShdPnd" => {
                s.shd_pnd = hex(value)?;
                seen_sigs += 1;
            }
            "SigBlk" => {
                s.sig_blk = hex(value)?;
                seen_sigs += 1;
            }
            "SigIgn" => {
                s.sig_ign = hex(value)?;
                seen_sigs += 1;
            }
            "SigCgt" => {
                s.sig_cgt = hex(value)?;
                seen_sigs += 1;
            }
            "CapInh" => s.creds.cap_inh = hex(value)?,
            "CapPrm" => s.creds.cap_prm = hex(value)?,
            "CapEff" => s.creds.cap_eff = hex(value)?,
            "CapBnd" => s.creds.cap_bnd = hex(value)?,
            "CapAmb" => s.creds.cap_amb = hex(value)?,
            "NoNewPrivs" => s.creds.no_new_privs = value == "1",
            "Seccomp" => {
                s.creds.seccomp = value
                    .parse()
                    .map_err(|_| LineError::new(n, format!("Seccomp: bad value {value:?}")))?
            }
            _ => {}
        }
    }
    if seen_sigs != 5 {
        return Err(LineError::new(
            text.lines().count(),
            "missing signal lines (SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt)",
        ));
    }
    if s.creds.uid.len() != 4 || s.creds.gid.len() != 4 {
        return Err(LineError::new(
            text.lines().count(),
            "missing or short Uid/Gid lines",
        ));
    }
    Ok(s)
}

/// Parses `/proc/PID/smaps` into VMAs (header lines plus their `VmFlags:` line).
pub fn parse_smaps(text: &str) -> Result<Vec<Vma>, LineError> {
    let mut out: Vec<Vma> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let vma = out
                .last_mut()
                .ok_or_else(|| LineError::new(n, "VmFlags before any VMA header"))?;
            let mut f: Vec<String> = flags
                .split_whitespace()
                .filter(|f| !IGNORED_VM_FLAGS.contains(f))
                .map(str::to_string)
                .collect();
            f.sort();
            vma.flags = f;
            continue;
        }
        if is_vma_header(line) {
            out.push(parse_maps_line(line).map_err(|reason| LineError::new(n, reason))?);
        }
        // Anything else is a per-VMA counter ("Rss: 8 kB"): not compared.
    }
    Ok(out)
}

/// A maps/smaps header starts with `hex-hex `; counter lines start with `Name:`.
fn is_vma_header(line: &str) -> bool {
    let first = line.split(' ').next().unwrap_or("");
    match first.split_once('-') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_hexdigit())
                && b.bytes().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// Parses one `/proc/PID/maps` line: `start-end perms offset dev inode [path]`.
pub fn parse_maps_line(line: &str) -> Result<Vma, String> {
    let mut rest = line;
    let mut next = || -> Option<&str> {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (tok, tail) = trimmed.split_at(end);
        rest = tail;
        (!tok.is_empty()).then_some(tok)
    };
    let range = next().ok_or("missing range")?;
    let perms = next().ok_or("missing perms")?.to_string();
    let offset = next().ok_or("missing offset")?;
    let _dev = next().ok_or("missing device")?;
    let _inode = next().ok_or("missing inode")?;
    // The path is the rest of the line after the column padding; it may contain spaces.
    let path = rest.trim_start_matches(' ').to_string();
    let (s, e) = range.split_once('-').ok_or("range without `-`")?;
    let start = u64::from_str_radix(s, 16).map_err(|_| format!("bad start {s:?}"))?;
    let end = u64::from_str_radix(e, 16).map_err(|_| format!("bad end {e:?}"))?;
    if end < start {
        return Err(format!("range {s}-{e} ends before it starts"));
    }
    if perms.len() != 4 {
        return Err(format!("bad perms {perms:?}"));
    }
    let offset = u64::from_str_radix(offset, 16).map_err(|_| format!("bad offset {offset:?}"))?;
    Ok(Vma {
        start,
        end,
        perms,
        offset,
        path,
        flags: Vec::new(),
    })
}

/// Fields of `/proc/PID/fdinfo/FD` the inspection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdinfoFields {
    pub pos: u64,
    pub flags: u32,
}

/// Parses `/proc/PID/fdinfo/FD`: `pos` (decimal) and `flags` (octal) are required.
pub fn parse_fdinfo(text: &str) -> Result<FdinfoFields, LineError> {
    let mut pos = None;
    let mut flags = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "pos" => {
                pos = Some(
                    value
                        .parse()
                        .map_err(|_| LineError::new(n, format!("pos: bad value {value:?}")))?,
                )
            }
            "flags" => {
                flags = Some(
                    u32::from_str_radix(value, 8)
                        .map_err(|_| LineError::new(n, format!("flags: bad octal {value:?}")))?,
                )
            }
            _ => {}
        }
    }
    let last = text.lines().count().max(1);
    Ok(FdinfoFields {
        pos: pos.ok_or_else(|| LineError::new(last, "no pos line"))?,
        flags: flags.ok_or_else(|| LineError::new(last, "no flags line"))?,
    })
}

/// Parses `/proc/PID/limits`. Resource names contain spaces and the units column
/// is empty for some resources, so values are taken from the end of the line.
pub fn parse_limits(text: &str) -> Result<Vec<Rlimit>, LineError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if i == 0 && line.starts_with("Limit") {
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let toks: Vec<&str> = line.split_whitespace().collect();
        let is_value = |t: &str| t == "unlimited" || t.bytes().all(|c| c.is_ascii_digit());
        // With units: NAME... SOFT HARD UNITS; without: NAME... SOFT HARD.
        let vals_end = match toks.last() {
            Some(t) if is_value(t) => toks.len(),
            Some(_) => toks.len() - 1,
            None => continue,
        };
        if vals_end < 3 || !is_value(toks[vals_end - 1]) || !is_value(toks[vals_end - 2]) {
            return Err(LineError::new(
                n,
                format!("cannot find soft and hard limits in {line:?}"),
            ));
        }
        let value = |t: &str| -> Result<Option<u64>, LineError> {
            if t == "unlimited" {
                Ok(None)
            } else {
                t.parse()
                    .map(Some)
                    .map_err(|_| LineError::new(n, format!("bad limit {t:?}")))
            }
        };
        out.push(Rlimit {
            name: toks[..vals_end - 2].join(" "),
            soft: value(toks[vals_end - 2])?,
            hard: value(toks[vals_end - 1])?,
        });
    }
    Ok(out)
}

/// Parses a `children` file: pids separated by spaces.
pub fn parse_children(text: &str) -> Result<Vec<i32>, LineError> {
    text.split_whitespace()
        .map(|t| {
            t.parse()
                .map_err(|_| LineError::new(1, format!("bad pid {t:?}")))
        })
        .collect()
}

/// Rewrites inode-bearing link targets (`pipe:[1234]`) to labels numbered by
/// first appearance per kind (`pipe:[#1]`).
#[derive(Debug, Default)]
pub struct Labeler {
    seen: HashMap<(String, u64), usize>,
    next: HashMap<String, usize>,
}

impl Labeler {
    /// The normalized form of `target`.
    pub fn normalize(&mut self, target: &str) -> String {
        let Some((kind, ino)) = split_inode_target(target) else {
            return target.to_string();
        };
        let key = (kind.to_string(), ino);
        let label = match self.seen.get(&key) {
            Some(&l) => l,
            None => {
                let counter = self.next.entry(kind.to_string()).or_insert(0);
                *counter += 1;
                self.seen.insert(key, *counter);
                *counter
            }
        };
        format!("{kind}:[#{label}]")
    }
}

/// `pipe:[1234]` -> ("pipe", 1234); anything else (paths, `anon_inode:[eventfd]`) -> None.
fn split_inode_target(target: &str) -> Option<(&str, u64)> {
    let (kind, rest) = target.split_once(":[")?;
    let num = rest.strip_suffix(']')?;
    if kind.is_empty()
        || !kind
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return None;
    }
    Some((kind, num.parse().ok()?))
}

/// One difference between two states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// One of [`FIELDS`].
    pub field: String,
    /// The task concerned, if any.
    pub pid: Option<i32>,
    /// What differs, `before -> after`.
    pub text: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}: {}", self.text),
            None => f.write_str(&self.text),
        }
    }
}

/// Readable lines describing how `b` differs from `a`, e.g.
/// `pid 42: vma 7f0000000000-7f0000001000: perms rw-p -> r--p`.
pub fn diff(a: &TreeState, b: &TreeState) -> Vec<String> {
    diff_fields(a, b).iter().map(|d| d.to_string()).collect()
}

/// Like [`diff`], with the field of each difference (for allowances).
pub fn diff_fields(a: &TreeState, b: &TreeState) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |field: &str, pid: Option<i32>, text: String| {
        out.push(Difference {
            field: field.to_string(),
            pid,
            text,
        })
    };
    if a.root != b.root {
        push(
            "tree.tasks",
            None,
            format!("root pid {} -> {}", a.root, b.root),
        );
    }
    let bt: BTreeMap<i32, &TaskState> = b.tasks.iter().map(|t| (t.pid, t)).collect();
    let at: BTreeMap<i32, &TaskState> = a.tasks.iter().map(|t| (t.pid, t)).collect();
    for ta in &a.tasks {
        match bt.get(&ta.pid) {
            None => push(
                "tree.tasks",
                Some(ta.pid),
                format!("task ({}) missing after", ta.comm),
            ),
            Some(tb) => diff_task(ta, tb, &mut push),
        }
    }
    for tb in &b.tasks {
        if !at.contains_key(&tb.pid) {
            push(
                "tree.tasks",
                Some(tb.pid),
                format!("unexpected task ({})", tb.comm),
            );
        }
    }
    out
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "none".to_string(),
    }
}

fn limit(v: &Option<u64>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "unlimited".to_string(),
    }
}

fn diff_task(a: &TaskState, b: &TaskState, push: &mut impl FnMut(&str, Option<i32>, String)) {
    let pid = Some(a.pid);
    let mut scalar = |field: &str, name: &str, x: String, y: String| {
        if x != y {
            push(field, pid, format!("{name} {x} -> {y}"));
        }
    };
    scalar("tree.ppid", "ppid", opt(&a.ppid), opt(&b.ppid));
    scalar("ids.pgid", "pgid", a.pgid.to_string(), b.pgid.to_string());
    scalar("ids.sid", "sid", a.sid.to_string(), b.sid.to_string());
    scalar(
        "comm",
        "comm",
        format!("{:?}", a.comm),
        format!("{:?}", b.comm),
    );
    scalar("exe", "exe", a.exe.clone(), b.exe.clone());
    scalar(
        "tracer",
        "TracerPid",
        a.tracer_pid.to_string(),
        b.tracer_pid.to_string(),
    );
    scalar("fs.cwd", "cwd", a.cwd.clone(), b.cwd.clone());
    scalar("fs.root", "root", a.root.clone(), b.root.clone());
    scalar(
        "fs.umask",
        "umask",
        a.umask.map_or("none".into(), |u| format!("{u:04o}")),
        b.umask.map_or("none".into(), |u| format!("{u:04o}")),
    );
    let sig = |v: u64| format!("{v:016x}");
    scalar(
        "signals.ignored",
        "SigIgn",
        sig(a.signals.ignored),
        sig(b.signals.ignored),
    );
    scalar(
        "signals.caught",
        "SigCgt",
        sig(a.signals.caught),
        sig(b.signals.caught),
    );
    scalar(
        "signals.pending",
        "ShdPnd",
        sig(a.signals.shared_pending),
        sig(b.signals.shared_pending),
    );
    let (ca, cb) = (&a.creds, &b.creds);
    scalar(
        "creds.uid",
        "Uid",
        format!("{:?}", ca.uid),
        format!("{:?}", cb.uid),
    );
    scalar(
        "creds.gid",
        "Gid",
        format!("{:?}", ca.gid),
        format!("{:?}", cb.gid),
    );
    scalar(
        "creds.groups",
        "Groups",
        format!("{:?}", ca.groups),
        format!("{:?}", cb.groups),
    );
    for (name, x, y) in [
        ("CapInh", ca.cap_inh, cb.cap_inh),
        ("CapPrm", ca.cap_prm, cb.cap_prm),
        ("CapEff", ca.cap_eff, cb.cap_eff),
        ("CapBnd", ca.cap_bnd, cb.cap_bnd),
        ("CapAmb", ca.cap_amb, cb.cap_amb),
    ] {
        scalar("creds.caps", name, sig(x), sig(y));
    }
    scalar(
        "creds.no_new_privs",
        "NoNewPrivs",
        ca.no_new_privs.to_string(),
        cb.no_new_privs.to_string(),
    );
    scalar(
        "creds.seccomp",
        "Seccomp",
        ca.seccomp.to_string(),
        cb.seccomp.to_string(),
    );

    diff_threads(a, b, push);
    diff_vmas(a.pid, &a.vmas, &b.vmas, push);
    diff_fds(a.pid, &a.fds, &b.fds, push);
    diff_rlimits(a.pid, &a.rlimits, &b.rlimits, push);
}

fn diff_threads(a: &TaskState, b: &TaskState, push: &mut impl FnMut(&str, Option<i32>, String)) {
    let pid = Some(a.pid);
    let bt: BTreeMap<i32, &ThreadState> = b.threads.iter().map(|t| (t.tid, t)).collect();
    let at: BTreeMap<i32, &ThreadState> = a.threads.iter().map(|t| (t.tid, t)).collect();
    for x in &a.threads {
        let Some(y) = bt.get(&x.tid) else {
            push(
                "tree.threads",
                pid,
                format!("thread {} missing after", x.tid),
            );
            continue;
        };
        if x.comm != y.comm {
            push(
                "comm",
                pid,
                format!("thread {}: comm {:?} -> {:?}", x.tid, x.comm, y.comm),
            );
        }
        if x.blocked != y.blocked {
            push(
                "signals.blocked",
                pid,
                format!(
                    "thread {}: SigBlk {:016x} -> {:016x}",
                    x.tid, x.blocked, y.blocked
                ),
            );
        }
        if x.pending != y.pending {
            push(
                "signals.pending",
                pid,
                format!(
                    "thread {}: SigPnd {:016x} -> {:016x}",
                    x.tid, x.pending, y.pending
                ),
            );
        }
    }
    for y in &b.threads {
        if !at.contains_key(&y.tid) {
            push("tree.threads", pid, format!("unexpected thread {}", y.tid));
        }
    }
}

fn vma_desc(v: &Vma) -> String {
    if v.path.is_empty() {
        format!("{} off {:x}", v.perms, v.offset)
    } else {
        format!("{} off {:x} {}", v.perms, v.offset, v.path)
    }
}

fn diff_vmas(pid: i32, a: &[Vma], b: &[Vma], push: &mut impl FnMut(&str, Option<i32>, String)) {
    let pid = Some(pid);
    let bm: BTreeMap<u64, &Vma> = b.iter().map(|v| (v.start, v)).collect();
    let am: BTreeMap<u64, &Vma> = a.iter().map(|v| (v.start, v)).collect();
    for x in a {
        let name = format!("vma {:x}-{:x}", x.start, x.end);
        let Some(y) = bm.get(&x.start) else {
            push(
                "vmas.range",
                pid,
                format!("{name}: missing after ({})", vma_desc(x)),
            );
            continue;
        };
        if x.end != y.end {
            push(
                "vmas.range",
                pid,
                format!("{name}: end {:x} -> {:x}", x.end, y.end),
            );
        }
        if x.perms != y.perms {
            push(
                "vmas.perms",
                pid,
                format!("{name}: perms {} -> {}", x.perms, y.perms),
            );
        }
        if x.offset != y.offset {
            push(
                "vmas.offset",
                pid,
                format!("{name}: offset {:x} -> {:x}", x.offset, y.offset),
            );
        }
        if x.path != y.path {
            push(
                "vmas.path",
                pid,
                format!("{name}: path {:?} -> {:?}", x.path, y.path),
            );
        }
        if x.flags != y.flags {
            push(
                "vmas.flags",
                pid,
                format!(
                    "{name}: flags {} -> {}",
                    x.flags.join(" "),
                    y.flags.join(" ")
                ),
            );
        }
    }
    for y in b {
        if !am.contains_key(&y.start) {
            push(
                "vmas.range",
                pid,
                format!(
                    "vma {:x}-{:x}: unexpected ({})",
                    y.start,
                    y.end,
                    vma_desc(y)
                ),
            );
        }
    }
}

fn diff_fds(
    pid: i32,
    a: &[FdState],
    b: &[FdState],
    push: &mut impl FnMut(&str, Option<i32>, String),
) {
    let pid = Some(pid);
    let bm: BTreeMap<i32, &FdState> = b.iter().map(|f| (f.fd, f)).collect();
    let am: BTreeMap<i32, &FdState> = a.iter().map(|f| (f.fd, f)).collect();
    for x in a {
        let Some(y) = bm.get(&x.fd) else {
            push(
                "fds.target",
                pid,
                format!("fd {}: missing after ({})", x.fd, x.target),
            );
            continue;
        };
        if x.target != y.target {
            push(
                "fds.target",
                pid,
                format!("fd {}: target {} -> {}", x.fd, x.target, y.target),
            );
        }
        if x.flags != y.flags {
            push(
                "fds.flags",
                pid,
                format!("fd {}: flags 0{:o} -> 0{:o}", x.fd, x.flags, y.flags),
            );
        }
        if x.pos != y.pos {
            push(
                "fds.pos",
                pid,
                format!("fd {}: pos {} -> {}", x.fd, x.pos, y.pos),
            );
        }
    }
    for y in b {
        if !am.contains_key(&y.fd) {
            push(
                "fds.target",
                pid,
                format!("fd {}: unexpected ({})", y.fd, y.target),
            );
        }
    }
}

fn diff_rlimits(
    pid: i32,
    a: &[Rlimit],
    b: &[Rlimit],
    push: &mut impl FnMut(&str, Option<i32>, String),
) {
    let pid = Some(pid);
    let bm: BTreeMap<&str, &Rlimit> = b.iter().map(|r| (r.name.as_str(), r)).collect();
    for x in a {
        match bm.get(x.name.as_str()) {
            None => push(
                "rlimits",
                pid,
                format!("rlimit {:?}: missing after", x.name),
            ),
            Some(y) if x != *y => push(
                "rlimits",
                pid,
                format!(
                    "rlimit {:?}: {}/{} -> {}/{}",
                    x.name,
                    limit(&x.soft),
                    limit(&x.hard),
                    limit(&y.soft),
                    limit(&y.hard)
                ),
            ),
            Some(_) => {}
        }
    }
    let am: HashSet<&str> = a.iter().map(|r| r.name.as_str()).collect();
    for y in b {
        if !am.contains(y.name.as_str()) {
            push("rlimits", pid, format!("rlimit {:?}: unexpected", y.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
556cd9068000-556cd906a000 r--p 00000000 fe:00 247282                     /usr/bin/head
Size:                  8 kB
Rss:                   8 kB
VmFlags: rd mr mw me sd
556cd906a000-556cd9070000 r-xp 00002000 fe:00 247282                     /usr/bin/head
Size:                 24 kB
VmFlags: rd ex mr mw me sd
7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 
Size:                132 kB
VmFlags: rd wr mr mw me ac sd
7f1c2b000000-7f1c2b001000 rw-s 00000000 00:01 1044                       /memfd:my file (deleted)
VmFlags: rd wr sh mr mw me ms sd
7ffd1c3e4000-7ffd1c405000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me gd ac
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
VmFlags: ex
";

    #[test]
    fn smaps_headers_flags_and_paths() {
        let v = parse_smaps(SMAPS).unwrap();
        assert_eq!(v.len(), 6);
        assert_eq!(v[0].start, 0x556cd9068000);
        assert_eq!(v[0].end, 0x556cd906a000);
        assert_eq!(v[0].perms, "r--p");
        assert_eq!(v[0].path, "/usr/bin/head");
        assert_eq!(v[0].flags, vec!["me", "mr", "mw", "rd"]);
        assert_eq!(v[1].offset, 0x2000);
        assert_eq!(v[2].path, "");
        // ac and sd are not compared.
        assert_eq!(v[2].flags, vec!["me", "mr", "mw", "rd", "wr"]);
        // Spaces and the deleted suffix are part of the path.
        assert_eq!(v[3].path, "/memfd:my file (deleted)");
        assert_eq!(v[3].perms, "rw-s");
        assert_eq!(v[4].path, "[stack]");
        assert!(v[4].flags.contains(&"gd".to_string()));
        assert_eq!(v[5].start, 0xffffffffff600000);
    }

    #[test]
    fn smaps_errors_name_the_line() {
        let e = parse_smaps("VmFlags: rd\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_smaps("Rss: 4 kB\n7000-6000 rw-p 00000000 00:00 0\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("ends before"), "{e}");
        let e = parse_smaps("7000-8000 rw-p zz 00:00 0\n").unwrap_err();
        assert!(e.reason.contains("offset"), "{e}");
        let e = parse_smaps("7000-8000 rw-p\n").unwrap_err();
        assert!(e.reason.contains("missing"), "{e}");
    }

    #[test]
    fn stat_with_hostile_comm() {
        let s = parse_stat("42 (a) b) (c) S 1 40 30 0 -1 4194560 0 0").unwrap();
        assert_eq!(
            s,
            StatFields {
                ppid: 1,
                pgid: 40,
                sid: 30
            }
        );
        assert!(parse_stat("42 no-paren S 1 2 3").is_err());
        let e = parse_stat("42 (x) S 1 x 3").unwrap_err();
        assert!(e.reason.contains("pgrp"), "{e}");
        assert!(parse_stat("42 (x) S 1").is_err());
    }

    const STATUS: &str = "Name:\tcat
Umask:\t0022
State:\tR (running)
TracerPid:\t0
Uid:\t0\t1\t2\t3
Gid:\t4\t5\t6\t7
Groups:\t10 20 
SigPnd:\t0000000000000100
ShdPnd:\t0000000000000200
SigBlk:\t0000000000010000
SigIgn:\t0000000000000004
SigCgt:\t0000000000004002
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t000001fffeffffff
CapBnd:\t000001fffeffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
";

    #[test]
    fn status_fields() {
        let s = parse_status(STATUS).unwrap();
        assert_eq!(s.umask, Some(0o22));
        assert_eq!(s.creds.uid, vec![0, 1, 2, 3]);
        assert_eq!(s.creds.gid, vec![4, 5, 6, 7]);
        assert_eq!(s.creds.groups, vec![10, 20]);
        assert_eq!(s.sig_pnd, 0x100);
        assert_eq!(s.shd_pnd, 0x200);
        assert_eq!(s.sig_blk, 0x10000);
        assert_eq!(s.sig_ign, 4);
        assert_eq!(s.sig_cgt, 0x4002);
        assert_eq!(s.creds.cap_prm, 0x1fffeffffff);
        assert!(s.creds.no_new_privs);
        assert_eq!(s.creds.seccomp, 2);
        // Empty Groups line is an empty list.
        let s = parse_status(&STATUS.replace("Groups:\t10 20 ", "Groups:\t")).unwrap();
        assert!(s.creds.groups.is_empty());
    }

    #[test]
    fn status_errors() {
        let e = parse_status(&STATUS.replace("0000000000010000", "xyz")).unwrap_err();
        assert_eq!(e.line, 10);
        assert!(e.reason.contains("SigBlk"), "{e}");
        let e = parse_status("Name:\tx\n").unwrap_err();
        assert!(e.reason.contains("signal"), "{e}");
        let e = parse_status(&STATUS.replace("Uid:\t0\t1\t2\t3", "Uid:\t0")).unwrap_err();
        assert!(e.reason.contains("Uid"), "{e}");
    }

    #[test]
    fn fdinfo_fields() {
        let f = parse_fdinfo("pos:\t17\nflags:\t02100002\nmnt_id:\t24\nino:\t3\n").unwrap();
        assert_eq!(f.pos, 17);
        assert_eq!(f.flags, 0o2100002);
        let e = parse_fdinfo("pos:\t1\n").unwrap_err();
        assert!(e.reason.contains("flags"), "{e}");
        let e = parse_fdinfo("pos:\tx\nflags:\t0\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_fdinfo("pos:\t0\nflags:\t9\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max open files            1024                 524288               files     
Max nice priority         0                    0                    
Max realtime timeout      unlimited            unlimited            us        
";

    #[test]
    fn limits_with_and_without_units() {
        let l = parse_limits(LIMITS).unwrap();
        assert_eq!(l.len(), 6);
        assert_eq!(
            l[0],
            Rlimit {
                name: "Max cpu time".into(),
                soft: None,
                hard: None
            }
        );
        assert_eq!(l[1].soft, Some(8388608));
        assert_eq!(l[1].hard, None);
        assert_eq!(l[3].name, "Max open files");
        assert_eq!(l[3].hard, Some(524288));
        assert_eq!(l[4].name, "Max nice priority");
        assert_eq!(l[4].soft, Some(0));
        assert_eq!(l[5].name, "Max realtime timeout");
        let e = parse_limits("Limit x\nMax open files  lots  files\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn children_list() {
        assert_eq!(parse_children("12 13 \n").unwrap(), vec![12, 13]);
        assert_eq!(parse_children("").unwrap(), Vec::<i32>::new());
        assert!(parse_children("12 x").is_err());
    }

    #[test]
    fn labels_by_first_appearance() {
        let mut l = Labeler::default();
        assert_eq!(l.normalize("pipe:[900]"), "pipe:[#1]");
        assert_eq!(l.normalize("socket:[5]"), "socket:[#1]");
        assert_eq!(l.normalize("pipe:[100]"), "pipe:[#2]");
        assert_eq!(l.normalize("pipe:[900]"), "pipe:[#1]");
        assert_eq!(l.normalize("anon_inode:[eventfd]"), "anon_inode:[eventfd]");
        assert_eq!(l.normalize("/tmp/a:[1]"), "/tmp/a:[1]");
        assert_eq!(l.normalize("/dev/null"), "/dev/null");
    }

    #[test]
    fn field_coverage() {
        assert!(field_covers("vmas", "vmas.perms"));
        assert!(field_covers("vmas.perms", "vmas.perms"));
        assert!(!field_covers("vmas.perms", "vmas"));
        assert!(!field_covers("vma", "vmas.perms"));
        assert!(!field_covers("fds", "fdsx"));
    }

    fn sample_task(pid: i32) -> TaskState {
        TaskState {
            pid,
            ppid: None,
            pgid: pid,
            sid: pid,
            comm: "t".into(),
            exe: "/bin/t".into(),
            tracer_pid: 0,
            threads: vec![ThreadState {
                tid: pid,
                comm: "t".into(),
                blocked: 0,
                pending: 0,
            }],
            vmas: parse_smaps(SMAPS).unwrap(),
            fds: vec![FdState {
                fd: 0,
                target: "pipe:[#1]".into(),
                flags: 0,
                pos: 0,
            }],
            signals: SignalState::default(),
            creds: Creds::default(),
            cwd: "/".into(),
            root: "/".into(),
            umask: Some(0o22),
            rlimits: parse_limits(LIMITS).unwrap(),
        }
    }

    #[test]
    fn diff_reports_each_field() {
        let a = TreeState {
            root: 10,
            tasks: vec![sample_task(10)],
        };
        assert!(diff(&a, &a).is_empty());
        let mut b = a.clone();
        let t = &mut b.tasks[0];
        t.vmas[2].perms = "r--p".into();
        t.vmas[3].flags.push("lo".into());
        t.vmas.remove(4);
        t.fds[0].pos = 5;
        t.threads[0].blocked = 1 << 15;
        t.rlimits[1].soft = Some(1);
        t.umask = Some(0o77);
        let lines = diff(&a, &b);
        assert!(
            lines
                .contains(&"pid 10: vma 7f1c2a000000-7f1c2a021000: perms rw-p -> r--p".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"pid 10: vma 7ffd1c3e4000-7ffd1c405000: missing after (rw-p off 0 [stack])"
                    .to_string()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"pid 10: fd 0: pos 0 -> 5".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"pid 10: thread 10: SigBlk 0000000000000000 -> 0000000000008000".to_string()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"pid 10: rlimit \"Max stack size\": 8388608/unlimited -> 1/unlimited".to_string()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"pid 10: umask 0022 -> 0077".to_string()),
            "{lines:#?}"
        );
        let fields: Vec<String> = diff_fields(&a, &b).into_iter().map(|d| d.field).collect();
        for f in &fields {
            assert!(FIELDS.contains(&f.as_str()), "{f} not in FIELDS");
        }
        assert!(fields.contains(&"vmas.flags".to_string()));
        assert_eq!(fields.len(), 7, "{fields:?}");
    }

    #[test]
    fn diff_reports_tasks_missing_and_unexpected() {
        let a = TreeState {
            root: 10,
            tasks: vec![sample_task(10), sample_task(11)],
        };
        let b = TreeState {
            root: 10,
            tasks: vec![sample_task(10), sample_task(12)],
        };
        let d = diff_fields(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|d| d.field == "tree.tasks"));
        assert_eq!(d[0].to_string(), "pid 11: task (t) missing after");
        assert_eq!(d[1].to_string(), "pid 12: unexpected task (t)");
    }

    #[test]
    fn inspect_self_round_trips_through_json() {
        let pid = std::process::id() as i32;
        let a = inspect(pid).unwrap();
        assert_eq!(a.root, pid);
        let me = &a.tasks[0];
        assert_eq!(me.pid, pid);
        assert_eq!(me.ppid, None);
        assert!(me.threads.iter().any(|t| t.tid == pid));
        assert!(me.vmas.iter().any(|v| v.path == "[stack]"));
        assert!(me.fds.iter().any(|f| f.fd == 0));
        assert!(me.rlimits.iter().any(|r| r.name == "Max open files"));
        let json = serde_json::to_string(&a).unwrap();
        let back: TreeState = serde_json::from_str(&json).unwrap();
        assert_eq!(a, back);
    }

    #[test]
    fn inspect_sees_children_and_pipes() {
        use std::process::{Command, Stdio};
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let cpid = child.id() as i32;
        let res = inspect(cpid);
        child.kill().unwrap();
        child.wait().unwrap();
        let t = res.unwrap();
        assert_eq!(t.tasks.len(), 1);
        assert_eq!(t.tasks[0].fds[0].target, "pipe:[#1]");
        assert_eq!(t.tasks[0].comm, "sleep");
        // The child shows up in our own tree.
        let me = std::process::id() as i32;
        let mut again = Command::new("sleep").arg("30").spawn().unwrap();
        let mine = inspect(me);
        again.kill().unwrap();
        again.wait().unwrap();
        let mine = mine.unwrap();
        assert!(mine
            .tasks
            .iter()
            .any(|t| t.pid == again.id() as i32 && t.ppid == Some(me)));
    }

    #[test]
    fn inspect_missing_pid() {
        assert!(matches!(
            inspect(i32::MAX),
            Err(InspectError::NoProcess { pid }) if pid == i32::MAX
        ));
        assert!(matches!(
            inspect(0),
            Err(InspectError::NoProcess { pid: 0 })
        ));
    }
}
