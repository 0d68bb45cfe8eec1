//! The types every layer of lockstep shares: who a node is, where a record is and in
//! which generation it was written, how a commit is ruled, and the record itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node of the cluster.
pub type NodeId = u32;

/// A record's dense position in its stream, from 1 (0: before the first record).
pub type Lsn = u64;

/// A generation of the cluster's configuration; it grows with every change of primary.
/// A record carries the epoch it was first written in, so (epoch, LSN) names one record
/// forever.
pub type Epoch = u64;

/// One record of a stream: as a log holds it and as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub epoch: Epoch,
    pub payload: Vec<u8>,
}

/// The commit rule of a stream or of one append (see DESIGN.md, "Commit rule").
///
/// The order is the strength: `Async < Semi < Strong`. An append may ask for a mode no
/// stronger than its stream's; the node checks that, the codec only carries it. The
/// default is `Strong`, the mode that never loses an acknowledged commit.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Commit on the primary's own durable write; secondaries follow.
    Async,
    /// Commit when the sync set has received the record (acked before its disk write).
    Semi,
    /// Commit when the primary and the sync set hold the record durably.
    #[default]
    Strong,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Strong, Mode::Semi, Mode::Async];

    /// The lower-case name of configurations, command lines and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Strong => "strong",
            Mode::Semi => "semi",
            Mode::Async => "async",
        }
    }

    /// The mode's code on the wire, fixed forever; 0 is kept for "no mode given".
    pub const fn code(self) -> u8 {
        match self {
            Mode::Strong => 1,
            Mode::Semi => 2,
            Mode::Async => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.code() == code)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Mode, ParseNameError> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| ParseNameError {
                what: "commit mode",
                found: s.to_owned(),
                expected: Mode::ALL.map(|m| m.as_str()).join(", "),
            })
    }
}

/// A name that is not one of an enum's names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {found:?}: expected one of {expected}")]
pub struct ParseNameError {
    pub what: &'static str,
    pub found: String,
    pub expected: String,
}
