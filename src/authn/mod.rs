//! RequestAuthentication: token extraction, verification, outputs.

pub mod spec;
