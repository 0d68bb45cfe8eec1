//! Where a returning member's log and the primary's part: the rule behind `Truncate`.
//!
//! Every start of a primary takes a new epoch, so an (epoch, LSN) pair names one record
//! forever, and epochs never decrease along a log. Two logs that hold the same record
//! at LSN `n` therefore hold the same records up to `n`. A member whose last record is
//! (`e`, `n`) shares with the primary:
//! - everything up to `n`, when the primary holds the record (`e`, `n`);
//! - otherwise, everything up to the primary's last record written in an epoch no newer
//!   than `e` (the member's records beyond that come from an incarnation whose tail the
//!   primary lost before it became durable there, so they were never committed).
//!
//! The member cuts what lies beyond the shared prefix before it receives anything.

/// What the rule needs to know of the primary's log.
pub trait Epochs {
    type Error;
    /// The epoch of the primary's record `lsn`, when the primary can tell here.
    fn epoch_at(&mut self, lsn: u64) -> Result<Option<u64>, Self::Error>;
    /// The primary's last durable LSN written in an epoch up to `epoch`.
    fn last_up_to_epoch(&mut self, epoch: u64) -> Result<u64, Self::Error>;
}

/// The last LSN the member's log (ending at `member_last_lsn`, written in
/// `member_last_epoch`) and the primary's (ending at `primary_last_lsn`) hold
/// identically.
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
    Ok(member_last_lsn.min(primary.last_up_to_epoch(member_last_epoch)?))
}

#[cfg(test)]
mod tests {
    use super::{Epochs, shared_prefix};

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
        ];
        for ((lsn, epoch), want) in table {
            assert_eq!(
                run(&primary, lsn, epoch),
                want,
                "member at ({epoch}, {lsn})"
            );
        }
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
}
