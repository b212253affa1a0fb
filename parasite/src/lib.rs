//! ptrace control of a foreign task.
