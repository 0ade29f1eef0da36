//! The documented bounds on what reading one file may cost (see the crate
//! documentation).

/// Most operations one unpickle may run: opcodes plus the items copied by
/// opcodes that rebuild containers from others (call arguments, sets,
/// `OrderedDict`, BUILD). Bounds time and the working memory.
pub const MAX_PICKLE_OPS: u64 = 10_000_000;

/// Most bytes one opcode may read (a string, bytes, long integer or text
/// line), whatever length it declares.
pub const MAX_OPCODE_BYTES: usize = 256 << 20;

/// Most items in one list, tuple, set or dict (pairs).
pub const MAX_CONTAINER_LEN: usize = 1_000_000;

/// Most levels of lists, tuples, dicts and objects nested in one another in a
/// value; a cyclic value is refused by this limit too. Bounds the recursion of
/// any walk of a [`Value`](crate::Value).
pub const MAX_DEPTH: usize = 200;

/// Most nodes in a value counted as a tree, a shared object once per
/// reference: bounds every walk of a [`Value`](crate::Value).
pub const MAX_VALUE_NODES: u64 = 10_000_000;

/// Most bytes of text and binary data (strings, bytes, global and class
/// names, tensor storage keys and shapes) in a value counted as a tree, and
/// most such bytes allocated while unpickling.
pub const MAX_VALUE_BYTES: u64 = 256 << 20;

/// Most dimensions of a tensor (most torch operations stop at 64 as well).
pub const MAX_TENSOR_DIMS: usize = 64;

/// Most elements [`TorchArchive::tensor_f32`](crate::TorchArchive::tensor_f32) returns for a view that has more
/// elements than its storage (a broadcast view with stride 0). Other views are
/// bounded by the file's size.
pub const MAX_BROADCAST_ELEMENTS: usize = 1 << 24;
