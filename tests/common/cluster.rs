//! A cluster of lockstep nodes on loopback for tests: configurations, data directories,
//! and nodes run in this process or as `lockstepd` processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lockstep::kit::{self, NodeToml};
use lockstep::server::config::Config;

pub struct ClusterSpec {
    pub nodes: usize,
    pub stream_toml: String,
}

/// Node configuration files of a cluster whose node 1 is the primary of stream "s".
pub fn write_configs(dir: &Path, spec: &ClusterSpec) -> Vec<(PathBuf, String)> {
    let ports = kit::free_ports(spec.nodes * 2).expect("free loopback ports");
    let addrs: Vec<String> = ports[..spec.nodes]
        .iter()
        .copied()
        .map(kit::loopback)
        .collect();
    (0..spec.nodes)
        .map(|i| {
            let mut toml = NodeToml::new(i + 1, &addrs);
            toml.admin = Some(kit::loopback(ports[spec.nodes + i]));
            toml.sections = format!(
                "[[streams]]\nname = \"s\"\nprimary = 1\n{}\n",
                spec.stream_toml
            );
            let text = toml.text();
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
