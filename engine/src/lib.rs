#![deny(unsafe_code)]
//! crust engine: dump, restore, inspect.

pub mod inspect;
