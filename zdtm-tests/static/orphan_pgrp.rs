//! orphan_pgrp: an orphaned process group, in a session whose leader has
//! exited too.
//!
//! ```text
//! root (subreaper, own session)
//! └─ S        setsid(), forks A, exits once A has
//!    └─ A     setpgid(0, 0), forks B and C, exits
//!       ├─ B  in A's group and S's session; a child of the root once A is gone
//!       └─ C  like B
//! ```
//!
//! B and C are left in a group whose leader is gone, in a session whose
//! leader is gone, and their parent (the root) is in another session: the
//! group is orphaned. After restore the root checks, from outside, that B
//! and C still have session S, group A and parent the root, that neither S
//! nor A exists, and that its own children are exactly B and C; each member
//! then checks its own pid, parent, session and group.

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
    let (b_link, c_link) = (link("B"), link("C"));
    // S and A tell the root their pids through this pipe before they go.
    let (ids_r, ids_w) = zdtmtst::fd::pipe(0).unwrap_or_else(|e| fail(format!("pipe: {e}")));

    let s = tree::fork_then(Spawn::Fork, move || {
        // SAFETY: setsid takes no arguments.
        if unsafe { libc::setsid() } < 0 {
            return 20;
        }
        let s = tree::getpid();
        let a = tree::fork_then(Spawn::Fork, move || {
            // SAFETY: setpgid takes integers.
            if unsafe { libc::setpgid(0, 0) } < 0 {
                return 20;
            }
            let a = tree::getpid();
            let b = tree::spawn(b_link, Spawn::Fork, &[], move |up| {
                let _ = zdtmtst::fd::close(ids_w);
                let _ = zdtmtst::fd::close(ids_r);
                serve_member(up, root, s, a)
            });
            let c = tree::spawn(c_link, Spawn::Fork, &[], move |up| {
                let _ = zdtmtst::fd::close(ids_w);
                let _ = zdtmtst::fd::close(ids_r);
                serve_member(up, root, s, a)
            });
            if b.is_err() || c.is_err() {
                return 21;
            }
            0
        });
        let Ok(a) = a else { return 22 };
        // S outlives A: B and C must be orphaned to the root, not to S.
        match tree::wait_pid(a, 0) {
            Ok(0) => {}
            _ => return 23,
        }
        let mut msg = s.to_ne_bytes().to_vec();
        msg.extend_from_slice(&a.to_ne_bytes());
        if zdtmtst::fd::write(ids_w, &msg).ok() != Some(8) {
            return 24;
        }
        0
    })
    .unwrap_or_else(|e| fail(format!("fork of S: {e}")));
    let _ = zdtmtst::fd::close(ids_w);
    let ids = zdtmtst::fd::read(ids_r, 8).unwrap_or_else(|e| fail(format!("reading ids: {e}")));
    let _ = zdtmtst::fd::close(ids_r);
    if ids.len() != 8 {
        fail(format!(
            "S and A did not report their pids ({} bytes)",
            ids.len()
        ));
    }
    let word = |b: &[u8]| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let a = word(&ids[4..]);
    if word(&ids[..4]) != s {
        fail(format!("S says it is {}, its pid is {s}", word(&ids[..4])));
    }
    match tree::wait_pid(s, 0) {
        Ok(0) => {}
        Ok(st) => fail(format!("S {}", tree::describe_status(st))),
        Err(e) => fail(format!("waitpid(S): {e}")),
    }
    let mut members: Vec<Member> = vec![b_link.into_remote("B"), c_link.into_remote("C")];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(format!("waiting for the tree: {}", tree::chain(&e)));
    }
    // B and C are the root's children now: it reaps them.
    for m in &mut members {
        m.reap = true;
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for m in &members {
        let pid = m.pid;
        if let Some(ids) = c.ok(&format!("/proc/{pid}/stat"), tree::stat_ids(pid)) {
            check_eq!(
                c,
                (ids.ppid, ids.session, ids.pgrp),
                (root, s, a),
                "{} (pid {pid}) seen by the root: (ppid, session, pgrp)",
                m.name
            );
        }
    }
    for (what, pid) in [("session leader S", s), ("group leader A", a)] {
        let gone = tree::kill(pid, 0);
        check!(
            c,
            gone.as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH)),
            "the exited {what} {pid} exists again: kill(0) gave {gone:?}"
        );
    }
    if let Some(mut k) = c.ok("reading own children", tree::own_children()) {
        k.sort_unstable();
        let mut want: Vec<i32> = members.iter().map(|m| m.pid).collect();
        want.sort_unstable();
        check_eq!(c, k, want, "root: children");
    }
    tree::check_all(&members, &mut c);
    tree::finish(members, &mut c);
    c.finish();
}
