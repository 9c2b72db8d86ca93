//! BeeTS agents: sandboxed JavaScript programs that filter requests and route tuples between
//! spaces (paper §6).
//!
//! Not built yet: this crate will host the rquickjs runtime with memory, stack and CPU limits.
