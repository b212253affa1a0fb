//! The flags of a task's mappings without walking its page tables: a BPF iterator over its
//! VMAs (`iter/task_vma`, Linux 5.12; per task, 6.1) writes `(vm_start, vm_end, vm_flags)` of
//! each. `/proc/PID/smaps` is the only other place that shows the flags, and it walks every
//! page table entry of the task to count its pages (20 ms and more per GiB mapped).
//!
//! The program is a dozen instructions assembled here. Where the three fields lie in
//! `struct vm_area_struct` changes with the kernel's configuration; they are read from the
//! kernel's own type information (`/sys/kernel/btf/vmlinux`), as is the id of the iterator
//! the program attaches to. The words are raw kernel flags: [`crate::mm::flags`] learns what
//! they mean by comparing them with what smaps prints.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `(vm_start, vm_end, vm_flags)` of one mapping.
pub type VmaWord = (u64, u64, u64);

/// A loaded iterator program, ready to run on any task.
pub struct VmaIter {
    prog: OwnedFd,
}

impl VmaIter {
    /// Loads the program: type information read, program checked by the kernel.
    pub fn load() -> io::Result<VmaIter> {
        let btf = std::fs::read("/sys/kernel/btf/vmlinux")?;
        let types = Btf::parse(&btf).ok_or_else(|| bad("unreadable kernel type information"))?;
        let func = types
            .find(KIND_FUNC, "bpf_iter_task_vma")
            .ok_or_else(|| bad("no task_vma iterator in this kernel"))?;
        let vma = types
            .find(KIND_STRUCT, "vm_area_struct")
            .ok_or_else(|| bad("no vm_area_struct in the kernel type information"))?;
        let field = |name| {
            types
                .member_offset(vma, name)
                .ok_or_else(|| bad("a field of vm_area_struct not found"))
        };
        let (start, end, flags) = (field("vm_start")?, field("vm_end")?, field("vm_flags")?);
        let insns = program(start, end, flags);
        let license = c"GPL";
        let mut attr = [0u8; ATTR_LEN];
        put32(&mut attr, 0, PROG_TYPE_TRACING);
        put32(&mut attr, 4, insns.len() as u32 / 8);
        put64(&mut attr, 8, insns.as_ptr() as u64);
        put64(&mut attr, 16, license.as_ptr() as u64);
        put32(&mut attr, 68, ATTACH_TRACE_ITER);
        put32(&mut attr, 108, func);
        let prog = bpf(CMD_PROG_LOAD, &mut attr)?;
        Ok(VmaIter { prog })
    }

    /// Every mapping of the address space of thread `tid`, in address order.
    pub fn read(&self, tid: i32) -> io::Result<Vec<VmaWord>> {
        // union bpf_iter_link_info: task.tid, task.pid, task.pid_fd.
        let mut info = [0u8; 16];
        put32(&mut info, 0, tid as u32);
        let mut attr = [0u8; ATTR_LEN];
        put32(&mut attr, 0, self.prog.as_raw_fd() as u32);
        put32(&mut attr, 8, ATTACH_TRACE_ITER);
        put64(&mut attr, 16, info.as_ptr() as u64);
        put32(&mut attr, 24, info.len() as u32);
        let link = bpf(CMD_LINK_CREATE, &mut attr)?;
        let mut attr = [0u8; ATTR_LEN];
        put32(&mut attr, 0, link.as_raw_fd() as u32);
        let iter = std::fs::File::from(bpf(CMD_ITER_CREATE, &mut attr)?);
        // Room for as many mappings as a process may have, allocated before the walk: on
        // this very process, a buffer growing meanwhile would add mappings ahead of it.
        let mut raw = vec![0u8; (max_map_count() + 64) * 24];
        let mut len = 0;
        loop {
            if len == raw.len() {
                return Err(bad("more mappings than vm.max_map_count"));
            }
            match io::Read::read(&mut &iter, &mut raw[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let raw = &raw[..len];
        if !raw.len().is_multiple_of(24) {
            return Err(bad("VMA iterator output cut short"));
        }
        let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        Ok(raw
            .chunks_exact(24)
            .map(|r| (word(&r[..8]), word(&r[8..16]), word(&r[16..])))
            .collect())
    }
}

/// `vm.max_map_count`: most mappings a process may have.
fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what.to_string())
}

/// Bytes of `union bpf_attr` passed: more than the commands used here read, zeroes beyond.
const ATTR_LEN: usize = 144;
const CMD_PROG_LOAD: libc::c_long = 5;
const CMD_LINK_CREATE: libc::c_long = 28;
const CMD_ITER_CREATE: libc::c_long = 33;
const PROG_TYPE_TRACING: u32 = 26;
const ATTACH_TRACE_ITER: u32 = 28;
/// `bpf_seq_write(seq, data, len)`
const HELPER_SEQ_WRITE: i32 = 127;

/// `bpf(cmd, attr, sizeof attr)`, for the commands that return a new descriptor.
fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_LEN]) -> io::Result<OwnedFd> {
    // SAFETY: attr is a zero-padded bpf_attr of ATTR_LEN bytes; the pointers it holds point
    // at buffers the caller keeps alive across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_LEN as u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// The iterator program: for each VMA, `bpf_seq_write` of its start, end and flags words
/// (`start`, `end`, `flags`: their byte offsets in `struct vm_area_struct`). Its context,
/// `struct bpf_iter__task_vma`, holds `meta` at 0 and `vma` at 16 (NULL after the last one);
/// `meta->seq` is at 0.
fn program(start: u32, end: u32, flags: u32) -> Vec<u8> {
    // (opcode, dst, src, off, imm)
    const LDX_DW: u8 = 0x79;
    const STX_DW: u8 = 0x7b;
    const JEQ_K: u8 = 0x15;
    const MOV64_X: u8 = 0xbf;
    const MOV64_K: u8 = 0xb7;
    const ADD64_K: u8 = 0x07;
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    let insns: [(u8, u8, u8, i16, i32); 16] = [
        (LDX_DW, 6, 1, 0, 0),  // r6 = ctx->meta
        (LDX_DW, 7, 1, 16, 0), // r7 = ctx->vma
        (JEQ_K, 7, 0, 11, 0),  // if !r7 goto out
        (LDX_DW, 1, 6, 0, 0),  // r1 = meta->seq
        (LDX_DW, 2, 7, start as i16, 0),
        (STX_DW, 10, 2, -24, 0),
        (LDX_DW, 2, 7, end as i16, 0),
        (STX_DW, 10, 2, -16, 0),
        (LDX_DW, 2, 7, flags as i16, 0),
        (STX_DW, 10, 2, -8, 0),
        (MOV64_X, 2, 10, 0, 0), // r2 = fp - 24
        (ADD64_K, 2, 0, 0, -24),
        (MOV64_K, 3, 0, 0, 24),
        (CALL, 0, 0, 0, HELPER_SEQ_WRITE),
        (MOV64_K, 0, 0, 0, 0), // out: return 0
        (EXIT, 0, 0, 0, 0),
    ];
    let mut out = Vec::with_capacity(insns.len() * 8);
    for (code, dst, src, off, imm) in insns {
        out.push(code);
        out.push(dst | (src << 4));
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&imm.to_le_bytes());
    }
    out
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_FUNC: u32 = 12;

/// The kernel's BTF type information: the types (kind, name, and for structs and unions
/// their members), by id.
struct Btf<'a> {
    strings: &'a [u8],
    /// (kind, name offset, kind_flag, members as (name offset, type id, bit offset word)),
    /// by id - 1.
    types: Vec<BtfType>,
}

struct BtfType {
    kind: u32,
    name: u32,
    kind_flag: bool,
    members: Vec<(u32, u32, u32)>,
}

impl<'a> Btf<'a> {
    fn parse(b: &'a [u8]) -> Option<Btf<'a>> {
        let u16_at = |at: usize| Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?));
        if u16_at(0)? != 0xeb9f {
            return None;
        }
        let hdr = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = b.get(hdr + str_off..hdr + str_off + str_len)?;
        let (mut at, end) = (hdr + type_off, hdr + type_off + type_len);
        let mut types = Vec::new();
        while at < end {
            let (name, info) = (u32_at(at)?, u32_at(at + 4)?);
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            at += 12;
            let mut members = Vec::new();
            // Bytes after the common part, by kind.
            let extra = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        members.push((u32_at(m)?, u32_at(m + 4)?, u32_at(m + 8)?));
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,
                15 | 19 => vlen * 12,
                2 | 7..=12 | 16 | 18 => 0,
                _ => return None,
            };
            at += extra;
            types.push(BtfType {
                kind,
                name,
                kind_flag: info >> 31 != 0,
                members,
            });
        }
        Some(Btf { strings, types })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    fn get(&self, id: u32) -> Option<&BtfType> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// The id of the type of kind `kind` named `name`.
    fn find(&self, kind: u32, name: &str) -> Option<u32> {
        let i = self
            .types
            .iter()
            .position(|t| t.kind == kind && self.name(t.name) == name.as_bytes())?;
        Some(i as u32 + 1)
    }

    /// The byte offset of member `name` of struct `id`, looking into its unnamed structs and
    /// unions too.
    fn member_offset(&self, id: u32, name: &str) -> Option<u32> {
        let t = self.get(id)?;
        for &(m_name, m_type, off) in &t.members {
            let bits = if t.kind_flag { off & 0xff_ffff } else { off };
            if self.name(m_name) == name.as_bytes() {
                return (bits % 8 == 0).then_some(bits / 8);
            }
            if m_name == 0 {
                let inner = self.get(m_type)?;
                if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                    if let Some(o) = self.member_offset(m_type, name) {
                        return Some(bits / 8 + o);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mappings_of_this_process_come_with_their_flags() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let it = VmaIter::load().expect("the iterator loads on this kernel");
        let me = std::process::id() as i32;
        let words = it.read(me).unwrap();
        let maps = crate::proc::maps(me).unwrap();
        // Every mapping maps shows is there, with its protection in the low flag bits.
        for v in maps.iter().filter(|v| v.name != "[vsyscall]") {
            let w = words
                .iter()
                .find(|w| w.0 == v.start && w.1 == v.end)
                .unwrap_or_else(|| panic!("{v:?} not iterated"));
            assert_eq!(w.2 & 1 != 0, v.read, "{v:?}: {:#x}", w.2);
            assert_eq!(w.2 & 2 != 0, v.write, "{v:?}: {:#x}", w.2);
            assert_eq!(w.2 & 4 != 0, v.exec, "{v:?}: {:#x}", w.2);
            assert_eq!(w.2 & 8 != 0, v.shared, "{v:?}: {:#x}", w.2);
        }
        assert!(words.windows(2).all(|w| w[0].1 <= w[1].0));
    }
}
