//! Planned trees: a tree of members described as data, forked with their
//! sessions and process groups, and checked against the plan.
//!
//! A [`Node`] names a member, says what it does to its process group or
//! session right after its fork ([`Act`]), and lists its children. [`build`]
//! forks the whole plan below the calling process, each member on its own
//! [`Link`] to the root (see [`crate::tree`]); every member then answers
//! check orders by comparing its pid, parent, session, group and children
//! with what the plan says, and [`check_planned`] compares the same from
//! the root's side.

use std::io;

use crate::tree::{
    chain, getpgid, getpid, getppid, getsid, own_children, reap_all, serve, spawn, stat_ids, Link,
    Member, Spawn, Up, ANSWER_TIMEOUT,
};
use crate::Checker;

/// Where a planned member puts itself right after its fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Stays in its parent's process group and session.
    Stay,
    /// Leads a new process group: `setpgid(0, 0)`.
    NewGroup,
    /// Leads a new session (and group): `setsid()`.
    NewSession,
    /// Joins the group led by the named member, an ancestor or a sibling
    /// forked before it: `setpgid(0, pid)`.
    JoinGroup(&'static str),
}

/// One member of a planned tree: its name, what it does to its group and
/// session, and its children, forked in this order.
#[derive(Debug)]
pub struct Node {
    /// Unique name, used in messages and by [`Act::JoinGroup`].
    pub name: &'static str,
    /// Its group/session action.
    pub act: Act,
    /// Its children.
    pub kids: &'static [Node],
}

/// Names and pids known to a member when it is forked: its ancestors and
/// the older siblings of every node on its path.
type Known = Vec<(&'static str, libc::pid_t)>;

fn lookup(known: &[(&'static str, libc::pid_t)], name: &str) -> Option<libc::pid_t> {
    known
        .iter()
        .rev()
        .find(|(n, _)| *n == name)
        .map(|&(_, p)| p)
}

/// The session and group a member must be in: `(sid, pgid)`, from its own
/// pid, its parent's ids and the pids it knows.
fn planned_ids(
    act: Act,
    pid: libc::pid_t,
    parent_ids: (libc::pid_t, libc::pid_t),
    known: &[(&'static str, libc::pid_t)],
) -> Option<(libc::pid_t, libc::pid_t)> {
    let (sid, pgid) = parent_ids;
    Some(match act {
        Act::Stay => (sid, pgid),
        Act::NewGroup => (sid, pid),
        Act::NewSession => (pid, pid),
        Act::JoinGroup(n) => (sid, lookup(known, n)?),
    })
}

fn all_nodes(nodes: &'static [Node], out: &mut Vec<&'static Node>) {
    for n in nodes {
        out.push(n);
        all_nodes(n.kids, out);
    }
}

/// The parent's half of a member's group action, done right after the
/// fork so the group exists before the next sibling is forked (the child
/// does the same; whichever runs first wins, the other is a no-op).
fn parent_act(act: Act, child: libc::pid_t, known: &[(&'static str, libc::pid_t)]) {
    let target = match act {
        Act::NewGroup => child,
        Act::JoinGroup(n) => match lookup(known, n) {
            Some(p) => p,
            None => return,
        },
        Act::Stay | Act::NewSession => return,
    };
    // SAFETY: setpgid takes integers; a failure (the child already did it)
    // is harmless and the child reports its own result.
    unsafe { libc::setpgid(child, target) };
}

/// Forks the children `kids` of the calling process (whose ids are
/// `my_ids`) on their links, each with its own subtree. Returns their pids.
fn fork_kids(
    kids: &'static [Node],
    links: &[(&'static str, Link)],
    my_ids: (libc::pid_t, libc::pid_t),
    known: &mut Known,
) -> Result<Vec<libc::pid_t>, String> {
    let me = getpid();
    let mut pids = Vec::new();
    for k in kids {
        let link = links
            .iter()
            .find(|(n, _)| *n == k.name)
            .map(|&(_, l)| l)
            .ok_or_else(|| format!("no link for {}", k.name))?;
        let mut sub = Vec::new();
        all_nodes(k.kids, &mut sub);
        let keep: Vec<Link> = links
            .iter()
            .filter(|(n, _)| sub.iter().any(|s| s.name == *n))
            .map(|&(_, l)| l)
            .collect();
        let sub_links: Vec<(&'static str, Link)> = links
            .iter()
            .filter(|(n, _)| sub.iter().any(|s| s.name == *n))
            .copied()
            .collect();
        let child_known = known.clone();
        let pid = spawn(link, Spawn::Fork, &keep, move |up| {
            planned_member(up, k, me, my_ids, child_known, &sub_links)
        })
        .map_err(|e| format!("fork of {}: {e}", k.name))?;
        parent_act(k.act, pid, known);
        known.push((k.name, pid));
        pids.push(pid);
    }
    Ok(pids)
}

/// The body of a planned member: its action, its children, then orders.
fn planned_member(
    up: Up,
    node: &'static Node,
    ppid: libc::pid_t,
    parent_ids: (libc::pid_t, libc::pid_t),
    mut known: Known,
    links: &[(&'static str, Link)],
) -> i32 {
    let name = node.name;
    let pid = getpid();
    let fail_setup = |why: String| -> i32 {
        let _ = up.send(&format!("setup failed: {why}"));
        30
    };
    // SAFETY: setsid/setpgid take integers.
    let r = unsafe {
        match node.act {
            Act::Stay => 0,
            Act::NewGroup => libc::setpgid(0, 0),
            Act::NewSession => libc::setsid(),
            Act::JoinGroup(n) => libc::setpgid(0, lookup(&known, n).unwrap_or(-1)),
        }
    };
    if r < 0 {
        return fail_setup(format!("{:?}: {}", node.act, io::Error::last_os_error()));
    }
    let Some(want) = planned_ids(node.act, pid, parent_ids, &known) else {
        return fail_setup(format!("{:?}: unknown member", node.act));
    };
    known.push((name, pid));
    let kids = match fork_kids(node.kids, links, want, &mut known) {
        Ok(k) => k,
        Err(why) => return fail_setup(why),
    };
    for &(_, l) in links {
        l.close();
    }
    if up.ready().is_err() {
        return 31;
    }
    let code = serve(&up, || {
        let mut c = Checker::new();
        crate::check_eq!(c, getpid(), pid, "getpid");
        crate::check_eq!(c, getppid(), ppid, "getppid");
        if let Some(sid) = c.ok("getsid(0)", getsid(0)) {
            crate::check_eq!(c, sid, want.0, "getsid");
        }
        if let Some(pgid) = c.ok("getpgid(0)", getpgid(0)) {
            crate::check_eq!(c, pgid, want.1, "getpgid");
        }
        if let Some(ids) = c.ok("reading /proc/self/stat", stat_ids(pid)) {
            crate::check_eq!(
                c,
                (ids.ppid, ids.session, ids.pgrp),
                (ppid, want.0, want.1),
                "(ppid, session, pgrp) in /proc/{pid}/stat"
            );
        }
        if node.act == Act::NewSession {
            // A group leader cannot start a session again.
            // SAFETY: setsid takes no arguments; it fails here.
            let r = unsafe { libc::setsid() };
            let e = io::Error::last_os_error();
            crate::check!(
                c,
                r == -1 && e.raw_os_error() == Some(libc::EPERM),
                "setsid() as a session leader returned {r} ({e}), expected EPERM"
            );
        }
        if let Some(now) = c.ok("reading own children", own_children()) {
            crate::check_eq!(c, now, kids, "children in fork order");
        }
        c
    });
    let bad = reap_all(&kids);
    if code == 0 && !bad.is_empty() {
        return 32;
    }
    code
}

/// A planned tree, forked: the root's members (children and deeper) and
/// what each one's ids must be.
#[derive(Debug)]
pub struct Planned {
    /// Every member, in plan order (depth first), with pids learned from
    /// their `ready` messages.
    pub members: Vec<Member>,
    /// `(name, pid, parent pid, sid, pgid)` of every member, the same order.
    pub expected: Vec<(
        &'static str,
        libc::pid_t,
        libc::pid_t,
        libc::pid_t,
        libc::pid_t,
    )>,
    /// The pids of the root's children, in fork order.
    pub kids: Vec<libc::pid_t>,
}

/// Forks the tree `plan` below the calling process (the root) and waits
/// until every member is set up. A member failing its setup (say, a
/// refused `setpgid`) makes this an error naming it. Only for a
/// single-threaded root.
pub fn build(plan: &'static [Node]) -> Result<Planned, String> {
    let mut nodes = Vec::new();
    all_nodes(plan, &mut nodes);
    let mut links = Vec::new();
    for n in &nodes {
        let l = Link::new().map_err(|e| format!("pipes for {}: {e}", n.name))?;
        links.push((n.name, l));
    }
    let root = getpid();
    let my_ids = (
        getsid(0).map_err(|e| format!("getsid: {e}"))?,
        getpgid(0).map_err(|e| format!("getpgid: {e}"))?,
    );
    let mut known = vec![];
    let kids = fork_kids(plan, &links, my_ids, &mut known)?;
    let mut members: Vec<Member> = links.iter().map(|&(n, l)| l.into_remote(n)).collect();
    // The root's own children are its to reap.
    for (m, &pid) in members
        .iter_mut()
        .filter(|m| plan.iter().any(|n| n.name == m.name))
        .zip(&kids)
    {
        m.pid = pid;
        m.reap = true;
    }
    for m in members.iter_mut() {
        match m.recv(ANSWER_TIMEOUT) {
            Ok(msg) if msg.starts_with("ready ") => {
                let pid = msg[6..].parse().unwrap_or(0);
                if m.pid != 0 && m.pid != pid {
                    return Err(format!("{} said {msg:?}, its pid is {}", m.name, m.pid));
                }
                m.pid = pid;
            }
            Ok(msg) => return Err(format!("{}: {msg}", m.name)),
            Err(e) => return Err(chain(&e)),
        }
    }
    // Expected ids, computed from the plan and the pids now known.
    let pid_of = |name: &str| members.iter().find(|m| m.name == name).map(|m| m.pid);
    let mut expected = Vec::new();
    fn walk(
        nodes: &'static [Node],
        parent: (libc::pid_t, libc::pid_t, libc::pid_t),
        pid_of: &dyn Fn(&str) -> Option<libc::pid_t>,
        known: &mut Known,
        out: &mut Vec<(
            &'static str,
            libc::pid_t,
            libc::pid_t,
            libc::pid_t,
            libc::pid_t,
        )>,
    ) -> Option<()> {
        let depth = known.len();
        for n in nodes {
            let pid = pid_of(n.name)?;
            let (sid, pgid) = planned_ids(n.act, pid, (parent.1, parent.2), known)?;
            out.push((n.name, pid, parent.0, sid, pgid));
            known.push((n.name, pid));
            let mark = known.len();
            walk(n.kids, (pid, sid, pgid), pid_of, known, out)?;
            known.truncate(mark);
        }
        known.truncate(depth);
        Some(())
    }
    walk(
        plan,
        (root, my_ids.0, my_ids.1),
        &pid_of,
        &mut Vec::new(),
        &mut expected,
    )
    .ok_or("a member's pid is unknown")?;
    Ok(Planned {
        members,
        expected,
        kids,
    })
}

/// Checks every member's parent, session and group from outside
/// (`/proc/PID/stat`, `getsid`, `getpgid`).
pub fn check_planned(p: &Planned, c: &mut Checker) {
    for &(name, pid, ppid, sid, pgid) in &p.expected {
        if let Some(ids) = c.ok(&format!("/proc/{pid}/stat"), stat_ids(pid)) {
            crate::check_eq!(
                c,
                (ids.state, ids.ppid, ids.session, ids.pgrp),
                ('S', ppid, sid, pgid),
                "{name} (pid {pid}) seen by the root: (state, ppid, session, pgrp)"
            );
        }
        if let Some(s) = c.ok(&format!("getsid({pid})"), getsid(pid)) {
            crate::check_eq!(c, s, sid, "{name} (pid {pid}): getsid from the root");
        }
        if let Some(g) = c.ok(&format!("getpgid({pid})"), getpgid(pid)) {
            crate::check_eq!(c, g, pgid, "{name} (pid {pid}): getpgid from the root");
        }
    }
}
