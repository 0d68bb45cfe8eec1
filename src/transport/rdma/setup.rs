//! Connection setup of a ring, over the peer link that is already up (and, with a
//! cluster secret, authenticated):
//!
//! 1. the primary sends `RingOffer`: the transport it runs (`rdma` or `rdma-emu`), its
//!    queue pair's endpoint (QPN, PSN, LID, GID), and the member's ack slot (region,
//!    rkey, length, slot index);
//! 2. the member registers its ring, connects a queue pair to the primary's, and answers
//!    `RingAccept` with its endpoint and ring (address or location, rkey, size), or with
//!    the one-line reason it declines (another transport, no device, no memory);
//! 3. the primary connects its queue pair and sends `RingSwitch` on the TCP link as the
//!    last frame there: the member reads the ring only after it, so no frame overtakes
//!    another.
//!
//! Which transport a node runs comes from its hardware profile (`transport = "auto" |
//! "rdma" | "tcp" | "rdma-emu"`, see [`Selection`]).

use super::verbs::{Endpoint, RemoteRegion, put_str, take_str};

/// The transport a node's profile asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// RDMA when a device is found (and the peer agrees), TCP otherwise.
    #[default]
    Auto,
    /// RDMA, or the node does not start.
    Rdma,
    Tcp,
    /// Emulated verbs over shared memory (a test double: processes on one machine).
    RdmaEmu,
}

impl Selection {
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::Auto => "auto",
            Selection::Rdma => "rdma",
            Selection::Tcp => "tcp",
            Selection::RdmaEmu => "rdma-emu",
        }
    }
}

/// What a node runs on its peer links, decided once at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chosen {
    Tcp,
    Rdma,
    RdmaEmu,
}

impl Chosen {
    pub fn as_str(self) -> &'static str {
        match self {
            Chosen::Tcp => "tcp",
            Chosen::Rdma => "rdma",
            Chosen::RdmaEmu => "rdma-emu",
        }
    }
}

/// Decides the transport from the profile's selection and the device probe's answer
/// (`Ok(device)`: a device opened on an active port, or the one-line reason there is
/// none). Returns the choice and the line the node logs, or the reason it must not
/// start (`rdma` without a device).
pub fn choose(
    selection: Selection,
    probe: Result<String, String>,
) -> Result<(Chosen, String), String> {
    match (selection, probe) {
        (Selection::Tcp, _) => Ok((Chosen::Tcp, "transport: tcp (as configured)".into())),
        (Selection::RdmaEmu, _) => Ok((
            Chosen::RdmaEmu,
            "transport: rdma-emu (emulated verbs over shared memory: a test double, peers on this machine only)".into(),
        )),
        (Selection::Auto | Selection::Rdma, Ok(device)) => {
            Ok((Chosen::Rdma, format!("transport: rdma on {device}")))
        }
        (Selection::Auto, Err(why)) => Ok((Chosen::Tcp, format!("rdma: {why}; using tcp"))),
        (Selection::Rdma, Err(why)) => Err(format!("rdma: {why}; transport = \"rdma\" needs a device")),
    }
}

/// The primary's offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub transport: String,
    pub endpoint: Endpoint,
    pub slots: RemoteRegion,
    pub slot: u32,
    /// What the member writes into its slot, so the primary tells this link's acks
    /// from an earlier link's.
    pub token: u64,
}

/// The member's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept {
        endpoint: Endpoint,
        ring: RemoteRegion,
    },
    Decline {
        reason: String,
    },
}

impl Offer {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&mut out, &self.transport);
        self.endpoint.encode(&mut out);
        self.slots.encode(&mut out);
        out.extend_from_slice(&self.slot.to_le_bytes());
        out.extend_from_slice(&self.token.to_le_bytes());
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Offer, String> {
        let b = &mut bytes;
        let transport = take_str(b)?;
        let endpoint = Endpoint::decode(b)?;
        let slots = RemoteRegion::decode(b)?;
        if b.len() != 12 {
            return Err(format!("offer ends with {} bytes, 12 expected", b.len()));
        }
        let slot = u32::from_le_bytes(b[..4].try_into().expect("4"));
        let token = u64::from_le_bytes(b[4..].try_into().expect("8"));
        Ok(Offer {
            transport,
            endpoint,
            slots,
            slot,
            token,
        })
    }
}

impl Answer {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Answer::Accept { endpoint, ring } => {
                out.push(1);
                endpoint.encode(&mut out);
                ring.encode(&mut out);
            }
            Answer::Decline { reason } => {
                out.push(0);
                let reason: String = reason.chars().take(400).collect();
                put_str(&mut out, &reason);
            }
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Answer, String> {
        let b = &mut bytes;
        let Some((&tag, rest)) = b.split_first() else {
            return Err("empty answer".into());
        };
        *b = rest;
        let answer = match tag {
            1 => Answer::Accept {
                endpoint: Endpoint::decode(b)?,
                ring: RemoteRegion::decode(b)?,
            },
            0 => Answer::Decline {
                reason: take_str(b)?,
            },
            other => return Err(format!("answer tag {other}")),
        };
        if !b.is_empty() {
            return Err(format!("{} bytes after the answer", b.len()));
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_follows_the_selection_and_the_probe() {
        let none = || Err("no device (ibv_get_device_list: ENOSYS)".to_string());
        let dev = || Ok("mlx5_0".to_string());
        let (c, line) = choose(Selection::Auto, none()).unwrap();
        assert_eq!(c, Chosen::Tcp);
        assert_eq!(
            line,
            "rdma: no device (ibv_get_device_list: ENOSYS); using tcp"
        );
        let (c, line) = choose(Selection::Auto, dev()).unwrap();
        assert_eq!(c, Chosen::Rdma);
        assert_eq!(line, "transport: rdma on mlx5_0");
        assert_eq!(choose(Selection::Rdma, dev()).unwrap().0, Chosen::Rdma);
        let unusable = || Err("no usable device (rxe0: rxe0: no active port (port 1 Down))".into());
        let (c, line) = choose(Selection::Auto, unusable()).unwrap();
        assert_eq!(c, Chosen::Tcp);
        assert!(line.ends_with("; using tcp"), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(choose(Selection::Tcp, dev()).unwrap().0, Chosen::Tcp);
        assert_eq!(
            choose(Selection::RdmaEmu, none()).unwrap().0,
            Chosen::RdmaEmu
        );
        assert!(
            choose(Selection::Rdma, none())
                .unwrap_err()
                .contains("needs a device")
        );
    }

    #[test]
    fn offers_and_answers_survive_their_encoding() {
        let endpoint = Endpoint {
            qpn: 1,
            psn: 2,
            lid: 3,
            gid: [4; 16],
            doorbell: "/proc/9/fd/5".into(),
        };
        let region = RemoteRegion::new("/proc/9/fd/6".into(), 0, 7, 4096);
        let offer = Offer {
            transport: "rdma-emu".into(),
            endpoint: endpoint.clone(),
            slots: region.clone(),
            slot: 3,
            token: 11,
        };
        assert_eq!(Offer::decode(&offer.encode()).unwrap(), offer);
        let accept = Answer::Accept {
            endpoint,
            ring: region,
        };
        assert_eq!(Answer::decode(&accept.encode()).unwrap(), accept);
        let decline = Answer::Decline {
            reason: "tcp only".into(),
        };
        assert_eq!(Answer::decode(&decline.encode()).unwrap(), decline);
        let mut bad = offer.encode();
        bad.push(0);
        assert!(Offer::decode(&bad).is_err());
        assert!(Answer::decode(&[2]).is_err());
    }
}
