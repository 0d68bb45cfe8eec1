//! Controllers of a three-node cluster on an instant in-memory network, with the
//! streams' side played by a table of log ends.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::control::cluster_config::{Policy, StreamRoles};
use crate::control::message::StreamStatus;
use crate::replication::StreamSettings;

/// What a node's stream holds, as its controller's status and fence answers say.
#[derive(Clone, Copy, Debug)]
struct LogEnd {
    fenced: u64,
    last_epoch: u64,
    last_lsn: u64,
}

struct Cluster {
    genesis: ClusterConfig,
    ctrls: BTreeMap<NodeId, Controller>,
    persisted: BTreeMap<NodeId, Vec<u8>>,
    incarnation: BTreeMap<NodeId, u64>,
    logs: BTreeMap<NodeId, LogEnd>,
    queue: VecDeque<(NodeId, NodeId, ControlMsg)>,
    events: Vec<String>,
    now: u64,
    next_incarnation: u64,
}

fn genesis(sync_acks: Option<usize>) -> ClusterConfig {
    let roles = StreamRoles {
        epoch: 1,
        primary: 1,
        incarnation: 0,
        sync_set: vec![2, 3],
        learners: vec![],
        degraded: false,
        version: 0,
        floor: (0, 0),
        db: None,
        policy: Policy::of(
            &StreamSettings {
                sync_acks,
                ..StreamSettings::default()
            },
            5000,
        ),
    };
    ClusterConfig::genesis(
        (1..=3).map(|n| (n, format!("node{n}"))).collect(),
        vec![1, 2, 3],
        [("s".to_string(), roles)].into(),
    )
}

impl Cluster {
    fn new(sync_acks: Option<usize>) -> Cluster {
        let mut c = Cluster {
            genesis: genesis(sync_acks),
            ctrls: BTreeMap::new(),
            persisted: BTreeMap::new(),
            incarnation: BTreeMap::new(),
            logs: BTreeMap::new(),
            queue: VecDeque::new(),
            events: Vec::new(),
            now: 0,
            next_incarnation: 100,
        };
        for n in 1..=3 {
            c.logs.insert(
                n,
                LogEnd {
                    fenced: 1,
                    last_epoch: 1,
                    last_lsn: 10,
                },
            );
            c.start(n);
        }
        c
    }

    fn start(&mut self, n: NodeId) {
        let persisted = self
            .persisted
            .get(&n)
            .map(|b| ControlLog::decode(b).expect("persisted state decodes"));
        let ctrl = Controller::new(
            n,
            self.genesis.clone(),
            persisted,
            ControllerSettings::default(),
            u64::from(n) * 7919,
        )
        .unwrap();
        self.next_incarnation += 1;
        self.incarnation.insert(n, self.next_incarnation);
        self.ctrls.insert(n, ctrl);
    }

    fn crash(&mut self, n: NodeId) {
        self.ctrls.remove(&n);
    }

    fn status(&self, n: NodeId) -> NodeStatus {
        let log = self.logs[&n];
        let ctrl = &self.ctrls[&n];
        let roles = &ctrl.config().streams["s"];
        NodeStatus {
            node: n,
            incarnation: self.incarnation[&n],
            streams: vec![StreamStatus {
                stream: "s".into(),
                epoch: log.fenced,
                primary: roles.primary == n && roles.incarnation == self.incarnation[&n],
                last_epoch: log.last_epoch,
                last_lsn: log.last_lsn,
                durable_lsn: log.last_lsn,
                commit_lsn: 0,
            }],
        }
    }

    fn handle(&mut self, n: NodeId, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send { to, msg } => self.queue.push_back((n, to, msg)),
                Output::Persist(bytes) => {
                    self.persisted.insert(n, bytes);
                }
                Output::Config(_) => {}
                Output::Event(e) => self.events.push(format!("node {n}: {e}")),
            }
        }
    }

    fn deliver(&mut self) {
        while let Some((from, to, msg)) = self.queue.pop_front() {
            if !self.ctrls.contains_key(&to) || !self.ctrls.contains_key(&from) {
                continue;
            }
            match msg {
                ControlMsg::Fence { stream, epoch } => {
                    let log = self.logs.get_mut(&to).unwrap();
                    log.fenced = log.fenced.max(epoch);
                    let log = *log;
                    self.queue.push_back((
                        to,
                        from,
                        ControlMsg::Fenced {
                            stream,
                            epoch,
                            node: to,
                            incarnation: self.incarnation[&to],
                            last_epoch: log.last_epoch,
                            last_lsn: log.last_lsn,
                        },
                    ));
                }
                ControlMsg::Drain {
                    stream,
                    epoch,
                    to: target,
                } => {
                    // The target already holds the primary's whole log.
                    let last_lsn = self.logs[&to].last_lsn;
                    self.queue.push_back((
                        to,
                        from,
                        ControlMsg::Drained {
                            stream,
                            epoch,
                            to: target,
                            last_lsn,
                        },
                    ));
                }
                msg => {
                    let ctrl = self.ctrls.get_mut(&to).unwrap();
                    ctrl.on_message(from, msg);
                    let out = ctrl.poll();
                    self.handle(to, out);
                }
            }
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            let nodes: Vec<NodeId> = self.ctrls.keys().copied().collect();
            for n in nodes {
                let status = self.status(n);
                let ctrl = self.ctrls.get_mut(&n).unwrap();
                ctrl.set_status(status);
                ctrl.on_tick(self.now);
                let out = ctrl.poll();
                self.handle(n, out);
            }
            self.deliver();
        }
    }

    fn run_until(&mut self, max_ms: u64, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..max_ms {
            if done(self) {
                return;
            }
            self.run(1);
        }
        panic!(
            "not reached in {max_ms} ms; events:\n{}",
            self.events.join("\n")
        );
    }

    fn roles(&self, n: NodeId) -> &StreamRoles {
        &self.ctrls[&n].config().streams["s"]
    }

    /// Every live node applied the same roles of the stream.
    fn agreed(&self) -> Option<StreamRoles> {
        let mut all = self.ctrls.keys().map(|&n| self.roles(n).clone());
        let first = all.next()?;
        all.all(|r| r == first).then_some(first)
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.ctrls
            .iter()
            .filter(|(_, c)| c.is_leader())
            .map(|(&n, _)| n)
            .collect()
    }
}

/// The cluster after the genesis primary was promoted in epoch 2.
fn started() -> Cluster {
    started_with(None)
}

fn started_with(sync_acks: Option<usize>) -> Cluster {
    let mut c = Cluster::new(sync_acks);
    c.run_until(2_000, |c| c.agreed().is_some_and(|r| r.epoch == 2));
    c
}

#[test]
fn one_leader_and_the_genesis_primary_is_promoted_in_a_new_epoch() {
    let c = started();
    assert_eq!(c.leaders().len(), 1, "{:?}", c.leaders());
    let r = c.agreed().unwrap();
    // Every log ends alike: the old primary keeps its role on the tie.
    assert_eq!(r.primary, 1);
    assert_eq!(r.incarnation, c.incarnation[&1]);
    assert_eq!(r.sync_set, vec![2, 3]);
    // Every node answered the fence of epoch 2.
    assert!(c.logs.values().all(|l| l.fenced == 2), "{:?}", c.logs);
}

#[test]
fn a_silent_primary_is_replaced_by_the_longest_log() {
    // k = 1 of {2, 3}: both members must answer, and the longer log wins.
    let mut c = started_with(Some(1));
    c.logs.get_mut(&2).unwrap().last_lsn = 40;
    c.logs.get_mut(&3).unwrap().last_lsn = 50;
    c.crash(1);
    let crashed_at = c.now;
    c.run_until(2_000, |c| c.agreed().is_some_and(|r| r.epoch == 3));
    let r = c.agreed().unwrap();
    assert_eq!(r.primary, 3);
    assert_eq!(r.incarnation, c.incarnation[&3]);
    assert_eq!(r.sync_set, vec![2]);
    assert_eq!(r.learners, vec![1]);
    // Election (node 1 may have led the controller), detection and one fence round.
    assert!(c.now - crashed_at < 1_000, "took {} ms", c.now - crashed_at);
}

#[test]
fn a_restarted_primary_is_promoted_again_in_a_newer_epoch() {
    let mut c = started();
    c.crash(1);
    c.start(1);
    let r = {
        c.run_until(2_000, |c| c.agreed().is_some_and(|r| r.epoch >= 3));
        c.agreed().unwrap()
    };
    // Its log is as long as any: it keeps the role, as a new process.
    assert_eq!(r.primary, 1);
    assert_eq!(r.incarnation, c.incarnation[&1]);
}

#[test]
fn members_fenced_by_a_round_that_never_finished_get_a_new_round() {
    let mut c = started();
    let before = c.agreed().unwrap().epoch;
    // A round's leader fenced node 2 and lost its place before the primary heard the
    // fence: the primary still runs as the promoted process, but node 2 refuses it.
    c.logs.get_mut(&2).unwrap().fenced = before + 1;
    c.run_until(2_000, |c| c.agreed().is_some_and(|r| r.epoch > before + 1));
    let r = c.agreed().unwrap();
    assert_eq!(r.epoch, before + 2, "above the promise, once");
    assert!(
        c.events.iter().any(|e| e.contains("node 2 promised epoch")),
        "{:?}",
        c.events
    );
}

#[test]
fn removal_waits_for_the_configuration_and_restore_undoes_it() {
    let mut c = started();
    let req = |version, member| Request::Remove {
        stream: "s".into(),
        epoch: 2,
        version,
        member,
    };
    let v = c.roles(1).version;
    c.ctrls.get_mut(&1).unwrap().request(req(v, 3));
    let out = c.ctrls.get_mut(&1).unwrap().poll();
    c.handle(1, out);
    c.run_until(500, |c| c.agreed().is_some_and(|r| r.sync_set == vec![2]));
    assert_eq!(c.agreed().unwrap().learners, vec![3]);
    // Block: the last member is not removed (min_sync = 1).
    let v = c.roles(2).version;
    c.ctrls.get_mut(&2).unwrap().request(req(v, 2));
    c.run(300);
    assert_eq!(c.agreed().unwrap().sync_set, vec![2]);
    assert!(
        c.events.iter().any(|e| e.contains("below min_sync")),
        "{:?}",
        c.events
    );
    // A stale request (older epoch, or older version) changes nothing either.
    let v = c.roles(3).version;
    for (epoch, version) in [(1, v), (2, v - 1)] {
        c.ctrls.get_mut(&3).unwrap().request(Request::Restore {
            stream: "s".into(),
            epoch,
            version,
            member: 3,
        });
        c.run(300);
        assert_eq!(c.agreed().unwrap().sync_set, vec![2]);
    }
    c.ctrls.get_mut(&3).unwrap().request(Request::Restore {
        stream: "s".into(),
        epoch: 2,
        version: v,
        member: 3,
    });
    c.run_until(500, |c| {
        c.agreed().is_some_and(|r| r.sync_set == vec![2, 3])
    });
}

#[test]
fn switchover_moves_the_primary_to_the_target() {
    let mut c = started();
    c.ctrls.get_mut(&3).unwrap().request(Request::Switchover {
        stream: "s".into(),
        to: 2,
    });
    c.run_until(1_000, |c| c.agreed().is_some_and(|r| r.epoch == 3));
    let r = c.agreed().unwrap();
    assert_eq!(r.primary, 2);
    assert_eq!(r.sync_set, vec![1, 3]);
    // A switchover to a node outside the sync set is refused.
    let leader = c.leaders()[0];
    c.ctrls
        .get_mut(&leader)
        .unwrap()
        .request(Request::Switchover {
            stream: "s".into(),
            to: 9,
        });
    let out = c.ctrls.get_mut(&leader).unwrap().poll();
    c.handle(leader, out);
    assert!(
        c.events.iter().any(|e| e.contains("refused")),
        "{:?}",
        c.events
    );
}

#[test]
fn every_node_restarts_from_its_persisted_state() {
    let mut c = started();
    let before = c.agreed().unwrap();
    for n in 1..=3 {
        c.crash(n);
    }
    for n in 1..=3 {
        c.start(n);
        assert_eq!(c.roles(n), &before, "node {n} lost its configuration");
    }
    // Every process is new: the primary is promoted again, nothing else is lost.
    c.run_until(2_000, |c| c.agreed().is_some_and(|r| r.epoch == 3));
    assert_eq!(c.agreed().unwrap().primary, 1);
}

#[test]
fn the_log_is_compacted_into_a_snapshot_that_a_late_node_installs() {
    let mut c = started();
    c.crash(3);
    // Enough applied commands to compact the log past what node 3 has.
    for i in 0..81 {
        let member = 2;
        c.run_until(1_000, |c| c.leaders().len() == 1);
        let leader = c.leaders()[0];
        let version = c.roles(leader).version;
        let r = if i % 2 == 0 {
            Request::Remove {
                stream: "s".into(),
                epoch: 2,
                version,
                member,
            }
        } else {
            Request::Restore {
                stream: "s".into(),
                epoch: 2,
                version,
                member,
            }
        };
        c.ctrls.get_mut(&leader).unwrap().request(r);
        // Apart by more than the window in which a repeated request is proposed once.
        c.run(120);
    }
    let live = c.roles(1).clone();
    c.start(3);
    assert_eq!(live.sync_set, vec![3]);
    c.run_until(2_000, |c| c.roles(3).sync_set == c.roles(1).sync_set);
    assert_eq!(c.roles(3).epoch, live.epoch);
    assert!(c.ctrls[&3].config().version > 64);
    assert_eq!(c.ctrls[&3].config(), c.ctrls[&1].config());
    assert!(
        c.ctrls[&1]
            .raw
            .store()
            .snapshot_ref()
            .get_metadata()
            .get_index()
            > 0
    );
}

#[test]
fn a_node_joins_as_a_learner_of_the_raft_group_and_of_every_stream() {
    let mut c = started();
    let leader = c.leaders()[0];
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    // Asked at a follower: forwarded to the leader.
    c.ctrls.get_mut(&follower).unwrap().request(Request::Join {
        node: 4,
        addr: "node4".into(),
    });
    let out = c.ctrls.get_mut(&follower).unwrap().poll();
    c.handle(follower, out);
    c.run_until(2_000, |c| {
        (1..=3).all(|n| c.ctrls[&n].config().members.get(&4).map(String::as_str) == Some("node4"))
    });
    let joined = c.ctrls[&leader].config().clone();
    assert_eq!(joined.streams["s"].learners, vec![4]);
    assert_eq!(joined.voters, vec![1, 2, 3]);
    // A second request for the same node changes nothing; another address is refused.
    let version = joined.version;
    for addr in ["node4", "elsewhere"] {
        c.ctrls.get_mut(&leader).unwrap().request(Request::Join {
            node: 4,
            addr: addr.into(),
        });
    }
    c.run(100);
    assert_eq!(c.ctrls[&leader].config().members[&4], "node4");
    assert!(
        c.events.iter().any(|e| e.contains("is a member at node4")),
        "{:?}",
        c.events
    );
    assert_eq!(c.ctrls[&leader].config().version, version);

    // The new node starts from the configuration it was answered with and no raft
    // state; the leader brings it up to date (a snapshot: the log was compacted at
    // the join) and it follows every later change.
    c.genesis = joined;
    c.logs.insert(
        4,
        LogEnd {
            fenced: 2,
            last_epoch: 0,
            last_lsn: 0,
        },
    );
    c.start(4);
    c.run_until(2_000, |c| {
        c.ctrls[&4].leader() == Some(leader) && c.ctrls[&4].config() == c.ctrls[&leader].config()
    });
    assert!(!c.ctrls[&4].is_leader());
    // A later change (a failover) reaches the learner too.
    let primary = c.roles(leader).primary;
    c.crash(primary);
    c.run_until(5_000, |c| {
        c.ctrls[&4].config().streams["s"].epoch > 2
            && c.leaders().len() == 1
            && c.ctrls[&4].config() == c.ctrls[&c.leaders()[0]].config()
    });
    // It restarts from its persisted state and still follows.
    c.crash(4);
    c.start(4);
    c.run_until(2_000, |c| {
        c.leaders().first().is_some_and(|&l| {
            c.ctrls[&4].config() == c.ctrls[&l].config() && c.ctrls[&4].leader() == Some(l)
        })
    });
}
