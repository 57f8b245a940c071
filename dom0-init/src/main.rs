//! Dom0's PID 1.

fn main() {}
