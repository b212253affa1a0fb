#!/usr/bin/env bash
# Prepares a fresh Debian (or Ubuntu) machine to build crust and run its test suite.
# Run as root. Idempotent: does nothing that is already done.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-debian: run as root (crust checkpoints other processes: it needs ptrace," >&2
    echo "clone3 with set_tid and PR_SET_MM_MAP, all root-only)" >&2
    exit 1
fi

need=()
command -v python3 >/dev/null || need+=(python3)   # engine tests drive python victims
command -v cc >/dev/null || need+=(gcc libc6-dev)  # linker for rustc
command -v git >/dev/null || need+=(git)
command -v pkill >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "setup-debian: no Rust toolchain; install one with rustup (https://rustup.rs)," >&2
    echo "version 1.85 or newer" >&2
    exit 1
fi

# Kernel settings the engine relies on. Yama (absent on many kernels) must allow attaching
# to non-children: restored tasks are re-parented before the harness dumps them again.
if [ -w /proc/sys/kernel/yama/ptrace_scope ]; then
    echo 0 > /proc/sys/kernel/yama/ptrace_scope
fi
# Restored tasks take their pids back: pid_max must cover the pids in the images.
if [ "$(cat /proc/sys/kernel/pid_max)" -lt 32768 ]; then
    echo 32768 > /proc/sys/kernel/pid_max
fi
echo "setup-debian: ready"
