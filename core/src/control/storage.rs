//! The controller's raft log and state, in memory, with their persisted form.
//!
//! The log is short: the configuration is small, so after a few dozen applied commands
//! the log is compacted into a snapshot whose data is the configuration itself. The
//! whole state therefore persists as one small file, rewritten atomically by the
//! driver whenever raft asks for something to be made durable (see
//! [`ControlLog::encode`]); a node that restarts reads it back with
//! [`ControlLog::decode`].
//!
//! Persisted form: `LSCTL1\n`, then four length-prefixed protobuf blobs (hard state,
//! conf state, snapshot, then each entry), then a crc32c of everything before it. A
//! file that fails the check is refused with the reason, never half-loaded.

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::control::ControlError;

/// A persisted state that cannot be read back.
fn bad_file(reason: &str) -> ControlError {
    ControlError::decode("controller state file", reason)
}

const MAGIC: &[u8] = b"LSCTL1\n";

/// The controller's raft storage. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct ControlLog {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot: its data is an encoded `ClusterConfig`.
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

impl ControlLog {
    /// A new log of a cluster whose voters are `voters`.
    pub fn new(voters: &[u64]) -> ControlLog {
        let mut conf_state = ConfState::default();
        conf_state.set_voters(voters.to_vec());
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().set_conf_state(conf_state.clone());
        ControlLog {
            hard_state: HardState::default(),
            conf_state,
            snapshot,
            entries: Vec::new(),
        }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().get_index()
    }

    fn first(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.get_index())
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.set_commit(commit);
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Appends entries, replacing any conflicting suffix (raft's log matching).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let index = first.get_index();
        assert!(
            index > self.snapshot_index(),
            "entry {index} overwrites the snapshot"
        );
        assert!(index <= self.last() + 1, "entry {index} leaves a gap");
        let keep = (index - self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Installs a snapshot received from the leader.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        let index = meta.get_index();
        if index <= self.snapshot_index() {
            return;
        }
        self.entries.retain(|e| e.get_index() > index);
        if self
            .entries
            .first()
            .is_some_and(|e| e.get_index() != index + 1)
        {
            self.entries.clear();
        }
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.get_commit() < index {
            self.hard_state.set_commit(index);
        }
        if self.hard_state.get_term() < meta.get_term() {
            self.hard_state.set_term(meta.get_term());
        }
        self.snapshot = snapshot;
    }

    /// Compacts the log up to `index` (applied), keeping `data` (the configuration at
    /// `index`) as the snapshot.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) {
        if index <= self.snapshot_index() {
            return;
        }
        assert!(index <= self.last(), "compacting beyond the log");
        let term = self.term_of(index).expect("index is in the log");
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.set_index(index);
        meta.set_term(term);
        meta.set_conf_state(self.conf_state.clone());
        let drop = (index - self.snapshot_index()) as usize;
        self.entries.drain(..drop);
        self.snapshot = snapshot;
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return Some(self.snapshot.get_metadata().get_term());
        }
        if index < self.first() || index > self.last() {
            return None;
        }
        Some(self.entries[(index - self.first()) as usize].get_term())
    }

    /// The persisted form (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut blob = |bytes: Vec<u8>| {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        };
        blob(self.hard_state.write_to_bytes().expect("encodes"));
        blob(self.conf_state.write_to_bytes().expect("encodes"));
        blob(self.snapshot.write_to_bytes().expect("encodes"));
        for e in &self.entries {
            blob(e.write_to_bytes().expect("encodes"));
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ControlLog, ControlError> {
        if bytes.len() < MAGIC.len() + 4 || !bytes.starts_with(MAGIC) {
            return Err(bad_file("bad magic"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != crc {
            return Err(bad_file("fails its checksum"));
        }
        let mut rest = &body[MAGIC.len()..];
        let mut blobs = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(bad_file("ends inside a length"));
            }
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            if rest.len() < 4 + len {
                return Err(bad_file("ends inside a record"));
            }
            blobs.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        if blobs.len() < 3 {
            return Err(bad_file("its state is missing"));
        }
        let bad = |what: &'static str, e: protobuf::ProtobufError| ControlError::decode(what, e);
        let mut log = ControlLog {
            hard_state: HardState::parse_from_bytes(blobs[0]).map_err(|e| bad("hard state", e))?,
            conf_state: ConfState::parse_from_bytes(blobs[1]).map_err(|e| bad("conf state", e))?,
            snapshot: Snapshot::parse_from_bytes(blobs[2]).map_err(|e| bad("snapshot", e))?,
            entries: Vec::with_capacity(blobs.len() - 3),
        };
        for b in &blobs[3..] {
            let e = Entry::parse_from_bytes(b).map_err(|e| bad("entry", e))?;
            if e.get_index() != log.last() + 1 {
                let at = e.get_index();
                return Err(bad_file(&format!("its entries are not contiguous at {at}")));
            }
            log.entries.push(e);
        }
        Ok(log)
    }
}

impl Storage for ControlLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last() + 1,
            "entries up to {high} asked, log ends at {}",
            self.last()
        );
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in &self.entries[(low - self.first()) as usize..(high - self.first()) as usize] {
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.set_index(index);
        e.set_term(term);
        e.set_data(format!("cmd {index}").into_bytes().into());
        e
    }

    #[test]
    fn append_replaces_a_conflicting_suffix_and_compacts() {
        let mut log = ControlLog::new(&[1, 2, 3]);
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(2, 2)]);
        assert_eq!(log.last_index().unwrap(), 2);
        assert_eq!(log.term(2).unwrap(), 2);
        log.compact(1, b"config".to_vec());
        assert_eq!(log.first_index().unwrap(), 2);
        assert_eq!(log.term(1).unwrap(), 1);
        assert!(matches!(
            log.entries(1, 3, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let got = log
            .entries(2, 3, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got, vec![entry(2, 2)]);
        assert_eq!(log.snapshot(0, 2).unwrap().get_data(), b"config".as_slice());
    }

    #[test]
    fn persisted_form_round_trips_and_refuses_damage() {
        let mut log = ControlLog::new(&[1, 2, 3]);
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
        log.compact(1, b"config".to_vec());
        let mut hs = HardState::default();
        hs.set_term(2);
        hs.set_vote(3);
        hs.set_commit(3);
        log.set_hard_state(hs.clone());
        let bytes = log.encode();
        let back = ControlLog::decode(&bytes).unwrap();
        assert_eq!(back.hard_state, hs);
        assert_eq!(back.entries, log.entries);
        assert_eq!(back.snapshot, log.snapshot);
        assert_eq!(back.conf_state.get_voters(), &[1, 2, 3]);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(
            ControlLog::decode(&bad)
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        assert!(
            ControlLog::decode(b"junk")
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }
}
