//! The data directory's lock: one process serves a data directory, and so one node id
//! from it.
//!
//! [`DirLock::take`] takes an exclusive `flock` on `DATA_DIR/LOCK` before the node
//! opens anything else there, and writes the process id into the file; the lock is
//! held for as long as the [`DirLock`] lives (the whole life of a [`Server`]) and the
//! kernel drops it when the process ends, however it ends (a `kill -9` included), so
//! a restarted node is never refused by a lock of its dead predecessor. A second
//! process on the same directory is refused with one line that names the process
//! holding it.
//!
//! Each stream's log has a lock of its own (`streams/NAME/LOCK`, see
//! [`crate::log`]); this one covers the directory's other state (the controller's
//! `control/STATE`) and refuses the second process before it touches anything.
//!
//! [`Server`]: crate::server::Server

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::replication::NodeId;

/// The lock file's name in the data directory.
pub const LOCK_NAME: &str = "LOCK";

/// A process that forks (to start another program) shares its locks with the child
/// until the child's exec closes them: a busy lock is tried again for this long
/// before the directory is declared in use.
const LOCK_TRIES: u32 = 50;
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// The exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    #[error(
        "data directory {} is in use by another process ({holder}): node {node} is already \
         served from it; a second process with node_id = {node} is refused",
        dir.display()
    )]
    InUse {
        dir: PathBuf,
        node: NodeId,
        /// "pid N", as the holder wrote it, or why it is not known.
        holder: String,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DirLock {
    /// Takes the lock of `dir` (created if missing) for node `node`.
    pub fn take(dir: &Path, node: NodeId) -> Result<DirLock, DirLockError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| DirLockError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let path = dir.join(LOCK_NAME);
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries + 1 < LOCK_TRIES => {
                    tries += 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(DirLockError::InUse {
                        dir: dir.to_path_buf(),
                        node,
                        holder: holder(&mut file),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
            }
        }
        // The holder's pid, for the refusal of a second process.
        let pid = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(io("write", &path))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the holder of the lock wrote: "pid N".
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match read.map(|_| text.trim().to_string()) {
        Ok(t) if t.starts_with("pid ") && t.len() < 32 => t,
        Ok(_) => "pid not known yet".to_string(),
        Err(e) => format!("pid not readable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_lock_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node2");
        let first = DirLock::take(&data, 2).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text, format!("pid {}\n", std::process::id()));
        let e = DirLock::take(&data, 2).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "in use by another process (pid {})",
                std::process::id()
            )),
            "{e}"
        );
        assert!(e.contains("node 2 is already served from it"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        drop(first);
        DirLock::take(&data, 2).unwrap();
    }
}
