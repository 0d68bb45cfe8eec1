//! Which process serves each node id, as this node sees it: the incarnation behind
//! every incoming control connection.
//!
//! Every node's controller dials every other node and greets with `ControlHello
//! {node_id, incarnation}` (a new incarnation per process). The acceptor asks
//! [`Identities::claim`] before it answers: the node id is given to the greeting
//! process unless another incarnation of that id is still live and reachable here.
//!
//! Live and reachable: the other incarnation still has an open control connection to
//! this node *and* is heard on it (statuses come every 20 ms) within
//! [`IDENTITY_CONFIRM_MS`] after the new greeting arrived. So:
//! - a node restarted after its old process died (`kill -9`, a crash, a stop) is
//!   accepted at once: the kernel closed the dead process's connections, at the same
//!   address or another;
//! - an old process that is silent (stopped, cut off, its machine gone without
//!   closing its connections) loses the id after the window: its connections here are
//!   closed, and it is refused in turn if it comes back while the new one is live;
//! - a second process with the id of a live node is refused with `Error (id-in-use)`
//!   naming where the id is served, and one line in this node's log; the refused
//!   process stops (see `control_loop::dial` and `lifecycle::refuse_if_running`).
//!
//! A greeting with this node's own id and another incarnation is refused the same way.
//! On an accepted connection, every status and fence answer must name the greeting's
//! node and incarnation (`control_link`).
//!
//! Bounds: one control connection per node id (a new one of the same incarnation
//! replaces the older, which is closed), at most [`CONTROL_LINKS_MAX`] node ids with
//! open connections, and at most [`CONTROL_LINKS_NONMEMBER_MAX`] of them not members
//! of the cluster's configuration, so that members always find room.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::constants::{CONTROL_LINKS_MAX, CONTROL_LINKS_NONMEMBER_MAX, IDENTITY_CONFIRM_MS};
use crate::replication::NodeId;

/// This node's view of which process serves each node id.
pub struct Identities {
    me: NodeId,
    incarnation: u64,
    /// Where this node serves (its listen address, as advertised).
    addr: String,
    state: Mutex<State>,
    /// Signalled when a connection closes or a node is heard.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The members of the cluster's configuration and their addresses.
    members: BTreeMap<NodeId, String>,
    holders: BTreeMap<NodeId, Holder>,
    next_link: u64,
}

/// The incarnation that holds a node id here.
struct Holder {
    incarnation: u64,
    /// Its open control connections (a clone of each, to close it), by link number.
    links: BTreeMap<u64, TcpStream>,
    /// When it was last heard on one of them.
    heard: Instant,
    /// Where it serves, as its greeting said.
    serves: Option<String>,
    /// The peer address of its latest connection.
    from: String,
}

/// A node id that another live process serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InUse {
    pub node: NodeId,
    /// Where the id is served: the live process's address as its greeting said, or
    /// else the member's address, or where its connection comes from.
    pub addr: String,
    /// The live process.
    pub incarnation: u64,
    /// How long ago this node heard from it.
    pub heard_ms_ago: u64,
}

impl fmt::Display for InUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node id {} is already served at {} by a live process (incarnation {}, heard {} ms ago)",
            self.node, self.addr, self.incarnation, self.heard_ms_ago
        )
    }
}

/// Why a control greeting was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another live process serves the id.
    InUse(InUse),
    /// No room for another node's control connection.
    Full(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::InUse(i) => i.fmt(f),
            Refusal::Full(why) => f.write_str(why),
        }
    }
}

/// One accepted control connection: the id is held while it lives. Dropped when the
/// connection's reader ends.
pub struct Lease {
    ids: Arc<Identities>,
    node: NodeId,
    incarnation: u64,
    link: u64,
}

impl Lease {
    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The holder sent something on this connection.
    pub fn heard(&self) {
        let mut st = self.ids.lock();
        if let Some(h) = st.holders.get_mut(&self.node)
            && h.incarnation == self.incarnation
        {
            h.heard = Instant::now();
            drop(st);
            self.ids.changed.notify_all();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = self.ids.lock();
        if let Some(h) = st.holders.get_mut(&self.node) {
            h.links.remove(&self.link);
        }
        drop(st);
        self.ids.changed.notify_all();
    }
}

impl Identities {
    /// The registry of node `me`, process `incarnation`, serving at `addr`, in a
    /// cluster whose members are `members` (updated by [`Self::set_members`]).
    pub fn new(
        me: NodeId,
        incarnation: u64,
        addr: String,
        members: BTreeMap<NodeId, String>,
    ) -> Identities {
        Identities {
            me,
            incarnation,
            addr,
            state: Mutex::new(State {
                members,
                ..State::default()
            }),
            changed: Condvar::new(),
        }
    }

    /// This node.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// This process.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether `node` is a member of the configuration as last set.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.lock().members.contains_key(&node)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The members of the committed configuration (members are only ever added).
    pub fn set_members(&self, members: &BTreeMap<NodeId, String>) {
        let mut st = self.lock();
        if st.members != *members {
            st.members = members.clone();
        }
    }

    /// Gives node id `node` to process `incarnation`, which serves at `serves` and
    /// greets on `sock`, or says why not. May wait up to [`IDENTITY_CONFIRM_MS`] to
    /// tell whether another incarnation of the id is still live.
    pub fn claim(
        self: &Arc<Self>,
        node: NodeId,
        incarnation: u64,
        serves: Option<&str>,
        sock: &TcpStream,
    ) -> Result<Lease, Refusal> {
        if node == self.me {
            if incarnation == self.incarnation {
                return Err(Refusal::Full("a control connection to itself".into()));
            }
            return Err(Refusal::InUse(InUse {
                node,
                addr: self.addr.clone(),
                incarnation: self.incarnation,
                heard_ms_ago: 0,
            }));
        }
        let clone = sock
            .try_clone()
            .map_err(|e| Refusal::Full(format!("cannot keep the connection: {e}")))?;
        let from = sock
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let asked = Instant::now();
        let deadline = asked + Duration::from_millis(IDENTITY_CONFIRM_MS);
        let mut st = self.lock();
        // Another incarnation with open connections: live, or dead and not yet seen
        // to be? Its connections closing, or the window passing in silence, settle it.
        while let Some(h) = st.holders.get(&node) {
            if h.incarnation == incarnation || h.links.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                if h.heard > asked {
                    let addr = h
                        .serves
                        .as_ref()
                        .or(st.members.get(&node))
                        .unwrap_or(&h.from);
                    return Err(Refusal::InUse(InUse {
                        node,
                        addr: addr.clone(),
                        incarnation: h.incarnation,
                        heard_ms_ago: now.duration_since(h.heard).as_millis() as u64,
                    }));
                }
                break;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        // Room: members first.
        let holding: Vec<NodeId> = st
            .holders
            .iter()
            .filter(|&(&id, h)| id != node && !h.links.is_empty())
            .map(|(&id, _)| id)
            .collect();
        if holding.len() >= CONTROL_LINKS_MAX {
            return Err(Refusal::Full(format!(
                "{CONTROL_LINKS_MAX} nodes already hold control connections here"
            )));
        }
        let member = st.members.contains_key(&node);
        let strangers = holding
            .iter()
            .filter(|id| !st.members.contains_key(id))
            .count();
        if !member && strangers >= CONTROL_LINKS_NONMEMBER_MAX {
            return Err(Refusal::Full(format!(
                "node {node} is not a member, and {CONTROL_LINKS_NONMEMBER_MAX} non-members \
                 already hold control connections here"
            )));
        }
        st.next_link += 1;
        let link = st.next_link;
        let holder = st.holders.entry(node).or_insert_with(|| Holder {
            incarnation,
            links: BTreeMap::new(),
            heard: asked,
            serves: None,
            from: from.clone(),
        });
        if holder.incarnation != incarnation {
            // The former process is gone (or silent past the window): its connections
            // are closed, and it is refused if it greets again while this one lives.
            tracing::info!(
                peer = node,
                "node {node}: process {incarnation} from {from} takes over from process {}, \
                 {} here",
                holder.incarnation,
                if holder.links.is_empty() {
                    "whose connections closed"
                } else {
                    "silent since the greeting"
                }
            );
            holder.incarnation = incarnation;
        }
        // One connection per node id: the older ones (of either process) close.
        for (_, old) in std::mem::take(&mut holder.links) {
            let _ = old.shutdown(Shutdown::Both);
        }
        holder.links.insert(link, clone);
        holder.heard = asked;
        holder.serves = serves.map(str::to_string);
        holder.from = from;
        drop(st);
        Ok(Lease {
            ids: Arc::clone(self),
            node,
            incarnation,
            link,
        })
    }
}

/// Logs a refusal once per ten seconds for the same node id and process, so that a
/// refused process that greets again and again (every 50 ms) costs one line.
pub fn log_refusal(node: NodeId, incarnation: u64, line: &str) {
    static LAST: Mutex<Option<HashMap<(NodeId, u64), Instant>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let map = last.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    map.retain(|_, t| now.duration_since(*t) < Duration::from_secs(10));
    if map.contains_key(&(node, incarnation)) {
        return;
    }
    // Bounded: a peer that tries many ids is logged for the first few only.
    if map.len() < 64 {
        map.insert((node, incarnation), now);
        tracing::warn!(peer = node, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair of sockets on loopback: (the dialer's end, the node's end).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    fn ids() -> Arc<Identities> {
        let members = [(1, "n1:1".to_string()), (2, "n2:2".to_string())].into();
        Arc::new(Identities::new(1, 100, "n1:1".into(), members))
    }

    #[test]
    fn a_live_incarnation_keeps_its_id_and_a_dead_one_gives_it_up() {
        let ids = ids();
        let (_a, a_sock) = pair();
        let first = ids.claim(2, 200, Some("n2:2"), &a_sock).unwrap();
        // The first process keeps talking while a second one greets.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let talking = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                first.heard();
                std::thread::sleep(Duration::from_millis(5));
            }
            first
        });
        let (_b, b_sock) = pair();
        let refused = ids.claim(2, 300, Some("n2b:3"), &b_sock).err().unwrap();
        let Refusal::InUse(i) = refused else {
            panic!("{refused}")
        };
        assert_eq!(i.incarnation, 200);
        assert_eq!(
            i.to_string().split(" by a live").next().unwrap_or_default(),
            "node id 2 is already served at n2:2"
        );
        // The first process dies: its connection's reader ends, and the id is free.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(talking.join().unwrap());
        let started = Instant::now();
        let second = ids.claim(2, 300, Some("n2b:3"), &b_sock).unwrap();
        assert!(started.elapsed() < Duration::from_millis(IDENTITY_CONFIRM_MS / 2));
        assert_eq!(second.incarnation(), 300);
    }

    #[test]
    fn a_silent_incarnation_loses_its_id_after_the_window_and_its_link_closes() {
        let ids = ids();
        let (mut a, a_sock) = pair();
        let _silent = ids.claim(2, 200, Some("n2:2"), &a_sock).unwrap();
        let (_b, b_sock) = pair();
        let started = Instant::now();
        let lease = ids.claim(2, 300, Some("n2b:3"), &b_sock).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(IDENTITY_CONFIRM_MS));
        assert_eq!(lease.incarnation(), 300);
        // The silent process's connection was closed here.
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut a, &mut buf).unwrap(), 0);
    }

    #[test]
    fn this_nodes_own_id_from_another_process_is_refused() {
        let ids = ids();
        let (_a, sock) = pair();
        match ids.claim(1, 999, None, &sock) {
            Err(Refusal::InUse(i)) => {
                assert_eq!((i.node, i.incarnation, i.addr.as_str()), (1, 100, "n1:1"))
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn non_members_find_room_only_up_to_their_bound() {
        let ids = ids();
        let mut keep = Vec::new();
        for i in 0..CONTROL_LINKS_NONMEMBER_MAX as u32 {
            let (a, sock) = pair();
            keep.push((a, ids.claim(100 + i, 1, None, &sock).unwrap()));
        }
        let (_a, sock) = pair();
        assert!(matches!(
            ids.claim(999, 1, None, &sock),
            Err(Refusal::Full(_))
        ));
        // A member still finds room.
        ids.claim(2, 1, None, &sock).unwrap();
    }
}
