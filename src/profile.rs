//! Hardware profiles: the tuned settings for one kind of machine, in a TOML file from
//! `hw-profiles/`. Every key is optional; what a profile leaves out keeps lockstep's
//! default. Unknown keys are an error, so a misspelt setting never goes unnoticed.

use std::path::Path;

use serde::Deserialize;

use crate::log::LogOptions;
use lockstep_sys::uring::RingOptions;

/// A parsed hardware profile.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    /// What the profile is for, shown by the tools.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub ring: RingProfile,
    #[serde(default)]
    pub log: LogProfile,
    /// What peer links run on: `auto` (RDMA when a device is found, TCP otherwise,
    /// saying why), `rdma`, `tcp`, or `rdma-emu` (emulated verbs: a test double for
    /// processes on one machine).
    #[serde(default)]
    pub transport: crate::transport::rdma::setup::Selection,
}

/// io_uring settings of every shard thread.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingProfile {
    pub entries: Option<u32>,
    /// Kernel submission polling. Off unless set: on machines with few cores the polling
    /// thread competes with the shard threads (measured: p50 rises to one 4 ms tick on a
    /// 2-core VM). Worth trying on machines with spare cores.
    pub sqpoll_idle_ms: Option<u32>,
    pub fixed_buffer_slots: Option<u16>,
}

/// Log settings of every stream.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogProfile {
    pub segment_bytes: Option<u64>,
    pub batch_bytes: Option<usize>,
}

/// Why a profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("read hardware profile {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hardware profile {path}: {message}")]
    Invalid { path: String, message: String },
}

impl HardwareProfile {
    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<HardwareProfile, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: shown.clone(),
            source,
        })?;
        let p: HardwareProfile = toml::from_str(&text).map_err(|e| ProfileError::Invalid {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        p.log_options()
            .validate()
            .map_err(|e| ProfileError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        if p.ring.entries.is_some_and(|n| !(2..=32768).contains(&n)) {
            let message = "ring.entries must be in 2..=32768".to_string();
            return Err(ProfileError::Invalid {
                path: shown,
                message,
            });
        }
        Ok(p)
    }

    /// Ring options with this profile applied.
    pub fn ring_options(&self) -> RingOptions {
        let d = RingOptions::default();
        RingOptions {
            entries: self.ring.entries.unwrap_or(d.entries),
            sqpoll_idle_ms: self.ring.sqpoll_idle_ms.or(d.sqpoll_idle_ms),
            fixed_buffer_slots: self.ring.fixed_buffer_slots.unwrap_or(d.fixed_buffer_slots),
        }
    }

    /// Log options with this profile applied.
    pub fn log_options(&self) -> LogOptions {
        let d = LogOptions::default();
        LogOptions {
            segment_bytes: self.log.segment_bytes.unwrap_or(d.segment_bytes),
            batch_bytes: self.log.batch_bytes.unwrap_or(d.batch_bytes),
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<HardwareProfile, ProfileError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(&p, text).unwrap();
        HardwareProfile::load(&p)
    }

    #[test]
    fn shipped_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hw-profiles");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                HardwareProfile::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 2);
    }

    #[test]
    fn defaults_and_errors() {
        let p = load("").unwrap();
        assert_eq!(p.ring_options().sqpoll_idle_ms, None);
        let p = load("[ring]\nsqpoll_idle_ms = 50\n[log]\nsegment_bytes = 8388608\n").unwrap();
        assert_eq!(p.ring_options().sqpoll_idle_ms, Some(50));
        assert_eq!(p.log_options().segment_bytes, 8 << 20);
        let e = load("[log]\nsegmnet_bytes = 1\n").unwrap_err().to_string();
        assert!(e.contains("segmnet_bytes"), "{e}");
        let e = load("[log]\nbatch_bytes = 5000\n").unwrap_err().to_string();
        assert!(e.contains("batch_bytes = 5000"), "{e}");
    }
}
