//! The rule for stream names, shared by the wire, configurations and the data directory.
//!
//! A stream's name becomes the name of its directory under `streams/`, so a name is
//! 1 to `STREAM_NAME_BYTES_MAX` bytes of `[A-Za-z0-9_.-]` and does not start with a dot
//! (which rules out `.`, `..` and hidden files). Checking the same rule at the edge of
//! the node means no later layer has to handle a name that is not a plain file name.

use crate::constants::STREAM_NAME_BYTES_MAX;

/// A stream name that breaks the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream name {name:?}: {reason}")]
pub struct StreamNameError {
    /// The name, cut to the limit when it is longer.
    pub name: String,
    pub reason: String,
}

/// Checks `name` against the rule in the module docs.
pub fn check_stream_name(name: &str) -> Result<(), StreamNameError> {
    let refuse = |reason: String| {
        let cut = name
            .char_indices()
            .nth(STREAM_NAME_BYTES_MAX)
            .map_or(name.len(), |(i, _)| i);
        Err(StreamNameError {
            name: name[..cut].to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("it is empty".to_owned());
    }
    if name.len() > STREAM_NAME_BYTES_MAX {
        return refuse(format!(
            "it is {} bytes long; the limit is {STREAM_NAME_BYTES_MAX}",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return refuse("it starts with a dot".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return refuse(format!("{c:?} is not one of [A-Za-z0-9_.-]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_others_are_refused_with_a_reason() {
        for ok in [
            "db1",
            "orders.wal",
            "a-b_c",
            "X",
            &"n".repeat(STREAM_NAME_BYTES_MAX),
        ] {
            assert_eq!(check_stream_name(ok), Ok(()), "{ok}");
        }
        let long = "n".repeat(STREAM_NAME_BYTES_MAX + 1);
        for (bad, reason) in [
            ("", "it is empty"),
            (".", "it starts with a dot"),
            ("..", "it starts with a dot"),
            (".hidden", "it starts with a dot"),
            ("a/b", "'/' is not one of [A-Za-z0-9_.-]"),
            ("é", "'é' is not one of [A-Za-z0-9_.-]"),
            (&long, "it is 129 bytes long; the limit is 128"),
        ] {
            let err = check_stream_name(bad).unwrap_err();
            assert_eq!(err.reason, reason, "{bad:?}");
            assert!(err.name.len() <= STREAM_NAME_BYTES_MAX);
        }
    }
}
