//! subreaper00: a child subreaper keeps its flag and the orphans it adopted.
//!
//! The root sets `PR_SET_CHILD_SUBREAPER`. Its child K forks the
//! grandchild GC and exits; the root reaps K, and GC, orphaned, becomes the
//! root's child. The root's other child C2 was forked before K exited, so
//! the root's children are, in the kernel's order, C2 then GC although GC
//! has the lower pid.
//!
//! ```text
//! root (subreaper) ─┬─ C2
//!                   └─ GC    (forked by K, which exited)
//! ```
//!
//! After restore: `PR_GET_CHILD_SUBREAPER` is 1 in the root; its children
//! are C2, GC in that order; GC sees the root as its parent (`getppid`
//! and its stat file). Then the flag is used for real: C2 forks X and
//! exits; X must be adopted by the root (its parent in `/proc/X/stat`,
//! the root's children now GC, X), answer, and be reaped by the root.

use std::time::{Duration, Instant};

use zdtmtst::tree::{self, Link, Member, Spawn, Up};
use zdtmtst::{check, check_eq, fail, Checker};

/// The order telling C2 to fork X and exit.
const ORDER_ORPHAN: u8 = b'o';

fn subreaper() -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer.
    if unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut v as *mut libc::c_int) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(v)
}

/// A member whose parent must be `root`: it answers checks until told to
/// exit.
fn adopted(root: i32) -> impl FnOnce(Up) -> i32 {
    move |up| {
        let pid = tree::getpid();
        if up.ready().is_err() {
            return 1;
        }
        tree::serve(&up, || {
            let mut c = Checker::new();
            check_eq!(c, tree::getpid(), pid, "getpid");
            check_eq!(c, tree::getppid(), root, "getppid");
            if let Some(ids) = c.ok("reading own stat", tree::stat_ids(pid)) {
                check_eq!(c, ids.ppid, root, "ppid in /proc/{pid}/stat");
            }
            c
        })
    }
}

/// Waits until `pid`'s parent is `parent`.
fn await_parent(pid: i32, parent: i32) -> Result<(), String> {
    let deadline = Instant::now() + tree::ANSWER_TIMEOUT;
    loop {
        match tree::stat_ids(pid) {
            Ok(ids) if ids.ppid == parent => return Ok(()),
            Ok(ids) if Instant::now() >= deadline => {
                return Err(format!(
                    "pid {pid} has parent {}, expected {parent}",
                    ids.ppid
                ))
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("/proc/{pid}/stat: {e}")),
        }
    }
}

fn setup(root: i32) -> (Member, Member, Member) {
    let gc_link = Link::new().unwrap_or_else(|e| fail(format!("pipes for GC: {e}")));
    let mut k = tree::member("K", Spawn::Fork, &[gc_link], move |up| {
        let gc = tree::spawn(gc_link, Spawn::Fork, &[], adopted(root));
        gc_link.close();
        if gc.is_err() || up.ready().is_err() {
            return 1;
        }
        tree::serve(&up, Checker::new)
    })
    .unwrap_or_else(|e| fail(format!("fork of K: {e}")));
    let mut gc = gc_link.into_remote("GC");
    let x_link = Link::new().unwrap_or_else(|e| fail(format!("pipes for X: {e}")));
    if let Err(e) = k.await_ready(tree::ANSWER_TIMEOUT) {
        fail(tree::chain(&e));
    }
    if let Err(e) = gc.await_ready(tree::ANSWER_TIMEOUT) {
        fail(tree::chain(&e));
    }
    let mut c2 = tree::member("C2", Spawn::Fork, &[x_link], move |up| {
        if up.ready().is_err() {
            return 1;
        }
        loop {
            match up.wait_order() {
                Ok(Some(tree::ORDER_CHECK)) => {
                    let mut c = Checker::new();
                    check_eq!(c, tree::getppid(), root, "getppid");
                    if up.report(&c).is_err() {
                        return 1;
                    }
                }
                Ok(Some(ORDER_ORPHAN)) => {
                    let x = tree::spawn(x_link, Spawn::Fork, &[], adopted(root));
                    x_link.close();
                    return if x.is_ok() { 0 } else { 3 };
                }
                Ok(Some(tree::ORDER_EXIT)) => return 0,
                _ => return 1,
            }
        }
    })
    .unwrap_or_else(|e| fail(format!("fork of C2: {e}")));
    let x = x_link.into_remote("X");
    if let Err(e) = c2.await_ready(tree::ANSWER_TIMEOUT) {
        fail(tree::chain(&e));
    }
    // K goes; GC is left to the subreaper.
    if let Err(e) = k.order(tree::ORDER_EXIT) {
        fail(tree::chain(&e));
    }
    match tree::wait_pid(k.pid, 0) {
        Ok(0) => {}
        Ok(st) => fail(format!("K: {}", tree::describe_status(st))),
        Err(e) => fail(format!("waitpid(K {}): {e}", k.pid)),
    }
    k.close();
    if let Err(e) = await_parent(gc.pid, root) {
        fail(format!("GC was not adopted: {e}"));
    }
    gc.reap = true;
    if !tree::wait_in_syscall(gc.pid, libc::SYS_read, tree::ANSWER_TIMEOUT) {
        fail("GC did not block in read(2)");
    }
    (c2, gc, x)
}

fn main() {
    zdtmtst::start();
    let root = tree::getpid();
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        fail(format!("PR_SET_CHILD_SUBREAPER: {}", zdtmtst::last_err()));
    }
    let (c2, gc, mut x) = setup(root);
    let order = vec![c2.pid, gc.pid];
    match tree::own_children() {
        Ok(k) if k == order => {}
        other => fail(format!(
            "children after setup: {other:?}, expected {order:?}"
        )),
    }
    if gc.pid > c2.pid {
        fail(format!(
            "GC ({}) was forked after C2 ({}): the order test is void",
            gc.pid, c2.pid
        ));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(v) = c.ok("PR_GET_CHILD_SUBREAPER", subreaper()) {
        check_eq!(c, v, 1, "root: PR_GET_CHILD_SUBREAPER");
    }
    if let Some(k) = c.ok("reading own children", tree::own_children()) {
        check_eq!(
            c,
            k,
            order,
            "root: children in kernel order (C2, then adopted GC)"
        );
    }
    if let Some(ids) = c.ok("GC's stat", tree::stat_ids(gc.pid)) {
        check_eq!(
            c,
            (ids.state, ids.ppid),
            ('S', root),
            "GC (pid {}): (state, ppid)",
            gc.pid
        );
    }
    let mut members = vec![c2, gc];
    tree::check_all(&members, &mut c);

    // Orphan X now: the restored subreaper must adopt it.
    let c2 = members.remove(0);
    if let Err(e) = c2.order(ORDER_ORPHAN) {
        c.fail(tree::chain(&e));
    }
    match tree::wait_pid(c2.pid, 0) {
        Ok(st) => check!(
            c,
            st == 0,
            "C2 (pid {}): {}, expected exit status 0",
            c2.pid,
            tree::describe_status(st)
        ),
        Err(e) => check!(c, false, "waitpid(C2 {}): {e}", c2.pid),
    };
    c2.close();
    match x.await_ready(tree::ANSWER_TIMEOUT) {
        Ok(()) => {
            if let Err(e) = await_parent(x.pid, root) {
                c.fail(format!("X, orphaned after restore, was not adopted: {e}"));
            }
            let now = vec![members[0].pid, x.pid];
            if let Some(k) = c.ok("reading own children", tree::own_children()) {
                check_eq!(c, k, now, "root: children after adopting X");
            }
            x.reap = true;
            members.push(x);
        }
        Err(e) => {
            c.fail(tree::chain(&e));
            x.close();
        }
    }
    tree::check_all(&members, &mut c);
    tree::finish(members, &mut c);
    c.finish();
}
