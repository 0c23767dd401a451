//! The decision value. Placeholder.
