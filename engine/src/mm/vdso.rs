//! The vDSO: what the dumping kernel gave the task, and whether this kernel's is the same.
//!
//! Restore does not copy the vDSO: it moves the restore child's own `[vdso]` (and its
//! `[vvar]`) to the saved addresses. That is only right when this kernel's vDSO has its entry
//! points where the dumped one had them, because the task holds pointers into it (glibc
//! resolves `clock_gettime` & co. once at startup). So the dump records the vDSO's size, where
//! `[vvar]` lies relative to it and its exported symbols (parsed from the ELF image in
//! memory); restore compares them with its own vDSO and refuses with a clear error when they
//! differ. A byte-identical vDSO (same hash) is the common case: same kernel build.

use std::collections::BTreeMap;

use images::pb::{MmEntry, VdsoInfo, VdsoSymbol};

use crate::error::{DumpError, RestoreError};
use crate::proc::Vma;
use crate::sys;

fn bytes_at<const N: usize>(b: &[u8], off: usize, plus: usize) -> Option<[u8; N]> {
    let start = off.checked_add(plus)?;
    b.get(start..start.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], off: usize, plus: usize) -> Option<u16> {
    bytes_at(b, off, plus).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize, plus: usize) -> Option<u32> {
    bytes_at(b, off, plus).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize, plus: usize) -> Option<u64> {
    bytes_at(b, off, plus).map(u64::from_le_bytes)
}

/// The exported symbols of an ELF64 image held in memory (`.dynsym`), by name: (offset, size).
/// `None` when the bytes are not such an image.
pub(crate) fn symbols(image: &[u8]) -> Option<BTreeMap<String, (u64, u64)>> {
    if image.get(..4)? != b"\x7fELF" || *image.get(4)? != 2 {
        return None;
    }
    let shoff = u64_at(image, 0x28, 0)? as usize;
    let shentsize = u16_at(image, 0x3a, 0)? as usize;
    let shnum = u16_at(image, 0x3c, 0)? as usize;
    if shentsize < 64 {
        return None;
    }
    let section = |i: usize| -> Option<(u32, usize, usize, usize, usize)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let kind = u32_at(image, at, 4)?;
        let off = u64_at(image, at, 0x18)? as usize;
        let size = u64_at(image, at, 0x20)? as usize;
        let link = u32_at(image, at, 0x28)? as usize;
        let entsize = u64_at(image, at, 0x38)? as usize;
        Some((kind, off, size, link, entsize))
    };
    const SHT_DYNSYM: u32 = 11;
    let (_, sym_off, sym_size, link, entsize) =
        (0..shnum).filter_map(section).find(|s| s.0 == SHT_DYNSYM)?;
    let (_, str_off, str_size, _, _) = section(link)?;
    let strtab = image.get(str_off..str_off.checked_add(str_size)?)?;
    let entsize = if entsize == 0 { 24 } else { entsize };
    if entsize < 24 {
        return None;
    }
    let mut out = BTreeMap::new();
    for i in 0..sym_size / entsize {
        let at = sym_off.checked_add(i.checked_mul(entsize)?)?;
        let name_off = u32_at(image, at, 0)? as usize;
        let shndx = u16_at(image, at, 6)?;
        let value = u64_at(image, at, 8)?;
        let size = u64_at(image, at, 16)?;
        if shndx == 0 || name_off == 0 {
            continue;
        }
        let rest = strtab.get(name_off..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&rest[..end]).ok()?;
        out.insert(name.to_string(), (value, size));
    }
    Some(out)
}

/// FNV-1a over the bytes.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Describes the vDSO mapped at `vdso` in `pid` (whose `[vvar]` is `vvar`), reading it with
/// `process_vm_readv`.
fn describe(pid: i32, vdso: &Vma, vvar: Option<&Vma>) -> std::io::Result<VdsoInfo> {
    let mut image = vec![0u8; vdso.len() as usize];
    let got = sys::process_vm_read(pid, vdso.start, &mut image)?;
    if got != image.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
    }
    let symbols = symbols(&image)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, (offset, size))| VdsoSymbol { name, offset, size })
        .collect();
    Ok(VdsoInfo {
        size: vdso.len(),
        vvar_offset: vvar.map_or(0, |v| v.start as i64 - vdso.start as i64),
        symbols,
        hash: hash(&image),
    })
}

/// The vDSO of a frozen task, if it has one.
pub(crate) fn dump(pid: i32, vmas: &[Vma]) -> Result<Option<VdsoInfo>, DumpError> {
    let Some(vdso) = vmas.iter().find(|v| v.name == "[vdso]") else {
        return Ok(None);
    };
    let vvar = vmas.iter().find(|v| v.name == "[vvar]");
    describe(pid, vdso, vvar)
        .map(Some)
        .map_err(|source| DumpError::Io {
            pid,
            path: format!("[vdso] at {:#x}", vdso.start).into(),
            source,
        })
}

/// The vDSO this kernel gives every process: crust's own.
pub(crate) fn own() -> std::io::Result<Option<VdsoInfo>> {
    let me = std::process::id() as i32;
    let maps = crate::proc::maps(me).map_err(std::io::Error::other)?;
    let Some(vdso) = maps.iter().find(|v| v.name == "[vdso]") else {
        return Ok(None);
    };
    let vvar = maps.iter().find(|v| v.name == "[vvar]");
    describe(me, vdso, vvar).map(Some)
}

/// Why the saved vDSO cannot be replaced by `here`, if it cannot.
pub(crate) fn mismatch(saved: &VdsoInfo, here: &VdsoInfo) -> Option<String> {
    if saved.hash == here.hash && saved.size == here.size {
        return None;
    }
    if saved.size != here.size {
        return Some(format!(
            "[vdso] is {} bytes here but {} bytes in the image",
            here.size, saved.size
        ));
    }
    if saved.vvar_offset != here.vvar_offset {
        return Some(format!(
            "[vvar] lies at {:+#x} from [vdso] here but at {:+#x} in the image",
            here.vvar_offset, saved.vvar_offset
        ));
    }
    let ours: BTreeMap<&str, (u64, u64)> = here
        .symbols
        .iter()
        .map(|s| (s.name.as_str(), (s.offset, s.size)))
        .collect();
    for s in &saved.symbols {
        match ours.get(s.name.as_str()) {
            None => return Some(format!("vDSO symbol {} is missing here", s.name)),
            Some(&(off, _)) if off != s.offset => {
                return Some(format!(
                    "vDSO symbol {} is at offset {off:#x} here but at {:#x} in the image",
                    s.name, s.offset
                ))
            }
            Some(_) => {}
        }
    }
    None
}

/// Refuses an image whose vDSO this kernel cannot stand in for.
pub(crate) fn check(pid: i32, mm: &MmEntry) -> Result<(), RestoreError> {
    let Some(saved) = &mm.vdso else {
        return Ok(());
    };
    // The same for every task: read once.
    static OWN: std::sync::OnceLock<Result<Option<VdsoInfo>, String>> = std::sync::OnceLock::new();
    let here = OWN
        .get_or_init(|| own().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| RestoreError::Layout {
            pid,
            what: format!("reading this kernel's vDSO: {e}"),
        })?
        .ok_or_else(|| RestoreError::Vdso {
            pid,
            what: "this kernel gives processes no vDSO".into(),
        })?;
    match mismatch(saved, &here) {
        None => Ok(()),
        Some(what) => Err(RestoreError::Vdso { pid, what }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_vdso_exports_clock_gettime() {
        let v = own().unwrap().expect("x86_64 processes have a vDSO");
        assert!(
            v.symbols
                .iter()
                .any(|s| s.name == "__vdso_clock_gettime" && s.offset > 0 && s.offset < v.size),
            "{:?}",
            v.symbols
        );
        assert_eq!(mismatch(&v, &v), None);
    }

    #[test]
    fn a_moved_symbol_is_a_mismatch() {
        let v = own().unwrap().unwrap();
        let mut other = v.clone();
        other.hash ^= 1;
        assert_eq!(mismatch(&other, &v), None, "same entry points, other bytes");
        let s = other
            .symbols
            .iter_mut()
            .find(|s| s.name == "__vdso_clock_gettime")
            .unwrap();
        s.offset += 16;
        let why = mismatch(&other, &v).unwrap();
        assert!(why.contains("__vdso_clock_gettime"), "{why}");
        other.size += 4096;
        assert!(mismatch(&other, &v).unwrap().contains("bytes"));
    }

    #[test]
    fn garbage_is_not_an_elf() {
        assert_eq!(symbols(b"not an elf"), None);
        let mut fake = vec![0u8; 64];
        fake[..4].copy_from_slice(b"\x7fELF");
        fake[4] = 2;
        fake[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        fake[0x3a] = 64;
        fake[0x3c] = 3;
        assert_eq!(symbols(&fake), None);
        // Every truncation of a real vDSO is refused or parsed, never a panic.
        let me = std::process::id() as i32;
        let maps = crate::proc::maps(me).unwrap();
        let v = maps.iter().find(|v| v.name == "[vdso]").unwrap();
        let mut image = vec![0u8; v.len() as usize];
        crate::sys::process_vm_read(me, v.start, &mut image).unwrap();
        assert!(symbols(&image).is_some_and(|s| !s.is_empty()));
        for cut in (0..image.len()).step_by(61) {
            let _ = symbols(&image[..cut]);
        }
        for flip in (0..256).map(|i| i * 7 % image.len()) {
            let mut bad = image.clone();
            bad[flip] ^= 0xff;
            let _ = symbols(&bad);
        }
    }
}
