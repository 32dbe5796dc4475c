//! The index, fed and read like the live view and the engine do.

use super::*;

fn pod(ns: &str, name: &str, node: Option<&str>, claims: &[(&str, bool)]) -> objects::Pod {
    let v = serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {
            "nodeName": node,
            "containers": [{"volumeMounts": claims.iter().enumerate().map(|(i, (_, ro))| serde_json::json!({"name": format!("v{i}"), "readOnly": ro})).collect::<Vec<_>>()}],
            "volumes": claims.iter().enumerate().map(|(i, (c, _))| serde_json::json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}})).collect::<Vec<_>>(),
        }
    });
    serde_json::from_value(v).unwrap()
}

#[test]
fn consumers_follow_pod_lifecycle() {
    let mut s = ClusterState::new();
    s.apply_pod(&pod("default", "a", Some("n1"), &[("data", false)]));
    s.apply_pod(&pod(
        "default",
        "b",
        None,
        &[("data", true), ("logs", false)],
    ));
    s.apply_pod(&pod("other", "c", Some("n2"), &[("data", false)]));
    let c = s.consumers("default", "data").unwrap();
    assert_eq!(c.len(), 2);
    assert!(c
        .iter()
        .any(|c| c.name == "b" && c.read_only && c.node.is_none()));
    // node assigned
    s.apply_pod(&pod(
        "default",
        "b",
        Some("n3"),
        &[("data", true), ("logs", false)],
    ));
    let c = s.consumers("default", "data").unwrap();
    assert!(c.iter().any(|c| c.name == "b" && c.node == Some("n3")));
    // finished pods release their claims
    let mut done = pod("default", "a", Some("n1"), &[("data", false)]);
    done.status = Some(objects::PodStatus {
        phase: Some("Succeeded".into()),
    });
    s.apply_pod(&done);
    assert_eq!(s.consumers("default", "data").unwrap().len(), 1);
    s.delete_pod("default", "b");
    assert!(s.consumers("default", "data").unwrap().is_empty());
    assert!(s.consumers("default", "logs").unwrap().is_empty());
    assert_eq!(s.pod_count(), 1);
    // slot reuse keeps links right
    s.apply_pod(&pod("default", "d", Some("n1"), &[("logs", false)]));
    assert_eq!(s.consumers("default", "logs").unwrap()[0].name, "d");
    assert_eq!(s.consumers("other", "data").unwrap()[0].name, "c");
}

#[test]
fn pods_without_claims_cost_nothing() {
    let mut s = ClusterState::new();
    s.apply_pod(&pod("default", "a", Some("n1"), &[]));
    assert_eq!(s.pod_count(), 0);
}

#[test]
fn effective_modes_prefer_bound_pv() {
    let mut s = ClusterState::new();
    let pvc: objects::PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-1"}
    }))
    .unwrap();
    s.apply_pvc(&pvc);
    assert_eq!(
        s.claim("default", "data").unwrap().unwrap().effective,
        AccessModes::RWO
    );
    let pv: objects::PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pv-1"}, "spec": {"accessModes": ["ReadWriteOncePod"]}
    }))
    .unwrap();
    s.apply_pv(&pv);
    assert!(s
        .claim("default", "data")
        .unwrap()
        .unwrap()
        .effective
        .is_rwop());
    assert_eq!(s.claim("default", "nope").unwrap(), None);
    s.delete_pvc("default", "data");
    assert_eq!(s.claim("default", "data").unwrap(), None);
}

#[test]
fn uids_are_kept_exactly() {
    let mut s = ClusterState::new();
    let mut a = pod("default", "a", Some("n1"), &[("data", false)]);
    a.metadata.uid = Some("7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60".into());
    let mut b = pod("default", "b", Some("n1"), &[("data", false)]);
    b.metadata.uid = Some("7D3C1A52-8F0E-4B8E-9A57-1C2D3E4F5A61".into());
    s.apply_pod(&a);
    s.apply_pod(&b);
    let cs = s.consumers("default", "data").unwrap();
    let ua = cs.iter().find(|c| c.name == "a").unwrap().uid.unwrap();
    let ub = cs.iter().find(|c| c.name == "b").unwrap().uid.unwrap();
    assert!(matches!(ua, PodUid::Uuid(_)));
    assert!(ua.matches("7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60"));
    assert!(!ua.matches("7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a61"));
    assert_eq!(ua.to_string(), "7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60");
    // Not canonical lowercase: kept as the text it was.
    assert!(matches!(ub, PodUid::Text(_)));
    assert_eq!(
        s.pod("default", "b").unwrap().uid.as_deref(),
        Some("7D3C1A52-8F0E-4B8E-9A57-1C2D3E4F5A61")
    );
    assert!(s
        .canonical_dump()
        .iter()
        .any(|l| l.contains("uid=7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60 ")));
}

#[test]
fn uuids_parse_exactly_in_canonical_form() {
    let text = "7d3c1a52-8f0e-4b8e-9a57-1c2d3e4f5a60";
    let parsed = volumes::parse_uuid(text).expect("canonical");
    assert_eq!(PodUid::Uuid(parsed).to_string(), text);
    assert_eq!(
        volumes::parse_uuid("00000000-0000-0000-0000-000000000000"),
        Some([0; 16])
    );
    assert_eq!(
        volumes::parse_uuid("ffffffff-ffff-ffff-ffff-ffffffffffff"),
        Some([0xff; 16])
    );
    // Any one byte changed to anything but a lowercase hex digit (or, at a
    // dash, to anything but a dash) is not canonical; nor is a length off by one.
    for at in 0..text.len() {
        for c in [b'-', b'g', b'A', b'F', b'/', b':', b'`', b' ', 0, 0xc3] {
            let mut b = text.as_bytes().to_vec();
            if b[at] == c {
                continue;
            }
            b[at] = c;
            let s = String::from_utf8_lossy(&b);
            assert_eq!(volumes::parse_uuid(&s), None, "{s}");
        }
    }
    assert_eq!(volumes::parse_uuid(&text[1..]), None);
    assert_eq!(volumes::parse_uuid(&format!("{text}0")), None);
}

#[test]
fn an_old_queue_entry_does_not_end_a_newer_reservation() {
    let mut s = ClusterState::new();
    let t0 = Instant::now();
    let secs = std::time::Duration::from_secs;
    let p = pod("default", "web-0", None, &[("data", false)]);
    s.reserve_pod(&p, t0 + secs(15));
    s.apply_pod(&pod("default", "web-0", Some("n1"), &[("data", false)]));
    s.delete_pod("default", "web-0");
    s.reserve_pod(&p, t0 + secs(25));
    assert_eq!(s.expire_reservations(t0 + secs(16)), 0);
    assert_eq!(s.consumers("default", "data").unwrap().len(), 1);
    assert_eq!(s.expire_reservations(t0 + secs(26)), 1);
    assert!(s.consumers("default", "data").unwrap().is_empty());
}

#[test]
fn reservations_expire_unless_the_watch_shows_the_pod() {
    let mut s = ClusterState::new();
    let t0 = Instant::now();
    let later = t0 + std::time::Duration::from_secs(10);
    s.reserve_pod(&pod("default", "a", None, &[("data", false)]), later);
    s.reserve_pod(&pod("default", "b", None, &[("data", false)]), later);
    assert_eq!(s.consumers("default", "data").unwrap().len(), 2);
    assert!(s.pod_keys().is_empty());
    s.apply_pod(&pod("default", "a", Some("n1"), &[("data", false)]));
    assert_eq!(s.expire_reservations(t0), 0);
    assert_eq!(s.expire_reservations(later), 1);
    let c = s.consumers("default", "data").unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].name, "a");
}

#[test]
fn volume_names_round_trip() {
    let canonical = "pvc-0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f";
    assert!(matches!(VolumeRef::of(canonical), VolumeRef::PvcUuid(_)));
    assert_eq!(VolumeRef::of(canonical).to_string(), canonical);
    // Not canonical: kept as text so it prints back unchanged.
    for name in [
        "pvc-0B6F0C3E-1B7E-4B43-9F4E-6A1D2C3B4A5F",
        "pvc-0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5",
        "pvc-0b6f0c3e+1b7e-4b43-9f4e-6a1d2c3b4a5f",
        "0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a5f",
        "pv-nfs-1",
    ] {
        assert!(matches!(VolumeRef::of(name), VolumeRef::Named(_)), "{name}");
        assert_eq!(VolumeRef::of(name).to_string(), name);
    }
    let mut s = ClusterState::new();
    for (pvc, pv, pv_modes) in [
        ("a", canonical, "ReadWriteOncePod"),
        ("b", "pv-nfs-1", "ReadWriteMany"),
    ] {
        s.apply_pvc(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": pvc, "namespace": "default"},
                "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": pv}
            }))
            .unwrap(),
        );
        s.apply_pv(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": pv}, "spec": {"accessModes": [pv_modes]}
            }))
            .unwrap(),
        );
    }
    assert!(s
        .claim("default", "a")
        .unwrap()
        .unwrap()
        .effective
        .is_rwop());
    assert_eq!(
        s.claim("default", "b").unwrap().unwrap().effective,
        AccessModes::RWX
    );
    let dump = s.canonical_dump();
    assert!(dump.contains(&format!(
        "pvc default/a modes=ReadWriteOnce volume={canonical}"
    )));
    assert!(dump.contains(&format!("pv {canonical} modes=ReadWriteOncePod")));
    assert!(dump.contains(&"pvc default/b modes=ReadWriteOnce volume=pv-nfs-1".to_string()));
    let mut names = s.pv_names();
    names.sort();
    assert_eq!(names, vec!["pv-nfs-1".to_string(), canonical.to_string()]);
    s.delete_pv(canonical);
    assert_eq!(
        s.claim("default", "a").unwrap().unwrap().effective,
        AccessModes::RWO
    );
}

#[test]
fn many_consumers_and_many_claims() {
    let mut s = ClusterState::new();
    let names: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
    for n in &names {
        s.apply_pod(&pod(
            "default",
            n,
            Some("n1"),
            &[("shared", false), ("logs", true)],
        ));
    }
    let c = s.consumers("default", "shared").unwrap();
    assert_eq!(c.len(), 7);
    assert!(s
        .consumers("default", "logs")
        .unwrap()
        .iter()
        .all(|c| c.read_only));
    for n in &names[..5] {
        s.delete_pod("default", n);
    }
    let mut left: Vec<&str> = s
        .consumers("default", "shared")
        .unwrap()
        .iter()
        .map(|c| c.name)
        .collect();
    left.sort();
    assert_eq!(left, vec!["p5", "p6"]);
    // Re-adding after removals reuses slots and keeps every link right.
    for n in &names[..5] {
        s.apply_pod(&pod("default", n, None, &[("shared", true)]));
    }
    assert_eq!(s.consumers("default", "shared").unwrap().len(), 7);
    assert_eq!(s.consumers("default", "logs").unwrap().len(), 2);
    assert_eq!(s.pod_count(), 7);
    assert_eq!(
        s.pod("default", "p0").unwrap().claims,
        vec![("shared".to_string(), true)]
    );
    for n in &names {
        s.delete_pod("default", n);
    }
    assert_eq!(s.pod_count(), 0);
    assert!(s.canonical_dump().is_empty());
}

/// Random churn against a plain model: slot and claim-entry reuse in the
/// slabs and hash tables must never mix up who uses what.
#[test]
fn churn_matches_a_plain_model() {
    use std::collections::BTreeMap;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let claim_names = ["a", "b", "c", "d", "e", "f"];
    let mut s = ClusterState::new();
    let mut pods: BTreeMap<(String, String), Vec<(&str, bool)>> = BTreeMap::new();
    let mut pvcs: BTreeMap<(String, String), ()> = BTreeMap::new();
    for step in 0..4000 {
        let ns = format!("ns{}", rnd(2));
        match rnd(10) {
            0..=4 => {
                let name = format!("p{}", rnd(40));
                let mut claims: Vec<(&str, bool)> = Vec::new();
                for c in claim_names {
                    if rnd(4) == 0 {
                        claims.push((c, rnd(2) == 0));
                    }
                }
                s.apply_pod(&pod(&ns, &name, Some("n1"), &claims));
                if claims.is_empty() {
                    pods.remove(&(ns, name));
                } else {
                    pods.insert((ns, name), claims);
                }
            }
            5..=6 => {
                let name = format!("p{}", rnd(40));
                s.delete_pod(&ns, &name);
                pods.remove(&(ns, name));
            }
            7..=8 => {
                let name = claim_names[rnd(6) as usize];
                s.apply_pvc(
                    &serde_json::from_value(serde_json::json!({
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": format!("pvc-0b6f0c3e-1b7e-4b43-9f4e-6a1d2c3b4a{:02x}", rnd(256))}
                    }))
                    .unwrap(),
                );
                pvcs.insert((ns, name.to_string()), ());
            }
            _ => {
                let name = claim_names[rnd(6) as usize];
                s.delete_pvc(&ns, name);
                pvcs.remove(&(ns, name.to_string()));
            }
        }
        assert_eq!(s.pod_count(), pods.len(), "step {step}");
        assert_eq!(s.pvc_count(), pvcs.len(), "step {step}");
        for ns in ["ns0", "ns1"] {
            for c in claim_names {
                let mut got: Vec<(String, bool)> = s
                    .consumers(ns, c)
                    .unwrap()
                    .iter()
                    .map(|u| (u.name.to_string(), u.read_only))
                    .collect();
                got.sort();
                let want: Vec<(String, bool)> = pods
                    .iter()
                    .filter(|((pns, _), _)| pns == ns)
                    .filter_map(|((_, name), cl)| {
                        cl.iter()
                            .find(|(x, _)| *x == c)
                            .map(|(_, ro)| (name.clone(), *ro))
                    })
                    .collect();
                assert_eq!(got, want, "step {step}: consumers of {ns}/{c}");
                assert_eq!(
                    s.claim(ns, c).unwrap().is_some(),
                    pvcs.contains_key(&(ns.to_string(), c.to_string())),
                    "step {step}: claim {ns}/{c}"
                );
            }
        }
    }
}

#[test]
fn dump_is_order_independent() {
    let mut a = ClusterState::new();
    let mut b = ClusterState::new();
    let p1 = pod("default", "a", Some("n1"), &[("data", false)]);
    let p2 = pod("default", "b", Some("n2"), &[("data", true)]);
    a.apply_pod(&p1);
    a.apply_pod(&p2);
    b.apply_pod(&p2);
    b.apply_pod(&pod("default", "zz", None, &[("x", false)]));
    b.apply_pod(&p1);
    b.delete_pod("default", "zz");
    assert_eq!(a.canonical_dump(), b.canonical_dump());
}
