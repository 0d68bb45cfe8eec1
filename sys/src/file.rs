//! Files for direct I/O: open with O_DIRECT, reserve space, make names durable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// How a log file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// O_DIRECT: writes bypass the page cache and go straight to the device.
    Direct,
    /// Buffered, for filesystems that refuse O_DIRECT (tmpfs); durability then comes
    /// from fdatasync.
    Buffered,
}

/// Opens `path` for reading and writing, creating it if `create`.
pub fn open_rw(path: &Path, access: Access, create: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(create);
    if access == Access::Direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Reserves `[offset, offset + len)` of `file` on disk (fallocate mode 0), so later
/// writes there cannot fail for lack of space on an overwrite-in-place filesystem.
pub fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: fallocate only reads its integer arguments; the fd is valid for the
        // lifetime of `file`.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, off, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Makes the directory entries of `dir` (creations, renames, deletions) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Space of the filesystem holding a path, as `statvfs` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    pub total_bytes: u64,
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub avail_bytes: u64,
}

/// The size and free space of the filesystem that holds `path`.
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: statvfs is plain data; the kernel fills it before it is read.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is writable.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = st.f_frsize as u64;
    Ok(FsSpace {
        total_bytes: st.f_blocks as u64 * block,
        avail_bytes: st.f_bavail as u64 * block,
    })
}
