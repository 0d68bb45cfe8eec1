//! The epoch a primary incarnation writes in, kept durably beside the stream's log.
//!
//! Each start of a primary takes a new epoch, higher than every epoch in its log and
//! every epoch it used before. So an (epoch, LSN) pair names one record forever, even
//! when a crashed primary lost records it had already sent to members: the records it
//! writes afterwards at the same LSNs carry a newer epoch, and a member can tell them
//! apart from what it holds.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const NAME: &str = "EPOCH";

/// The last epoch stored in `dir`, or 0.
pub fn load(dir: &Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(dir.join(NAME)) {
        Ok(text) => text.trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: not an epoch: {:?}",
                    dir.join(NAME).display(),
                    text.trim()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Stores `epoch` durably (write, fsync, rename, fsync the directory).
pub fn store(dir: &Path, epoch: u64) -> std::io::Result<()> {
    let tmp = dir.join("EPOCH.tmp");
    let mut f = File::create(&tmp)?;
    writeln!(f, "{epoch}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(NAME))?;
    lockstep_sys::file::sync_dir(dir)
}

/// Stores `epoch` in `dir` on a short thread of its own, off the caller's core, and
/// hands the result to `done`: a shard never waits for the fsync. Fails only when no
/// thread can be started (then `done` is never called).
pub fn store_in_background(
    dir: PathBuf,
    epoch: u64,
    done: impl FnOnce(std::io::Result<()>) + Send + 'static,
) -> std::io::Result<()> {
    let parent_cores = lockstep_sys::cpu::current_thread_cores();
    std::thread::Builder::new()
        .name("lockstep-epoch".into())
        .spawn(move || {
            lockstep_sys::cpu::keep_off(&parent_cores);
            done(store(&dir, epoch));
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip_and_bad_content() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(super::load(d.path()).unwrap(), 0);
        super::store(d.path(), 42).unwrap();
        assert_eq!(super::load(d.path()).unwrap(), 42);
        std::fs::write(d.path().join("EPOCH"), "x").unwrap();
        assert!(
            super::load(d.path())
                .unwrap_err()
                .to_string()
                .contains("not an epoch")
        );
    }
}
