//! `lockstep-sys`: every `unsafe` block and every foreign call of lockstep.
//!
//! The rest of the workspace is `#![forbid(unsafe_code)]` and reaches the kernel only
//! through this crate. One module per kernel or hardware interface:
//!
//! - [`mem`]: aligned buffers for O_DIRECT and registered I/O, allocated at start-up.
//! - [`uring`]: one io_uring instance per thread. Buffers and file handles are passed
//!   **by value** into an operation and handed back with its completion, so memory the
//!   kernel is reading or writing can never be freed or reused by the caller meanwhile.
//! - [`file`]: opening files for direct I/O, `fallocate`, directory sync.
//! - [`cpu`]: pinning a thread to a core.
//! - [`probe`]: kernel feature probes that say in one line why a feature is missing.
//! - [`shm`]: memory shared between processes and a doorbell (under emulated verbs).
//! - [`signal`]: termination signals received synchronously.
//! - [`verbs`]: RDMA devices through libibverbs (loaded at run time by `sideway`).
//!
//! Thread safety: [`uring::Ring`] is `Send` but not `Sync`; it belongs to one thread at a
//! time. [`mem::AlignedBuf`] is `Send + Sync` like `Vec<u8>`.
//!
//! Clean-up: dropping a [`uring::Ring`] with operations still in flight waits for them to
//! finish before the memory they use is released (see [`uring::Ring`]'s `Drop`).

pub mod cpu;
pub mod file;
pub mod mem;
pub mod probe;
pub mod shm;
pub mod signal;
pub mod uring;
pub mod verbs;
