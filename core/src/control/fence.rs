//! The fence rule of a failover: when enough members answered `Fence(epoch + 1)`, and
//! which of them becomes primary.
//!
//! A commit of epoch `e` was acknowledged only when the primary and `k` members of the
//! sync set held it durably. Once `|sync set| − k + 1` members answered the fence, at
//! least one of them holds every acknowledged commit, and fewer than `k` members still
//! accept the old primary's records, so it cannot acknowledge anything more. The old
//! primary's own answer is enough alone: its log holds every commit it acknowledged,
//! and having answered it has stopped. Among the answers, the log ending at the
//! highest (epoch of the last record, LSN) holds every acknowledged commit: logs of one
//! epoch are prefixes of that epoch's primary's log, and a newer epoch's records were
//! written by a primary that itself held every commit acknowledged before it.

use crate::control::cluster_config::StreamRoles;
use crate::replication::NodeId;

/// A member's answer to a fence: where its log ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceAnswer {
    pub node: NodeId,
    pub incarnation: u64,
    /// Epoch of the last record of its log (0 if empty).
    pub last_epoch: u64,
    pub last_lsn: u64,
}

/// The outcome of a fence round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub primary: NodeId,
    pub incarnation: u64,
    pub sync_set: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// The winner's log end: the new epoch's floor.
    pub floor: (u64, u64),
}

/// Sync-set answers needed, given the old configuration.
pub fn answers_needed(roles: &StreamRoles) -> usize {
    let members = roles.sync_set.len();
    let k = roles.policy.k(members);
    if roles.degraded || k == 0 {
        // Commits were acknowledged on the primary alone: only its own answer, or
        // every member's, gives the best log there is.
        return members;
    }
    members - k + 1
}

/// Decides the round if the answers suffice. `alive` tells whether a node that has not
/// answered yet is still heard from: such a node stays in the sync set of the new
/// epoch (it answers the fence before it takes any record), a silent one becomes a
/// learner and rejoins when it is back and caught up. Among logs that end alike,
/// `prefer` wins (the old primary, whose clients are already there, or a switchover's
/// target), then the lowest node id, so that every leader decides alike.
pub fn decide(
    roles: &StreamRoles,
    answers: &[FenceAnswer],
    alive: impl Fn(NodeId) -> bool,
    prefer: NodeId,
) -> Option<Decision> {
    let answered = |n: NodeId| answers.iter().any(|a| a.node == n);
    let from_sync = roles.sync_set.iter().filter(|&&m| answered(m)).count();
    let old_primary_answered = answered(roles.primary);
    if roles.sync_set.is_empty() && !old_primary_answered {
        return None;
    }
    if !old_primary_answered && from_sync < answers_needed(roles) {
        return None;
    }
    let eligible = |a: &&FenceAnswer| a.node == roles.primary || roles.sync_set.contains(&a.node);
    let winner = answers.iter().filter(eligible).max_by(|a, b| {
        (a.last_epoch, a.last_lsn)
            .cmp(&(b.last_epoch, b.last_lsn))
            .then((a.node == prefer).cmp(&(b.node == prefer)))
            .then(b.node.cmp(&a.node))
    })?;
    // Everything committed before the last promotion lies within its floor: a log that
    // does not reach it may lack commits the new primary had not yet copied to its
    // members. Wait for a node whose log does.
    if (winner.last_epoch, winner.last_lsn) < roles.floor {
        return None;
    }
    let mut sync_set = Vec::new();
    let mut learners = Vec::new();
    let everyone = std::iter::once(roles.primary)
        .chain(roles.sync_set.iter().copied())
        .chain(roles.learners.iter().copied());
    for node in everyone {
        if node == winner.node {
            continue;
        }
        let was_sync = node == roles.primary || roles.sync_set.contains(&node);
        if was_sync && (answered(node) || alive(node)) {
            sync_set.push(node);
        } else {
            learners.push(node);
        }
    }
    // Under `block` the sync set never shrinks below `min_sync` by a failover either:
    // silent members stay in it, and commits wait for them (or for their removal,
    // which keeps the same rule).
    if !roles.policy.degrade {
        while sync_set.len() < roles.policy.min_sync
            && let Some(at) = learners
                .iter()
                .position(|&n| n == roles.primary || roles.sync_set.contains(&n))
        {
            sync_set.push(learners.remove(at));
        }
    }
    sync_set.sort_unstable();
    sync_set.dedup();
    learners.sort_unstable();
    learners.dedup();
    Some(Decision {
        primary: winner.node,
        incarnation: winner.incarnation,
        sync_set,
        learners,
        floor: (winner.last_epoch, winner.last_lsn),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::cluster_config::Policy;
    use crate::replication::StreamSettings;

    fn roles(sync: &[NodeId], k: Option<usize>) -> StreamRoles {
        StreamRoles {
            epoch: 5,
            primary: 1,
            incarnation: 9,
            sync_set: sync.to_vec(),
            learners: vec![9],
            degraded: false,
            version: 0,
            floor: (0, 0),
            db: None,
            policy: Policy {
                sync_acks: k,
                ..Policy::of(&StreamSettings::default(), 5000)
            },
        }
    }

    fn a(node: NodeId, last_epoch: u64, last_lsn: u64) -> FenceAnswer {
        FenceAnswer {
            node,
            incarnation: 100 + node as u64,
            last_epoch,
            last_lsn,
        }
    }

    /// (sync set, k, answers, expected primary or none), as a table.
    #[test]
    fn table() {
        type Row = (
            &'static [NodeId],
            Option<usize>,
            Vec<FenceAnswer>,
            Option<NodeId>,
        );
        let rows: Vec<Row> = vec![
            // k = all of {2, 3}: one sync answer suffices (it holds every commit).
            (&[2, 3], None, vec![a(3, 5, 10)], Some(3)),
            // k = 1 of {2, 3}: both must answer; the longer log wins.
            (&[2, 3], Some(1), vec![a(2, 5, 12)], None),
            (&[2, 3], Some(1), vec![a(2, 5, 12), a(3, 5, 10)], Some(2)),
            // Epoch before length: a newer epoch's shorter log wins.
            (&[2, 3], Some(1), vec![a(2, 4, 20), a(3, 5, 10)], Some(3)),
            // k = 2 of {2, 3, 4}: two answers needed.
            (&[2, 3, 4], Some(2), vec![a(4, 5, 3)], None),
            (&[2, 3, 4], Some(2), vec![a(4, 5, 3), a(2, 5, 3)], Some(2)),
            // The old primary's answer alone suffices, and it wins a tie.
            (&[2, 3], Some(1), vec![a(1, 5, 10)], Some(1)),
            (&[2, 3], None, vec![a(2, 5, 10), a(1, 5, 10)], Some(1)),
            // A learner's answer neither counts nor wins.
            (&[2, 3], Some(1), vec![a(9, 5, 99), a(2, 5, 1)], None),
            (&[2, 3], None, vec![a(9, 5, 99), a(2, 5, 1)], Some(2)),
            // No sync set: only the old primary can take over.
            (&[], None, vec![a(9, 5, 1)], None),
        ];
        for (i, (sync, k, answers, want)) in rows.into_iter().enumerate() {
            let got = decide(&roles(sync, k), &answers, |_| false, 1).map(|d| d.primary);
            assert_eq!(
                got, want,
                "row {i}: sync {sync:?} k {k:?} answers {answers:?}"
            );
        }
    }

    /// Found by the simulator: a primary promoted with a long log died before copying
    /// it; its sync set's only member had a short log. Promoting that member would have
    /// lost commits; the round waits for a log that reaches the floor.
    #[test]
    fn a_log_below_the_floor_never_wins() {
        let mut r = roles(&[2], None);
        r.floor = (2, 46);
        assert_eq!(decide(&r, &[a(2, 2, 3)], |_| false, 1), None);
        let d = decide(&r, &[a(2, 2, 3), a(1, 2, 46)], |_| false, 1).unwrap();
        assert_eq!(d.primary, 1);
        assert_eq!(d.floor, (2, 46));
    }

    #[test]
    fn new_roles_keep_live_members_in_sync() {
        let r = roles(&[2, 3, 4], None);
        let d = decide(&r, &[a(3, 5, 10)], |n| n == 2, 1).unwrap();
        assert_eq!(d.primary, 3);
        assert_eq!(d.incarnation, 103);
        // 2 is alive: kept in sync. 4 and the old primary are silent: learners.
        assert_eq!(d.sync_set, vec![2]);
        assert_eq!(d.learners, vec![1, 4, 9]);
    }

    #[test]
    fn degraded_stream_needs_every_member() {
        let mut r = roles(&[2, 3], None);
        r.degraded = true;
        assert_eq!(answers_needed(&r), 2);
        assert_eq!(decide(&r, &[a(2, 5, 10)], |_| true, 1), None);
        assert!(decide(&r, &[a(2, 5, 10), a(3, 5, 11)], |_| true, 1).is_some());
    }
}
