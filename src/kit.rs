//! The kit that sets up clusters of nodes on loopback, for the tests, the benchmarks
//! and the demo: free ports, and the configuration files every node reads
//! (`lockstepd --config`). One place, so that every harness finds ports the same way
//! and writes the same configuration.
//!
//! Ports: a node's address must be in every node's configuration before any node
//! starts, so ports are found by binding and releasing them. They are taken below the
//! kernel's range for the source ports of outgoing connections: a node killed and
//! restarted must find its port free, and a connection made meanwhile could otherwise
//! take it as its source port. Another process may still take one in between; the node
//! then fails to bind, loudly, and a harness may try again with new ports.

use std::fmt::Write as _;
use std::io;
use std::net::TcpListener;

/// The lowest port handed out.
const PORT_LOW: u16 = 10_000;

/// `n` distinct loopback ports free now, below the kernel's range of ephemeral ports.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = PORT_LOW.min(ephemeral_start / 2);
    let span = u64::from(ephemeral_start - low);
    // A start that differs between processes, so parallel harnesses rarely collide.
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = low + ((x >> 33) % span) as u16;
        if held
            .iter()
            .any(|l| l.local_addr().is_ok_and(|a| a.port() == port))
        {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    if held.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("found {} of {n} free loopback ports", held.len()),
        ));
    }
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The loopback address of `port`.
pub fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// The configuration file of one node of a loopback cluster: node N keeps its data in
/// `nodeN` beside its file, runs one shard, and knows every node by the address it
/// dials.
#[derive(Clone, Debug, Default)]
pub struct NodeToml {
    pub node: usize,
    pub listen: String,
    /// The admin endpoint (Prometheus metrics, switchovers), if any.
    pub admin: Option<String>,
    /// More top-level keys, one per line (`profile = "..."`, `secret_file = "..."`).
    pub keys: String,
    /// (id, address) of every node, as this one dials them.
    pub nodes: Vec<(usize, String)>,
    /// The `[[streams]]` sections, and `[control]` if the cluster has a controller.
    pub sections: String,
}

impl NodeToml {
    /// Node `node` of a cluster whose nodes listen on `addrs` (node 1 first), dialled
    /// directly.
    pub fn new(node: usize, addrs: &[String]) -> NodeToml {
        NodeToml {
            node,
            listen: addrs[node - 1].clone(),
            nodes: addrs
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, a)| (i + 1, a))
                .collect(),
            ..NodeToml::default()
        }
    }

    /// The file's text.
    pub fn text(&self) -> String {
        let n = self.node;
        let mut t = format!(
            "node_id = {n}\ndata_dir = \"node{n}\"\nlisten = \"{}\"\n",
            self.listen
        );
        if let Some(admin) = &self.admin {
            let _ = writeln!(t, "admin = \"{admin}\"");
        }
        t += "shards = 1\n";
        t += &self.keys;
        if !self.keys.is_empty() && !self.keys.ends_with('\n') {
            t.push('\n');
        }
        for (id, addr) in &self.nodes {
            let _ = write!(t, "\n[[nodes]]\nid = {id}\naddr = \"{addr}\"\n");
        }
        t.push('\n');
        t += &self.sections;
        if !self.sections.ends_with('\n') {
            t.push('\n');
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports = free_ports(8).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8);
        for p in ports {
            assert!(p >= PORT_LOW.min(16384), "{p}");
            TcpListener::bind(("127.0.0.1", p)).expect("free");
        }
    }

    #[test]
    fn a_node_file_is_a_valid_configuration() {
        let addrs: Vec<String> = [7001, 7002].map(loopback).to_vec();
        let mut t = NodeToml::new(2, &addrs);
        t.admin = Some(loopback(9002));
        t.sections = "[[streams]]\nname = \"s\"\nprimary = 1".into();
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::server::config::Config::parse(&t.text(), dir.path()).unwrap();
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.listen.port(), 7002);
        assert_eq!(cfg.nodes.len(), 2);
        assert_eq!(cfg.streams[0].primary, 1);
        assert_eq!(cfg.admin.map(|a| a.port()), Some(9002));
    }
}
