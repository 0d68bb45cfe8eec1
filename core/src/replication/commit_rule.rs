//! The commit rule: which LSN may be acknowledged, given what each node holds.
//!
//! As raft-rs computes its commit index: sort the positions the sync-set members
//! acknowledged, take the k-th highest, and never go past what the primary itself holds
//! durably. `k = 0` (async) commits on the primary alone.

/// The highest LSN held by the primary (`local`) and by at least `k` of the members
/// whose acknowledged positions are `acked`. With fewer than `k` members, nothing beyond
/// what all of them hold can be proven, so the answer is 0 (nothing).
///
/// `scratch` is reused to sort without allocating.
pub fn commit_point(local: u64, acked: &[u64], k: usize, scratch: &mut Vec<u64>) -> u64 {
    if k == 0 {
        return local;
    }
    if acked.len() < k {
        return 0;
    }
    scratch.clear();
    scratch.extend_from_slice(acked);
    scratch.sort_unstable_by(|a, b| b.cmp(a));
    local.min(scratch[k - 1])
}

#[cfg(test)]
mod tests {
    use super::commit_point;

    #[test]
    fn table() {
        // (local durable, member acks, k, commit point)
        let table: &[(u64, &[u64], usize, u64)] = &[
            // async: the primary alone
            (10, &[], 0, 10),
            (10, &[3, 4], 0, 10),
            // strong, k = all
            (10, &[10, 10], 2, 10),
            (10, &[7, 10], 2, 7),
            (5, &[7, 10], 2, 5),
            (10, &[0, 10], 2, 0),
            // k = 1 of 2: the better secondary counts
            (10, &[3, 8], 1, 8),
            (6, &[3, 8], 1, 6),
            // k = 2 of 3: the second highest
            (10, &[9, 2, 7], 2, 7),
            (10, &[9, 9, 1], 2, 9),
            (4, &[9, 9, 1], 2, 4),
            // k = 3 of 3
            (10, &[9, 2, 7], 3, 2),
            // fewer members than k: nothing can be committed
            (10, &[9], 2, 0),
            (10, &[], 1, 0),
        ];
        let mut scratch = Vec::new();
        for &(local, acks, k, want) in table {
            assert_eq!(
                commit_point(local, acks, k, &mut scratch),
                want,
                "local {local} acks {acks:?} k {k}"
            );
        }
    }
}
