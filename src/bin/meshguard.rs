//! meshguard command-line tool. Placeholder.
fn main() {}
