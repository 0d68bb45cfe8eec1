//! What connecting a reliable-connected queue pair sets, as plain data: the three
//! transitions INIT → RTR → RTS built from this port's address and the peer's endpoint
//! (QPN, PSN, LID, GID) that the setup exchange carried. Building them is checked here,
//! without a device; [`super::Qp::connect`] hands each one to the NIC.
//!
//! Values follow the IB specification's encodings: PSNs and QPNs have 24 bits; the
//! local ACK timeout is 4.096 µs · 2^timeout; a retry count of 7 is the largest, and an
//! RNR retry of 7 means "retry for ever", which a peer that re-posts its receives at
//! once never needs for long.

/// Bits of a PSN and of a QPN on the wire.
pub const PSN_MASK: u32 = 0x00ff_ffff;

/// The path MTUs a port can run, as the verbs enum numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathMtu {
    Mtu256 = 1,
    Mtu512 = 2,
    Mtu1024 = 3,
    Mtu2048 = 4,
    Mtu4096 = 5,
}

impl PathMtu {
    pub fn bytes(self) -> u32 {
        128 << (self as u32)
    }
}

/// This side's port, as the device reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPort {
    pub port: u8,
    pub lid: u16,
    /// The GID this side sends from (RoCE), and its index in the port's table.
    pub gid: [u8; 16],
    pub gid_index: u8,
    pub mtu: PathMtu,
    /// The port runs on Ethernet (RoCE): every packet carries a GRH, so a peer needs a
    /// GID; on InfiniBand a LID addresses it.
    pub roce: bool,
}

/// The peer's queue pair, from its setup message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    pub gid: [u8; 16],
}

/// The global route header of the RTR transition (RoCE, or InfiniBand across subnets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grh {
    pub dgid: [u8; 16],
    pub sgid_index: u8,
    pub hop_limit: u8,
}

/// One transition of a queue pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// RESET → INIT: the port, and remote writes into this side's regions allowed.
    Init { port: u8, pkey_index: u16 },
    /// INIT → RTR: where the peer is and the PSN its first packet carries.
    Rtr {
        mtu: PathMtu,
        dest_qpn: u32,
        rq_psn: u32,
        dest_lid: u16,
        port: u8,
        grh: Option<Grh>,
        max_dest_rd_atomic: u8,
        min_rnr_timer: u8,
    },
    /// RTR → RTS: this side's first PSN, and how long and how often it retries.
    Rts {
        sq_psn: u32,
        timeout: u8,
        retry_cnt: u8,
        rnr_retry: u8,
        max_rd_atomic: u8,
    },
}

/// Local ACK timeout exponent: 4.096 µs · 2^14 ≈ 67 ms per try, 7 tries: a peer gone
/// for about half a second fails the queue pair (and the link falls back to TCP).
pub const ACK_TIMEOUT: u8 = 14;
pub const RETRY_COUNT: u8 = 7;
/// Retries on "receiver not ready" without end: the peer re-posts its receives as it
/// takes them.
pub const RNR_RETRY: u8 = 7;
/// The RNR NAK timer's encoding for 0.64 ms.
pub const MIN_RNR_TIMER: u8 = 12;
/// Hops a RoCE v2 packet may cross (routed networks); 1 keeps it on the subnet.
pub const HOP_LIMIT: u8 = 64;

/// The transitions that connect this side (`local`, sending from `own_psn`) to `peer`,
/// or why they cannot.
pub fn connect_plan(local: &LocalPort, own_psn: u32, peer: &Endpoint) -> Result<[Step; 3], String> {
    if peer.qpn > PSN_MASK || peer.qpn == 0 {
        return Err(format!("peer QPN {:#x} is not a 24-bit QPN", peer.qpn));
    }
    if peer.psn > PSN_MASK {
        return Err(format!("peer PSN {:#x} has more than 24 bits", peer.psn));
    }
    assert!(own_psn <= PSN_MASK, "own PSN has 24 bits");
    let peer_has_gid = peer.gid != [0; 16];
    if local.roce && !peer_has_gid {
        return Err("the peer sent no GID, which RoCE needs".into());
    }
    if !local.roce && peer.lid == 0 && !peer_has_gid {
        return Err("the peer sent neither a LID nor a GID".into());
    }
    let grh = (local.roce || peer_has_gid).then_some(Grh {
        dgid: peer.gid,
        sgid_index: local.gid_index,
        hop_limit: HOP_LIMIT,
    });
    Ok([
        Step::Init {
            port: local.port,
            pkey_index: 0,
        },
        Step::Rtr {
            mtu: local.mtu,
            dest_qpn: peer.qpn,
            rq_psn: peer.psn,
            dest_lid: if local.roce { 0 } else { peer.lid },
            port: local.port,
            grh,
            // Only one-sided writes run: no reads or atomics to take.
            max_dest_rd_atomic: 1,
            min_rnr_timer: MIN_RNR_TIMER,
        },
        Step::Rts {
            sq_psn: own_psn,
            timeout: ACK_TIMEOUT,
            retry_cnt: RETRY_COUNT,
            rnr_retry: RNR_RETRY,
            max_rd_atomic: 1,
        },
    ])
}

/// What kind of address a port's GID table entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GidKind {
    InfiniBand,
    RoceV1,
    RoceV2,
}

/// Picks the GID to send from: on RoCE a RoCE v2 GID that maps an IPv4 address (what
/// rdma_rxe and most RoCE NICs give each interface address), then any RoCE v2 GID that is
/// not link-local, then any RoCE v2, then RoCE v1; on InfiniBand the first. Entries are
/// (index, gid, kind); zero GIDs are skipped.
pub fn choose_gid(entries: &[(u8, [u8; 16], GidKind)], roce: bool) -> Option<u8> {
    let live = || entries.iter().filter(|e| e.1 != [0; 16]);
    if !roce {
        return live().find(|e| e.2 == GidKind::InfiniBand).map(|e| e.0);
    }
    let v2 = || live().filter(|e| e.2 == GidKind::RoceV2);
    let ipv4_mapped = |g: &[u8; 16]| g[..10] == [0; 10] && g[10..12] == [0xff, 0xff];
    let link_local = |g: &[u8; 16]| g[0] == 0xfe && g[1] & 0xc0 == 0x80;
    v2().find(|e| ipv4_mapped(&e.1))
        .or_else(|| v2().find(|e| !link_local(&e.1)))
        .or_else(|| v2().next())
        .or_else(|| live().find(|e| e.2 == GidKind::RoceV1))
        .map(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roce_port() -> LocalPort {
        LocalPort {
            port: 1,
            lid: 0,
            gid: [9; 16],
            gid_index: 3,
            mtu: PathMtu::Mtu1024,
            roce: true,
        }
    }

    fn peer() -> Endpoint {
        Endpoint {
            qpn: 0x11,
            psn: 0x00ab_cdef,
            lid: 0,
            gid: [7; 16],
        }
    }

    #[test]
    fn rtr_takes_the_peers_address_and_rts_this_sides_psn() {
        let [init, rtr, rts] = connect_plan(&roce_port(), 0x42, &peer()).unwrap();
        assert_eq!(
            init,
            Step::Init {
                port: 1,
                pkey_index: 0
            }
        );
        let Step::Rtr {
            dest_qpn,
            rq_psn,
            grh,
            mtu,
            dest_lid,
            ..
        } = rtr
        else {
            panic!("RTR second: {rtr:?}");
        };
        assert_eq!(dest_qpn, 0x11);
        assert_eq!(rq_psn, 0x00ab_cdef);
        assert_eq!(mtu, PathMtu::Mtu1024);
        assert_eq!(dest_lid, 0, "RoCE addresses by GID");
        let grh = grh.expect("RoCE needs a GRH");
        assert_eq!(grh.dgid, [7; 16]);
        assert_eq!(grh.sgid_index, 3);
        let Step::Rts { sq_psn, .. } = rts else {
            panic!("RTS third: {rts:?}");
        };
        assert_eq!(sq_psn, 0x42);
    }

    #[test]
    fn infiniband_addresses_by_lid_without_a_grh() {
        let port = LocalPort {
            roce: false,
            lid: 5,
            gid: [0; 16],
            ..roce_port()
        };
        let p = Endpoint {
            lid: 9,
            gid: [0; 16],
            ..peer()
        };
        let [_, rtr, _] = connect_plan(&port, 1, &p).unwrap();
        let Step::Rtr { dest_lid, grh, .. } = rtr else {
            panic!("{rtr:?}");
        };
        assert_eq!(dest_lid, 9);
        assert_eq!(grh, None);
    }

    #[test]
    fn a_peer_that_cannot_be_addressed_is_refused() {
        let no_gid = Endpoint {
            gid: [0; 16],
            ..peer()
        };
        assert!(
            connect_plan(&roce_port(), 1, &no_gid)
                .unwrap_err()
                .contains("GID")
        );
        let ib = LocalPort {
            roce: false,
            ..roce_port()
        };
        assert!(connect_plan(&ib, 1, &no_gid).unwrap_err().contains("LID"));
        let wide_psn = Endpoint {
            psn: 1 << 24,
            ..peer()
        };
        assert!(connect_plan(&roce_port(), 1, &wide_psn).is_err());
        let wide_qpn = Endpoint {
            qpn: 1 << 24,
            ..peer()
        };
        assert!(connect_plan(&roce_port(), 1, &wide_qpn).is_err());
    }

    #[test]
    fn the_gid_of_an_ipv4_address_on_roce_v2_is_preferred() {
        let mut link_local = [0u8; 16];
        link_local[0] = 0xfe;
        link_local[1] = 0x80;
        link_local[15] = 1;
        let mut v4 = [0u8; 16];
        v4[10] = 0xff;
        v4[11] = 0xff;
        v4[12..].copy_from_slice(&[10, 0, 0, 2]);
        let entries = [
            (0, link_local, GidKind::RoceV1),
            (1, link_local, GidKind::RoceV2),
            (2, v4, GidKind::RoceV1),
            (3, v4, GidKind::RoceV2),
        ];
        assert_eq!(choose_gid(&entries, true), Some(3));
        assert_eq!(choose_gid(&entries[..3], true), Some(1));
        assert_eq!(choose_gid(&entries[..1], true), Some(0));
        assert_eq!(choose_gid(&[(0, [0; 16], GidKind::RoceV2)], true), None);
        assert_eq!(
            choose_gid(&[(0, link_local, GidKind::InfiniBand)], false),
            Some(0)
        );
    }

    #[test]
    fn path_mtus_count_bytes_as_the_verbs_enum_does() {
        assert_eq!(PathMtu::Mtu256.bytes(), 256);
        assert_eq!(PathMtu::Mtu4096.bytes(), 4096);
    }
}
