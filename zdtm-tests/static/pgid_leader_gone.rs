//! pgid_leader_gone: a process group whose leader has exited keeps its id
//! and members.
//!
//! ```text
//! root (subreaper, own session)
//! ├─ P     setpgid(0, 0), forks M1 and M2, exits (reaped by the root)
//! ├─ X     setpgid(0, P) while P lives: joins P's group from outside it
//! ├─ M1    P's child in P's group; a child of the root once P is gone
//! └─ M2    like M1
//! ```
//!
//! After restore the root checks, from outside, that M1, M2 and X are still
//! in group P of the root's session with the root as parent, that P itself
//! does not exist, and that the root's group is its own; each member then
//! checks its own pid, parent, session and group.

use zdtmtst::tree::{self, Link, Member, Spawn, Up};
use zdtmtst::{check, check_eq, fail, Checker};

/// A member: answers checks of its ids until told to exit.
fn serve_member(up: Up, ppid: i32, sid: i32, pgid: i32) -> i32 {
    if up.ready().is_err() {
        return 11;
    }
    let pid = tree::getpid();
    tree::serve(&up, || {
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
    })
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
    let (m1_link, m2_link) = (link("M1"), link("M2"));
    // P waits for the root's word before it exits, so that X can join its group.
    let (go_r, go_w) = zdtmtst::fd::pipe(0).unwrap_or_else(|e| fail(format!("pipe: {e}")));

    let p = tree::fork_then(Spawn::Fork, move || {
        // SAFETY: setpgid takes integers.
        if unsafe { libc::setpgid(0, 0) } < 0 {
            return 20;
        }
        let p = tree::getpid();
        let drop_go = move || {
            let _ = zdtmtst::fd::close(go_r);
            let _ = zdtmtst::fd::close(go_w);
        };
        let m1 = tree::spawn(m1_link, Spawn::Fork, &[], move |up| {
            drop_go();
            serve_member(up, root, root, p)
        });
        let m2 = tree::spawn(m2_link, Spawn::Fork, &[], move |up| {
            drop_go();
            serve_member(up, root, root, p)
        });
        let _ = zdtmtst::fd::close(go_w);
        // Until the root has moved X into the group (or is gone).
        let _ = zdtmtst::fd::read(go_r, 1);
        if m1.is_err() || m2.is_err() {
            21
        } else {
            0
        }
    })
    .unwrap_or_else(|e| fail(format!("fork of P: {e}")));
    let _ = zdtmtst::fd::close(go_r);
    // The parent's half of P's setpgid, so the group exists before X joins it.
    // SAFETY: setpgid takes integers; failing because P did it already is fine.
    unsafe { libc::setpgid(p, p) };
    let mut x = tree::member("X", Spawn::Fork, &[], move |up| {
        let _ = zdtmtst::fd::close(go_w);
        // SAFETY: setpgid takes integers.
        if unsafe { libc::setpgid(0, p) } < 0 {
            return 20;
        }
        serve_member(up, root, root, p)
    })
    .unwrap_or_else(|e| fail(format!("fork of X: {e}")));
    if let Err(e) = x.await_ready(tree::ANSWER_TIMEOUT) {
        fail(format!("waiting for X: {}", tree::chain(&e)));
    }
    let _ = zdtmtst::fd::write(go_w, b"x");
    let _ = zdtmtst::fd::close(go_w);
    match tree::wait_pid(p, 0) {
        Ok(0) => {}
        Ok(st) => fail(format!("P {}", tree::describe_status(st))),
        Err(e) => fail(format!("waitpid(P): {e}")),
    }
    let mut members: Vec<Member> = vec![x, m1_link.into_remote("M1"), m2_link.into_remote("M2")];
    if let Err(e) = tree::await_all_ready(&mut members[1..]) {
        fail(format!("waiting for the tree: {}", tree::chain(&e)));
    }
    // M1 and M2 are the root's children now: it reaps them.
    for m in &mut members {
        m.reap = true;
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(g) = c.ok("getpgid(0)", tree::getpgid(0)) {
        check_eq!(c, g, root, "root: getpgid");
    }
    for m in &members {
        let pid = m.pid;
        if let Some(ids) = c.ok(&format!("/proc/{pid}/stat"), tree::stat_ids(pid)) {
            check_eq!(
                c,
                (ids.ppid, ids.session, ids.pgrp),
                (root, root, p),
                "{} (pid {pid}) seen by the root: (ppid, session, pgrp)",
                m.name
            );
        }
    }
    let gone = tree::kill(p, 0);
    check!(
        c,
        gone.as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH)),
        "the exited group leader {p} exists again: kill(0) gave {gone:?}"
    );
    tree::check_all(&members, &mut c);
    tree::finish(members, &mut c);
    c.finish();
}
