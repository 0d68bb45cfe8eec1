//! Where a returning member's log and the primary's part: the rule behind `Truncate`.
//!
//! Every start of a primary takes a new epoch, so an (epoch, LSN) pair names one record
//! forever, and epochs never decrease along a log. Two logs that hold the same record
//! at LSN `n` therefore hold the same records up to `n`. A member whose last record is
//! (`e`, `n`) shares with the primary:
//! - everything up to `n`, when the primary holds the record (`e`, `n`);
//! - otherwise, at most everything up to `L`, the primary's last record written in an
//!   epoch no newer than `e`, whose own epoch is `e'`. When `e' < e`, the member's
//!   records of epochs after `e'` come from a primary whose records this one never
//!   received (a tail lost in a crash, or a branch a failover left behind: never
//!   committed), and they may start before `L`: the member cuts after
//!   `min(L, its own last record of an epoch no newer than e')` ([`member_cut`]).
//!
//! The primary sends (`L`, `e'`) in `Truncate`; the member cuts and greets again, and
//! the rule runs again on its new last record until the two logs agree (each round cuts
//! at least one epoch off the member's tail).
//!
//! A member never cuts records of the asking primary's epoch (or a newer one): see
//! [`truncation_is_stale`].

/// What the rule needs to know of the primary's log.
pub trait Epochs {
    type Error;
    /// The epoch of the primary's record `lsn`, when the primary can tell here.
    fn epoch_at(&mut self, lsn: u64) -> Result<Option<u64>, Self::Error>;
    /// The primary's last durable LSN written in an epoch up to `epoch`.
    fn last_up_to_epoch(&mut self, epoch: u64) -> Result<u64, Self::Error>;
}

/// The last LSN the member's log (ending at `member_last_lsn`, written in
/// `member_last_epoch`) and the primary's (ending at `primary_last_lsn`) may hold
/// identically; when it is below `member_last_lsn` the member cuts with
/// [`member_cut`].
pub fn shared_prefix<P: Epochs>(
    member_last_lsn: u64,
    member_last_epoch: u64,
    primary_last_lsn: u64,
    primary: &mut P,
) -> Result<u64, P::Error> {
    if member_last_lsn == 0 {
        return Ok(0);
    }
    if member_last_lsn <= primary_last_lsn
        && primary.epoch_at(member_last_lsn)? == Some(member_last_epoch)
    {
        return Ok(member_last_lsn);
    }
    // The primary lacks the member's last record: the member keeps at most the records
    // before it, and `member_cut` takes off the rest of its newer epochs.
    Ok((member_last_lsn - 1).min(primary.last_up_to_epoch(member_last_epoch)?))
}

/// How the primary of `epoch` answers a member's greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The logs agree up to the member's last record, `agree`: send from `agree + 1`.
    Resume { agree: u64 },
    /// The member cuts after (`after_lsn`, `after_epoch`) and greets again.
    Truncate { after_lsn: u64, after_epoch: u64 },
    /// The primary no longer holds what follows the member's log (retention deleted
    /// it): the member starts over after (`base_lsn`, `base_epoch`), the record before
    /// the primary's first one.
    Rebase { base_lsn: u64, base_epoch: u64 },
}

/// The answer of the primary of `epoch`, whose log ends at `primary_last_lsn` and starts
/// after `base` (`Log::base`: set once retention deleted records), to a member whose log
/// ends with (`member_last_epoch`, `member_last_lsn`). Agreement below the base cannot
/// be checked (the primary no longer holds those records' epochs), so a member that ends
/// below it, or agrees with the primary only below it, starts over after it. An error is
/// one of the primary's log, not explained by the base.
pub fn answer<P: Epochs>(
    epoch: u64,
    base: Option<(u64, u64)>,
    member_last_lsn: u64,
    member_last_epoch: u64,
    primary_last_lsn: u64,
    primary: &mut P,
) -> Result<Answer, P::Error> {
    let mut agreement = || -> Result<Answer, P::Error> {
        let agree = shared_prefix(
            member_last_lsn,
            member_last_epoch,
            primary_last_lsn,
            primary,
        )?;
        if agree == member_last_lsn {
            return Ok(Answer::Resume { agree });
        }
        let agree_epoch = if agree == 0 {
            0
        } else {
            primary.epoch_at(agree)?.unwrap_or(0)
        };
        Ok(Answer::Truncate {
            after_lsn: agree,
            after_epoch: agree_epoch.min(epoch),
        })
    };
    let Some((base_lsn, base_epoch)) = base.filter(|&(lsn, _)| lsn > 0) else {
        return agreement();
    };
    let rebase = Answer::Rebase {
        base_lsn,
        base_epoch: base_epoch.min(epoch),
    };
    if member_last_lsn < base_lsn {
        return Ok(rebase);
    }
    match agreement() {
        Ok(Answer::Truncate { after_lsn, .. }) if after_lsn < base_lsn => Ok(rebase),
        Ok(a) => Ok(a),
        // Only below the base can the log not tell an epoch.
        Err(_) => Ok(rebase),
    }
}

/// Whether a `Truncate` from the primary of `epoch` is stale for a member whose log ends
/// with a record of `member_last_epoch`. Records of that epoch were appended after their
/// predecessors matched that primary's log, and a primary never loses records of its own
/// epoch (a restart takes a new one): the member's whole log is a prefix of the
/// primary's, and nothing needs cutting. Such a request answers an earlier greeting (a
/// frame of an old connection landing on the current one, as the transport's late
/// delivery allows); obeying it would cut records the member acknowledged, which may be
/// committed — and leave the only copy of them elsewhere. The member keeps its log and
/// greets again, so a primary that does wait for an answer decides anew.
pub fn truncation_is_stale(epoch: u64, member_last_epoch: u64) -> bool {
    member_last_epoch >= epoch
}

/// Where a member cuts when the primary asks it to keep records up to `after_lsn`, the
/// primary's record there being of `after_epoch`: `member_last_up_to` is the member's
/// last LSN written in an epoch no newer than `after_epoch`.
pub fn member_cut(after_lsn: u64, member_last_up_to: u64) -> u64 {
    after_lsn.min(member_last_up_to)
}

#[cfg(test)]
mod tests {
    use super::{Answer, Epochs, answer, member_cut, shared_prefix};

    /// The primary's log as the epoch of each record, LSN 1 first; `known` records are
    /// the ones whose epoch can be told.
    struct Log<'a> {
        epochs: &'a [u64],
        known: usize,
    }

    impl Epochs for Log<'_> {
        type Error = ();
        fn epoch_at(&mut self, lsn: u64) -> Result<Option<u64>, ()> {
            Ok(self
                .epochs
                .get(lsn as usize - 1)
                .copied()
                .filter(|_| lsn as usize <= self.known))
        }
        fn last_up_to_epoch(&mut self, epoch: u64) -> Result<u64, ()> {
            Ok(self.epochs[..self.known]
                .iter()
                .take_while(|&&x| x <= epoch)
                .count() as u64)
        }
    }

    fn run(primary: &[u64], member_last: u64, member_epoch: u64) -> u64 {
        let mut log = Log {
            epochs: primary,
            known: primary.len(),
        };
        shared_prefix(member_last, member_epoch, primary.len() as u64, &mut log).unwrap()
    }

    #[test]
    fn table() {
        // The primary wrote lsn 1..=5 in epoch 1, crashed with 6..=8 not durable, and
        // wrote 6..=9 in epoch 2.
        let primary = [1, 1, 1, 1, 1, 2, 2, 2, 2];
        // (member's last lsn, its epoch) -> shared prefix
        let table = [
            ((0, 0), 0),
            ((3, 1), 3), // behind, same records
            ((5, 1), 5),
            ((7, 2), 7), // behind in the new epoch
            ((9, 2), 9), // caught up
            ((8, 1), 5), // holds epoch 1's lost tail 6..=8: cut after 5
            ((6, 1), 5),
            ((12, 1), 5), // a longer lost tail
            ((11, 2), 9), // ahead within the primary's epoch (cannot happen; still safe)
            ((4, 3), 3),  // a branch of an epoch the primary never saw: cut at least its last
        ];
        for ((lsn, epoch), want) in table {
            assert_eq!(
                run(&primary, lsn, epoch),
                want,
                "member at ({epoch}, {lsn})"
            );
        }
    }

    /// A branch a failover left behind: the member holds epoch 3 from LSN 4 on, which the
    /// primary never received; the primary continued epoch 2's records up to 7. The
    /// rounds of Truncate and greeting converge on the true shared prefix, 3.
    #[test]
    fn a_branch_left_behind_is_cut_where_it_starts() {
        let primary = [1, 1, 2, 2, 2, 2, 2];
        let mut member = vec![1u64, 1, 2, 3, 3, 3, 3, 3, 3];
        for _ in 0..4 {
            let (last, epoch) = (member.len() as u64, *member.last().unwrap());
            let agree = run(&primary, last, epoch);
            if agree == last {
                break;
            }
            let after_epoch = primary[agree as usize - 1];
            let up_to = member.iter().take_while(|&&e| e <= after_epoch).count() as u64;
            member.truncate(member_cut(agree, up_to) as usize);
        }
        assert_eq!(member, vec![1, 1, 2]);
    }

    /// Found by the simulator: the member's whole log is a branch of epoch 3 that the
    /// primary (epoch 2's records up to 8) never saw, and it is shorter than the
    /// primary's log. Matching on length alone would keep it.
    #[test]
    fn a_short_branch_left_behind_is_cut_entirely() {
        let primary = [2, 2, 2, 2, 2, 2, 2, 2];
        let mut member = vec![3u64, 3, 3, 3];
        for _ in 0..4 {
            let (last, epoch) = (member.len() as u64, *member.last().unwrap_or(&0));
            let agree = run(&primary, last, epoch);
            if agree == last {
                break;
            }
            let after_epoch = if agree == 0 {
                0
            } else {
                primary[agree as usize - 1]
            };
            let up_to = member.iter().take_while(|&&e| e <= after_epoch).count() as u64;
            member.truncate(member_cut(agree, up_to) as usize);
        }
        assert!(member.is_empty(), "{member:?}");
    }

    /// Found by the simulator (seed 103169 with the controller): a Truncate of epoch 4
    /// that answered an old greeting landed after the member had cut its tail, greeted
    /// again and taken (and acknowledged) epoch 4's records; obeying it cut committed
    /// records. Only a member without records of the asking primary's epoch cuts.
    #[test]
    fn a_truncation_never_cuts_the_asking_primarys_own_epoch() {
        use super::truncation_is_stale;
        assert!(
            truncation_is_stale(4, 4),
            "the member holds epoch 4's records"
        );
        assert!(truncation_is_stale(4, 5), "a newer primary's records");
        assert!(
            !truncation_is_stale(4, 3),
            "an older epoch's tail may be cut"
        );
        assert!(!truncation_is_stale(4, 0), "an empty log");
    }

    #[test]
    fn an_epoch_not_known_here_falls_back_to_the_durable_search() {
        // Records 5..=10 are not durable here yet: the member's record 6 cannot be
        // matched, so only the durable part known to agree is kept.
        let mut log = Log {
            epochs: &[1, 1, 1, 1, 3, 3, 3, 3, 3, 3],
            known: 4,
        };
        assert_eq!(shared_prefix(6, 3, 10, &mut log), Ok(4));
    }

    /// A primary's log whose records before `first` retention deleted: their epochs
    /// cannot be told (an error, as the log's out-of-range read), but for the base
    /// record's, just before `first`, which the log keeps.
    struct Retained<'a> {
        epochs: &'a [u64],
        first: u64,
    }

    impl Epochs for Retained<'_> {
        type Error = u64;
        fn epoch_at(&mut self, lsn: u64) -> Result<Option<u64>, u64> {
            if lsn + 1 < self.first {
                return Err(lsn);
            }
            Ok(self.epochs.get(lsn as usize - 1).copied())
        }
        fn last_up_to_epoch(&mut self, epoch: u64) -> Result<u64, u64> {
            let held = self.epochs[self.first as usize - 1..]
                .iter()
                .take_while(|&&x| x <= epoch)
                .count() as u64;
            let base = self.first - 1;
            Ok(match held {
                0 if base > 0 && self.epochs[base as usize - 1] <= epoch => base,
                0 => 0,
                _ => base + held,
            })
        }
    }

    #[test]
    fn a_greeting_is_answered_by_resuming_truncating_or_starting_over() {
        // Primary of epoch 4: lsn 1..=5 of epoch 1, 6..=9 of epoch 3.
        let primary = [1, 1, 1, 1, 1, 3, 3, 3, 3];
        let ask = |base: Option<(u64, u64)>, first, last, last_epoch| {
            let mut log = Retained {
                epochs: &primary,
                first,
            };
            answer(4, base, last, last_epoch, 9, &mut log)
        };
        // Without retention: a prefix resumes, a foreign tail is cut.
        assert_eq!(ask(None, 1, 7, 3), Ok(Answer::Resume { agree: 7 }));
        assert_eq!(ask(None, 1, 0, 0), Ok(Answer::Resume { agree: 0 }));
        assert_eq!(
            ask(None, 1, 7, 2),
            Ok(Answer::Truncate {
                after_lsn: 5,
                after_epoch: 1
            })
        );
        // Retention deleted 1..=3 (base: lsn 3 of epoch 1).
        let base = Some((3, 1));
        let rebase = Ok(Answer::Rebase {
            base_lsn: 3,
            base_epoch: 1,
        });
        assert_eq!(ask(base, 4, 8, 3), Ok(Answer::Resume { agree: 8 }));
        assert_eq!(ask(base, 4, 3, 1), Ok(Answer::Resume { agree: 3 }));
        assert_eq!(
            ask(base, 4, 7, 2),
            Ok(Answer::Truncate {
                after_lsn: 5,
                after_epoch: 1
            })
        );
        // The member ends before the base: nothing to compare, it starts over.
        assert_eq!(ask(base, 4, 2, 1), rebase);
        assert_eq!(ask(base, 4, 0, 0), rebase);
        // The logs could agree only below the base: it starts over.
        let base = Some((5, 1));
        assert_eq!(
            ask(base, 6, 7, 2),
            Ok(Answer::Truncate {
                after_lsn: 5,
                after_epoch: 1
            })
        );
        assert_eq!(
            ask(Some((6, 3)), 7, 7, 2),
            Ok(Answer::Rebase {
                base_lsn: 6,
                base_epoch: 3
            })
        );
        // A base epoch newer than the asking primary's is capped at its epoch.
        let mut log = Retained {
            epochs: &primary,
            first: 7,
        };
        assert_eq!(
            answer(2, Some((6, 3)), 1, 1, 9, &mut log),
            Ok(Answer::Rebase {
                base_lsn: 6,
                base_epoch: 2
            })
        );
        // Without a base, a record the log cannot tell is an error of the log.
        assert_eq!(ask(None, 4, 2, 1), Err(2));
    }
}
