use super::*;
use crate::objects::{
    DeploymentStrategy, ObjectMeta, OwnerReference, Pod, PodSpec, PodStatus, PodTemplate,
    PvcVolumeSource, Volume as PodVolume, WorkloadSpec,
};

const PV: &str = "pvc-0d6e3b1a-0000-4000-8000-000000000001";

fn claim() -> Claim {
    Claim {
        namespace: "shop".into(),
        name: "data".into(),
        uid: Some("uid-old".into()),
        modes: AccessModes::RWO,
        volume_name: Some(PV.into()),
        deleting: false,
        phase: Some("Bound".into()),
    }
}

fn volume() -> Volume {
    Volume {
        name: PV.into(),
        modes: AccessModes::RWO,
        csi_driver: Some("ebs.csi.aws.com".into()),
        reclaim_policy: Some("Delete".into()),
        claim_ref: Some(ClaimRef {
            namespace: "shop".into(),
            name: "data".into(),
            uid: Some("uid-old".into()),
        }),
        phase: Some("Bound".into()),
        capacity: Some("10Gi".into()),
        storage_class: Some("gp3".into()),
        record: None,
    }
}

fn user(name: &str, node: &str) -> User {
    User {
        namespace: "shop".into(),
        name: name.into(),
        node: Some(node.into()),
        terminating: false,
        owner: None,
    }
}

fn pvc_json() -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop", "uid": "uid-old", "resourceVersion": "1001",
            "labels": {"app": "db"},
            "annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
                            "team": "payments", "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com"},
            "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Gi"}},
                 "storageClassName": "gp3", "volumeMode": "Block", "volumeName": PV},
        "status": {"phase": "Bound"}
    })
}

fn pv_json() -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": PV, "resourceVersion": "1002", "annotations": {"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"},
                 "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"},
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "gp3",
                 "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": "shop",
                              "name": "data", "uid": "uid-old", "resourceVersion": "1001"}},
        "status": {"phase": "Bound"}
    })
}

fn record() -> Record {
    Record::of(&pvc_json(), &volume()).unwrap()
}

fn migrating(v: Volume) -> Volume {
    Volume {
        reclaim_policy: Some("Retain".into()),
        record: Some(Ok(record())),
        ..v
    }
}

#[test]
fn a_bound_csi_rwo_claim_with_one_user_is_a_candidate() {
    match judge(&claim(), Some(&volume()), &[user("db-0", "w1")], &[]) {
        Verdict::Candidate(why) => {
            assert!(why.contains("CSI volume (ebs.csi.aws.com)"), "{why}");
            assert!(why.contains("used by pod shop/db-0 on w1 alone"), "{why}");
        }
        v => panic!("{v:?}"),
    }
    assert!(matches!(
        judge(&claim(), Some(&volume()), &[], &[]),
        Verdict::Candidate(w) if w.contains("used by no pod")
    ));
}

#[test]
fn every_reason_a_claim_is_not_a_candidate() {
    let reason = |c: Claim, v: Option<Volume>, users: &[User], runners: &[Runner]| match judge(
        &c,
        v.as_ref(),
        users,
        runners,
    ) {
        Verdict::NotCandidate(r) => r.id(),
        v => panic!("{v:?}"),
    };
    let unbound = Claim {
        volume_name: None,
        phase: Some("Pending".into()),
        ..claim()
    };
    assert_eq!(reason(unbound, Some(volume()), &[], &[]), "not-bound");
    assert_eq!(reason(claim(), None, &[], &[]), "volume-not-found");
    let deleting = Claim {
        deleting: true,
        ..claim()
    };
    assert_eq!(reason(deleting, Some(volume()), &[], &[]), "terminating");
    assert_eq!(
        reason(claim(), Some(migrating(volume())), &[], &[]),
        "migration-under-way"
    );
    let other_ref = Volume {
        claim_ref: Some(ClaimRef {
            namespace: "shop".into(),
            name: "other".into(),
            uid: None,
        }),
        ..volume()
    };
    assert_eq!(reason(claim(), Some(other_ref), &[], &[]), "not-bound");
    let rwop = Volume {
        modes: AccessModes::RWOP,
        ..volume()
    };
    assert_eq!(reason(claim(), Some(rwop), &[], &[]), "already-rwop");
    let rwx = Volume {
        modes: AccessModes::RWX,
        ..volume()
    };
    assert_eq!(reason(claim(), Some(rwx), &[], &[]), "multi-node");
    let rwo_rox = Volume {
        modes: AccessModes::RWO.union(AccessModes::ROX),
        ..volume()
    };
    assert_eq!(reason(claim(), Some(rwo_rox), &[], &[]), "multi-node");
    let none = Volume {
        modes: AccessModes::default(),
        ..volume()
    };
    assert_eq!(reason(claim(), Some(none), &[], &[]), "not-read-write-once");
    let in_tree = Volume {
        csi_driver: None,
        ..volume()
    };
    assert_eq!(reason(claim(), Some(in_tree), &[], &[]), "in-tree");
    let two = [user("a", "w1"), user("b", "w2")];
    assert_eq!(reason(claim(), Some(volume()), &two, &[]), "used-by-pods");
    let r = Runner {
        kind: Kind::Deployment,
        name: "web".into(),
        rule: Rule::WorkloadRwopReplicas,
        text: "Deployment \"web\" runs 3 replicas".into(),
    };
    assert_eq!(
        reason(claim(), Some(volume()), &[], &[r]),
        "workload-runs-two"
    );
    // Messages are one line and name what matters.
    let m = Reason::UsedByPods(two.to_vec()).message(&claim());
    assert_eq!(
        m,
        "used by 2 pods: pod shop/a on w1, pod shop/b on w2; ReadWriteOncePod would let only one run"
    );
    let m = Reason::MigrationUnderWay(PV.into()).message(&claim());
    assert!(
        m.contains("claimguard migrate pvc/data -n shop --apply"),
        "{m}"
    );
}

fn deployment(name: &str, replicas: i64, strategy: &str, claims: &[&str]) -> Workload {
    Workload {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        spec: Some(WorkloadSpec {
            replicas: Some(replicas),
            strategy: Some(DeploymentStrategy {
                type_: Some(strategy.into()),
                rolling_update: None,
            }),
            template: Some(PodTemplate {
                metadata: ObjectMeta::default(),
                spec: Some(pod_spec(claims)),
            }),
            ..Default::default()
        }),
    }
}

fn pod_spec(claims: &[&str]) -> PodSpec {
    PodSpec {
        volumes: claims
            .iter()
            .map(|c| PodVolume {
                name: format!("v-{c}"),
                persistent_volume_claim: Some(PvcVolumeSource {
                    claim_name: c.to_string(),
                    read_only: false,
                }),
                ephemeral: None,
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn workloads_that_can_run_two_pods_once_the_claim_is_rwop() {
    let many = deployment("web", 3, "Recreate", &["data"]);
    let rolling = deployment("api", 1, "RollingUpdate", &["data"]);
    let single = deployment("db", 1, "Recreate", &["data"]);
    let elsewhere = deployment("cache", 5, "Recreate", &["cache"]);
    let mut other_ns = deployment("x", 5, "Recreate", &["data"]);
    other_ns.metadata.namespace = Some("other".into());
    let mut rs = deployment("web-7d9f", 3, "Recreate", &["data"]);
    rs.metadata.owner_references = vec![OwnerReference {
        kind: "Deployment".into(),
        name: "web".into(),
        controller: Some(true),
        ..Default::default()
    }];
    let mut sts = deployment("pg", 3, "", &["data"]);
    sts.spec.as_mut().unwrap().strategy = None;
    sts.spec.as_mut().unwrap().volume_claim_templates = vec![objects::ClaimTemplate {
        metadata: ObjectMeta {
            name: "v-data".into(),
            ..Default::default()
        },
    }];
    let ws = [
        (Kind::Deployment, &many),
        (Kind::Deployment, &rolling),
        (Kind::Deployment, &single),
        (Kind::Deployment, &elsewhere),
        (Kind::Deployment, &other_ns),
        (Kind::ReplicaSet, &rs),
        (Kind::StatefulSet, &sts),
    ];
    let rs = runners("shop", "data", ws);
    let got: Vec<(&str, &str)> = rs.iter().map(|r| (r.name.as_str(), r.rule.id())).collect();
    assert_eq!(
        got,
        [
            ("api", "rollout-deadlock"),
            ("web", "workload-rwop-replicas")
        ]
    );
    assert!(rs[1].text.contains("runs 3 replicas"), "{}", rs[1].text);
    assert!(rs[0].text.contains("Recreate"), "{}", rs[0].text);
}

fn pod(name: &str, claims: &[&str], phase: &str, owner: Option<(&str, &str)>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: Some("shop".into()),
            owner_references: owner
                .map(|(k, n)| OwnerReference {
                    kind: k.into(),
                    name: n.into(),
                    controller: Some(true),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("w1".into()),
            ..pod_spec(claims)
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
        }),
    }
}

#[test]
fn users_are_the_unfinished_pods_with_their_top_controller() {
    let mut rs = deployment("db-7d9f", 1, "Recreate", &["data"]);
    rs.metadata.owner_references = vec![OwnerReference {
        kind: "Deployment".into(),
        name: "db".into(),
        controller: Some(true),
        ..Default::default()
    }];
    let pods = [
        pod(
            "db-7d9f-abc",
            &["data"],
            "Running",
            Some(("ReplicaSet", "db-7d9f")),
        ),
        pod("migrate-job", &["data"], "Succeeded", Some(("Job", "m"))),
        pod("pg-0", &["data"], "Pending", Some(("StatefulSet", "pg"))),
        pod("debug", &["data"], "Running", None),
        pod("web", &["other"], "Running", None),
    ];
    let users = users_of("shop", "data", &pods, &[(Kind::ReplicaSet, rs)]);
    let got: Vec<String> = users.iter().map(User::stop_command).collect();
    assert_eq!(
        got,
        [
            "kubectl scale deployment/db -n shop --replicas=0",
            "kubectl delete pod debug -n shop",
            "kubectl scale statefulset/pg -n shop --replicas=0",
        ]
    );
    assert_eq!(
        users[0].describe(),
        "pod shop/db-7d9f-abc on w1 (Deployment db)"
    );
}

#[test]
fn stages_from_what_the_api_server_shows() {
    let st = |c: Option<&Claim>, v: &Volume| stage("shop", "data", c, v);
    // Not started; already done.
    assert_eq!(st(Some(&claim()), &volume()), Ok(Stage::Start));
    let rwop_claim = Claim {
        modes: AccessModes::RWOP,
        uid: Some("uid-new".into()),
        ..claim()
    };
    let rwop_volume = Volume {
        modes: AccessModes::RWOP,
        ..volume()
    };
    assert_eq!(st(Some(&rwop_claim), &rwop_volume), Ok(Stage::Done));
    // Step 2 done: the old claim is still there.
    let v2 = migrating(volume());
    assert_eq!(st(Some(&claim()), &v2), Ok(Stage::DeleteClaim));
    let terminating = Claim {
        deleting: true,
        ..claim()
    };
    assert_eq!(st(Some(&terminating), &v2), Ok(Stage::WaitGone));
    // Step 3 done: the claim is gone, the PV controller has not caught up, then has.
    assert_eq!(st(None, &v2), Ok(Stage::WaitReleased));
    let released = Volume {
        phase: Some("Released".into()),
        ..v2.clone()
    };
    assert_eq!(st(None, &released), Ok(Stage::Rebind));
    // Step 4 done.
    let v4 = Volume {
        modes: AccessModes::RWOP,
        claim_ref: Some(ClaimRef {
            namespace: "shop".into(),
            name: "data".into(),
            uid: None,
        }),
        phase: Some("Available".into()),
        ..v2.clone()
    };
    assert_eq!(st(None, &v4), Ok(Stage::Create));
    // Step 5: created, then Bound.
    let new = Claim {
        phase: Some("Pending".into()),
        ..rwop_claim.clone()
    };
    assert_eq!(st(Some(&new), &v4), Ok(Stage::WaitBound));
    let v5 = Volume {
        claim_ref: Some(ClaimRef {
            namespace: "shop".into(),
            name: "data".into(),
            uid: Some("uid-new".into()),
        }),
        phase: Some("Bound".into()),
        ..v4.clone()
    };
    assert_eq!(st(Some(&rwop_claim), &v5), Ok(Stage::Restore));
    // Step 6 done: the annotation is gone.
    let v6 = Volume {
        record: None,
        reclaim_policy: Some("Delete".into()),
        ..v5.clone()
    };
    assert_eq!(st(Some(&rwop_claim), &v6), Ok(Stage::Done));
    // The order a run goes through.
    let order = [
        Stage::Start,
        Stage::DeleteClaim,
        Stage::WaitGone,
        Stage::WaitReleased,
        Stage::Rebind,
        Stage::Create,
        Stage::WaitBound,
        Stage::Restore,
        Stage::Done,
    ];
    assert!(order
        .windows(2)
        .all(|w| w[0] < w[1] && w[0].step() <= w[1].step()));
}

#[test]
fn states_no_run_leaves_stop_the_migration() {
    let st = |c: Option<&Claim>, v: &Volume| stage("shop", "data", c, v);
    // Someone set the policy back to Delete mid-way: never delete the claim then.
    let unsafe_policy = Volume {
        reclaim_policy: Some("Delete".into()),
        ..migrating(volume())
    };
    let e = st(Some(&claim()), &unsafe_policy).unwrap_err();
    assert!(e.contains("reclaim policy is Delete, not Retain"), "{e}");
    // A claim of that name that is not the one step 5 makes.
    let stranger = Claim {
        uid: Some("uid-x".into()),
        volume_name: None,
        phase: Some("Pending".into()),
        ..claim()
    };
    let e = st(Some(&stranger), &migrating(volume())).unwrap_err();
    assert!(e.contains("re-created by someone else"), "{e}");
    // A record of another claim.
    let e = stage("shop", "other", Some(&claim()), &migrating(volume())).unwrap_err();
    assert!(
        e.contains("records a migration of PersistentVolumeClaim shop/data"),
        "{e}"
    );
    // An unreadable record.
    let broken = Volume {
        record: Some(Err("expected value".into())),
        ..volume()
    };
    assert!(st(Some(&claim()), &broken)
        .unwrap_err()
        .contains("cannot be read"));
    // No claim and no record.
    assert!(st(None, &volume()).is_err());
    for e in [
        st(Some(&claim()), &unsafe_policy).unwrap_err(),
        st(Some(&stranger), &migrating(volume())).unwrap_err(),
    ] {
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn the_record_and_what_each_write_sends() {
    let r = record();
    assert_eq!(r.claim.uid, "uid-old");
    assert_eq!(r.reclaim_policy, "Delete");
    assert_eq!(r.volume_access_modes, ["ReadWriteOnce"]);
    assert_eq!(Record::parse(&r.to_json()).unwrap(), r);

    let pv = pv_json();
    let v2 = retain_and_record(&pv, &r);
    assert_eq!(v2["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        v2["metadata"]["resourceVersion"], "1002",
        "optimistic concurrency"
    );
    assert_eq!(
        Record::parse(v2["metadata"]["annotations"][ANNOTATION].as_str().unwrap()).unwrap(),
        r
    );
    assert_eq!(
        v2["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "ebs.csi.aws.com"
    );

    let v4 = rebind(&v2, &r);
    assert_eq!(v4["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
    assert_eq!(
        v4["spec"]["claimRef"],
        json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": "shop", "name": "data"})
    );
    assert_eq!(v4["spec"]["persistentVolumeReclaimPolicy"], "Retain");

    let c = new_claim(&r, &volume());
    assert_eq!(
        c,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "shop", "labels": {"app": "db"},
                         "annotations": {"team": "payments", "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com"}},
            "spec": {"accessModes": ["ReadWriteOncePod"], "storageClassName": "gp3", "volumeName": PV,
                     "volumeMode": "Block", "resources": {"requests": {"storage": "8Gi"}}}})
    );
    // No class on the old claim: the volume's, never the cluster's default.
    let mut classless = r.clone();
    classless
        .spec
        .as_object_mut()
        .unwrap()
        .remove("storageClassName");
    assert_eq!(
        new_claim(&classless, &volume())["spec"]["storageClassName"],
        "gp3"
    );
    let no_class = Volume {
        storage_class: None,
        ..volume()
    };
    assert_eq!(
        new_claim(&classless, &no_class)["spec"]["storageClassName"],
        ""
    );

    let v6 = restore(&v4, &r);
    assert_eq!(v6["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert!(v6["metadata"]["annotations"].get(ANNOTATION).is_none());
    assert_eq!(
        v6["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "ebs.csi.aws.com"
    );
    let mut bare = v4.clone();
    bare["metadata"]["annotations"] = json!({ANNOTATION: "{}"});
    assert!(restore(&bare, &r)["metadata"].get("annotations").is_none());
}

#[test]
fn volumes_and_claims_from_the_narrow_objects() {
    let pv: objects::PersistentVolume = serde_json::from_value(pv_json()).unwrap();
    let v = Volume::of(&pv, Some("Bound"));
    assert_eq!(v, volume());
    let pvc: objects::PersistentVolumeClaim = serde_json::from_value(pvc_json()).unwrap();
    assert_eq!(Claim::of(&pvc, Some("Bound")), claim());
    let mut annotated = pv_json();
    annotated["metadata"]["annotations"][ANNOTATION] = json!(record().to_json());
    let pv: objects::PersistentVolume = serde_json::from_value(annotated).unwrap();
    assert_eq!(Volume::of(&pv, None).record, Some(Ok(record())));
}

#[test]
fn the_plan_as_kubectl_commands() {
    let r = record();
    let all = steps(Stage::Start, &r, &volume(), &[user("db-0", "w1")]);
    assert_eq!(
        all.iter().map(|s| s.step).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(all[0].commands[0], "kubectl delete pod db-0 -n shop");
    assert!(all[1].commands[1].starts_with(&format!("kubectl annotate pv {PV} {ANNOTATION}='{{")));
    assert!(
        all[4].commands[0].contains("accessModes:\n  - ReadWriteOncePod\n"),
        "{}",
        all[4].commands[0]
    );
    assert!(all[5].commands[0].contains("\"persistentVolumeReclaimPolicy\":\"Delete\""));
    let rest = steps(Stage::WaitReleased, &r, &volume(), &[]);
    assert_eq!(
        rest.iter().map(|s| s.step).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    assert!(steps(Stage::Done, &r, &volume(), &[]).is_empty());
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
}

/// The whole migration through the pure functions, with the PV controller
/// played by hand: the stage only moves forward, every write comes from the
/// stage before it, and whenever the claim is missing the volume is Retain.
#[test]
fn a_whole_migration_never_leaves_a_claimless_volume_deletable() {
    let observe = |pvc: &Option<Value>, pv: &Value| {
        let c = pvc.as_ref().map(|p| {
            let narrow: objects::PersistentVolumeClaim = serde_json::from_value(p.clone()).unwrap();
            Claim::of(&narrow, p.pointer("/status/phase").and_then(Value::as_str))
        });
        let narrow: objects::PersistentVolume = serde_json::from_value(pv.clone()).unwrap();
        let v = Volume::of(&narrow, pv.pointer("/status/phase").and_then(Value::as_str));
        (stage("shop", "data", c.as_ref(), &v).unwrap(), v)
    };
    let mut pvc = Some(pvc_json());
    let mut pv = pv_json();
    let mut seen = Vec::new();
    for _ in 0..20 {
        if pvc.is_none() {
            assert_eq!(
                pv["spec"]["persistentVolumeReclaimPolicy"], "Retain",
                "{pv}"
            );
        }
        let (st, v) = observe(&pvc, &pv);
        if let Some(last) = seen.last() {
            assert!(st >= *last, "{st:?} after {last:?}");
        }
        seen.push(st);
        let record = match &v.record {
            Some(Ok(r)) => r.clone(),
            _ => Record::of(pvc.as_ref().unwrap(), &v).unwrap(),
        };
        match st {
            Stage::Start => pv = retain_and_record(&pv, &record),
            Stage::DeleteClaim => {
                pvc = None;
                // The PV controller notices later.
            }
            Stage::WaitGone => unreachable!("deleted at once here"),
            Stage::WaitReleased => pv["status"]["phase"] = json!("Released"),
            Stage::Rebind => {
                pv = rebind(&pv, &record);
                pv["status"]["phase"] = json!("Available");
            }
            Stage::Create => {
                let mut c = new_claim(&record, &v);
                c["metadata"]["uid"] = json!("uid-new");
                c["status"] = json!({"phase": "Pending"});
                pvc = Some(c);
            }
            Stage::WaitBound => {
                // The PV controller binds the claim named by volumeName.
                pv["spec"]["claimRef"]["uid"] = json!("uid-new");
                pv["status"]["phase"] = json!("Bound");
                pvc.as_mut().unwrap()["status"]["phase"] = json!("Bound");
            }
            Stage::Restore => pv = restore(&pv, &record),
            Stage::Done => break,
        }
    }
    assert_eq!(
        seen,
        [
            Stage::Start,
            Stage::DeleteClaim,
            Stage::WaitReleased,
            Stage::Rebind,
            Stage::Create,
            Stage::WaitBound,
            Stage::Restore,
            Stage::Done
        ]
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
    assert_eq!(pvc.unwrap()["spec"]["volumeName"], PV);
}
