//! The primary state machine from scenarios: commits, blocks, degrade, timeouts,
//! members removed and restored under the controller.

use super::*;

fn members(n: u32) -> Vec<MemberSpec> {
    (2..2 + n).map(|id| MemberSpec { id, sync: true }).collect()
}

fn primary(settings: StreamSettings, n: u32) -> Primary {
    let mut p = Primary::new(settings, 1, &members(n), 0, 0);
    for id in 2..2 + n {
        p.on_member_connected(id, 0, 1);
    }
    p
}

/// (committed, in doubt) request ids among the actions.
fn outcomes(p: &mut Primary) -> (Vec<RequestId>, Vec<RequestId>) {
    let (mut ok, mut doubt) = (Vec::new(), Vec::new());
    for a in p.poll() {
        match a {
            Action::Complete {
                request,
                outcome: Outcome::Committed,
                ..
            } => ok.push(request),
            Action::Complete {
                request,
                outcome: Outcome::InDoubt(_),
                ..
            } => doubt.push(request),
            _ => {}
        }
    }
    (ok, doubt)
}

fn events(p: &mut Primary) -> Vec<Event> {
    p.poll()
        .filter_map(|a| {
            if let Action::Event(e) = a {
                Some(e)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn strong_waits_for_the_primary_and_every_member() {
    let mut p = primary(StreamSettings::default(), 2);
    assert_eq!(p.append(7, 3, None, 1000), (1, 3));
    // The sends go out before the local write completes: they run in parallel.
    let sends: Vec<_> = p.poll().collect();
    assert_eq!(
        sends,
        vec![
            Action::Send {
                member: 2,
                from: 1,
                to: 3
            },
            Action::Send {
                member: 3,
                from: 1,
                to: 3
            }
        ]
    );
    p.on_ack(2, 3, 3);
    p.on_ack(3, 3, 3);
    assert_eq!(
        outcomes(&mut p),
        (vec![], vec![]),
        "committed before the primary's own write"
    );
    p.on_local_durable(3);
    assert_eq!(outcomes(&mut p), (vec![7], vec![]));
    assert_eq!(p.commit_lsn(), 3);
}

#[test]
fn a_turns_acks_count_as_one_by_one_and_apply_the_rule_once() {
    let mut p = primary(StreamSettings::default(), 3);
    p.append(1, 2, None, 1000);
    p.on_local_durable(2);
    let _ = p.poll().count();
    p.on_member_disconnected(4);
    let mut counted = Vec::new();
    let acks = [(2, 2, 2), (4, 2, 2), (3, 1, 1), (3, 2, 2)];
    p.on_acks(acks, |m, r, d| counted.push((m, r, d)));
    assert_eq!(
        counted,
        vec![(2, 2, 2), (3, 1, 1), (3, 2, 2)],
        "4 is not connected"
    );
    assert_eq!(p.commit_lsn(), 0, "member 4 holds nothing");
    p.on_member_connected(4, 2, 3);
    assert_eq!(outcomes(&mut p), (vec![1], vec![]));
    assert_eq!(p.commit_lsn(), 2);
}

#[test]
fn one_member_short_blocks_and_resumes() {
    let mut p = primary(
        StreamSettings {
            ack_timeout_ticks: 10,
            ..Default::default()
        },
        2,
    );
    p.append(1, 1, None, 1000);
    p.on_local_durable(1);
    p.on_ack(2, 1, 1);
    for t in 1..=20 {
        p.on_tick(t);
    }
    // Member 3 is stopped: nothing commits, and the block is a recorded event.
    let actions: Vec<_> = p.poll().collect();
    assert_eq!(
        actions[0],
        Action::Event(Event::Blocked {
            available: 1,
            min_sync: 1
        })
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Complete { .. })));
    assert_eq!(p.commit_lsn(), 0);
    p.append(2, 1, None, 1000);
    p.on_local_durable(2);
    p.on_ack(2, 2, 2);
    assert!(outcomes(&mut p).0.is_empty());
    // It comes back.
    p.on_ack(3, 2, 2);
    p.on_tick(23);
    let actions: Vec<_> = p.poll().collect();
    assert!(
        actions.contains(&Action::Event(Event::Recovered)),
        "{actions:?}"
    );
    let done: Vec<_> = actions
        .iter()
        .filter_map(|a| {
            if let Action::Complete {
                request,
                outcome: Outcome::Committed,
                ..
            } = a
            {
                Some(*request)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(done, vec![1, 2]);
}

#[test]
fn k_of_n_and_weaker_requests() {
    let s = StreamSettings {
        sync_acks: Some(1),
        ..Default::default()
    };
    let mut p = primary(s, 2);
    p.append(1, 1, None, 1000);
    p.append(2, 1, Some(Mode::Async), 1000);
    p.append(3, 1, Some(Mode::Semi), 1000);
    p.on_local_durable(3);
    // The async request is done at the primary's durable write; the others wait.
    assert_eq!(outcomes(&mut p).0, vec![2]);
    p.on_ack(3, 3, 0);
    assert_eq!(outcomes(&mut p).0, vec![3], "semi commits on receipt");
    assert_eq!(p.commit_lsn(), 0, "receipt is not durability");
    p.on_ack(3, 3, 3);
    assert_eq!(
        outcomes(&mut p).0,
        vec![1],
        "one of two members is enough with k = 1"
    );
    assert_eq!(p.commit_lsn(), 3);
}

#[test]
fn timed_out_request_is_in_doubt_once() {
    let mut p = primary(StreamSettings::default(), 1);
    p.append(9, 2, None, 5);
    p.on_local_durable(2);
    p.on_tick(4);
    assert_eq!(outcomes(&mut p), (vec![], vec![]));
    p.on_tick(5);
    assert_eq!(outcomes(&mut p), (vec![], vec![9]));
    // Its records may still commit; it is not completed twice.
    p.on_ack(2, 2, 2);
    assert_eq!(outcomes(&mut p), (vec![], vec![]));
    assert_eq!(p.commit_lsn(), 2);
}

#[test]
fn degrade_drops_stalled_members_down_to_min_sync_then_goes_async() {
    let s = StreamSettings {
        on_insufficient: OnInsufficient::Degrade,
        min_sync: 1,
        ack_timeout_ticks: 10,
        ..Default::default()
    };
    let mut p = primary(s, 2);
    p.append(1, 1, None, 1000);
    p.on_local_durable(1);
    p.on_ack(2, 1, 1);
    p.on_tick(11);
    let evs = events(&mut p);
    assert!(
        evs.contains(&Event::MemberDropped {
            member: 3,
            members_left: 1
        }),
        "{evs:?}"
    );
    // k = all of the effective set, now member 2 alone.
    assert_eq!(p.commit_lsn(), 1);
    // Member 2 stalls too: the set may not shrink below min_sync, so the stream
    // commits on the primary alone, and says so.
    p.append(2, 1, None, 1000);
    p.on_local_durable(2);
    p.on_tick(30);
    let actions: Vec<_> = p.poll().collect();
    assert!(
        actions.contains(&Action::Event(Event::Degraded {
            available: 0,
            min_sync: 1
        })),
        "{actions:?}"
    );
    assert!(actions.contains(&Action::Complete {
        request: 2,
        first_lsn: 2,
        last_lsn: 2,
        outcome: Outcome::Committed
    }));
    // Both come back and catch up: the stream is strong again.
    p.on_ack(2, 2, 2);
    p.on_member_connected(3, 2, 3);
    p.on_tick(31);
    let evs = events(&mut p);
    assert!(
        evs.contains(&Event::MemberRestored { member: 3 }),
        "{evs:?}"
    );
    assert!(evs.contains(&Event::Recovered), "{evs:?}");
    p.append(3, 1, None, 1000);
    p.on_local_durable(3);
    p.on_ack(2, 3, 3);
    assert_eq!(
        outcomes(&mut p).0,
        Vec::<u64>::new(),
        "member 3 gates commits again"
    );
    p.on_ack(3, 3, 3);
    assert_eq!(outcomes(&mut p).0, vec![3]);
}

#[test]
fn reconnect_resends_from_the_durable_lsn_within_the_window() {
    let s = StreamSettings {
        window_records: 4,
        ..Default::default()
    };
    let mut p = primary(s, 1);
    p.append(1, 10, None, 1000);
    assert_eq!(
        p.poll().collect::<Vec<_>>(),
        vec![Action::Send {
            member: 2,
            from: 1,
            to: 4
        }]
    );
    p.on_ack(2, 2, 2);
    assert_eq!(
        p.poll().collect::<Vec<_>>(),
        vec![Action::Send {
            member: 2,
            from: 5,
            to: 6
        }]
    );
    p.on_member_disconnected(2);
    assert_eq!(p.poll().count(), 0);
    p.on_member_connected(2, 3, 4);
    assert_eq!(
        p.poll().collect::<Vec<_>>(),
        vec![Action::Send {
            member: 2,
            from: 4,
            to: 7
        }]
    );
    assert_eq!(p.poll().count(), 0, "window full");
    p.on_ack(2, 5, 5);
    assert_eq!(
        p.poll().collect::<Vec<_>>(),
        vec![Action::Send {
            member: 2,
            from: 8,
            to: 9
        }]
    );
    // A refusal (a gap at the member) rewinds to where its log ends.
    p.on_refused(2, 5);
    assert_eq!(
        p.poll().collect::<Vec<_>>(),
        vec![Action::Send {
            member: 2,
            from: 6,
            to: 9
        }]
    );
}

#[test]
fn commit_lsn_never_decreases_nor_passes_local_durability() {
    let mut p = primary(
        StreamSettings {
            sync_acks: Some(1),
            ..Default::default()
        },
        2,
    );
    p.append(1, 5, None, 1000);
    p.on_ack(2, 5, 5);
    assert_eq!(p.commit_lsn(), 0);
    p.on_local_durable(4);
    assert_eq!(p.commit_lsn(), 4);
    p.on_member_connected(2, 1, 2);
    assert_eq!(p.commit_lsn(), 4);
    p.stop("the log failed");
    assert_eq!(outcomes(&mut p), (vec![], vec![1]));
}

#[test]
fn under_a_controller_a_stalled_member_is_asked_for_not_dropped() {
    let settings = StreamSettings {
        on_insufficient: OnInsufficient::Degrade,
        ack_timeout_ticks: 10,
        ..StreamSettings::default()
    };
    let mut p = primary(settings, 2).under_controller();
    p.append(1, 1, None, 1_000);
    p.on_local_durable(1);
    p.on_ack(2, 1, 1);
    p.on_tick(50);
    let evs = events(&mut p);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::RemovalWanted { member: 3, .. })),
        "{evs:?}"
    );
    assert!(!evs.iter().any(|e| matches!(e, Event::MemberDropped { .. })));
    // Still counted: nothing commits without it until the controller agrees.
    assert_eq!(p.commit_lsn(), 0);
    p.on_tick(55);
    assert!(
        !events(&mut p)
            .iter()
            .any(|e| matches!(e, Event::RemovalWanted { member: 3, .. }))
    );
    p.on_tick(61);
    assert!(
        events(&mut p)
            .iter()
            .any(|e| matches!(e, Event::RemovalWanted { member: 3, .. }))
    );
    p.set_members(
        &[
            MemberSpec { id: 2, sync: true },
            MemberSpec { id: 3, sync: false },
        ],
        false,
        1,
    );
    assert_eq!(outcomes(&mut p).0, vec![1]);
    assert_eq!(p.commit_lsn(), 1);
    // Back and caught up: the controller is asked to restore it.
    p.on_member_connected(3, 1, 2);
    p.on_tick(80);
    assert!(
        events(&mut p)
            .iter()
            .any(|e| matches!(e, Event::RestoreWanted { member: 3, .. }))
    );
    p.set_members(
        &[
            MemberSpec { id: 2, sync: true },
            MemberSpec { id: 3, sync: true },
        ],
        false,
        2,
    );
    p.append(2, 1, None, 1_000);
    p.on_local_durable(2);
    p.on_ack(2, 2, 2);
    assert_eq!(p.commit_lsn(), 1, "member 3 counts again");
    p.on_ack(3, 2, 2);
    assert_eq!(p.commit_lsn(), 2);
}

#[test]
fn a_degraded_configuration_commits_on_the_primary_alone() {
    let mut p = primary(StreamSettings::default(), 1).under_controller();
    p.set_members(&[MemberSpec { id: 2, sync: false }], true, 1);
    assert!(
        events(&mut p)
            .iter()
            .any(|e| matches!(e, Event::Degraded { .. }))
    );
    p.append(1, 1, None, 1_000);
    p.on_local_durable(1);
    assert_eq!(outcomes(&mut p).0, vec![1]);
}

/// Found by the real-process fault run: a promotion left the sync set empty, and
/// the primary committed alone under `block` while cut off from the controller; a
/// later primary reused the acknowledged LSNs.
#[test]
fn an_empty_sync_set_commits_nothing_under_block() {
    let mut p = Primary::new(StreamSettings::default(), 97, &[], 0, 0).under_controller();
    p.set_members(
        &[
            MemberSpec { id: 1, sync: false },
            MemberSpec { id: 2, sync: false },
        ],
        false,
        1,
    );
    p.append(1, 1, None, 1000);
    p.on_local_durable(1);
    p.on_tick(1);
    assert!(outcomes(&mut p).0.is_empty());
    assert_eq!(p.commit_lsn(), 0);
}
