//! What a hooked pod costs the observer's index, counted by the allocator:
//! the heap the index holds for each running hooked pod.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use lifecycle_operator::hooks::hook::HookKind;
use lifecycle_operator::hooks::marker::Evidence;
use lifecycle_operator::verify::index::{Index, Owner, PolicyRecord};
use serde_json::json;

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A running pod as kwok's bench stage or a kubelet reports it.
fn pod(i: usize) -> Pod {
    let uid = format!("{i:08}-9c1d-4b5e-8f6a-0123456789ab");
    serde_json::from_value(json!({
        "metadata": {"name": format!("web-7d9f8b6c5d-{i:05}"), "namespace": "shop-frontend", "uid": uid,
                     "labels": {"pod-template-hash": "7d9f8b6c5d"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d",
                                          "uid": "rs", "controller": true}]},
        "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
        "status": {"containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 0, "image": "nginx", "imageID": "",
            "containerID": format!("containerd://{i:064x}"),
            "state": {"running": {"startedAt": "2025-01-01T12:00:00Z"}}}]},
    }))
    .unwrap()
}

#[test]
fn a_running_hooked_pod_costs_the_index_under_a_kibibyte() {
    const PODS: usize = 10_000;
    let policy = "shop-frontend/graceful-shutdown";
    let owners: Vec<Owner> = HookKind::ALL
        .into_iter()
        .map(|kind| Owner {
            policy: policy.into(),
            container: "nginx".into(),
            kind,
            evidence: Evidence::Events,
            token: 0,
        })
        .collect();
    let now: Timestamp = "2025-01-01T12:00:05Z".parse().unwrap();
    let pods: Vec<Pod> = (0..PODS).map(pod).collect();
    let mut index = Index::default();
    index.policy(
        &PolicyRecord {
            key: policy,
            uid: Some("uid"),
            generation: Some(1),
            status: None,
        },
        now,
    );
    let before = IN_USE.load(Ordering::Relaxed);
    for p in &pods {
        index.pod(p, &owners, false, now);
    }
    let held = IN_USE.load(Ordering::Relaxed) - before;
    let per_pod = held / PODS;
    eprintln!("index: {per_pod} bytes per running hooked pod ({PODS} pods)");
    assert_eq!(index.len(), PODS);
    assert!(per_pod <= 1024, "{per_pod} bytes per hooked pod");
}
