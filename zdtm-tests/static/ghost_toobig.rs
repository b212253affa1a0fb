//! ghost_toobig: an unlinked open file over the ghost limit is refused.
//!
//! Keeps a 2 MiB file open after unlinking it: over the engine's default
//! ghost limit of 1 MiB, so the dump must fail and leave the task running
//! (the descriptor `crfail`). The task then checks that its file is intact.

use zdtmtst::files::open;
use zdtmtst::{check, fail, fd, Checker};

fn main() {
    zdtmtst::start();
    let path = zdtmtst::temp_path("ghost_toobig");
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
    let setup = || -> std::io::Result<i32> {
        std::fs::write(&path, &data)?;
        let f = open(&path, libc::O_RDONLY, 0)?;
        std::fs::remove_file(&path)?;
        Ok(f)
    };
    let f = setup().unwrap_or_else(|e| fail(format!("setup: {e}")));

    zdtmtst::ready();
    zdtmtst::wait_for_sigterm();

    let mut c = Checker::new();
    if let Some(b) = c.ok("pread", fd::pread(f, data.len(), 0)) {
        check!(c, b == data, "contents differ ({} bytes)", b.len());
    }
    c.finish();
}
