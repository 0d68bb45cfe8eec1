//! Aligned memory for direct I/O.
//!
//! O_DIRECT needs the buffer address, the length and the file offset aligned to the
//! logical block size of the device (4096 covers every device lockstep targets).
//! Buffers are allocated once, at start-up, and reused: no allocation on the commit path.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every I/O buffer, offset and length handed to the kernel.
pub const IO_ALIGN: usize = 4096;

/// A zero-initialised, `IO_ALIGN`-aligned heap buffer of fixed capacity.
///
/// It may carry the index of the io_uring registered-buffer slot that describes exactly
/// its memory; [`crate::uring::Ring::register`] sets it.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    // (ring id, slot index) of the io_uring registration, if any.
    fixed: Option<(u32, u16)>,
}

// SAFETY: AlignedBuf uniquely owns its allocation, exactly like Vec<u8>; no interior
// mutability and no thread-bound state.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads of the owned bytes, as with Vec<u8>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes; `len` is rounded up to a multiple of [`IO_ALIGN`].
    ///
    /// # Panics
    /// If `len` is zero or the allocation fails (start-up only: an appliance that cannot
    /// get its buffers must not start).
    pub fn new(len: usize) -> AlignedBuf {
        assert!(len > 0, "AlignedBuf of zero bytes");
        let len = len.next_multiple_of(IO_ALIGN);
        let layout = Layout::from_size_align(len, IO_ALIGN).expect("buffer layout");
        // SAFETY: the layout has a non-zero size (asserted above).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len,
            fixed: None,
        }
    }

    /// Capacity in bytes (a multiple of [`IO_ALIGN`]).
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Whether this buffer is registered with a ring.
    pub fn is_registered(&self) -> bool {
        self.fixed.is_some()
    }

    pub(crate) fn fixed(&self) -> Option<(u32, u16)> {
        self.fixed
    }

    pub(crate) fn set_fixed(&mut self, ring: u32, index: u16) {
        self.fixed = Some((ring, index));
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to len initialised (zeroed at allocation) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len, IO_ALIGN).expect("buffer layout");
        // SAFETY: allocated in new() with exactly this layout and not freed since.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("fixed", &self.fixed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut b = AlignedBuf::new(5000);
        assert_eq!(b.capacity(), 8192);
        assert_eq!(b.as_ptr() as usize % IO_ALIGN, 0);
        assert!(b.iter().all(|&x| x == 0));
        b[8191] = 7;
        assert_eq!(b[8191], 7);
    }
}
