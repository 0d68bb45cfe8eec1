//! Per-stream replication settings and the durability modes.

use std::str::FromStr;

pub use crate::types::Mode;
use crate::types::ParseNameError;

/// What a stream does when too few sync-set members are available to commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnInsufficient {
    /// Stop committing until enough members are back: an acknowledged commit is never
    /// lost. The default.
    #[default]
    Block,
    /// Drop stalled members from the effective sync set, down to `min_sync`, and below
    /// that commit on the primary alone. Every change is a recorded event, never a silent
    /// timeout.
    Degrade,
}

impl FromStr for OnInsufficient {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<OnInsufficient, ParseNameError> {
        match s {
            "block" => Ok(OnInsufficient::Block),
            "degrade" => Ok(OnInsufficient::Degrade),
            other => Err(ParseNameError {
                what: "on_insufficient",
                found: other.to_owned(),
                expected: "block, degrade".into(),
            }),
        }
    }
}

/// Settings of one stream's replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    pub mode: Mode,
    /// Acks needed from the sync set (`k`); `None` means every member.
    pub sync_acks: Option<usize>,
    /// Fewest sync-set members a stream may shrink to before `on_insufficient` applies.
    pub min_sync: usize,
    pub on_insufficient: OnInsufficient,
    /// A member whose ack for a record the primary already holds is older than this is
    /// stalled.
    pub ack_timeout_ticks: u64,
    /// Most records sent to a member and not yet acknowledged by it.
    pub window_records: u64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            mode: Mode::Strong,
            sync_acks: None,
            min_sync: 1,
            on_insufficient: OnInsufficient::Block,
            ack_timeout_ticks: 300,
            window_records: 65_536,
        }
    }
}

impl StreamSettings {
    /// `k` for a sync set of `members`.
    pub fn k(&self, members: usize) -> usize {
        self.sync_acks.unwrap_or(members).min(members)
    }

    /// Checks the settings against a sync set of `members`.
    pub fn validate(&self, members: usize) -> Result<(), SettingsError> {
        if let Some(k) = self.sync_acks
            && (k == 0 || k > members)
        {
            return Err(SettingsError::SyncAcks { k, members });
        }
        if self.min_sync > members {
            return Err(SettingsError::MinSync {
                min_sync: self.min_sync,
                members,
            });
        }
        if self.ack_timeout_ticks == 0 || self.window_records == 0 {
            return Err(SettingsError::NotPositive);
        }
        Ok(())
    }
}

/// Settings that cannot work with the stream's sync set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("sync_acks = {k} with {members} sync-set members: must be in 1..={members}")]
    SyncAcks { k: usize, members: usize },
    #[error("min_sync = {min_sync} exceeds the {members} sync-set members")]
    MinSync { min_sync: usize, members: usize },
    #[error("ack_timeout and window must be positive")]
    NotPositive,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_and_validation() {
        let s = StreamSettings::default();
        assert_eq!(s.k(2), 2);
        let s = StreamSettings {
            sync_acks: Some(1),
            ..s
        };
        assert_eq!(s.k(2), 1);
        assert!(s.validate(2).is_ok());
        assert!(
            StreamSettings {
                sync_acks: Some(3),
                ..s.clone()
            }
            .validate(2)
            .is_err()
        );
        assert!(
            StreamSettings {
                sync_acks: Some(0),
                ..s.clone()
            }
            .validate(2)
            .is_err()
        );
        assert!(StreamSettings { min_sync: 3, ..s }.validate(2).is_err());
    }
}
