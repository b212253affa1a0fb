//! The engine's log: one file (`-o`), levels like CRIU's `-v0..4`
//! (0 nothing, 1 errors, 2 warnings, 3 info, 4 debug).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

struct Sink {
    file: Option<File>,
    level: u8,
    start: Instant,
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Directs the log to `path` (created or truncated) at `level`. Without a call, nothing is logged.
pub fn init(path: Option<&Path>, level: u8) -> std::io::Result<()> {
    let file = match path {
        Some(p) => Some(File::create(p)?),
        None => None,
    };
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink {
        file,
        level,
        start: Instant::now(),
    });
    Ok(())
}

pub fn enabled(level: u8) -> bool {
    SINK.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|s| s.file.is_some() && level <= s.level)
}

#[doc(hidden)]
pub fn write(level: u8, args: std::fmt::Arguments<'_>) {
    let mut guard = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let Some(sink) = guard.as_mut() else { return };
    if level > sink.level {
        return;
    }
    let t = sink.start.elapsed();
    let tag = ["", "Error", "Warn", "Info", "Debug"][level.min(4) as usize];
    if let Some(f) = sink.file.as_mut() {
        let _ = writeln!(
            f,
            "({:3}.{:06}) {tag}: {args}",
            t.as_secs(),
            t.subsec_micros()
        );
    }
}

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($arg:tt)*) => { $crate::log::write($lvl, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!(1, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!(2, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!(3, $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!(4, $($arg)*) }; }
