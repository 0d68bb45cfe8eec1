//! The node's [`Coordinator`]: the controller's configuration as the control loop last
//! applied it, and the way to the controller, for the fronts, the rejoin agents and
//! the admin endpoint.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, OnceLock};

use crate::control::{ClusterConfig, Request};
use crate::front::coordinator::{Coordinator, DbView};
use crate::server::control_loop::ToControl;

#[derive(Default)]
pub struct NodeCoordinator {
    config: Mutex<Option<Arc<ClusterConfig>>>,
    control: OnceLock<SyncSender<ToControl>>,
}

impl NodeCoordinator {
    /// The control loop applied `config`.
    pub fn publish(&self, config: &ClusterConfig) {
        let mut c = self.config.lock().expect("coordinator lock");
        if c.as_ref().is_none_or(|old| old.version != config.version) {
            *c = Some(Arc::new(config.clone()));
        }
    }

    /// The version of the configuration published last.
    pub fn version(&self) -> Option<u64> {
        self.config
            .lock()
            .expect("coordinator lock")
            .as_ref()
            .map(|c| c.version)
    }

    /// Connects the coordinator to the node's control loop (once).
    pub fn connect(&self, control: SyncSender<ToControl>) {
        let _ = self.control.set(control);
    }
}

impl Coordinator for NodeCoordinator {
    fn view(&self, stream: &str) -> Option<DbView> {
        let config = self.config.lock().expect("coordinator lock").clone()?;
        DbView::of(&config, stream)
    }

    fn ask(&self, request: Request) -> bool {
        self.control
            .get()
            .is_some_and(|c| c.try_send(ToControl::Request(request)).is_ok())
    }
}
