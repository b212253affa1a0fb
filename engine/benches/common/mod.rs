//! What the benchmarks' victim processes share.

use std::os::fd::RawFd;

/// Leaves a freshly forked victim nothing of the bench's own: stdio on /dev/null (a pipe to
/// cargo would lead outside the dumped tree) and no other inherited descriptor but `keep`.
pub fn isolate(keep: &[RawFd]) {
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .unwrap();
    nix::unistd::dup2_stdin(&null).unwrap();
    nix::unistd::dup2_stdout(&null).unwrap();
    nix::unistd::dup2_stderr(&null).unwrap();
    drop(null);
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2 && !keep.contains(&fd))
        .collect();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}
