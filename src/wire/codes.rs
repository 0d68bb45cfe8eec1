//! The small enums that travel as one- or two-byte codes: the commit [`Mode`], a node's
//! [`Role`] for a stream and the [`ErrorCode`] of an `Error` reply.
//!
//! Each has a fixed wire code (never reused for another meaning) and a lower-case name
//! for configurations, command lines and logs (`as_str` / [`FromStr`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use lockstep_core::{Mode, ParseNameError};

/// What a node is for one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes appends and replicates them.
    Primary,
    /// Member of the sync set: its acks gate commits.
    Secondary,
    /// Receives the log without gating commits (joining, catching up, or removed).
    Learner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Primary, Role::Secondary, Role::Learner];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
            Role::Learner => "learner",
        }
    }

    pub(crate) const fn code(self) -> u8 {
        match self {
            Role::Primary => 1,
            Role::Secondary => 2,
            Role::Learner => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// Why a node refused a request (the code of an `Error` reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request could not be decoded or breaks a rule of the protocol.
    Malformed,
    /// This node hosts no stream of that name.
    UnknownStream,
    /// The request exceeds a limit of the node.
    TooLarge,
    /// The stream cannot take the request now (blocked on its sync set, recovering,
    /// shutting down). Nothing was appended.
    Unavailable,
    /// A fault inside the node.
    Internal,
    /// A read asked for LSNs the node does not hold (deleted by retention, or beyond
    /// the log).
    OutOfRange,
    /// An append asked for a commit mode stronger than its stream's.
    ModeNotAllowed,
    /// Too many requests are outstanding on this connection or stream; nothing was
    /// appended.
    Overloaded,
    /// A message that is valid but not at this point of the conversation (for example
    /// a request before the hello).
    Unexpected,
    /// A node did not prove that it knows the cluster secret (a wrong secret, or none
    /// where the cluster has one), or asked to join a cluster that has no secret.
    Unauthorized,
    /// Another live process already serves the node id the connection claims (a
    /// second process started with the same `node_id`). The process that gets this
    /// stops.
    IdInUse,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Malformed,
        ErrorCode::UnknownStream,
        ErrorCode::TooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::OutOfRange,
        ErrorCode::ModeNotAllowed,
        ErrorCode::Overloaded,
        ErrorCode::Unexpected,
        ErrorCode::Unauthorized,
        ErrorCode::IdInUse,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownStream => "unknown-stream",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::OutOfRange => "out-of-range",
            ErrorCode::ModeNotAllowed => "mode-not-allowed",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unexpected => "unexpected",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::IdInUse => "id-in-use",
        }
    }

    pub(crate) const fn code(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::UnknownStream => 2,
            ErrorCode::TooLarge => 3,
            ErrorCode::Unavailable => 4,
            ErrorCode::Internal => 5,
            ErrorCode::OutOfRange => 6,
            ErrorCode::ModeNotAllowed => 7,
            ErrorCode::Overloaded => 8,
            ErrorCode::Unexpected => 9,
            ErrorCode::Unauthorized => 10,
            ErrorCode::IdInUse => 11,
        }
    }

    pub(crate) fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Display, `FromStr` by the `as_str` names, so each enum parses exactly what it prints.
macro_rules! named {
    ($ty:ident, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = ParseNameError;

            fn from_str(s: &str) -> Result<Self, ParseNameError> {
                $ty::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| ParseNameError {
                        what: $what,
                        found: s.to_owned(),
                        expected: $ty::ALL.map(|v| v.as_str()).join(", "),
                    })
            }
        }
    };
}

named!(Role, "role");
named!(ErrorCode, "error code");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
            assert_eq!(Mode::from_code(m.code()), Some(m));
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(Role::from_code(r.code()), Some(r));
        }
        for c in ErrorCode::ALL {
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(c));
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        }
        assert_eq!(Mode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(0), None);
        let err = "Strong".parse::<Mode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown commit mode \"Strong\": expected one of strong, semi, async"
        );
    }

    #[test]
    fn modes_are_ordered_by_strength() {
        assert!(Mode::Async < Mode::Semi);
        assert!(Mode::Semi < Mode::Strong);
    }
}
