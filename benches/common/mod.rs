//! Synthetic cluster and AdmissionReview payloads shaped like a real
//! cluster's, shared by the criterion benches and the examples (included with
//! `#[path]`, so it is not part of the library).
//!
//! Everything is deterministic: the same seed gives the same cluster, so two
//! runs of the benches measure the same thing.
#![allow(dead_code)]

use claimguard::objects::{
    Container, Namespace, ObjectMeta, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec,
    PodStatus, PvSpec, PvcSpec, PvcVolumeSource, Volume, VolumeMount,
};

/// splitmix64: tiny, fast, good enough to spread names.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// `k8s.io/apimachinery` rand.String alphabet (no vowels, no 0/1/3).
    pub fn kube_suffix(&mut self, len: usize) -> String {
        const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len)
            .map(|_| ALPHA[self.below(ALPHA.len() as u64) as usize] as char)
            .collect()
    }
    pub fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

const TEAMS: &[&str] = &[
    "payments",
    "checkout",
    "search",
    "catalog",
    "identity",
    "billing",
    "ledger",
    "fraud",
    "notifications",
    "shipping",
];
const ENVS: &[&str] = &["prod", "staging", "dev", "qa", "perf"];
const APPS: &[&str] = &[
    "web",
    "api",
    "worker",
    "postgres",
    "redis",
    "kafka",
    "elasticsearch",
    "minio",
    "grafana",
    "prometheus",
    "orders-service",
    "inventory-sync",
    "image-resizer",
    "session-store",
    "report-generator",
    "etl-runner",
    "mongodb",
    "rabbitmq",
    "zookeeper",
    "nginx-ingress",
];

pub const NAMESPACES: usize = 50;
pub const NODES: usize = 500;

pub fn namespace_name(i: usize) -> String {
    format!(
        "{}-{}",
        TEAMS[i % TEAMS.len()],
        ENVS[(i / TEAMS.len()) % ENVS.len()]
    )
}

/// EKS-style node names, 40-odd characters.
pub fn node_name(i: usize) -> String {
    format!(
        "ip-10-{}-{}-{}.eu-west-1.compute.internal",
        i / 250,
        (i * 7) % 250,
        (i * 13) % 250 + 2
    )
}

/// One pod of a synthetic cluster, and the claim it uses if any.
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub claim: Option<String>,
}

/// The i-th pod: `claim_share` (0.0–1.0) of pods use one claim, named
/// `data-<statefulset>-<ordinal>` for stateful apps; the rest are
/// Deployment pods named `web-7d4b9c8f6d-x2x9k`.
pub fn plan_pod(rng: &mut Rng, i: usize, claim_share: f64) -> PodPlan {
    let namespace = namespace_name(i % NAMESPACES);
    let app = APPS[(i / NAMESPACES) % APPS.len()];
    let node = node_name(rng.below(NODES as u64) as usize);
    let uid = rng.uuid();
    let with_claim = (rng.below(10_000) as f64) < claim_share * 10_000.0;
    if with_claim {
        // One StatefulSet pod per i: ordinal keeps names unique in the namespace.
        let ordinal = i / NAMESPACES;
        PodPlan {
            namespace,
            name: format!("{app}-{ordinal}"),
            uid,
            node,
            claim: Some(format!("data-{app}-{ordinal}")),
        }
    } else {
        PodPlan {
            namespace,
            name: format!("{app}-{}-{}", rng.kube_suffix(10), rng.kube_suffix(5)),
            uid,
            node,
            claim: None,
        }
    }
}

pub fn pod_from_plan(p: &PodPlan) -> Pod {
    let mut containers = vec![Container {
        volume_mounts: vec![VolumeMount {
            name: "kube-api-access-x7k2p".into(),
            read_only: true,
        }],
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "kube-api-access-x7k2p".into(),
        ..Default::default()
    }];
    if let Some(c) = &p.claim {
        volumes.push(Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PvcVolumeSource {
                claim_name: c.clone(),
                read_only: false,
            }),
            ..Default::default()
        });
        containers[0].volume_mounts.push(VolumeMount {
            name: "data".into(),
            read_only: false,
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: p.name.clone(),
            namespace: Some(p.namespace.clone()),
            uid: Some(p.uid.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes,
            containers,
            node_name: Some(p.node.clone()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
        }),
    }
}

/// The i-th PVC: the claim of the i-th claimed pod when there is one, else a
/// leftover claim of a scaled-down StatefulSet. Bound to a CSI volume named
/// `pvc-<uid>` as the external provisioner names them.
pub fn pvc(rng: &mut Rng, namespace: &str, name: &str, modes: &[&str]) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: Some(namespace.into()),
            uid: Some(rng.uuid()),
            ..Default::default()
        },
        spec: Some(PvcSpec {
            access_modes: modes.iter().map(|m| m.to_string()).collect(),
            storage_class_name: Some("gp3".into()),
            volume_name: Some(format!("pvc-{}", rng.uuid())),
            ..Default::default()
        }),
    }
}

pub fn pv_for(pvc: &PersistentVolumeClaim) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    PersistentVolume {
        metadata: ObjectMeta {
            name: spec.volume_name.unwrap_or_default(),
            ..Default::default()
        },
        spec: Some(PvSpec {
            access_modes: spec.access_modes,
            claim_ref: None,
            storage_class_name: spec.storage_class_name,
            ..Default::default()
        }),
    }
}

pub fn namespace(i: usize) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: namespace_name(i),
            ..Default::default()
        },
    }
}

/// Feed a synthetic cluster of `pods` pods and `pvcs` PVCs to `sink`, one
/// object at a time so nothing but the index stays alive. Claimed pods' PVCs
/// come first; the remaining PVCs are unused.
pub fn stream_cluster(
    pods: usize,
    pvcs: usize,
    claim_share: f64,
    with_pvs: bool,
    mut sink: impl FnMut(Item),
) {
    let mut rng = Rng::new(7);
    for i in 0..NAMESPACES {
        sink(Item::Namespace(namespace(i)));
    }
    let mut made_pvcs = 0;
    for i in 0..pods {
        let plan = plan_pod(&mut rng, i, claim_share);
        if let Some(c) = &plan.claim {
            if made_pvcs < pvcs {
                let p = pvc(&mut rng, &plan.namespace, c, &["ReadWriteOnce"]);
                if with_pvs {
                    sink(Item::Pv(pv_for(&p)));
                }
                sink(Item::Pvc(p));
                made_pvcs += 1;
            }
        }
        sink(Item::Pod(pod_from_plan(&plan)));
    }
    let mut j = 0;
    while made_pvcs < pvcs {
        let ns = namespace_name(j % NAMESPACES);
        let app = APPS[(j / NAMESPACES) % APPS.len()];
        let p = pvc(
            &mut rng,
            &ns,
            &format!("data-{app}-old-{j}"),
            &["ReadWriteOnce"],
        );
        if with_pvs {
            sink(Item::Pv(pv_for(&p)));
        }
        sink(Item::Pvc(p));
        made_pvcs += 1;
        j += 1;
    }
}

pub enum Item {
    Namespace(Namespace),
    Pod(Pod),
    Pvc(PersistentVolumeClaim),
    Pv(PersistentVolume),
}

impl Item {
    pub fn apply(&self, state: &mut claimguard::cluster::ClusterState) {
        match self {
            Item::Namespace(n) => state.apply_namespace(n),
            Item::Pod(p) => state.apply_pod(p),
            Item::Pvc(p) => state.apply_pvc(p),
            Item::Pv(p) => state.apply_pv(p),
        }
    }
}

pub fn build_state(
    pods: usize,
    pvcs: usize,
    claim_share: f64,
) -> claimguard::cluster::ClusterState {
    let mut s = claimguard::cluster::ClusterState::new();
    stream_cluster(pods, pvcs, claim_share, false, |it| it.apply(&mut s));
    s
}

/// The exact JSON the API server sends to a validating webhook for a pod
/// created by the ReplicaSet controller: managedFields, a full container spec
/// with env, probes, resources, tolerations and the Pending status it has at
/// admission. About 5.5 KB with three claims.
pub fn pod_review_json(
    uid: &str,
    namespace: &str,
    name: &str,
    pod_uid: &str,
    claims: &[(&str, bool)],
    node: Option<&str>,
    dry_run: bool,
) -> String {
    let volumes: Vec<String> = claims
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            format!(r#"{{"name":"vol-{i}","persistentVolumeClaim":{{"claimName":"{c}"}}}}"#)
        })
        .collect();
    let mounts: Vec<String> = claims
        .iter()
        .enumerate()
        .map(|(i, (_, ro))| {
            format!(r#"{{"name":"vol-{i}","mountPath":"/data/{i}","readOnly":{ro}}}"#)
        })
        .collect();
    let sep = if claims.is_empty() { "" } else { "," };
    let node_field = node
        .map(|n| format!(r#""nodeName":"{n}","#))
        .unwrap_or_default();
    let template = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"@UID@","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"requestKind":{"group":"","version":"v1","kind":"Pod"},"requestResource":{"group":"","version":"v1","resource":"pods"},"name":"@NAME@","namespace":"@NS@","operation":"CREATE","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller","uid":"2c5e1f6a-8f63-4f0e-9d39-5b1e0c1f7a44","groups":["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]},"object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"@NAME@","generateName":"orders-service-7d4b9c8f6d-","namespace":"@NS@","uid":"@PODUID@","creationTimestamp":"2026-11-21T20:31:07Z","labels":{"app.kubernetes.io/name":"orders-service","app.kubernetes.io/instance":"orders-service","app.kubernetes.io/version":"2.14.3","app.kubernetes.io/component":"api","app.kubernetes.io/part-of":"shop","pod-template-hash":"7d4b9c8f6d"},"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-11-20T09:12:44Z","prometheus.io/scrape":"true","prometheus.io/port":"9090","prometheus.io/path":"/metrics"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"orders-service-7d4b9c8f6d","uid":"f3b8c2d1-6a4e-4c1b-9e2f-0d7a5b3c9e81","controller":true,"blockOwnerDeletion":true}],"managedFields":[{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"2026-11-21T20:31:07Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{".":{},"f:kubectl.kubernetes.io/restartedAt":{},"f:prometheus.io/path":{},"f:prometheus.io/port":{},"f:prometheus.io/scrape":{}},"f:generateName":{},"f:labels":{".":{},"f:app.kubernetes.io/component":{},"f:app.kubernetes.io/instance":{},"f:app.kubernetes.io/name":{},"f:app.kubernetes.io/part-of":{},"f:app.kubernetes.io/version":{},"f:pod-template-hash":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"f3b8c2d1-6a4e-4c1b-9e2f-0d7a5b3c9e81\"}":{}}},"f:spec":{"f:affinity":{".":{},"f:podAntiAffinity":{".":{},"f:preferredDuringSchedulingIgnoredDuringExecution":{}}},"f:containers":{"k:{\"name\":\"orders-service\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"DATABASE_URL\"}":{".":{},"f:name":{},"f:valueFrom":{".":{},"f:secretKeyRef":{}}},"k:{\"name\":\"LOG_LEVEL\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:imagePullPolicy":{},"f:livenessProbe":{".":{},"f:failureThreshold":{},"f:httpGet":{".":{},"f:path":{},"f:port":{},"f:scheme":{}}},"f:name":{},"f:ports":{".":{},"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}}},"f:readinessProbe":{".":{},"f:httpGet":{".":{},"f:path":{},"f:port":{}}},"f:resources":{".":{},"f:limits":{".":{},"f:memory":{}},"f:requests":{".":{},"f:cpu":{},"f:memory":{}}},"f:volumeMounts":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:volumes":{}}}}]},"spec":{"volumes":[@VOLUMES@@SEP@{"name":"kube-api-access-x7k2p","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}},{"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}},{"downwardAPI":{"items":[{"path":"namespace","fieldRef":{"apiVersion":"v1","fieldPath":"metadata.namespace"}}]}}],"defaultMode":420}}],"containers":[{"name":"orders-service","image":"registry.example.com/shop/orders-service:2.14.3","ports":[{"name":"http","containerPort":8080,"protocol":"TCP"},{"name":"metrics","containerPort":9090,"protocol":"TCP"}],"env":[{"name":"LOG_LEVEL","value":"info"},{"name":"DATABASE_URL","valueFrom":{"secretKeyRef":{"name":"orders-db","key":"url"}}},{"name":"POD_NAME","valueFrom":{"fieldRef":{"apiVersion":"v1","fieldPath":"metadata.name"}}},{"name":"GOMAXPROCS","valueFrom":{"resourceFieldRef":{"resource":"limits.cpu","divisor":"0"}}}],"resources":{"limits":{"memory":"512Mi"},"requests":{"cpu":"250m","memory":"256Mi"}},"volumeMounts":[@MOUNTS@@SEP@{"name":"kube-api-access-x7k2p","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}],"livenessProbe":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3},"readinessProbe":{"httpGet":{"path":"/readyz","port":8080,"scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":5,"successThreshold":1,"failureThreshold":3},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent","securityContext":{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"runAsNonRoot":true,"capabilities":{"drop":["ALL"]}}}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst",@NODE@"serviceAccountName":"orders-service","serviceAccount":"orders-service","securityContext":{"fsGroup":2000},"affinity":{"podAntiAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":100,"podAffinityTerm":{"labelSelector":{"matchLabels":{"app.kubernetes.io/name":"orders-service"}},"topologyKey":"kubernetes.io/hostname"}}]}},"schedulerName":"default-scheduler","tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"},"status":{"phase":"Pending","qosClass":"Burstable"}},"oldObject":null,"dryRun":@DRYRUN@,"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}"#;
    template
        .replace("@UID@", uid)
        .replace("@NAME@", name)
        .replace("@NS@", namespace)
        .replace("@PODUID@", pod_uid)
        .replace("@VOLUMES@", &volumes.join(","))
        .replace("@MOUNTS@", &mounts.join(","))
        .replace("@SEP@", sep)
        .replace("@NODE@", &node_field)
        .replace("@DRYRUN@", if dry_run { "true" } else { "false" })
}
