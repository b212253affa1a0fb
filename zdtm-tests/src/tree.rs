//! Process trees: forking members of a test's tree and talking to them.
//!
//! Only the root of a test speaks the zdtm protocol, so every other process
//! of the tree reports to it. Each member gets a [`Link`]: two pipes, one
//! carrying one-byte orders from the root down to the member, one carrying
//! framed messages from the member up to the root. Pipes, because they are
//! the one channel both sides can block on and that a restore must bring
//! back shared between exactly the same processes; shared anonymous memory
//! would be one more thing for the engine to get right before the test could
//! even report.
//!
//! Every process keeps only the pipe ends it uses: a member closes the ends
//! of all links it inherited but does not own ([`spawn`] does this right
//! after the fork), and the root closes the member's ends. So when a member
//! dies, the root reads end-of-file on its report pipe instead of waiting
//! forever, and when the root dies, every member reads end-of-file on its
//! order pipe and exits.
//!
//! Messages up are frames: a 4-byte length and the text, written with one
//! `write(2)` no longer than `PIPE_BUF`, so they are never split. A member
//! first sends `ready PID` once set up, then answers an order with `PASS`
//! or `FAIL: why` (see [`Up::report`]).
//!
//! Forking uses `fork(2)`, or the raw `clone3(2)` system call when a test
//! needs a chosen exit signal or pid (`set_tid`, 5.5). The raw clone leaves
//! glibc's idea of the thread's own tid stale in the child, which only
//! pthread functions consult; the members' code never uses them. Both are
//! meant for single-threaded processes, like `fork` itself.

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Checker;

/// Why talking to a member failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A system call on a member's pipe failed.
    #[error("{name} (pid {pid}): {what}")]
    Io {
        /// The member's name.
        name: String,
        /// Its pid (0 while not known yet).
        pid: libc::pid_t,
        /// The call.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The member did not answer in time.
    #[error("{name} (pid {pid}): no answer within {} ms", timeout.as_millis())]
    Timeout {
        /// The member's name.
        name: String,
        /// Its pid.
        pid: libc::pid_t,
        /// How long the root waited.
        timeout: Duration,
    },
    /// The member's end of the report pipe is closed: it exited.
    #[error("{name} (pid {pid}): its report pipe is closed (the member is gone)")]
    Closed {
        /// The member's name.
        name: String,
        /// Its pid.
        pid: libc::pid_t,
    },
    /// A message that does not follow the protocol.
    #[error("{name} (pid {pid}): unexpected message {msg:?}, expected {expected}")]
    Protocol {
        /// The member's name.
        name: String,
        /// Its pid.
        pid: libc::pid_t,
        /// What arrived.
        msg: String,
        /// What should have arrived.
        expected: &'static str,
    },
}

/// Longest message text: a frame (4-byte length + text) fits in `PIPE_BUF`.
pub const MAX_MESSAGE: usize = 4000;

/// The order a member answers by checking itself ([`serve`]).
pub const ORDER_CHECK: u8 = b'c';
/// The order a member answers by exiting ([`serve`]).
pub const ORDER_EXIT: u8 = b'x';

/// How long the root waits for a member by default.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Link descriptors this process holds, closed in every member it forks.
static HELD: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<RawFd>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

fn close_fd(fd: RawFd) {
    // SAFETY: `fd` is a link descriptor owned by this module's bookkeeping
    // and used by nobody else.
    unsafe { libc::close(fd) };
    held().retain(|&f| f != fd);
}

/// The two pipes between the root and one member, before the fork that
/// splits them. It is four descriptor numbers: copying it duplicates
/// nothing, and each process turns it into exactly one of [`Up`] (in the
/// member), [`Member`] (in the root) or nothing ([`Link::close`]).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    cmd_r: RawFd,
    cmd_w: RawFd,
    rep_r: RawFd,
    rep_w: RawFd,
}

impl Link {
    /// Creates both pipes. They are inherited by members forked later
    /// only when passed down explicitly (see [`spawn`]).
    pub fn new() -> io::Result<Link> {
        let (cmd_r, cmd_w) = crate::fd::pipe(0)?;
        let (rep_r, rep_w) = match crate::fd::pipe(0) {
            Ok(p) => p,
            Err(e) => {
                let _ = crate::fd::close(cmd_r);
                let _ = crate::fd::close(cmd_w);
                return Err(e);
            }
        };
        held().extend([cmd_r, cmd_w, rep_r, rep_w]);
        Ok(Link {
            cmd_r,
            cmd_w,
            rep_r,
            rep_w,
        })
    }

    fn fds(&self) -> [RawFd; 4] {
        [self.cmd_r, self.cmd_w, self.rep_r, self.rep_w]
    }

    /// The root's side, in the process that forked the member: closes the
    /// member's ends here. `reap` says whether this process is the member's
    /// parent (and reaps it in [`finish`]).
    pub fn into_member(self, name: &str, pid: libc::pid_t, reap: bool) -> Member {
        close_fd(self.cmd_r);
        close_fd(self.rep_w);
        Member {
            name: name.to_string(),
            pid,
            reap,
            cmd: self.cmd_w,
            rep: self.rep_r,
        }
    }

    /// The root's side of a member forked by another process (a
    /// grandchild): the pid is learned from its `ready` message.
    pub fn into_remote(self, name: &str) -> Member {
        self.into_member(name, 0, false)
    }

    /// Closes all four ends: for a process that only forked the member.
    pub fn close(self) {
        for fd in self.fds() {
            close_fd(fd);
        }
    }
}

/// How a member is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spawn {
    /// `fork(2)`.
    Fork,
    /// The raw `clone3(2)` system call without `CLONE_VM`: a fork with the
    /// given exit signal (0 for none) and, if set, this exact pid.
    Clone3 {
        /// The signal the parent gets when the child exits.
        exit_signal: libc::c_int,
        /// The pid to create the child with (`set_tid`).
        set_tid: Option<libc::pid_t>,
    },
}

/// `struct clone_args` of `clone3(2)` (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks; returns 0 in the child, the child's pid in the parent.
fn raw_fork(how: Spawn) -> io::Result<libc::pid_t> {
    let r = match how {
        // SAFETY: the callers are single-threaded processes (documented on
        // the public functions); the child only runs ordinary code and ends
        // in `_exit`.
        Spawn::Fork => libc::c_long::from(unsafe { libc::fork() }),
        Spawn::Clone3 {
            exit_signal,
            set_tid,
        } => {
            let tid = set_tid.unwrap_or(0);
            let args = CloneArgs {
                exit_signal: exit_signal as u64,
                set_tid: if set_tid.is_some() {
                    &tid as *const libc::pid_t as u64
                } else {
                    0
                },
                set_tid_size: u64::from(set_tid.is_some()),
                ..CloneArgs::default()
            };
            // SAFETY: without CLONE_VM the child runs on its own copy of
            // this stack and returns from the call like a forked child;
            // `args` and `tid` are live for the duration of the call and
            // the size passed is the struct's.
            unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            }
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as libc::pid_t)
}

/// Ends this process right away with `code`: no exit handlers, no stdio
/// flushing (buffers inherited from the parent must not be written twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// Forks a child running `body` and exiting with what it returns. Only for
/// single-threaded callers.
pub fn fork_then(how: Spawn, body: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    match raw_fork(how)? {
        0 => exit_now(body()),
        pid => Ok(pid),
    }
}

/// Forks a member on `link`, passing down `keep` (links of the member's own
/// future members). In the child every other link descriptor this process
/// held is closed, and `body` runs with the member's [`Up`]; its return
/// value is the exit code. The caller still has to turn `link` into a
/// [`Member`] or close it. Only for single-threaded callers.
pub fn spawn(
    link: Link,
    how: Spawn,
    keep: &[Link],
    body: impl FnOnce(Up) -> i32,
) -> io::Result<libc::pid_t> {
    match raw_fork(how)? {
        0 => {
            let mut kept: Vec<RawFd> = keep.iter().flat_map(|l| l.fds()).collect();
            kept.extend([link.cmd_r, link.rep_w]);
            let all = std::mem::take(&mut *held());
            for fd in all {
                if !kept.contains(&fd) {
                    // SAFETY: `fd` is a link descriptor inherited from the
                    // parent that this member does not use.
                    unsafe { libc::close(fd) };
                }
            }
            *held() = kept;
            exit_now(body(Up {
                cmd: link.cmd_r,
                rep: link.rep_w,
            }))
        }
        pid => Ok(pid),
    }
}

/// Forks a member named `name` with a fresh link (see [`spawn`]).
pub fn member(
    name: &str,
    how: Spawn,
    keep: &[Link],
    body: impl FnOnce(Up) -> i32,
) -> io::Result<Member> {
    let link = Link::new()?;
    match spawn(link, how, keep, body) {
        Ok(pid) => Ok(link.into_member(name, pid, true)),
        Err(e) => {
            link.close();
            Err(e)
        }
    }
}

/// The member's side of its link.
#[derive(Debug)]
pub struct Up {
    cmd: RawFd,
    rep: RawFd,
}

impl Up {
    /// Sends one message (cut to [`MAX_MESSAGE`] bytes) to the root.
    pub fn send(&self, msg: &str) -> io::Result<()> {
        let mut text = msg.as_bytes();
        if text.len() > MAX_MESSAGE {
            text = &text[..MAX_MESSAGE];
        }
        let mut frame = Vec::with_capacity(4 + text.len());
        frame.extend_from_slice(&(text.len() as u32).to_ne_bytes());
        frame.extend_from_slice(text);
        loop {
            match crate::fd::write(self.rep, &frame) {
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short write of a {}-byte frame: {n}",
                        frame.len()
                    )))
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Tells the root this member is set up: `ready PID`.
    pub fn ready(&self) -> io::Result<()> {
        self.send(&format!("ready {}", std::process::id()))
    }

    /// Blocks in `read(2)` for the next order; `None` when the root is gone.
    /// Interrupted reads are retried.
    pub fn wait_order(&self) -> io::Result<Option<u8>> {
        loop {
            match crate::fd::read(self.cmd, 1) {
                Ok(b) if b.is_empty() => return Ok(None),
                Ok(b) => return Ok(Some(b[0])),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the verdict of a member's own checks: `PASS`, or `FAIL: ...`
    /// with every failure.
    pub fn report(&self, c: &Checker) -> io::Result<()> {
        match c.summary() {
            None => self.send("PASS"),
            Some(s) => self.send(&format!("FAIL: {s}")),
        }
    }

    /// The descriptor orders arrive on (to block on it some other way).
    pub fn order_fd(&self) -> RawFd {
        self.cmd
    }
}

/// Answers orders until told to exit: [`ORDER_CHECK`] runs `check` and
/// reports it, [`ORDER_EXIT`] returns 0. Returns 1 if the root is gone or
/// the pipe fails, 2 on an unknown order.
pub fn serve(up: &Up, mut check: impl FnMut() -> Checker) -> i32 {
    loop {
        match up.wait_order() {
            Ok(Some(ORDER_CHECK)) => {
                if up.report(&check()).is_err() {
                    return 1;
                }
            }
            Ok(Some(ORDER_EXIT)) => return 0,
            Ok(Some(_)) => return 2,
            Ok(None) | Err(_) => return 1,
        }
    }
}

/// The root's side of one member.
#[derive(Debug)]
pub struct Member {
    /// A name for messages.
    pub name: String,
    /// The member's pid (0 until its `ready` message for a remote member).
    pub pid: libc::pid_t,
    /// Whether this process is the parent and reaps it.
    pub reap: bool,
    cmd: RawFd,
    rep: RawFd,
}

impl Member {
    fn io(&self, what: &'static str, source: io::Error) -> TreeError {
        TreeError::Io {
            name: self.name.clone(),
            pid: self.pid,
            what,
            source,
        }
    }

    /// Sends a one-byte order.
    pub fn order(&self, b: u8) -> Result<(), TreeError> {
        loop {
            match crate::fd::write(self.cmd, &[b]) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(self.io("writing an order", e)),
            }
        }
    }

    /// Reads exactly `n` bytes, waiting at most until `deadline`.
    fn read_exact(
        &self,
        n: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, TreeError> {
        let mut buf = Vec::with_capacity(n);
        while buf.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.rep,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one live pollfd.
            let r =
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(self.io("poll on the report pipe", e));
            }
            if r == 0 {
                return Err(TreeError::Timeout {
                    name: self.name.clone(),
                    pid: self.pid,
                    timeout,
                });
            }
            match crate::fd::read(self.rep, n - buf.len()) {
                Ok(b) if b.is_empty() => {
                    return Err(TreeError::Closed {
                        name: self.name.clone(),
                        pid: self.pid,
                    })
                }
                Ok(b) => buf.extend_from_slice(&b),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(self.io("reading the report pipe", e)),
            }
        }
        Ok(buf)
    }

    /// Receives one message, waiting at most `timeout`.
    pub fn recv(&self, timeout: Duration) -> Result<String, TreeError> {
        let deadline = Instant::now() + timeout;
        let len = self.read_exact(4, deadline, timeout)?;
        let len = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_MESSAGE {
            return Err(TreeError::Protocol {
                name: self.name.clone(),
                pid: self.pid,
                msg: format!("<frame of {len} bytes>"),
                expected: "a frame of at most 4000 bytes",
            });
        }
        let text = self.read_exact(len, deadline, timeout)?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Waits for `ready PID`. Learns the pid of a remote member; for a known
    /// one, the pid must match.
    pub fn await_ready(&mut self, timeout: Duration) -> Result<(), TreeError> {
        let msg = self.recv(timeout)?;
        let pid = msg
            .strip_prefix("ready ")
            .and_then(|p| p.parse::<libc::pid_t>().ok());
        match pid {
            Some(p) if self.pid == 0 || self.pid == p => {
                self.pid = p;
                Ok(())
            }
            _ => Err(TreeError::Protocol {
                name: self.name.clone(),
                pid: self.pid,
                msg,
                expected: "ready <its pid>",
            }),
        }
    }

    /// Receives the member's verdict and records it in `c`: nothing for
    /// `PASS`, the member's failures otherwise.
    pub fn collect(&self, c: &mut Checker, timeout: Duration) {
        match self.recv(timeout) {
            Ok(m) if m == "PASS" => {
                c.check(true, String::new);
            }
            Ok(m) => c.fail(format!(
                "{} (pid {}): {}",
                self.name,
                self.pid,
                m.strip_prefix("FAIL: ").unwrap_or(&m)
            )),
            Err(e) => c.fail(chain(&e)),
        }
    }

    /// Closes the root's ends of the link.
    pub fn close(self) {
        close_fd(self.cmd);
        close_fd(self.rep);
    }
}

/// An error and its causes on one line: `what: cause: cause`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Waits for every member's `ready`; the first failure is returned.
pub fn await_all_ready(members: &mut [Member]) -> Result<(), TreeError> {
    for m in members.iter_mut() {
        m.await_ready(ANSWER_TIMEOUT)?;
    }
    Ok(())
}

/// Orders every member to check itself, then collects the verdicts.
pub fn check_all(members: &[Member], c: &mut Checker) {
    for m in members {
        if let Err(e) = m.order(ORDER_CHECK) {
            c.fail(chain(&e));
        }
    }
    for m in members {
        m.collect(c, ANSWER_TIMEOUT);
    }
}

/// Orders every member to exit, reaps the ones this process is the parent
/// of and checks they exited with status 0, and closes the links.
pub fn finish(members: Vec<Member>, c: &mut Checker) {
    for m in &members {
        if let Err(e) = m.order(ORDER_EXIT) {
            c.fail(chain(&e));
        }
    }
    for m in members {
        if m.reap {
            match wait_pid(m.pid, libc::__WALL) {
                Ok(st) => {
                    crate::check!(
                        c,
                        st == 0,
                        "{} (pid {}): {}, expected exit status 0",
                        m.name,
                        m.pid,
                        describe_status(st)
                    );
                }
                Err(e) => c.fail(format!("{} (pid {}): waitpid: {e}", m.name, m.pid)),
            }
        }
        m.close();
    }
}

/// `waitpid(pid, &status, flags)`, retried on `EINTR`: the status.
pub fn wait_pid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<i32> {
    loop {
        let mut st = 0;
        // SAFETY: `st` is a writable int.
        let r = unsafe { libc::waitpid(pid, &mut st, flags) };
        if r == pid || (pid <= 0 && r > 0) {
            return Ok(st);
        }
        if r == 0 {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Reaps the given children (in order) and returns how each ended, as
/// [`describe_status`] says it, for the ones that did not exit with 0.
pub fn reap_all(pids: &[libc::pid_t]) -> Vec<String> {
    let mut bad = Vec::new();
    for &p in pids {
        match wait_pid(p, libc::__WALL) {
            Ok(0) => {}
            Ok(st) => bad.push(format!("child {p}: {}", describe_status(st))),
            Err(e) => bad.push(format!("child {p}: waitpid: {e}")),
        }
    }
    bad
}

/// A wait status in words: `exited with 3`, `killed by signal 9`,
/// `killed by signal 11 (core dumped)`, `stopped by signal 19`.
pub fn describe_status(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exited with {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        let core = if libc::WCOREDUMP(st) {
            " (core dumped)"
        } else {
            ""
        };
        format!("killed by signal {}{core}", libc::WTERMSIG(st))
    } else if libc::WIFSTOPPED(st) {
        format!("stopped by signal {}", libc::WSTOPSIG(st))
    } else {
        format!("status {st:#x}")
    }
}

/// The calling thread's id.
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The calling process's pid (a system call: not cached by glibc).
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The parent's pid.
pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() }
}

/// `getpgid(pid)` (0: the caller).
pub fn getpgid(pid: libc::pid_t) -> io::Result<libc::pid_t> {
    // SAFETY: getpgid takes an integer.
    let r = unsafe { libc::getpgid(pid) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// `getsid(pid)` (0: the caller).
pub fn getsid(pid: libc::pid_t) -> io::Result<libc::pid_t> {
    // SAFETY: getsid takes an integer.
    let r = unsafe { libc::getsid(pid) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// `kill(pid, sig)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes integers.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The children of thread `tid` of process `pid`, in the kernel's order
/// (the order they were forked or reparented in), from
/// `/proc/PID/task/TID/children`.
pub fn children_of(pid: libc::pid_t, tid: libc::pid_t) -> io::Result<Vec<libc::pid_t>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))?;
    text.split_whitespace()
        .map(|w| {
            w.parse()
                .map_err(|_| io::Error::other(format!("bad pid {w:?} in children")))
        })
        .collect()
}

/// The children of the calling process's main thread.
pub fn own_children() -> io::Result<Vec<libc::pid_t>> {
    let pid = getpid();
    children_of(pid, pid)
}

/// Fields of `/proc/PID/stat` that say where a process sits in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatIds {
    /// Field 3: state letter (`S`, `R`, `Z`...).
    pub state: char,
    /// Field 4.
    pub ppid: libc::pid_t,
    /// Field 5.
    pub pgrp: libc::pid_t,
    /// Field 6.
    pub session: libc::pid_t,
    /// Field 38: the signal the parent gets at exit.
    pub exit_signal: libc::c_int,
    /// Field 52: the wait status of a zombie (0 while alive).
    pub exit_code: i32,
}

/// Parses [`StatIds`] from the text of a `/proc/PID/stat` file.
pub fn parse_stat_ids(text: &str) -> Option<StatIds> {
    use crate::proc::stat_field_in as f;
    Some(StatIds {
        state: f(text, 3)?.chars().next()?,
        ppid: f(text, 4)?.parse().ok()?,
        pgrp: f(text, 5)?.parse().ok()?,
        session: f(text, 6)?.parse().ok()?,
        exit_signal: f(text, 38)?.parse().ok()?,
        exit_code: f(text, 52)?.parse().ok()?,
    })
}

/// [`StatIds`] of process `pid`.
pub fn stat_ids(pid: libc::pid_t) -> io::Result<StatIds> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path)?;
    parse_stat_ids(&text).ok_or_else(|| io::Error::other(format!("cannot parse {path}")))
}

/// The system call a task is blocked in, from `/proc/PID/syscall`:
/// `Some(nr)` with its number, `None` when it is running or stopped outside
/// a system call.
pub fn blocked_syscall(pid: libc::pid_t) -> io::Result<Option<i64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall"))?;
    Ok(parse_syscall(&text))
}

/// The number in the text of `/proc/PID/syscall` (`running` and `-1 ...`
/// give `None`).
pub fn parse_syscall(text: &str) -> Option<i64> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|&n: &i64| n >= 0)
}

/// Waits until `pid` sits in system call `nr` (up to `timeout`); whether it
/// does.
pub fn wait_in_syscall(pid: libc::pid_t, nr: i64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if matches!(blocked_syscall(pid), Ok(Some(n)) if n == nr) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ids_parse() {
        let mut t = String::from("42 (a b) Z 7 8 9");
        for i in 7..=52 {
            t.push_str(&format!(
                " {}",
                if i == 38 {
                    10
                } else if i == 52 {
                    768
                } else {
                    0
                }
            ));
        }
        let ids = parse_stat_ids(&t).unwrap();
        assert_eq!(
            ids,
            StatIds {
                state: 'Z',
                ppid: 7,
                pgrp: 8,
                session: 9,
                exit_signal: 10,
                exit_code: 768
            }
        );
        assert_eq!(parse_stat_ids("42 (a) S 1"), None);
    }

    #[test]
    fn syscall_lines() {
        assert_eq!(
            parse_syscall("34 0x0 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x7f00\n"),
            Some(34)
        );
        assert_eq!(parse_syscall("-1 0x7ffd 0x4000\n"), None);
        assert_eq!(parse_syscall("running\n"), None);
    }

    #[test]
    fn statuses_in_words() {
        assert_eq!(describe_status(3 << 8), "exited with 3");
        assert_eq!(describe_status(9), "killed by signal 9");
        assert_eq!(
            describe_status(11 | 0x80),
            "killed by signal 11 (core dumped)"
        );
    }

    /// The tests below fork; they must not do so while the other holds
    /// the descriptor bookkeeping.
    static FORKING: Mutex<()> = Mutex::new(());

    #[test]
    fn member_round_trip() {
        let _g = FORKING.lock().unwrap_or_else(|p| p.into_inner());
        let mut m = member("echo", Spawn::Fork, &[], |up| {
            if up.ready().is_err() {
                return 3;
            }
            serve(&up, || {
                let mut c = Checker::new();
                c.fail("deliberate");
                c
            })
        })
        .unwrap();
        m.await_ready(ANSWER_TIMEOUT).unwrap();
        assert!(m.pid > 0);
        let mut c = Checker::new();
        check_all(std::slice::from_ref(&m), &mut c);
        assert_eq!(c.failures().len(), 1, "{:?}", c.failures());
        assert!(
            c.failures()[0].ends_with(": deliberate"),
            "{:?}",
            c.failures()
        );
        let mut done = Checker::new();
        let pid = m.pid;
        finish(vec![m], &mut done);
        assert!(done.passed(), "{:?}", done.failures());
        assert!(kill(pid, 0).is_err());
    }

    #[test]
    fn dead_member_reads_as_closed() {
        let _g = FORKING.lock().unwrap_or_else(|p| p.into_inner());
        let m = member("quitter", Spawn::Fork, &[], |_| 5).unwrap();
        let e = m.recv(ANSWER_TIMEOUT).unwrap_err();
        assert!(matches!(e, TreeError::Closed { .. }), "{e}");
        assert_eq!(wait_pid(m.pid, 0).unwrap(), 5 << 8);
        m.close();
    }
}
