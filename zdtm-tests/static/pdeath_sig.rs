//! pdeath_sig: parent-death signals survive and still fire.
//!
//! ```text
//! root (subreaper) ─┬─ P   PR_SET_PDEATHSIG(SIGUSR1)
//!                   │  └─ Q   PR_SET_PDEATHSIG(SIGRTMIN+3), the signal blocked
//!                   └─ R   no parent-death signal
//! ```
//!
//! After restore each member checks `PR_GET_PDEATHSIG` (SIGUSR1, SIGRTMIN+3,
//! 0) and its parent, and the root checks its own is 0. Then the signal is
//! used for real: P exits, so Q must receive SIGRTMIN+3, sent by the exiting
//! P (`SI_USER`, `si_pid` P), exactly once, and be adopted by the root (a
//! subreaper, so the orphan comes back to it and can be reaped).

use std::time::Duration;

use zdtmtst::sig::{self, bit, rtmin};
use zdtmtst::tree::{self, Link, Spawn, Up};
use zdtmtst::{check, check_eq, fail, Checker};

/// The order telling Q that P is gone: wait for the signal and report.
const ORDER_ORPHANED: u8 = b'o';

fn pdeathsig() -> std::io::Result<i32> {
    let mut v: libc::c_int = -1;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer.
    if unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut v as *mut libc::c_int) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(v)
}

fn set_pdeathsig(s: i32) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, s as libc::c_ulong) } != 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(())
}

/// Checks common to every member: pid, parent, parent-death signal.
fn identity(pid: i32, ppid: i32, pdeath: i32) -> Checker {
    let mut c = Checker::new();
    check_eq!(c, tree::getpid(), pid, "getpid");
    check_eq!(c, tree::getppid(), ppid, "getppid");
    if let Some(v) = c.ok("PR_GET_PDEATHSIG", pdeathsig()) {
        check_eq!(c, v, pdeath, "PR_GET_PDEATHSIG");
    }
    c
}

/// A member with parent-death signal `pdeath` (0: none) that answers
/// checks until told to exit.
fn plain(ppid: i32, pdeath: i32) -> impl FnOnce(Up) -> i32 {
    move |up| {
        if pdeath != 0 && set_pdeathsig(pdeath).is_err() {
            return 10;
        }
        // The parent may have died before the signal was armed.
        if tree::getppid() != ppid || up.ready().is_err() {
            return 11;
        }
        let pid = tree::getpid();
        tree::serve(&up, || identity(pid, ppid, pdeath))
    }
}

/// Q: parent-death signal SIGRTMIN+3, blocked so that it stays pending.
fn q_main(up: Up, p: i32, root: i32) -> i32 {
    let s = rtmin(3);
    if sig::block(bit(s)).is_err() || set_pdeathsig(s).is_err() {
        return 10;
    }
    if tree::getppid() != p || up.ready().is_err() {
        return 11;
    }
    let pid = tree::getpid();
    loop {
        let c = match up.wait_order() {
            Ok(Some(tree::ORDER_CHECK)) => identity(pid, p, s),
            Ok(Some(ORDER_ORPHANED)) => {
                let mut c = Checker::new();
                match sig::timedwait(bit(s), Duration::from_secs(10)) {
                    Ok(Some(info)) => {
                        check_eq!(
                            c,
                            (info.signo, info.code, info.pid),
                            (s, libc::SI_USER, p),
                            "parent-death signal (signo, code, pid)"
                        );
                    }
                    Ok(None) => c.fail(format!("no signal {s} within 10 s of the parent's death")),
                    Err(e) => c.fail(format!("rt_sigtimedwait({s}): {e}")),
                }
                match sig::timedwait(bit(s), Duration::ZERO) {
                    Ok(None) => {}
                    Ok(Some(info)) => c.fail(format!("signal {s} arrived twice: {info:?}")),
                    Err(e) => c.fail(format!("rt_sigtimedwait({s}): {e}")),
                }
                check_eq!(c, tree::getppid(), root, "getppid after the parent died");
                c
            }
            Ok(Some(tree::ORDER_EXIT)) => return 0,
            _ => return 1,
        };
        if up.report(&c).is_err() {
            return 1;
        }
    }
}

fn main() {
    zdtmtst::start();
    let root = tree::getpid();
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        fail(format!("PR_SET_CHILD_SUBREAPER: {}", zdtmtst::last_err()));
    }
    let q_link = Link::new().unwrap_or_else(|e| fail(format!("pipes for Q: {e}")));
    let p = tree::member("P", Spawn::Fork, &[q_link], move |up| {
        let me = tree::getpid();
        let q = tree::spawn(q_link, Spawn::Fork, &[], move |up| q_main(up, me, root));
        q_link.close();
        // Q outlives P by design: it is the root's to reap.
        match q {
            Ok(_) => plain(root, libc::SIGUSR1)(up),
            Err(_) => 20,
        }
    })
    .unwrap_or_else(|e| fail(format!("fork of P: {e}")));
    let q = q_link.into_remote("Q");
    let r = tree::member("R", Spawn::Fork, &[], plain(root, 0))
        .unwrap_or_else(|e| fail(format!("fork of R: {e}")));
    let mut members = vec![p, q, r];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(format!("waiting for the tree: {}", tree::chain(&e)));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(v) = c.ok("PR_GET_PDEATHSIG", pdeathsig()) {
        check_eq!(c, v, 0, "root: PR_GET_PDEATHSIG");
    }
    tree::check_all(&members, &mut c);

    // P exits: Q gets its parent-death signal and comes to the root.
    let p = members.remove(0);
    let (p_pid, q_pid) = (p.pid, members[0].pid);
    if let Err(e) = p.order(tree::ORDER_EXIT) {
        c.fail(tree::chain(&e));
    }
    match tree::wait_pid(p_pid, 0) {
        Ok(st) => check!(
            c,
            st == 0,
            "P (pid {p_pid}): {}, expected exit status 0",
            tree::describe_status(st)
        ),
        Err(e) => check!(c, false, "waitpid(P {p_pid}): {e}"),
    };
    p.close();
    if let Err(e) = members[0].order(ORDER_ORPHANED) {
        c.fail(tree::chain(&e));
    }
    members[0].collect(&mut c, tree::ANSWER_TIMEOUT);
    if let Some(ids) = c.ok("Q's stat", tree::stat_ids(q_pid)) {
        check_eq!(c, ids.ppid, root, "Q (pid {q_pid}): parent after P's death");
    }
    members[0].reap = true;
    tree::finish(members, &mut c);
    c.finish();
}
