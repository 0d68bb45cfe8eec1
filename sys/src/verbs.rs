//! RDMA verbs through the `sideway` crate, whose `rdma-mummy-sys` loads libibverbs at
//! run time: the same binary starts on hosts without libibverbs or without a device,
//! and [`probe`] says which in one line.
//!
//! Thread safety: the device list is taken and freed within [`probe`]; nothing here is
//! kept between calls.

use sideway::ibverbs::device::{DeviceInfo, DeviceList, GetDeviceListErrorKind};

/// The RDMA devices of this host, or the one-line reason there are none: libibverbs is
/// not loadable, the kernel has no RDMA support, or it lists no device.
pub fn probe() -> Result<String, String> {
    let list = DeviceList::new().map_err(|e| {
        let os = match &e.0 {
            GetDeviceListErrorKind::Ibverbs(io) => io.raw_os_error(),
            #[allow(unreachable_patterns)] // the kind is non-exhaustive
            _ => None,
        };
        match os {
            Some(libc::EOPNOTSUPP) => {
                "no libibverbs (libibverbs.so.1 not loadable: ibv_get_device_list: EOPNOTSUPP)"
                    .to_string()
            }
            Some(n) => format!("no device (ibv_get_device_list: {})", errno_name(n)),
            None => format!("no device (ibv_get_device_list: {e})"),
        }
    })?;
    if list.is_empty() {
        return Err("no device (ibv_get_device_list: 0 devices)".into());
    }
    let names: Vec<String> = list.iter().map(|d| d.name()).collect();
    Ok(names.join(","))
}

fn errno_name(n: i32) -> String {
    match n {
        libc::ENOSYS => "ENOSYS".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        other => std::io::Error::from_raw_os_error(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a host with devices the probe names them; on one without, it says why in one
    /// line. Which one this host is comes from /sys, independently of libibverbs.
    #[test]
    fn the_probe_agrees_with_the_kernels_device_list() {
        let kernel_has_devices = std::fs::read_dir("/sys/class/infiniband")
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        match probe() {
            Ok(names) => {
                assert!(
                    kernel_has_devices,
                    "devices {names} without /sys/class/infiniband"
                );
                assert!(!names.is_empty());
            }
            Err(why) => {
                assert!(!kernel_has_devices, "no device reported: {why}");
                assert!(!why.contains('\n'), "one line: {why}");
                assert!(
                    why.starts_with("no device (") || why.starts_with("no libibverbs ("),
                    "{why}"
                );
            }
        }
    }
}
