//! session00: tasks keep their sessions and process groups.
//!
//! ```text
//! root            its own session (setsid unless it already leads one)
//! ├─ G            setpgid(0, 0): leads a group in the root's session
//! │  ├─ G1        stays in G's group
//! │  └─ G2        stays in G's group
//! ├─ S            setsid(): leads a session of its own
//! │  ├─ S1        stays in S's group and session
//! │  └─ S2        setpgid(0, 0): a second group in S's session
//! │     └─ S2a    setpgid(0, S): back in S's group, led by its grandparent
//! └─ M            stays in the root's group
//! ```
//!
//! After restore the root checks, from outside, each member's state,
//! parent, session and group (`/proc/PID/stat`, `getsid`, `getpgid`) and
//! its own; then every member checks itself: pid, `getppid`, `getsid(0)`,
//! `getpgid(0)`, the same in its stat file, its children in fork order, and
//! for the session leader S that `setsid()` still fails with EPERM.

use zdtmtst::plan::{self, Act, Node};
use zdtmtst::tree;
use zdtmtst::{check_eq, fail, Checker};

static PLAN: &[Node] = &[
    Node {
        name: "G",
        act: Act::NewGroup,
        kids: &[
            Node {
                name: "G1",
                act: Act::Stay,
                kids: &[],
            },
            Node {
                name: "G2",
                act: Act::Stay,
                kids: &[],
            },
        ],
    },
    Node {
        name: "S",
        act: Act::NewSession,
        kids: &[
            Node {
                name: "S1",
                act: Act::Stay,
                kids: &[],
            },
            Node {
                name: "S2",
                act: Act::NewGroup,
                kids: &[Node {
                    name: "S2a",
                    act: Act::JoinGroup("S"),
                    kids: &[],
                }],
            },
        ],
    },
    Node {
        name: "M",
        act: Act::Stay,
        kids: &[],
    },
];

fn main() {
    zdtmtst::start();
    let root = tree::getpid();
    if tree::getsid(0).ok() != Some(root) {
        // SAFETY: setsid takes no arguments.
        if unsafe { libc::setsid() } < 0 {
            fail(format!("setsid: {}", zdtmtst::last_err()));
        }
    }
    let planned = plan::build(PLAN).unwrap_or_else(|e| fail(format!("building the tree: {e}")));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(s) = c.ok("getsid(0)", tree::getsid(0)) {
        check_eq!(c, s, root, "root: getsid");
    }
    if let Some(g) = c.ok("getpgid(0)", tree::getpgid(0)) {
        check_eq!(c, g, root, "root: getpgid");
    }
    if let Some(k) = c.ok("reading own children", tree::own_children()) {
        check_eq!(c, k, planned.kids, "root: children in fork order");
    }
    plan::check_planned(&planned, &mut c);
    tree::check_all(&planned.members, &mut c);
    tree::finish(planned.members, &mut c);
    c.finish();
}
