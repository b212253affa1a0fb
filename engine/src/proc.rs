//! Parsers for the /proc files the engine reads. Pure text handling: tested without root.

use std::path::{Path, PathBuf};

/// A /proc read that failed, or text that did not parse.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: cannot parse {what}")]
    Parse {
        path: PathBuf,
        line: usize,
        what: &'static str,
    },
}

pub fn read(path: impl AsRef<Path>) -> Result<String, ProcError> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|source| ProcError::Io {
        path: path.to_owned(),
        source,
    })
}

pub fn read_bytes(path: impl AsRef<Path>) -> Result<Vec<u8>, ProcError> {
    let path = path.as_ref();
    std::fs::read(path).map_err(|source| ProcError::Io {
        path: path.to_owned(),
        source,
    })
}

pub fn readlink(path: impl AsRef<Path>) -> Result<String, ProcError> {
    let path = path.as_ref();
    std::fs::read_link(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|source| ProcError::Io {
            path: path.to_owned(),
            source,
        })
}

/// One VMA from /proc/PID/smaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub pgoff: u64,
    pub dev: (u32, u32),
    pub ino: u64,
    /// The path or pseudo name (`[heap]`, `[vdso]`...), empty for plain anonymous memory.
    pub name: String,
    pub vm_flags: Vec<String>,
    pub anon_huge_kb: u64,
}

impl Vma {
    pub fn has_flag(&self, f: &str) -> bool {
        self.vm_flags.iter().any(|x| x == f)
    }
    pub fn prot(&self) -> u32 {
        let mut p = 0;
        if self.read {
            p |= libc::PROT_READ;
        }
        if self.write {
            p |= libc::PROT_WRITE;
        }
        if self.exec {
            p |= libc::PROT_EXEC;
        }
        p as u32
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// Parses one header line of maps/smaps: `start-end perms offset dev inode [name]`.
pub fn parse_maps_line(line: &str) -> Option<Vma> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.as_bytes();
    let off = it.next()?;
    let dev = it.next()?;
    let ino = it.next()?;
    let name = it.next().unwrap_or("").trim_start().to_string();
    let (a, b) = range.split_once('-')?;
    let (ma, mi) = dev.split_once(':')?;
    if perms.len() != 4 {
        return None;
    }
    Some(Vma {
        start: hex(a)?,
        end: hex(b)?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        pgoff: hex(off)? / 4096,
        dev: (hex(ma)? as u32, hex(mi)? as u32),
        ino: ino.parse().ok()?,
        name,
        vm_flags: Vec::new(),
        anon_huge_kb: 0,
    })
}

/// Parses /proc/PID/smaps text.
pub fn parse_smaps(path: &Path, text: &str) -> Result<Vec<Vma>, ProcError> {
    let mut out: Vec<Vma> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.ends_with(':') {
            let Some(cur) = out.last_mut() else {
                return Err(ProcError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    what: "field before any mapping",
                });
            };
            if first == "VmFlags:" {
                cur.vm_flags = line
                    .split_whitespace()
                    .skip(1)
                    .map(str::to_string)
                    .collect();
            } else if first == "AnonHugePages:" {
                cur.anon_huge_kb = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
        } else if !line.is_empty() {
            out.push(parse_maps_line(line).ok_or_else(|| ProcError::Parse {
                path: path.to_owned(),
                line: i + 1,
                what: "mapping header",
            })?);
        }
    }
    Ok(out)
}

pub fn smaps(pid: i32) -> Result<Vec<Vma>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/smaps"));
    let text = read(&path)?;
    parse_smaps(&path, &text)
}

pub fn maps(pid: i32) -> Result<Vec<Vma>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/maps"));
    let text = read(&path)?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            parse_maps_line(l).ok_or_else(|| ProcError::Parse {
                path: path.clone(),
                line: i + 1,
                what: "mapping",
            })
        })
        .collect()
}

/// The fields of /proc/PID/stat the engine uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// The controlling terminal's device number (0: none).
    pub tty_nr: u32,
    /// The foreground process group of the controlling terminal (-1: none).
    pub tpgid: i32,
    pub exit_signal: i32,
    /// The wait status of an exited (zombie) task; 0 while it runs.
    pub exit_code: i32,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

pub fn parse_stat(path: &Path, text: &str) -> Result<Stat, ProcError> {
    let err = |what| ProcError::Parse {
        path: path.to_owned(),
        line: 1,
        what,
    };
    let open = text.find('(').ok_or_else(|| err("comm"))?;
    let close = text.rfind(')').ok_or_else(|| err("comm"))?;
    let comm = text[open + 1..close].to_string();
    // Fields after the comm, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let f = |n: usize| -> Result<u64, ProcError> {
        rest.get(n - 3)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| err("numeric field"))
    };
    Ok(Stat {
        comm,
        state: rest
            .first()
            .and_then(|s| s.chars().next())
            .ok_or_else(|| err("state"))?,
        ppid: f(4)? as i32,
        pgid: f(5)? as i32,
        sid: f(6)? as i32,
        tty_nr: f(7)? as u32,
        tpgid: f(8)? as i32,
        exit_signal: f(38)? as i32,
        exit_code: f(52).unwrap_or(0) as i32,
        start_code: f(26)?,
        end_code: f(27)?,
        start_stack: f(28)?,
        start_data: f(45)?,
        end_data: f(46)?,
        start_brk: f(47)?,
        arg_start: f(48)?,
        arg_end: f(49)?,
        env_start: f(50)?,
        env_end: f(51)?,
    })
}

pub fn stat(pid: i32) -> Result<Stat, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = read(&path)?;
    parse_stat(&path, &text)
}

/// Value of a `Key:\tvalue` line of /proc/PID/status.
pub fn status_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// `pos`, `flags` (octal) and `mnt_id` of /proc/PID/fdinfo/FD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: u64,
    pub flags: u32,
    pub mnt_id: u64,
}

pub fn parse_fdinfo(path: &Path, text: &str) -> Result<FdInfo, ProcError> {
    let mut info = FdInfo::default();
    for (i, line) in text.lines().enumerate() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let bad = || ProcError::Parse {
            path: path.to_owned(),
            line: i + 1,
            what: "fdinfo value",
        };
        match k {
            "pos" => info.pos = v.parse().map_err(|_| bad())?,
            "flags" => info.flags = u32::from_str_radix(v, 8).map_err(|_| bad())?,
            "mnt_id" => info.mnt_id = v.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(info)
}

/// /proc/PID/limits: (resource number, soft, hard), with `unlimited` as `RLIM_INFINITY`.
pub fn parse_limits(path: &Path, text: &str) -> Result<Vec<(u32, u64, u64)>, ProcError> {
    const NAMES: [(&str, u32); 16] = [
        ("Max cpu time", 0),
        ("Max file size", 1),
        ("Max data size", 2),
        ("Max stack size", 3),
        ("Max core file size", 4),
        ("Max resident set", 5),
        ("Max processes", 6),
        ("Max open files", 7),
        ("Max locked memory", 8),
        ("Max address space", 9),
        ("Max file locks", 10),
        ("Max pending signals", 11),
        ("Max msgqueue size", 12),
        ("Max nice priority", 13),
        ("Max realtime priority", 14),
        ("Max realtime timeout", 15),
    ];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let Some(&(name, res)) = NAMES.iter().find(|(n, _)| line.starts_with(n)) else {
            continue;
        };
        let mut vals = line[name.len()..].split_whitespace();
        let mut val = || -> Result<u64, ProcError> {
            match vals.next() {
                Some("unlimited") => Ok(libc::RLIM_INFINITY),
                Some(v) => v.parse().map_err(|_| ProcError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    what: "limit",
                }),
                None => Err(ProcError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    what: "limit",
                }),
            }
        };
        let soft = val()?;
        let hard = val()?;
        out.push((res, soft, hard));
    }
    Ok(out)
}

/// Thread ids of a process.
pub fn threads(pid: i32) -> Result<Vec<i32>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/task"));
    let rd = std::fs::read_dir(&path).map_err(|source| ProcError::Io {
        path: path.clone(),
        source,
    })?;
    let mut tids: Vec<i32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Children of one thread, from /proc/PID/task/TID/children.
pub fn children(pid: i32, tid: i32) -> Result<Vec<i32>, ProcError> {
    let text = read(format!("/proc/{pid}/task/{tid}/children"))?;
    Ok(text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect())
}

/// Open fd numbers of a process, sorted.
pub fn fds(pid: i32) -> Result<Vec<i32>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/fd"));
    let rd = std::fs::read_dir(&path).map_err(|source| ProcError::Io {
        path: path.clone(),
        source,
    })?;
    let mut fds: Vec<i32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_line_with_spaces_in_path() {
        let v = parse_maps_line(
            "7f00-8f00 rw-s 00002000 fe:01 1234                       /tmp/a b (deleted)",
        )
        .unwrap();
        assert_eq!((v.start, v.end, v.pgoff, v.ino), (0x7f00, 0x8f00, 2, 1234));
        assert!(v.read && v.write && !v.exec && v.shared);
        assert_eq!(v.dev, (0xfe, 1));
        assert_eq!(v.name, "/tmp/a b (deleted)");
        let anon = parse_maps_line("1000-2000 ---p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.name, "");
        assert_eq!(anon.prot(), 0);
    }

    #[test]
    fn smaps_flags_attach_to_their_vma() {
        let text = "1000-2000 r-xp 00000000 00:00 0 [vdso]\nSize: 4 kB\nVmFlags: rd ex\n\
                    3000-5000 rw-p 00000000 00:00 0\nAnonHugePages:  2048 kB\nVmFlags: rd wr gd\n";
        let v = parse_smaps(Path::new("smaps"), text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].vm_flags, ["rd", "ex"]);
        assert!(v[1].has_flag("gd"));
        assert_eq!(v[1].anon_huge_kb, 2048);
        let e = parse_smaps(Path::new("smaps"), "Size: 4 kB\n").unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 1, .. }));
    }

    #[test]
    fn stat_with_parens_in_comm() {
        let mut fields = vec!["S".to_string()];
        for n in 4..=52 {
            fields.push(n.to_string());
        }
        let text = format!("42 (a) b) {}", fields.join(" "));
        let s = parse_stat(Path::new("stat"), &text).unwrap();
        assert_eq!(s.comm, "a) b");
        assert_eq!((s.ppid, s.pgid, s.sid), (4, 5, 6));
        assert_eq!((s.tty_nr, s.tpgid), (7, 8));
        assert_eq!(s.start_code, 26);
        assert_eq!(s.env_end, 51);
        assert_eq!(s.exit_signal, 38);
        assert!(parse_stat(Path::new("stat"), "42 (x) S 1").is_err());
    }

    #[test]
    fn fdinfo_and_limits() {
        let fi = parse_fdinfo(
            Path::new("fdinfo"),
            "pos:\t12\nflags:\t0102002\nmnt_id:\t30\n",
        )
        .unwrap();
        assert_eq!(fi.pos, 12);
        assert_eq!(fi.flags, 0o102002);
        let lim = "Limit                     Soft Limit           Hard Limit           Units     \n\
                   Max open files            1024                 4096                 files     \n\
                   Max core file size        unlimited            unlimited            bytes     \n";
        let l = parse_limits(Path::new("limits"), lim).unwrap();
        assert_eq!(l, vec![(7, 1024, 4096), (4, u64::MAX, u64::MAX)]);
    }
}
