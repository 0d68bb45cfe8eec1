//! Installs the Debian packages of the databases that the demo and the benchmarks run
//! (MariaDB, PostgreSQL, etcd) when they are missing.
//!
//! Only as root and only with apt-get; otherwise each missing package is reported with
//! one line saying why. The packages' maintainer scripts would start system services (a
//! PostgreSQL cluster, a MariaDB server, an etcd member) that lockstep does not want:
//! it runs its own instances in temporary directories. A `policy-rc.d` that
//! denies every start is put in place for the install (unless the machine already has
//! one) and removed afterwards; on a systemd machine the units are also disabled, so
//! nothing of the peers runs after the benchmark or after a reboot.
//!
//! Downloaded packages go to a private temporary directory (`Dir::Cache::Archives`),
//! removed at the end.

use std::path::Path;
use std::process::{Command, Stdio};

use super::process::{Error, is_root};

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// The services the packages install, disabled after an install on systemd machines.
const SERVICES: [&str; 3] = ["postgresql", "mariadb", "etcd"];

/// A package and the file that shows it is installed.
#[derive(Clone, Copy, Debug)]
pub struct Package {
    pub name: &'static str,
    pub installed_if: fn() -> bool,
}

/// Installs the packages of `wanted` that are missing. Returns, for each one still
/// missing afterwards, why.
pub fn ensure(wanted: &[Package], allowed: bool) -> Vec<(Package, String)> {
    let missing: Vec<Package> = wanted
        .iter()
        .copied()
        .filter(|p| !(p.installed_if)())
        .collect();
    if missing.is_empty() {
        return Vec::new();
    }
    let why_not = if !allowed {
        Some("not installed, and --no-install was given".to_string())
    } else if !is_root() {
        Some("not installed, and installing needs root".to_string())
    } else if !Path::new("/usr/bin/apt-get").exists() {
        Some("not installed, and there is no apt-get here".to_string())
    } else {
        None
    };
    if let Some(why) = why_not {
        return missing.into_iter().map(|p| (p, why.clone())).collect();
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    eprintln!("installing {} with apt-get", names.join(", "));
    let result = install(&names);
    missing
        .into_iter()
        .filter(|p| !(p.installed_if)())
        .map(|p| {
            let why = match &result {
                Err(e) => format!("not installed: {e}"),
                Ok(()) => format!("apt-get installed {} but it is not usable", p.name),
            };
            (p, why)
        })
        .collect()
}

fn install(names: &[&str]) -> Result<(), Error> {
    let cache = tempfile::Builder::new()
        .prefix("lockstep-apt-")
        .tempdir()
        .map_err(|e| format!("create a package cache directory: {e}"))?;
    let _policy = DenyServiceStarts::install()?;
    let apt = |args: &[&str]| -> Result<(), Error> {
        let out = Command::new("apt-get")
            .args(["-y", "-qq", "-o"])
            .arg(format!("Dir::Cache::Archives={}", cache.path().display()))
            // The private cache is root's: apt's sandbox user could not write to it.
            .args(["-o", "APT::Sandbox::User=root"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run apt-get: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rfind(|l| !l.trim().is_empty());
            Err(format!(
                "apt-get {}: {} ({})",
                args.join(" "),
                out.status,
                last.unwrap_or("no message")
            ))
        }
    };
    let mut install_args = vec!["install", "--no-install-recommends"];
    install_args.extend_from_slice(names);
    // The package lists may be missing or stale on a fresh machine: update once, then
    // try again.
    let result = apt(&install_args).or_else(|_| {
        apt(&["update"])?;
        apt(&install_args)
    });
    disable_services();
    result
}

/// A `policy-rc.d` that denies service starts while it lives (only if there was none).
struct DenyServiceStarts {
    ours: bool,
}

impl DenyServiceStarts {
    fn install() -> Result<DenyServiceStarts, Error> {
        use std::os::unix::fs::PermissionsExt;
        if Path::new(POLICY_RC_D).exists() {
            return Ok(DenyServiceStarts { ours: false });
        }
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# lockstep: no service starts while it installs packages.\nexit 101\n",
        )
        .map_err(|e| format!("write {POLICY_RC_D}: {e}"))?;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {POLICY_RC_D}: {e}"))?;
        Ok(DenyServiceStarts { ours: true })
    }
}

impl Drop for DenyServiceStarts {
    fn drop(&mut self) {
        if self.ours {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

/// On a machine run by systemd, stops and disables the peers' units, in case a
/// package started or enabled one despite the policy.
fn disable_services() {
    if !Path::new("/run/systemd/system").is_dir() {
        return;
    }
    for s in SERVICES {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "--quiet", s])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_package_is_skipped_with_its_reason_and_a_present_one_is_not() {
        let missing = Package {
            name: "no-such-peer",
            installed_if: || false,
        };
        let present = Package {
            name: "present-peer",
            installed_if: || true,
        };
        let left = ensure(&[missing, present], false);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0.name, "no-such-peer");
        assert_eq!(left[0].1, "not installed, and --no-install was given");
        assert!(ensure(&[present], true).is_empty(), "nothing to install");
    }
}
