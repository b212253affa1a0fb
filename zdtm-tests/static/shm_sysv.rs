//! shm_sysv: System V shared memory segments of the tree's own IPC namespace
//! survive with their ids, keys, modes, lock, contents and attachments.
//!
//! The root creates three segments: `shared` (key 0x5eed0001, 4 pages,
//! mode 0640) attached read-write by the root and filled with a pattern;
//! `lonely` (IPC_PRIVATE, 2 pages and 100 bytes, mode 0604, SHM_LOCK'ed)
//! filled through a short attachment and then attached by nobody; `ro`
//! (key 0x5eed0003, 1 page, mode 0600) holding a pattern. It forks a member,
//! which inherits the root's attachment of `shared` and attaches `shared`
//! again read-only and `ro` read-only.
//!
//! After restore: every segment has its id, key, mode, size, lock and number
//! of attachments (`IPC_STAT`); contents hold their patterns (`lonely` read
//! through a fresh attachment); every attachment is at its address with its
//! permissions and `/SYSV<key> (deleted)` name. Then sharing: the root writes
//! a probe into `shared`; the member must see it through both its
//! attachments and answers in another word, which the root must see.

use std::sync::atomic::{AtomicU64, Ordering};

use zdtmtst::tree::{self, Spawn};
use zdtmtst::{check, check_eq, fail, maps, pattern, Checker};

const SHARED_KEY: i32 = 0x5eed_0001;
const RO_KEY: i32 = 0x5eed_0003;
const SHM_LOCKED: u32 = 0o2000;
const PROBE: u64 = 0x5555_aaaa_0000_0001;

fn word_at(addr: usize) -> &'static AtomicU64 {
    // SAFETY: an aligned word inside an attachment that lives until exit.
    unsafe { &*(addr as *const AtomicU64) }
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    what: &'static str,
    key: i32,
    id: i32,
    size: usize,
    mode: u32,
    locked: bool,
    nattch: u64,
    seed: u64,
}

fn stat(id: i32) -> std::io::Result<libc::shmid_ds> {
    // SAFETY: shmid_ds is plain data.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a shmid_ds the kernel fills.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(zdtmtst::last_err());
    }
    Ok(ds)
}

fn attach(id: i32, flags: i32) -> std::io::Result<usize> {
    // SAFETY: the kernel picks the address; the attachment lives until exit or shmdt.
    let at = unsafe { libc::shmat(id, std::ptr::null(), flags) };
    if at as isize == -1 {
        return Err(zdtmtst::last_err());
    }
    Ok(at as usize)
}

fn create(key: i32, size: usize, mode: u32) -> i32 {
    // SAFETY: integers only.
    let id = unsafe { libc::shmget(key, size, libc::IPC_CREAT | libc::IPC_EXCL | mode as i32) };
    if id < 0 {
        fail(format!("shmget {key:#x}: {}", zdtmtst::last_err()));
    }
    id
}

/// The pattern of `seg` (by offset, so that any attachment shows the same), at `base`.
fn fill(base: usize, seg: &Seg) {
    // SAFETY: the attachment at base covers the segment.
    let words = unsafe { pattern::words_mut(base, seg.size) };
    for (i, w) in words.iter_mut().enumerate() {
        *w = pattern::word(i * 8, seg.seed);
    }
}

/// Checks the pattern of `seg` in its attachment at `base` (bytes past its size, in its last
/// page, are not part of it). The probe words of `shared` belong to the sharing check.
fn verify(c: &mut Checker, base: usize, seg: &Seg, who: &str) {
    // SAFETY: inside the attachment of the segment.
    let words = unsafe { pattern::words(base, seg.size) };
    let skip = if seg.key == SHARED_KEY { 2 } else { 0 };
    let r = pattern::verify_with(&words[skip..], |x| pattern::word(x - base, seg.seed));
    if let Err(m) = r {
        c.fail(format!("{who}: {} {m}", seg.what));
    }
}

fn check_attachment(c: &mut Checker, base: usize, seg: &Seg, perms: &str, who: &str) {
    let all = match maps::read_self() {
        Ok(a) => a,
        Err(e) => return c.fail(format!("{who}: maps: {e}")),
    };
    let len = seg.size.next_multiple_of(zdtmtst::page_size());
    let name = format!("/SYSV{:08x} (deleted)", seg.key);
    match maps::clipped(&all, base, base + len).as_slice() {
        [m] => {
            check_eq!(
                c,
                (m.start, m.end),
                (base, base + len),
                "{who}: {} range",
                seg.what
            );
            check_eq!(c, m.perms.as_str(), perms, "{who}: {} perms", seg.what);
            check_eq!(
                c,
                m.path.as_str(),
                name.as_str(),
                "{who}: {} name",
                seg.what
            );
        }
        other => c.fail(format!(
            "{who}: {} at {base:#x}: expected one mapping, found {other:?}",
            seg.what
        )),
    }
}

fn main() {
    zdtmtst::start();
    let ps = zdtmtst::page_size();
    let mut shared = Seg {
        what: "shared",
        key: SHARED_KEY,
        id: 0,
        size: 4 * ps,
        mode: 0o640,
        locked: false,
        nattch: 3,
        seed: 0x5eed_0001,
    };
    let mut lonely = Seg {
        what: "lonely",
        key: libc::IPC_PRIVATE,
        id: 0,
        size: 2 * ps + 100,
        mode: 0o604,
        locked: true,
        nattch: 0,
        seed: 0x5eed_0002,
    };
    let mut ro = Seg {
        what: "ro",
        key: RO_KEY,
        id: 0,
        size: ps,
        mode: 0o600,
        locked: false,
        nattch: 1,
        seed: 0x5eed_0003,
    };
    // A segment created and removed first, so that the ids are not the first ones.
    let gone = create(0x5eed_0000, ps, 0o600);
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(gone, libc::IPC_RMID, std::ptr::null_mut()) };
    for s in [&mut shared, &mut lonely, &mut ro] {
        s.id = create(s.key, s.size, s.mode);
    }
    let shared_at = attach(shared.id, 0).unwrap_or_else(|e| fail(format!("shmat shared: {e}")));
    fill(shared_at, &shared);
    for s in [&lonely, &ro] {
        let at = attach(s.id, 0).unwrap_or_else(|e| fail(format!("shmat {}: {e}", s.what)));
        fill(at, s);
        // SAFETY: detaching the attachment made just above.
        unsafe { libc::shmdt(at as *const libc::c_void) };
    }
    // SAFETY: SHM_LOCK takes no buffer.
    if unsafe { libc::shmctl(lonely.id, libc::SHM_LOCK, std::ptr::null_mut()) } < 0 {
        fail(format!("SHM_LOCK: {}", zdtmtst::last_err()));
    }

    let (sh, r) = (shared, ro);
    let member = tree::member("member", Spawn::Fork, &[], move |up| {
        let Ok(again) = attach(sh.id, libc::SHM_RDONLY) else {
            return 12;
        };
        let Ok(ro_at) = attach(r.id, libc::SHM_RDONLY) else {
            return 13;
        };
        if up.ready().is_err() {
            return 11;
        }
        tree::serve(&up, || {
            let mut c = Checker::new();
            check_attachment(&mut c, shared_at, &sh, "rw-s", "member (inherited)");
            check_attachment(&mut c, again, &sh, "r--s", "member (read-only)");
            check_attachment(&mut c, ro_at, &r, "r--s", "member");
            verify(&mut c, again, &sh, "member (read-only)");
            verify(&mut c, ro_at, &r, "member");
            for (at, how) in [(shared_at, "inherited"), (again, "read-only")] {
                let seen = word_at(at).load(Ordering::SeqCst);
                check!(
                    c,
                    seen == PROBE,
                    "member: shared ({how} at {at:#x}): the root's probe is not visible ({seen:#x})"
                );
            }
            word_at(shared_at + 8).store(!PROBE, Ordering::SeqCst);
            c
        })
    })
    .unwrap_or_else(|e| fail(format!("fork: {e}")));
    let mut members = vec![member];
    if let Err(e) = tree::await_all_ready(&mut members) {
        fail(tree::chain(&e));
    }
    // The probe words start as the pattern; keep them for the check.
    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    for s in [&shared, &lonely, &ro] {
        match stat(s.id) {
            Ok(ds) => {
                check_eq!(c, ds.shm_perm.__key, s.key, "{}: key", s.what);
                check_eq!(
                    c,
                    ds.shm_perm.mode as u32 & 0o777,
                    s.mode,
                    "{}: mode",
                    s.what
                );
                check_eq!(c, ds.shm_segsz, s.size, "{}: size", s.what);
                check_eq!(
                    c,
                    ds.shm_perm.mode as u32 & SHM_LOCKED != 0,
                    s.locked,
                    "{}: SHM_LOCKED",
                    s.what
                );
                check_eq!(c, ds.shm_nattch, s.nattch, "{}: attachments", s.what);
            }
            Err(e) => c.fail(format!("{} (shmid {}): IPC_STAT: {e}", s.what, s.id)),
        }
    }
    check_attachment(&mut c, shared_at, &shared, "rw-s", "root");
    verify(&mut c, shared_at, &shared, "root");
    match attach(lonely.id, libc::SHM_RDONLY) {
        Ok(at) => {
            verify(&mut c, at, &lonely, "root");
            // SAFETY: detaching the attachment made just above.
            unsafe { libc::shmdt(at as *const libc::c_void) };
        }
        Err(e) => c.fail(format!("lonely: shmat: {e}")),
    }
    if c.passed() {
        word_at(shared_at).store(PROBE, Ordering::SeqCst);
        tree::check_all(&members, &mut c);
        let answer = word_at(shared_at + 8).load(Ordering::SeqCst);
        check!(
            c,
            answer == !PROBE,
            "root: shared: the member's answer is not visible ({answer:#x}): not shared"
        );
    }
    tree::finish(members, &mut c);
    c.finish();
}
