//! `/proc/self/maps`, parsed.

use std::fmt;
use std::path::PathBuf;

/// Why the maps could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// Reading the file failed.
    #[error("reading {path}")]
    Read {
        /// The file read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line did not have the documented format.
    #[error("{path} line {line_no}: cannot parse {line:?}")]
    Parse {
        /// The file read.
        path: PathBuf,
        /// 1-based line number.
        line_no: usize,
        /// The line.
        line: String,
    },
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// The four permission characters, e.g. `rw-p`.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Device as `major:minor` (hex, as printed).
    pub dev: String,
    /// Inode of the mapped file, 0 for anonymous memory.
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`...), empty if none;
    /// a ` (deleted)` suffix is kept.
    pub path: String,
}

impl MapEntry {
    /// Whether `addr` lies in this mapping.
    pub fn contains(&self, addr: usize) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Parses one maps line.
    pub fn parse(line: &str) -> Option<MapEntry> {
        let mut rest = line;
        let mut field = || {
            let t = rest.trim_start_matches(' ');
            let end = t.find(' ').unwrap_or(t.len());
            let (f, r) = t.split_at(end);
            rest = r;
            f
        };
        let range = field();
        let perms = field().to_string();
        let offset = u64::from_str_radix(field(), 16).ok()?;
        let dev = field().to_string();
        let inode = field().parse().ok()?;
        let path = rest.trim_start_matches(' ').to_string();
        let (s, e) = range.split_once('-')?;
        let start = usize::from_str_radix(s, 16).ok()?;
        let end = usize::from_str_radix(e, 16).ok()?;
        if perms.len() != 4 || end < start || dev.is_empty() {
            return None;
        }
        Some(MapEntry {
            start,
            end,
            perms,
            offset,
            dev,
            inode,
            path,
        })
    }
}

impl fmt::Display for MapEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:x}-{:x} {} {:x} {} {} {}",
            self.start, self.end, self.perms, self.offset, self.dev, self.inode, self.path
        )
    }
}

/// Parses the text of a maps file; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Vec<MapEntry>, MapsError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            MapEntry::parse(l).ok_or_else(|| MapsError::Parse {
                path: PathBuf::from(path),
                line_no: i + 1,
                line: l.to_string(),
            })
        })
        .collect()
}

/// The current mappings of this process.
pub fn read_self() -> Result<Vec<MapEntry>, MapsError> {
    let path = "/proc/self/maps";
    let text = std::fs::read_to_string(path).map_err(|source| MapsError::Read {
        path: PathBuf::from(path),
        source,
    })?;
    parse(&text, path)
}

/// The mapping containing `addr`, if any.
pub fn find(maps: &[MapEntry], addr: usize) -> Option<&MapEntry> {
    maps.iter().find(|m| m.contains(addr))
}

/// The mapping named `name` (e.g. `[vdso]`), if any.
pub fn find_named<'a>(maps: &'a [MapEntry], name: &str) -> Option<&'a MapEntry> {
    maps.iter().find(|m| m.path == name)
}

/// Every mapping overlapping `[start, end)`.
pub fn overlapping(maps: &[MapEntry], start: usize, end: usize) -> Vec<MapEntry> {
    maps.iter()
        .filter(|m| m.start < end && start < m.end)
        .cloned()
        .collect()
}

/// The mappings overlapping `[start, end)`, cut to that range (file offsets
/// adjusted), so that a neighbour merging with or splitting from a mapping
/// at the edge does not count as a change inside the range.
pub fn clipped(maps: &[MapEntry], start: usize, end: usize) -> Vec<MapEntry> {
    overlapping(maps, start, end)
        .into_iter()
        .map(|mut m| {
            if m.start < start {
                if m.inode != 0 {
                    m.offset += (start - m.start) as u64;
                }
                m.start = start;
            }
            m.end = m.end.min(end);
            m
        })
        .collect()
}

/// The `VmFlags` of the mapping starting at `start`, from
/// `/proc/self/smaps` (two-letter codes such as `rd`, `wr`, `gd`).
pub fn vmflags(start: usize) -> Result<Option<Vec<String>>, MapsError> {
    let path = "/proc/self/smaps";
    let text = std::fs::read_to_string(path).map_err(|source| MapsError::Read {
        path: PathBuf::from(path),
        source,
    })?;
    Ok(vmflags_in(&text, start))
}

/// [`vmflags`] on given smaps text.
pub fn vmflags_in(text: &str, start: usize) -> Option<Vec<String>> {
    let mut inside = false;
    for line in text.lines() {
        if let Some(m) = MapEntry::parse(line) {
            inside = m.start == start;
        } else if inside {
            if let Some(f) = line.strip_prefix("VmFlags:") {
                return Some(f.split_whitespace().map(str::to_string).collect());
            }
        }
    }
    None
}

/// Compares two lists of mappings (as returned by [`clipped`] for the same
/// range at two moments) and describes each difference.
pub fn diff_range(before: &[MapEntry], now: &[MapEntry]) -> Vec<String> {
    let mut out = Vec::new();
    for b in before {
        if !now.contains(b) {
            out.push(format!("mapping {b} is gone or changed"));
        }
    }
    for n in now {
        if !before.contains(n) {
            out.push(format!("mapping {n} is new"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f1e2c000000-7f1e2c021000 r-xp 00001000 fd:01 1316  /usr/lib/with space.so (deleted)
7ffd5a1fe000-7ffd5a200000 r-xp 00000000 00:00 0                          [vdso]
7f00 0000
";

    #[test]
    fn parses_names_spaces_and_rejects_garbage() {
        let err = parse(SAMPLE, "sample").unwrap_err();
        assert!(matches!(err, MapsError::Parse { line_no: 4, .. }));
        let good: String = SAMPLE.lines().take(3).map(|l| format!("{l}\n")).collect();
        let m = parse(&good, "sample").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, "[heap]");
        assert_eq!(m[0].start, 0x55d0c0a00000);
        assert_eq!(m[1].path, "/usr/lib/with space.so (deleted)");
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(m[1].inode, 1316);
        assert_eq!(m[1].perms, "r-xp");
        assert!(find_named(&m, "[vdso]").unwrap().contains(0x7ffd5a1fe000));
        assert_eq!(overlapping(&m, 0x7f1e2c020000, 0x7ffd5a1fe001).len(), 2);
        let c = clipped(&m, 0x7f1e2c020000, 0x7ffd5a1fe001);
        assert_eq!(
            (c[0].start, c[0].end, c[0].offset),
            (0x7f1e2c020000, 0x7f1e2c021000, 0x21000)
        );
        assert_eq!((c[1].start, c[1].end), (0x7ffd5a1fe000, 0x7ffd5a1fe001));
    }

    #[test]
    fn reads_own_maps() {
        let m = read_self().unwrap();
        let here = reads_own_maps as *const () as usize;
        assert!(find(&m, here).unwrap().perms.contains('x'));
    }

    #[test]
    fn vmflags_of_a_mapping() {
        let smaps = "1000-2000 rw-p 00000000 00:00 0\nRss: 4 kB\nVmFlags: rd wr mr\n\
                     2000-3000 rw-p 00000000 00:00 0 [stack]\nVmFlags: rd wr gd\n";
        assert_eq!(vmflags_in(smaps, 0x2000).unwrap(), ["rd", "wr", "gd"]);
        assert_eq!(vmflags_in(smaps, 0x1000).unwrap(), ["rd", "wr", "mr"]);
        assert_eq!(vmflags_in(smaps, 0x3000), None);
    }

    #[test]
    fn diff_reports_changes() {
        let a = MapEntry::parse("1000-2000 rw-p 00000000 00:00 0").unwrap();
        let mut b = a.clone();
        b.perms = "r--p".into();
        assert!(diff_range(std::slice::from_ref(&a), std::slice::from_ref(&a)).is_empty());
        assert_eq!(diff_range(&[a], &[b]).len(), 2);
    }
}
