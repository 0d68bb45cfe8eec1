//! A cluster of lockstep nodes on loopback for tests: configurations, data directories,
//! and nodes run in this process or as `lockstepd` processes.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use lockstep::server::config::Config;

/// Free loopback ports (bound and released: another process could take one in between,
/// which then fails the test loudly rather than silently).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub struct ClusterSpec {
    pub nodes: usize,
    pub stream_toml: String,
}

/// Node configuration files of a cluster whose node 1 is the primary of stream "s".
pub fn write_configs(dir: &Path, spec: &ClusterSpec) -> Vec<(PathBuf, String)> {
    let ports = free_ports(spec.nodes * 2);
    let mut nodes = String::new();
    for (i, port) in ports.iter().take(spec.nodes).enumerate() {
        nodes += &format!("[[nodes]]\nid = {}\naddr = \"127.0.0.1:{port}\"\n", i + 1);
    }
    (0..spec.nodes)
        .map(|i| {
            let text = format!(
                "node_id = {}\ndata_dir = \"node{}\"\nlisten = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\nshards = 1\n{nodes}[[streams]]\nname = \"s\"\nprimary = 1\n{}\n",
                i + 1,
                i + 1,
                ports[i],
                ports[spec.nodes + i],
                spec.stream_toml
            );
            let path = dir.join(format!("node{}.toml", i + 1));
            std::fs::write(&path, &text).unwrap();
            (path, format!("127.0.0.1:{}", ports[i]))
        })
        .collect()
}

pub fn load(path: &Path) -> Config {
    Config::load(path).unwrap()
}

/// The log directory of stream "s" on node `n` (1-based).
pub fn stream_dir(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("node{n}")).join("streams").join("s")
}
