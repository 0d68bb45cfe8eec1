//! The cluster's controller in the simulator: every node runs the production
//! [`Controller`], its messages travel the simulated network as `Control` frames sent
//! as datagrams (lost, delayed, duplicated like any other), its persisted state
//! survives a crash, and its committed configurations, fences and the primaries'
//! requests reach the nodes' stream drivers as production's control loop passes them.
//!
//! A process gets a new incarnation at every start, so a restarted primary never
//! resumes its role: the controller fences its epoch and promotes a node again.

use crate::control::{
    ClusterConfig, ControlLog, ControlMsg, Controller, ControllerSettings, NodeStatus, Output,
    Policy, Request, StreamRoles,
};
use crate::replication::NodeId;
use crate::sim::Sim;
use crate::sim::host::Out;
use crate::sim::network::NO_CONN;
use crate::sim::node::Config;
use crate::wire::{Message, RequestId};

/// One node's controller and what survives its crashes.
pub struct NodeControl {
    pub ctrl: Option<Controller>,
    pub persisted: Option<Vec<u8>>,
    /// How far this process's clock is ahead of the simulation's, drawn at its start
    /// below one raft tick: real processes tick out of phase with each other, and
    /// clocks that tick in phase make raft's elections tie far more often (two
    /// candidates timing out in the same tick split the votes of four voters).
    pub clock_offset_ms: u64,
}

impl Sim {
    /// The configuration every node's file describes: the one of the start, never a
    /// node's current one.
    pub(crate) fn genesis_of(
        config: &Config,
        nodes: usize,
        settings: &crate::replication::StreamSettings,
    ) -> ClusterConfig {
        let n = nodes as NodeId;
        let roles = StreamRoles {
            epoch: config.epoch,
            primary: config.primary,
            incarnation: 0,
            sync_set: config.sync_set.clone(),
            learners: config.learners.clone(),
            degraded: false,
            policy: Policy::of(settings, 5000),
            version: 0,
            floor: (0, 0),
            db: None,
        };
        ClusterConfig::genesis(
            (0..n).map(|id| (id, format!("n{id}"))).collect(),
            (0..n).collect(),
            [("s".to_string(), roles)].into(),
        )
    }

    /// A node's process starts: a new incarnation and its controller from its
    /// persisted state.
    pub(crate) fn start_control(&mut self, id: NodeId) {
        let Some(control) = self.control.as_mut() else {
            return;
        };
        let incarnation = self.rng.next_u64() | 1;
        self.nodes[id as usize].incarnation = incarnation;
        let clock_offset_ms = self
            .rng
            .range(0, self.opts.controller_timing.raft_tick_ms - 1);
        let persisted = control[id as usize]
            .persisted
            .as_ref()
            .map(|b| ControlLog::decode(b).expect("the controller's state decodes"));
        let genesis = self
            .genesis
            .clone()
            .expect("a controlled run has a genesis");
        let settings = ControllerSettings {
            plant_fence_short: self.opts.plant == Some(crate::sim::Bug::FenceShort),
            ..self.opts.controller_timing.clone()
        };
        let ctrl = Controller::new(id, genesis, persisted, settings, incarnation)
            .expect("a valid controller");
        // The configuration restored from the persisted state applies first, as in
        // production's control loop.
        let config = stream_config(ctrl.config());
        let control = &mut self.control.as_mut().expect("checked")[id as usize];
        control.ctrl = Some(ctrl);
        control.clock_offset_ms = clock_offset_ms;
        self.apply_config(id, config);
    }

    pub(crate) fn crash_control(&mut self, id: NodeId) {
        if let Some(control) = self.control.as_mut() {
            control[id as usize].ctrl = None;
        }
    }

    /// Every up node's controller: its status, the time, and what it asks for.
    pub(crate) fn tick_control(&mut self) {
        let Some(control) = self.control.as_ref() else {
            return;
        };
        let now = self.now;
        for id in 0..control.len() {
            let node = &self.nodes[id];
            let Some(stream) = node.status() else {
                continue;
            };
            let status = NodeStatus {
                node: id as NodeId,
                incarnation: node.incarnation,
                streams: vec![stream],
            };
            let control = &mut self.control.as_mut().expect("checked")[id];
            let offset = control.clock_offset_ms;
            let Some(ctrl) = control.ctrl.as_mut() else {
                continue;
            };
            ctrl.set_status(status);
            ctrl.on_tick(now + offset);
            self.control_outputs(id as NodeId);
        }
    }

    /// A node's primary asked for a change of its members.
    pub(crate) fn control_requests(&mut self, from: NodeId, requests: Vec<Request>) {
        let Some(control) = self.control.as_mut() else {
            return;
        };
        if let Some(ctrl) = control[from as usize].ctrl.as_mut() {
            for r in requests {
                ctrl.request(r);
            }
        }
    }

    /// A control message arrived at `to`.
    pub(crate) fn deliver_control(&mut self, from: NodeId, to: NodeId, bytes: &[u8]) {
        if self.control.is_none() || !self.nodes[to as usize].up() {
            return;
        }
        let msg = ControlMsg::decode(bytes).expect("simulated control messages decode");
        let now = self.now;
        match msg {
            ControlMsg::Fence { epoch, .. } => {
                // The answer (once the epoch is stored) goes back to `from`.
                let mut out = Out::default();
                self.nodes[to as usize]
                    .with(now, &self.net, &mut out, |p, cx| p.fence(cx, epoch, from));
                self.route(to, out);
            }
            ControlMsg::Drain {
                epoch, to: target, ..
            } => {
                let mut out = Out::default();
                self.nodes[to as usize].with(now, &self.net, &mut out, |p, cx| {
                    p.drain(cx, epoch, target, from)
                });
                self.route(to, out);
            }
            other => {
                if let Some(ctrl) = self.control.as_mut().expect("checked")[to as usize]
                    .ctrl
                    .as_mut()
                {
                    ctrl.on_message(from, other);
                }
            }
        }
        self.control_outputs(to);
    }

    /// Sends a controller message from `from` to `to` as a `Control` frame.
    pub(crate) fn send_control(&mut self, from: NodeId, to: NodeId, msg: ControlMsg) {
        let bytes = msg.encode();
        if from == to {
            return self.deliver_control(from, to, &bytes);
        }
        let mut frame = Vec::with_capacity(bytes.len() + 64);
        Message::Control { message: &bytes }
            .encode_into(RequestId(0), &mut frame)
            .expect("a control message fits a frame");
        let rates = if self.quiet() {
            crate::sim::network::NetFaults::NONE
        } else {
            self.rates.net
        };
        let now = self.now;
        self.net.send(
            now,
            &mut self.rng,
            rates,
            &mut self.faults,
            from,
            to,
            NO_CONN,
            frame,
        );
    }

    fn control_outputs(&mut self, id: NodeId) {
        // Outputs may cause more (a fence of this node itself): bounded rounds.
        for _ in 0..8 {
            let Some(ctrl) = self.control.as_mut().expect("checked")[id as usize]
                .ctrl
                .as_mut()
            else {
                return;
            };
            let outputs = ctrl.poll();
            if outputs.is_empty() {
                return;
            }
            for o in outputs {
                match o {
                    Output::Send { to, msg } => self.send_control(id, to, msg),
                    Output::Persist(bytes) => {
                        self.control.as_mut().expect("checked")[id as usize].persisted =
                            Some(bytes);
                    }
                    Output::Config(c) => self.apply_config(id, stream_config(&c)),
                    Output::Event(e) => self.event(format!("n{id} control: {e}")),
                }
            }
        }
    }
}

/// The simulated stream's configuration in a committed cluster configuration.
fn stream_config(c: &ClusterConfig) -> Config {
    let roles = &c.streams["s"];
    Config {
        epoch: roles.epoch,
        primary: roles.primary,
        sync_set: roles.sync_set.clone(),
        learners: roles.learners.clone(),
        incarnation: Some(roles.incarnation),
        degraded: roles.degraded,
        version: roles.version,
    }
}
