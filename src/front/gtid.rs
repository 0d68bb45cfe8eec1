//! MariaDB global transaction ids and the position they describe.
//!
//! A GTID is `domain-server-sequence`. Within a replication domain the sequence numbers
//! of a primary in strict mode grow by one per transaction, so a [`GtidState`] (the
//! last GTID of every domain) is a position in the binlog that any server can resume
//! from (`@slave_connect_state`, `MASTER_GTID_WAIT`).
//!
//! Rule kept here: a stream's transactions are contiguous per domain. The next
//! transaction of a domain is the state's sequence number plus one (a domain the state
//! does not know starts at 1); one at or below the state's is a transaction the stream
//! already holds; one above is a gap. [`GtidState::check`] tells which.

use std::collections::BTreeMap;
use std::fmt;

/// Most replication domains a position may hold: it is carried in every record of a
/// front's stream.
pub const DOMAINS_MAX: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl std::str::FromStr for Gtid {
    type Err = String;

    fn from_str(s: &str) -> Result<Gtid, String> {
        let bad = || format!("{s:?} is not a GTID (domain-server-sequence)");
        let mut parts = s.trim().split('-');
        let (Some(d), Some(srv), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Gtid {
            domain: d.parse().map_err(|_| bad())?,
            server: srv.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Where a transaction stands against a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The next transaction of its domain.
    Next,
    /// At or below the position: already held.
    Held,
    /// Beyond the next: transactions are missing in between.
    Gap { expected: u64 },
}

/// The last GTID of every domain: a position in the binlog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GtidState {
    domains: BTreeMap<u32, Gtid>,
}

impl GtidState {
    pub fn new() -> GtidState {
        GtidState::default()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Gtid> {
        self.domains.values()
    }

    pub fn get(&self, domain: u32) -> Option<&Gtid> {
        self.domains.get(&domain)
    }

    /// Where `gtid` stands against this position.
    pub fn check(&self, gtid: &Gtid) -> Next {
        let last = self.domains.get(&gtid.domain).map_or(0, |g| g.seq);
        if gtid.seq <= last {
            Next::Held
        } else if gtid.seq == last + 1 {
            Next::Next
        } else {
            Next::Gap { expected: last + 1 }
        }
    }

    /// Moves the position past `gtid`. Fails when the position would hold more than
    /// [`DOMAINS_MAX`] domains.
    pub fn advance(&mut self, gtid: Gtid) -> Result<(), String> {
        if !self.domains.contains_key(&gtid.domain) && self.domains.len() >= DOMAINS_MAX {
            return Err(format!(
                "GTID {gtid}: more than {DOMAINS_MAX} replication domains"
            ));
        }
        self.domains.insert(gtid.domain, gtid);
        Ok(())
    }

    /// Whether this position is at or past `gtid` in its domain.
    pub fn reaches(&self, gtid: &Gtid) -> bool {
        self.domains
            .get(&gtid.domain)
            .is_some_and(|g| g.seq >= gtid.seq)
    }

    /// Parses `@@gtid_binlog_pos` / `@slave_connect_state` text: GTIDs separated by
    /// commas, at most one per domain.
    pub fn parse(text: &str) -> Result<GtidState, String> {
        let mut state = GtidState::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let gtid: Gtid = part.parse()?;
            if state.domains.contains_key(&gtid.domain) {
                return Err(format!("{text:?}: domain {} appears twice", gtid.domain));
            }
            state.advance(gtid)?;
        }
        Ok(state)
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl FromIterator<Gtid> for GtidState {
    fn from_iter<I: IntoIterator<Item = Gtid>>(iter: I) -> GtidState {
        GtidState {
            domains: iter.into_iter().map(|g| (g.domain, g)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(domain: u32, server: u32, seq: u64) -> Gtid {
        Gtid {
            domain,
            server,
            seq,
        }
    }

    #[test]
    fn positions_parse_and_print_as_mariadb_writes_them() {
        let s = GtidState::parse("0-1-100, 2-5-7").unwrap();
        assert_eq!(s.to_string(), "0-1-100,2-5-7");
        assert_eq!(s.get(2), Some(&g(2, 5, 7)));
        assert_eq!(GtidState::parse("").unwrap(), GtidState::new());
        for bad in ["0-1", "0-1-x", "a-1-2", "0-1-2-3", "0-1-5,0-2-6"] {
            assert!(GtidState::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn transactions_are_contiguous_per_domain() {
        let s = GtidState::parse("0-1-10,1-1-3").unwrap();
        // (gtid, expected)
        let table = [
            (g(0, 1, 11), Next::Next),
            (g(0, 2, 11), Next::Next), // a new primary continues the domain
            (g(0, 1, 10), Next::Held),
            (g(0, 1, 1), Next::Held),
            (g(0, 1, 13), Next::Gap { expected: 11 }),
            (g(1, 1, 4), Next::Next),
            (g(7, 1, 1), Next::Next), // a new domain starts at 1
            (g(7, 1, 2), Next::Gap { expected: 1 }),
        ];
        for (gtid, want) in table {
            assert_eq!(s.check(&gtid), want, "{gtid}");
        }
    }

    #[test]
    fn a_position_holds_a_bounded_number_of_domains() {
        let mut s = GtidState::new();
        for d in 0..DOMAINS_MAX as u32 {
            s.advance(g(d, 1, 1)).unwrap();
        }
        assert!(s.advance(g(DOMAINS_MAX as u32, 1, 1)).is_err());
        // An existing domain still moves.
        s.advance(g(0, 1, 2)).unwrap();
        assert!(s.reaches(&g(0, 9, 2)));
        assert!(!s.reaches(&g(0, 9, 3)));
    }
}
