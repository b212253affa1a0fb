//! fork_tree: a tree of processes keeps its pids, parents and children order.
//!
//! ```text
//! root ─┬─ A   blocked in read(2) on its order pipe
//!       ├─ B   blocked in pause(2) ─┬─ B1   read(2)
//!       │                           └─ B2   pause(2)
//!       └─ C   read(2); created by clone3 with set_tid = a pid below A's
//! ```
//!
//! C gets the pid of a process that was forked and reaped before A, so the
//! root's children in the kernel's order (the fork order: A, B, C) are not
//! in pid order, as happens after the pid counter wraps. A restore that
//! forks children in pid order gets it wrong.
//!
//! Before the pidfile is written every member is set up and sits in its
//! blocking call (`/proc/PID/syscall`). After restore the root checks its
//! children list (`/proc/self/task/PID/children`), B's list, and that each
//! member is still blocked in the same system call; then each member is
//! woken (an order byte, plus SIGUSR1 for those in `pause`) and checks its
//! own pid and tid, its parent (`getppid`), its children in order, and that
//! `pause` did not return before it was woken. Members report through
//! their link to the root, then exit on a second order and are reaped with
//! their exit status checked.

use std::sync::atomic::{AtomicBool, Ordering};

use zdtmtst::tree::{self, Link, Member, Spawn, Up};
use zdtmtst::{check, check_eq, fail, sig, Checker};

const SYS_READ: i64 = libc::SYS_read;
const SYS_PAUSE: i64 = libc::SYS_pause;

static WOKEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_wake(_sig: libc::c_int) {
    WOKEN.store(true, Ordering::SeqCst);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Block {
    Read,
    Pause,
}

impl Block {
    fn syscall(self) -> i64 {
        match self {
            Block::Read => SYS_READ,
            Block::Pause => SYS_PAUSE,
        }
    }
}

/// The body of every member: block, then answer orders with checks of its
/// place in the tree. `kids` are this member's own children, forked before.
fn member_main(up: Up, ppid: i32, block: Block, kids: Vec<i32>) -> i32 {
    let pid = tree::getpid();
    if block == Block::Pause {
        // No SA_RESTART: pause returns on the wake-up signal.
        if sig::set_action(libc::SIGUSR1, on_wake as *const () as usize, 0, 0).is_err() {
            return 10;
        }
    }
    if up.ready().is_err() {
        return 11;
    }
    let mut early = 0;
    if block == Block::Pause {
        while !WOKEN.load(Ordering::SeqCst) {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
            if !WOKEN.load(Ordering::SeqCst) {
                early += 1;
            }
        }
    }
    let code = tree::serve(&up, || {
        let mut c = Checker::new();
        check!(
            c,
            early == 0,
            "pause() returned {early} time(s) before the wake-up signal"
        );
        check_eq!(c, tree::getpid(), pid, "getpid");
        check_eq!(c, tree::gettid(), pid, "gettid");
        check_eq!(c, tree::getppid(), ppid, "getppid");
        if let Some(ids) = c.ok("reading /proc/self/stat", tree::stat_ids(pid)) {
            check_eq!(c, ids.ppid, ppid, "ppid in /proc/{pid}/stat");
        }
        if let Some(now) = c.ok("reading own children", tree::own_children()) {
            check_eq!(c, now, kids, "children in /proc/{pid}/task/{pid}/children");
        }
        c
    });
    let bad = tree::reap_all(&kids);
    if code == 0 && !bad.is_empty() {
        return 12;
    }
    code
}

fn leaf(parent: i32, block: Block) -> impl FnOnce(Up) -> i32 {
    move |up| member_main(up, parent, block, Vec::new())
}

fn setup() -> (Vec<Member>, Vec<Block>, Vec<i32>) {
    let root = tree::getpid();
    // A pid that is free and lower than every member's: the next clone3
    // asks for it again.
    let low = tree::fork_then(Spawn::Fork, || 0)
        .unwrap_or_else(|e| fail(format!("fork of the pid reservation: {e}")));
    match tree::wait_pid(low, 0) {
        Ok(0) => {}
        Ok(st) => fail(format!(
            "pid reservation {low}: {}",
            tree::describe_status(st)
        )),
        Err(e) => fail(format!("waitpid({low}): {e}")),
    }

    let a = tree::member("A", Spawn::Fork, &[], leaf(root, Block::Read))
        .unwrap_or_else(|e| fail(format!("fork of A: {e}")));
    let b1_link = Link::new().unwrap_or_else(|e| fail(format!("pipes for B1: {e}")));
    let b2_link = Link::new().unwrap_or_else(|e| fail(format!("pipes for B2: {e}")));
    let b = tree::member("B", Spawn::Fork, &[b1_link, b2_link], move |up| {
        let me = tree::getpid();
        let b1 = tree::spawn(b1_link, Spawn::Fork, &[], leaf(me, Block::Read));
        b1_link.close();
        let Ok(b1) = b1 else { return 20 };
        let b2 = tree::spawn(b2_link, Spawn::Fork, &[], leaf(me, Block::Pause));
        b2_link.close();
        let Ok(b2) = b2 else { return 21 };
        member_main(up, root, Block::Pause, vec![b1, b2])
    })
    .unwrap_or_else(|e| fail(format!("fork of B: {e}")));
    let b1 = b1_link.into_remote("B1");
    let b2 = b2_link.into_remote("B2");
    let c = tree::member(
        "C",
        Spawn::Clone3 {
            exit_signal: libc::SIGCHLD,
            set_tid: Some(low),
        },
        &[],
        leaf(root, Block::Read),
    )
    .unwrap_or_else(|e| fail(format!("clone3 of C with set_tid {low}: {e}")));

    let mut members = vec![a, b, c, b1, b2];
    let blocks = vec![
        Block::Read,
        Block::Pause,
        Block::Read,
        Block::Read,
        Block::Pause,
    ];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(format!(
            "waiting for the tree to be set up: {}",
            tree::chain(&e)
        ));
    }
    for (m, blk) in members.iter().zip(&blocks) {
        if !tree::wait_in_syscall(m.pid, blk.syscall(), tree::ANSWER_TIMEOUT) {
            fail(format!(
                "{} (pid {}) did not block in {blk:?}: /proc/{}/syscall says {:?}",
                m.name,
                m.pid,
                m.pid,
                tree::blocked_syscall(m.pid)
            ));
        }
    }
    let kids = members[..3].iter().map(|m| m.pid).collect();
    (members, blocks, kids)
}

fn main() {
    zdtmtst::start();
    let root = tree::getpid();
    let (members, blocks, kids) = setup();
    let b_kids = vec![members[3].pid, members[4].pid];
    match tree::own_children() {
        Ok(k) if k == kids => {}
        other => fail(format!(
            "children right after setup: {other:?}, expected {kids:?}"
        )),
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(now) = c.ok("reading own children", tree::own_children()) {
        check_eq!(
            c,
            now,
            kids,
            "root: children in /proc/{root}/task/{root}/children (A, B, C)"
        );
    }
    let b = members[1].pid;
    if let Some(now) = c.ok("reading B's children", tree::children_of(b, b)) {
        check_eq!(
            c,
            now,
            b_kids,
            "root: children of B in /proc/{b}/task/{b}/children"
        );
    }
    for (m, blk) in members.iter().zip(&blocks) {
        // A released task re-enters its call once it is scheduled: give it the time.
        tree::wait_in_syscall(m.pid, blk.syscall(), tree::ANSWER_TIMEOUT);
        match tree::blocked_syscall(m.pid) {
            Ok(n) => check!(
                c,
                n == Some(blk.syscall()),
                "{} (pid {}): blocked in system call {n:?}, expected {} ({blk:?})",
                m.name,
                m.pid,
                blk.syscall()
            ),
            Err(e) => check!(
                c,
                false,
                "{} (pid {}): /proc/PID/syscall: {e}",
                m.name,
                m.pid
            ),
        };
        if let Some(ids) = c.ok("reading a member's stat", tree::stat_ids(m.pid)) {
            check!(
                c,
                ids.state == 'S',
                "{} (pid {}): state {}, expected S",
                m.name,
                m.pid,
                ids.state
            );
        }
    }
    for (m, blk) in members.iter().zip(&blocks) {
        if *blk == Block::Pause {
            if let Err(e) = tree::kill(m.pid, libc::SIGUSR1) {
                c.fail(format!("{} (pid {}): kill(SIGUSR1): {e}", m.name, m.pid));
            }
        }
    }
    tree::check_all(&members, &mut c);
    tree::finish(members, &mut c);
    c.finish();
}
