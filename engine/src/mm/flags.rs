//! The `VmFlags` of large processes, learned before the tree is frozen so that the frozen
//! tree does not wait for smaps.
//!
//! `/proc/PID/smaps` is the only file that prints a mapping's flags (`dd`, `dc`, `wf`, `hg`,
//! `lo`...), and it walks every page table entry of the task to count its pages: 20–25 ms per
//! GiB mapped on this machine, the longest part of an incremental dump's frozen window.
//! Read while the task still runs, its flags may be out of date by the time it is frozen
//! (`madvise` of a whole mapping changes them and nothing else `maps` shows). So the raw
//! flags word of every mapping is read too, by a BPF iterator over the task's VMAs that walks
//! no page table ([`sys::bpf`]): once before and once after smaps, which ties each word seen
//! steady across the read to what smaps printed for it. Once the tree is frozen, the
//! iterator runs again; a mapping whose word was seen before gets the flags printed for it
//! then (the flags smaps prints are a function of that word). A task with a mapping whose
//! word was not seen, or where BPF is not available, has its smaps read while frozen, as
//! before.

use std::collections::HashMap;

use crate::proc::{self, Vma};
use crate::sys::bpf::{VmaIter, VmaWord};

/// What smaps printed for each flags word of each process read ahead.
pub(crate) struct FlagsAhead {
    iter: VmaIter,
    /// By pid: the flags smaps printed for each word; the gate mapping (`[vsyscall]`, which
    /// the iterator does not show) as smaps showed it.
    known: HashMap<i32, Known>,
}

#[derive(Default)]
struct Known {
    words: HashMap<u64, Vec<String>>,
    gate: Option<Vma>,
}

impl FlagsAhead {
    /// Reads ahead the processes of `tree` (the running tree,
    /// [`super::inherit::running_tree`]) that map more than `large` bytes. `None` when there
    /// is none, or BPF iterators are not available here.
    pub fn read(tree: &[(i32, Vec<Vma>)], large: u64) -> Option<FlagsAhead> {
        let big: Vec<i32> = tree
            .iter()
            .filter(|(_, vmas)| vmas.iter().map(|v| v.len()).sum::<u64>() > large)
            .map(|(pid, _)| *pid)
            .collect();
        if big.is_empty() {
            return None;
        }
        let iter = VmaIter::load()
            .inspect_err(|e| crate::debug!("mapping flags not read ahead: {e}"))
            .ok()?;
        let mut known = HashMap::new();
        for pid in big {
            if let Some(k) = learn(&iter, pid) {
                known.insert(pid, k);
            }
        }
        crate::debug!("mapping flags read ahead for {} processes", known.len());
        Some(FlagsAhead { iter, known })
    }

    /// The mappings `vmas` of frozen process `pid` (seen through its thread `view`) with
    /// their flags, when every one of them has a flags word seen ahead; `None` otherwise.
    pub fn frozen(&self, pid: i32, view: i32, vmas: &[Vma]) -> Option<Vec<Vma>> {
        let known = self.known.get(&pid)?;
        let words = self
            .iter
            .read(view)
            .inspect_err(|e| crate::debug!("pid {pid}: mapping flags not iterated: {e}"))
            .ok()?;
        let mut out = Vec::with_capacity(vmas.len());
        for v in vmas {
            let flags = match words.binary_search_by_key(&v.start, |w| w.0) {
                Ok(i) if words[i].1 == v.end => known.words.get(&words[i].2),
                _ => known
                    .gate
                    .as_ref()
                    .filter(|g| g.start == v.start && g.end == v.end)
                    .map(|g| &g.vm_flags),
            };
            let Some(flags) = flags else {
                crate::debug!(
                    "pid {pid}: flags of {:#x}-{:#x} unknown ahead: smaps read",
                    v.start,
                    v.end
                );
                return None;
            };
            let mut v = v.clone();
            v.vm_flags = flags.clone();
            out.push(v);
        }
        Some(out)
    }
}

/// Ties the flags words of `pid` to what its smaps prints for them: words read before and
/// after smaps, kept where a mapping showed the same word both times.
fn learn(iter: &VmaIter, pid: i32) -> Option<Known> {
    let before = iter.read(pid).ok()?;
    let smaps = proc::smaps(pid).ok()?;
    let after = iter.read(pid).ok()?;
    Some(tie(&before, &smaps, &after))
}

fn tie(before: &[VmaWord], smaps: &[Vma], after: &[VmaWord]) -> Known {
    let mut known = Known::default();
    let mut clash = Vec::new();
    for s in smaps {
        let at = |ws: &[VmaWord]| {
            ws.binary_search_by_key(&s.start, |w| w.0)
                .ok()
                .map(|i| ws[i])
                .filter(|w| w.1 == s.end)
        };
        match (at(before), at(after)) {
            (Some(b), Some(a)) if a == b => {
                let flags = known.words.entry(b.2).or_insert_with(|| s.vm_flags.clone());
                if *flags != s.vm_flags {
                    clash.push(b.2);
                }
            }
            (None, None) if s.name == "[vsyscall]" => known.gate = Some(s.clone()),
            _ => {}
        }
    }
    // A word printed two ways (never seen): trusted for neither.
    for w in clash {
        known.words.remove(&w);
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, name: &str, flags: &[&str]) -> Vma {
        let mut v =
            proc::parse_maps_line(&format!("{start:x}-{end:x} rw-p 00000000 00:00 0 {name}"))
                .unwrap();
        v.vm_flags = flags.iter().map(|f| f.to_string()).collect();
        v
    }

    #[test]
    fn only_words_steady_across_the_smaps_read_are_trusted() {
        let before = [(0x1000, 0x2000, 0x73), (0x3000, 0x4000, 0x4000073)];
        // The second mapping changed during the read: its word tells nothing.
        let after = [(0x1000, 0x2000, 0x73), (0x3000, 0x4000, 0x73)];
        let smaps = [
            vma(0x1000, 0x2000, "", &["rd", "wr"]),
            vma(0x3000, 0x4000, "", &["rd", "wr", "dd"]),
            vma(0xffff_f000, 0xffff_ffff, "[vsyscall]", &["ex"]),
        ];
        let k = tie(&before, &smaps, &after);
        assert_eq!(k.words.len(), 1);
        assert_eq!(k.words[&0x73], ["rd", "wr"]);
        assert!(!k.words.contains_key(&0x4000073));
        assert_eq!(k.gate.unwrap().vm_flags, ["ex"]);
    }

    /// A python process mapping 300 MiB that, on a line on its stdin, marks that mapping
    /// `MADV_DONTDUMP` as a whole (no split: maps shows nothing new) and answers.
    fn child() -> std::process::Child {
        use std::io::Read;
        use std::process::{Command, Stdio};
        let script = "import mmap, sys\n\
            m = mmap.mmap(-1, 300 << 20)\n\
            m[0] = 1\n\
            print(1, flush=True)\n\
            sys.stdin.readline()\n\
            m.madvise(mmap.MADV_DONTDUMP)\n\
            print(2, flush=True)\n\
            sys.stdin.readline()\n";
        let mut c = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut b = [0u8; 2];
        c.stdout.as_mut().unwrap().read_exact(&mut b).unwrap();
        c
    }

    #[test]
    fn flags_changed_after_the_read_ahead_are_not_taken_from_it() {
        use std::io::{Read, Write};
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let mut c = child();
        let pid = c.id() as i32;
        let ahead = FlagsAhead::read(&crate::mm::inherit::running_tree(pid), 256 << 20)
            .expect("read ahead");
        let big = |vmas: &[Vma]| {
            vmas.iter()
                .find(|v| v.len() == 300 << 20)
                .expect("the 300 MiB mapping")
                .clone()
        };
        // Unchanged: the flags known ahead are those smaps shows now.
        let vmas = proc::maps(pid).unwrap();
        let known = ahead
            .frozen(pid, pid, &vmas)
            .expect("all flags known ahead");
        let now = proc::smaps(pid).unwrap();
        for (k, n) in known.iter().zip(&now) {
            assert_eq!((k.start, k.end, &k.vm_flags), (n.start, n.end, &n.vm_flags));
        }
        assert!(!big(&known).has_flag("dd"));
        // Marked DONTDUMP since: maps is the same, and the flags are not taken from before.
        c.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        let mut b = [0u8; 2];
        c.stdout.as_mut().unwrap().read_exact(&mut b).unwrap();
        let after = proc::maps(pid).unwrap();
        assert_eq!(after, vmas);
        assert!(ahead.frozen(pid, pid, &after).is_none());
        assert!(big(&proc::smaps(pid).unwrap()).has_flag("dd"));
        let again = FlagsAhead::read(&crate::mm::inherit::running_tree(pid), 256 << 20).unwrap();
        assert!(big(&again.frozen(pid, pid, &after).unwrap()).has_flag("dd"));
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn a_word_printed_two_ways_is_not_trusted() {
        let words = [(0x1000, 0x2000, 0x73), (0x3000, 0x4000, 0x73)];
        let smaps = [
            vma(0x1000, 0x2000, "", &["rd", "wr"]),
            vma(0x3000, 0x4000, "", &["rd", "wr", "dd"]),
        ];
        assert!(tie(&words, &smaps, &words).words.is_empty());
    }
}
