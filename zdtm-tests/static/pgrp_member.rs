//! pgrp_member: processes keep membership of a group led by a sibling.
//!
//! ```text
//! root
//! ├─ L        setpgid(0, 0): leads group L
//! ├─ M        setpgid(0, L): joins its older sibling's group
//! ├─ N        setpgid(0, L): joins it too
//! └─ P        setpgid(0, 0): leads group P
//!    └─ P1    setpgid(0, L): joins its uncle's group
//! ```
//!
//! Both parent and child call `setpgid`, as shells do, so the group exists
//! before the next sibling is forked. After restore the root checks each
//! member's parent, session and group from outside, that a signal to group
//! L (`kill(-L, 0)`) still finds members and that group L holds exactly L,
//! M, N and P1 among the tree; then each member checks its own pid,
//! `getppid`, `getsid`, `getpgid` and children.

use zdtmtst::plan::{self, Act, Node};
use zdtmtst::tree;
use zdtmtst::{check, check_eq, fail, Checker};

static PLAN: &[Node] = &[
    Node {
        name: "L",
        act: Act::NewGroup,
        kids: &[],
    },
    Node {
        name: "M",
        act: Act::JoinGroup("L"),
        kids: &[],
    },
    Node {
        name: "N",
        act: Act::JoinGroup("L"),
        kids: &[],
    },
    Node {
        name: "P",
        act: Act::NewGroup,
        kids: &[Node {
            name: "P1",
            act: Act::JoinGroup("L"),
            kids: &[],
        }],
    },
];

fn main() {
    zdtmtst::start();
    let planned = plan::build(PLAN).unwrap_or_else(|e| fail(format!("building the tree: {e}")));
    let l = planned.expected[0].1;
    let in_l = |p: &plan::Planned| -> Vec<&'static str> {
        p.expected
            .iter()
            .filter(|e| tree::getpgid(e.1).ok() == Some(l))
            .map(|e| e.0)
            .collect()
    };
    let before = in_l(&planned);
    if before != ["L", "M", "N", "P1"] {
        fail(format!("group {l} holds {before:?} after setup"));
    }

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(k) = c.ok("reading own children", tree::own_children()) {
        check_eq!(c, k, planned.kids, "root: children in fork order");
    }
    plan::check_planned(&planned, &mut c);
    let r = tree::kill(-l, 0);
    check!(c, r.is_ok(), "kill(-{l}, 0): {r:?}");
    check_eq!(c, in_l(&planned), before, "members of group {l}");
    tree::check_all(&planned.members, &mut c);
    tree::finish(planned.members, &mut c);
    c.finish();
}
