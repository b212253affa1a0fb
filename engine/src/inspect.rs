//! Inspect: a normalized description of a live tree.
