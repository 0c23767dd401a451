//! Engine. Placeholder.
