use super::*;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
}

fn stopper(sleep: f64) -> Stopper {
    Stopper {
        policy: "ns/drain".into(),
        container: "nginx".into(),
        sleep,
        margin: 1.0,
    }
}

fn sight<'a>(uid: &'a str, deleting: bool, gone: bool, sleep: f64) -> PodSight<'a> {
    PodSight {
        uid,
        namespace: "ns",
        name: uid,
        stoppers: vec![stopper(sleep)],
        deleting,
        gone,
        live: true,
    }
}

fn index() -> DrainIndex {
    let mut d = DrainIndex::default();
    d.policy("ns/drain", Some(1), None, 1.0);
    d
}

/// A pod serving in one slice, deleted at 1 s, out of the slice at `out`.
fn drained(d: &mut DrainIndex, uid: &str, sleep: f64, out: i64) {
    d.pod(sight(uid, false, false, sleep), at(0));
    d.slice("ns/web-1", [(uid, true), ("other", true)], at(100));
    d.pod(sight(uid, true, false, sleep), at(1000));
    d.slice("ns/web-1", [(uid, false), ("other", true)], at(out));
}

fn status(d: &DrainIndex) -> DrainStatus {
    d.status("ns/drain", Some(1)).unwrap()
}

#[test]
fn quitting_at_once_is_unsafe_with_a_recommendation() {
    let mut d = index();
    drained(&mut d, "a", 0.0, 1400);
    let s = status(&d);
    assert_eq!((s.observed, s.safe, s.unsafe_), (1, 0, 1));
    let last = s.last_unsafe.unwrap();
    assert_eq!(last.pod, "a");
    assert_eq!(last.gap_seconds, -0.4);
    assert_eq!(
        last.message,
        "endpoints were removed 0.4 s after nginx began to quit: sleep at least 2 s before quitting"
    );
    assert_eq!(s.removal_seconds.unwrap().p99, 0.4);
    assert_eq!(s.recommended_pre_stop_seconds, Some(2));
    assert_eq!(d.take_dirty(), vec!["ns/drain".to_string()]);
    assert_eq!(d.take_timed(), vec![0.4]);
    assert!(d.is_empty(), "a timed pod is forgotten");
}

#[test]
fn sleeping_first_is_safe() {
    let mut d = index();
    drained(&mut d, "a", 5.0, 1400);
    let s = status(&d);
    assert_eq!((s.observed, s.safe, s.unsafe_), (1, 1, 0));
    assert_eq!(s.last_unsafe, None);
}

#[test]
fn within_the_margin_is_unsafe() {
    let mut d = index();
    drained(&mut d, "a", 1.0, 1400);
    let s = status(&d);
    assert_eq!(s.unsafe_, 1);
    assert!(
        s.last_unsafe.unwrap().message.starts_with(
            "endpoints were removed only 0.6 s before nginx began to quit (margin 1 s)"
        )
    );
}

#[test]
fn every_slice_must_let_go() {
    let mut d = index();
    d.pod(sight("a", false, false, 0.0), at(0));
    d.slice("ns/web-1", [("a", true)], at(10));
    d.slice("ns/web-2", [("a", true)], at(10));
    d.pod(sight("a", true, false, 0.0), at(1000));
    d.slice("ns/web-1", [("a", false)], at(1100));
    assert_eq!(status(&d).observed, 0, "still ready in web-2");
    d.slice_deleted("ns/web-2", at(1900));
    assert_eq!(status(&d).removal_seconds.unwrap().p50, 0.9);
}

#[test]
fn a_pod_never_an_endpoint_is_not_counted() {
    let mut d = index();
    d.pod(sight("a", false, false, 0.0), at(0));
    d.slice("ns/web-1", [("other", true)], at(10));
    d.pod(sight("a", true, false, 0.0), at(1000));
    d.pod(sight("a", true, true, 0.0), at(2000));
    assert_eq!(status(&d).observed, 0);
    assert_eq!(d.len(), 1);
    d.expire(at(2000 + 61_000), |_| true);
    assert!(d.is_empty());
    assert_eq!(status(&d).observed, 0);
}

#[test]
fn unready_before_deletion_counts_as_removed_at_deletion() {
    let mut d = index();
    d.pod(sight("a", false, false, 0.0), at(0));
    d.slice("ns/web-1", [("a", true)], at(10));
    d.slice("ns/web-1", [("a", false)], at(500));
    d.pod(sight("a", true, false, 0.0), at(1000));
    let s = status(&d);
    assert_eq!((s.observed, s.safe), (1, 0), "0 s sleep, 1 s margin");
    assert_eq!(s.removal_seconds.unwrap().p50, 0.0);
}

#[test]
fn ready_again_is_serving_again() {
    let mut d = index();
    d.pod(sight("a", false, false, 5.0), at(0));
    d.slice("ns/web-1", [("a", true)], at(10));
    d.slice("ns/web-1", [("a", false)], at(20));
    d.slice("ns/web-1", [("a", true)], at(30));
    d.pod(sight("a", true, false, 5.0), at(1000));
    assert_eq!(status(&d).observed, 0);
    d.slice("ns/web-1", [], at(3000));
    assert_eq!(status(&d).removal_seconds.unwrap().p50, 2.0);
}

#[test]
fn first_seen_deleting_or_in_a_relist_gets_no_timeline() {
    let mut d = index();
    d.pod(sight("a", true, false, 0.0), at(0));
    assert!(d.is_empty(), "deleting when first seen");
    d.pod(sight("b", false, false, 0.0), at(0));
    d.slice("ns/web-1", [("b", true)], at(10));
    let mut relisted = sight("b", true, false, 0.0);
    relisted.live = false;
    d.pod(relisted, at(5000));
    assert!(d.is_empty(), "its deletion time is not known");
    d.slice("ns/web-1", [], at(5100));
    assert_eq!(status(&d).observed, 0);
}

#[test]
fn a_relist_without_the_slice_removes_its_endpoints() {
    let mut d = index();
    d.pod(sight("a", false, false, 0.0), at(0));
    d.slice("ns/web-1", [("a", true)], at(10));
    d.pod(sight("a", true, false, 0.0), at(1000));
    d.relist_started();
    d.slice("ns/other", [], at(1200));
    d.relist_done(at(1300));
    assert_eq!(status(&d).removal_seconds.unwrap().p50, 0.3);
}

#[test]
fn another_namespaces_slice_cannot_keep_a_pod_serving() {
    let mut d = index();
    d.pod(sight("a", false, false, 5.0), at(0));
    d.slice("ns/web-1", [("a", true)], at(10));
    d.slice("tenant/forged", [("a", true)], at(20));
    d.pod(sight("a", true, false, 5.0), at(1000));
    d.slice("ns/web-1", [("a", false)], at(1200));
    let s = status(&d);
    assert_eq!((s.observed, s.safe), (1, 1), "the forged slice is ignored");
}

#[test]
fn untracked_endpoints_cost_nothing() {
    let mut d = index();
    let many: Vec<String> = (0..10_000).map(|i| format!("uid-{i}")).collect();
    d.slice("ns/big", many.iter().map(|u| (u.as_str(), true)), at(0));
    assert!(d.by_slice.is_empty());
    assert!(d.is_empty());
}

#[test]
fn caps_per_namespace_and_in_all() {
    let mut d = index();
    for i in 0..MAX_TRACKED_PER_NAMESPACE + 5 {
        let uid = format!("a-{i}");
        d.pod(sight(&uid, false, false, 0.0), at(0));
    }
    assert_eq!(d.len(), MAX_TRACKED_PER_NAMESPACE);
    assert_eq!(d.take_dropped(), 5);
    // Another namespace still gets its pods followed.
    let mut other = sight("b", false, false, 0.0);
    other.namespace = "other";
    d.pod(other, at(0));
    assert_eq!(d.len(), MAX_TRACKED_PER_NAMESPACE + 1);
    let mut n = 0;
    while d.len() < MAX_TRACKED {
        let uid = format!("c-{n}");
        let ns = format!("ns-{}", n / 1000);
        d.pod(
            PodSight {
                namespace: &ns,
                ..sight(&uid, false, false, 0.0)
            },
            at(0),
        );
        n += 1;
    }
    let mut last = sight("z", false, false, 0.0);
    last.namespace = "late";
    d.pod(last, at(0));
    assert_eq!(d.len(), MAX_TRACKED);
    assert_eq!(d.take_dropped(), 1);
}

#[test]
fn a_forgotten_pod_frees_its_namespace_share() {
    let mut d = index();
    drained(&mut d, "a", 0.0, 1400);
    assert!(d.per_namespace.is_empty());
    assert!(d.by_slice.values().all(|v| !v.contains(&"a".to_string())));
}

#[test]
fn counts_are_per_generation_and_seeded_from_the_status() {
    let mut d = index();
    drained(&mut d, "a", 0.0, 1400);
    let seed = status(&d);
    // A restarted operator: the status's counts carry on.
    let mut e = DrainIndex::default();
    e.policy("ns/drain", Some(1), Some(&seed), 1.0);
    assert_eq!(e.status("ns/drain", Some(1)), Some(seed.clone()));
    drained(&mut e, "b", 5.0, 1400);
    let s = e.status("ns/drain", Some(1)).unwrap();
    assert_eq!((s.observed, s.safe, s.unsafe_), (2, 1, 1));
    // A new generation starts afresh.
    e.policy("ns/drain", Some(2), None, 1.0);
    assert_eq!(e.status("ns/drain", Some(1)), None);
    assert_eq!(e.status("ns/drain", Some(2)).unwrap().observed, 0);
}

#[test]
fn percentiles_over_a_bounded_ring() {
    let mut d = index();
    for i in 0..(MAX_SAMPLES + 44) {
        let uid = format!("p-{i}");
        drained(&mut d, &uid, 5.0, 1000 + (i as i64 % 100) * 10);
    }
    let s = status(&d);
    assert_eq!(s.observed, (MAX_SAMPLES + 44) as i64);
    let r = s.removal_seconds.unwrap();
    assert!(r.p50 <= r.p99 && r.p99 <= 0.99, "{r:?}");
    assert_eq!(s.recommended_pre_stop_seconds, Some(2));
}

#[test]
fn policies_gone_are_forgotten() {
    let mut d = index();
    d.expire(at(0), |_| false);
    assert_eq!(d.status("ns/drain", Some(1)), None);
}

proptest::proptest! {
    /// Whatever order the watches deliver in, nothing panics, a pod is
    /// counted at most once per deletion seen, and safe + unsafe = observed.
    #[test]
    fn any_order_counts_each_pod_at_most_once(
        steps in proptest::collection::vec((0u8..6, 0usize..4, 0i64..5000), 0..60)
    ) {
        let mut d = index();
        let uids = ["a", "b", "c", "d"];
        let mut t = 0;
        let deletions = steps.iter().filter(|(op, _, _)| *op == 1 || *op == 2).count() as i64;
        for (op, u, dt) in steps {
            t += dt;
            let uid = uids[u];
            match op {
                0 => d.pod(sight(uid, false, false, 1.0), at(t)),
                1 => d.pod(sight(uid, true, false, 1.0), at(t)),
                2 => d.pod(sight(uid, true, true, 1.0), at(t)),
                3 => d.slice("ns/s", [(uid, true)], at(t)),
                4 => d.slice("ns/s", [(uid, false)], at(t)),
                _ => d.expire(at(t), |_| true),
            }
        }
        let s = status(&d);
        proptest::prop_assert!(s.observed <= deletions);
        proptest::prop_assert_eq!(s.safe + s.unsafe_, s.observed);
    }
}
