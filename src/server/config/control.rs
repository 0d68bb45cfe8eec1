//! The `[control]` section: the cluster runs its controller (an embedded raft group of
//! the voters). A joining node runs the cluster's controller as a learner.

use std::collections::HashSet;

use serde::Deserialize;

use crate::replication::NodeId;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) voters: Option<Vec<NodeId>>,
    failover_timeout_ms: Option<u64>,
}

/// The `[control]` section: the cluster runs its controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    pub voters: Vec<NodeId>,
    pub failover_timeout_ms: u64,
}

/// Checks the `[control]` section (`None`: a static cluster, unless the node joins).
pub(super) fn parse(
    raw: Option<RawControl>,
    joining: bool,
    ids: &[NodeId],
    unique: &HashSet<NodeId>,
    node_id: NodeId,
) -> Result<Option<ControlConfig>, String> {
    let control = match raw {
        // A joining node runs the cluster's controller, as a learner.
        None if joining => Some(ControlConfig {
            voters: Vec::new(),
            failover_timeout_ms: 150,
        }),
        Some(c) if joining => Some(ControlConfig {
            voters: Vec::new(),
            failover_timeout_ms: failover_timeout(c.failover_timeout_ms)?,
        }),
        None => None,
        Some(c) => {
            let voters = c.voters.unwrap_or_else(|| ids.to_vec());
            if voters.is_empty() || voters.iter().any(|v| !unique.contains(v)) {
                return Err(format!(
                    "control: voters {voters:?} must be configured nodes"
                ));
            }
            if !voters.contains(&node_id) {
                return Err(format!(
                    "control: node_id = {} is not among the voters {voters:?}",
                    node_id
                ));
            }
            Some(ControlConfig {
                voters,
                failover_timeout_ms: failover_timeout(c.failover_timeout_ms)?,
            })
        }
    };
    Ok(control)
}

fn failover_timeout(given: Option<u64>) -> Result<u64, String> {
    let ms = given.unwrap_or(150);
    if !(20..=60_000).contains(&ms) {
        return Err(format!(
            "control: failover_timeout_ms = {ms}: must be in 20..=60000"
        ));
    }
    Ok(ms)
}
