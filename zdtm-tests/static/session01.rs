//! session01: a session whose leader has exited keeps its id and members.
//!
//! ```text
//! root (subreaper, own session)
//! ├─ L     setsid(), forks G and G2, exits (reaped by the root)
//! ├─ G     L's child, in L's session and group; a child of the root once L is gone
//! │  └─ H  stays in L's session and group
//! └─ G2    like G
//! ```
//!
//! After restore the root checks, from outside, that G, G2 and H still have
//! session and group L and their parents (the root, the root, G), that L
//! itself does not exist (whatever restore needed to recreate the session
//! is gone) and that its own children are exactly G and G2; every member
//! then checks its own pid, parent, session and group.

use zdtmtst::tree::{self, Link, Member, Spawn, Up};
use zdtmtst::{check, check_eq, fail, Checker};

/// What a member must see of itself.
fn self_check(pid: i32, ppid: i32, sid: i32, pgid: i32) -> Checker {
    let mut c = Checker::new();
    check_eq!(c, tree::getpid(), pid, "getpid");
    check_eq!(c, tree::getppid(), ppid, "getppid");
    if let Some(s) = c.ok("getsid(0)", tree::getsid(0)) {
        check_eq!(c, s, sid, "getsid");
    }
    if let Some(g) = c.ok("getpgid(0)", tree::getpgid(0)) {
        check_eq!(c, g, pgid, "getpgid");
    }
    c
}

/// A member born in L's session: answers checks until told to exit, then
/// reaps its own children.
fn serve_member(up: Up, ppid: i32, leader: i32, kids: &[i32]) -> i32 {
    if up.ready().is_err() {
        return 11;
    }
    let pid = tree::getpid();
    let code = tree::serve(&up, || self_check(pid, ppid, leader, leader));
    if code == 0 && !tree::reap_all(kids).is_empty() {
        return 12;
    }
    code
}

fn main() {
    zdtmtst::start();
    let root = tree::getpid();
    if tree::getsid(0).ok() != Some(root) {
        // SAFETY: setsid takes no arguments.
        if unsafe { libc::setsid() } < 0 {
            fail(format!("setsid: {}", zdtmtst::last_err()));
        }
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        fail(format!("PR_SET_CHILD_SUBREAPER: {}", zdtmtst::last_err()));
    }
    let link = |n: &str| Link::new().unwrap_or_else(|e| fail(format!("pipes for {n}: {e}")));
    let (g_link, g2_link, h_link) = (link("G"), link("G2"), link("H"));

    let leader = tree::fork_then(Spawn::Fork, move || {
        // SAFETY: setsid takes no arguments.
        if unsafe { libc::setsid() } < 0 {
            return 20;
        }
        let l = tree::getpid();
        let g = tree::spawn(g_link, Spawn::Fork, &[h_link], move |up| {
            let g = tree::getpid();
            let h = tree::spawn(h_link, Spawn::Fork, &[], move |up| {
                serve_member(up, g, l, &[])
            });
            h_link.close();
            match h {
                Ok(h) => serve_member(up, root, l, &[h]),
                Err(_) => 21,
            }
        });
        let g2 = tree::spawn(g2_link, Spawn::Fork, &[], move |up| {
            serve_member(up, root, l, &[])
        });
        // L leaves its session behind.
        if g.is_err() || g2.is_err() {
            22
        } else {
            0
        }
    })
    .unwrap_or_else(|e| fail(format!("fork of L: {e}")));
    match tree::wait_pid(leader, 0) {
        Ok(0) => {}
        Ok(st) => fail(format!("L {}", tree::describe_status(st))),
        Err(e) => fail(format!("waitpid(L): {e}")),
    }
    let mut members: Vec<Member> = vec![
        g_link.into_remote("G"),
        g2_link.into_remote("G2"),
        h_link.into_remote("H"),
    ];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(format!("waiting for the tree: {}", tree::chain(&e)));
    }
    // G and G2 are the root's children now: it reaps them.
    members[0].reap = true;
    members[1].reap = true;
    let (g, g2, h) = (members[0].pid, members[1].pid, members[2].pid);

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(s) = c.ok("getsid(0)", tree::getsid(0)) {
        check_eq!(c, s, root, "root: getsid");
    }
    for (name, pid, ppid) in [("G", g, root), ("G2", g2, root), ("H", h, g)] {
        if let Some(ids) = c.ok(&format!("/proc/{pid}/stat"), tree::stat_ids(pid)) {
            check_eq!(
                c,
                (ids.ppid, ids.session, ids.pgrp),
                (ppid, leader, leader),
                "{name} (pid {pid}) seen by the root: (ppid, session, pgrp)"
            );
        }
    }
    let gone = tree::kill(leader, 0);
    check!(
        c,
        gone.as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH)),
        "the exited session leader {leader} exists again: kill(0) gave {gone:?}"
    );
    if let Some(mut k) = c.ok("reading own children", tree::own_children()) {
        k.sort_unstable();
        let mut want = vec![g, g2];
        want.sort_unstable();
        check_eq!(c, k, want, "root: children");
    }
    tree::check_all(&members, &mut c);
    tree::finish(members, &mut c);
    c.finish();
}
