//! zdtm protocol helpers for test programs.
