//! Narrow serde views of the Kubernetes objects claimguard reads.
//!
//! Only the fields a rule or the index needs are declared; serde skips the
//! rest without building a tree, which is what keeps an AdmissionReview parse
//! cheap (a full `Pod` carries managedFields, status conditions, env, probes…).
//! Every field defaults, so a partial object still parses; structural checks
//! that matter to the user ("a pod without spec") are made by the caller.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Always empty for a [`Pod`]: no rule reads a pod's labels.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    /// For a [`Pod`], only those under [`POD_ANNOTATION_PREFIX`].
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnerReference {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    pub controller: Option<bool>,
}

impl ObjectMeta {
    /// The name to show a person: a pod created with only `generateName`
    /// has no name yet when a webhook sees it.
    pub fn display_name(&self) -> String {
        if !self.name.is_empty() {
            self.name.clone()
        } else if !self.generate_name.is_empty() {
            format!("{}<generated>", self.generate_name)
        } else {
            "<unnamed>".to_string()
        }
    }
}

/// `null` in YAML/JSON for a map or list means "empty", as the API server treats it.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    /// As a pod keeps it: no labels, and only the annotations under
    /// [`POD_ANNOTATION_PREFIX`] (see [`pod_meta`]).
    #[serde(deserialize_with = "pod_meta")]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

/// The prefix of every pod annotation a rule reads
/// (`claimguard.io/allow-shared-writers`, `claimguard.io/colocate`).
pub const POD_ANNOTATION_PREFIX: &str = "claimguard.io/";

/// A pod's metadata without what no rule reads: its labels (an app's pods
/// carry half a dozen) and every annotation outside
/// [`POD_ANNOTATION_PREFIX`]. Building those maps was ~12 % of a review's
/// instructions (docs/performance.md), and the index and the snapshot loader
/// read pods by the hundred thousand. Skipped labels are not type-checked;
/// skipped annotations are still checked to be strings, as before.
fn pod_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct PodMeta {
        name: String,
        generate_name: String,
        namespace: Option<String>,
        uid: Option<String>,
        #[serde(deserialize_with = "kept_annotations")]
        annotations: BTreeMap<String, String>,
        deletion_timestamp: Option<String>,
        resource_version: Option<String>,
        #[serde(deserialize_with = "null_as_default")]
        owner_references: Vec<OwnerReference>,
    }
    let m = PodMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        generate_name: m.generate_name,
        namespace: m.namespace,
        uid: m.uid,
        labels: BTreeMap::new(),
        annotations: m.annotations,
        deletion_timestamp: m.deletion_timestamp,
        resource_version: m.resource_version,
        owner_references: m.owner_references,
    })
}

/// `map<string, string>` (`null` as empty) keeping only the keys under
/// [`POD_ANNOTATION_PREFIX`]; the other values are checked to be strings
/// and dropped without being copied.
fn kept_annotations<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::{DeserializeSeed, MapAccess, Visitor};
    use std::fmt;

    /// A string, copied only when `keep` says so: the keys under the
    /// prefix; never a dropped value, which is only checked to be a string.
    struct Str(fn(&str) -> bool);
    struct Map;

    impl<'de> DeserializeSeed<'de> for Str {
        type Value = Option<String>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl Visitor<'_> for Str {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok((self.0)(v).then(|| v.to_owned()))
        }
    }
    impl<'de> Visitor<'de> for Map {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            let under_prefix: fn(&str) -> bool = |k| k.starts_with(POD_ANNOTATION_PREFIX);
            while let Some(key) = m.next_key_seed(Str(under_prefix))? {
                match key {
                    Some(key) => {
                        out.insert(key, m.next_value()?);
                    }
                    None => {
                        m.next_value_seed(Str(|_| false))?;
                    }
                }
            }
            Ok(out)
        }
    }
    struct Kept(BTreeMap<String, String>);
    impl<'de> Deserialize<'de> for Kept {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Map).map(Kept)
        }
    }
    Ok(Option::<Kept>::deserialize(d)?
        .map(|k| k.0)
        .unwrap_or_default())
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    pub phase: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    #[serde(deserialize_with = "null_as_default")]
    pub volumes: Vec<Volume>,
    #[serde(deserialize_with = "null_as_default")]
    pub containers: Vec<Container>,
    #[serde(deserialize_with = "null_as_default")]
    pub init_containers: Vec<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

impl PodSpec {
    /// The terms of `affinity.nodeAffinity.requiredDuringScheduling…`
    /// (empty when any level is absent).
    pub fn required_node_terms(&self) -> &[NodeSelectorTerm] {
        self.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.as_slice())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcVolumeSource>,
    /// Generic ephemeral volume: its claim belongs to this pod alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PvcVolumeSource {
    pub claim_name: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    #[serde(deserialize_with = "null_as_default")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Raw block devices: a device is always opened read-write unless the
    /// volume source says `readOnly: true`.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub volume_devices: Vec<VolumeDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeDevice {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    pub name: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Affinity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeAffinity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSelector {
    #[serde(deserialize_with = "null_as_default")]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSelectorTerm {
    #[serde(deserialize_with = "null_as_default")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
    #[serde(deserialize_with = "null_as_default")]
    pub match_fields: Vec<NodeSelectorRequirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(deserialize_with = "null_as_default")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PersistentVolumeClaim {
    pub metadata: ObjectMeta,
    pub spec: Option<PvcSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PvcSpec {
    #[serde(deserialize_with = "null_as_default")]
    pub access_modes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// `Filesystem` (the default) or `Block`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PersistentVolume {
    pub metadata: ObjectMeta,
    pub spec: Option<PvSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PvSpec {
    #[serde(deserialize_with = "null_as_default")]
    pub access_modes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ObjectReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The CSI source; `None` for an in-tree or local volume (ReadWriteOncePod
    /// needs CSI: `claimguard migrate` reads it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csi: Option<CsiVolumeSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_reclaim_policy: Option<String>,
    /// `storage: 10Gi`, as the API writes quantities.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub capacity: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CsiVolumeSource {
    pub driver: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectReference {
    pub namespace: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StorageClass {
    pub metadata: ObjectMeta,
    pub provisioner: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

/// A Node: its name, labels (`kubernetes.io/hostname`), taints and
/// conditions (health: `Ready`). Everything else a Node carries (images,
/// addresses, capacity) is skipped by the parser, never built.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Node {
    pub metadata: ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<NodeSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSpec {
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub taints: Vec<Taint>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Taint {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub effect: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatus {
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub conditions: Vec<Condition>,
}

/// A status condition (`Ready`, `PodScheduled`, …): type, status, since when, why.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A `storage.k8s.io/v1` VolumeAttachment: which volume the attach/detach
/// controller attached (or is attaching, or detaching) to which node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeAttachment {
    pub metadata: ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<VolumeAttachmentSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<VolumeAttachmentStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeAttachmentSpec {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub attacher: String,
    pub node_name: String,
    pub source: VolumeAttachmentSource,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeAttachmentSource {
    /// `None` for an inline (CSI migration) volume, which no claim owns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeAttachmentStatus {
    pub attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detach_error: Option<VolumeError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_error: Option<VolumeError>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// `spec.template` of every pod-owning workload.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodTemplate {
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
}

/// `intstr.IntOrString` as the API accepts it: `1`, `"1"` or `"25%"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// Deployment, ReplicaSet, ReplicationController, StatefulSet, DaemonSet and
/// Job share this shape for what the rules read; kind-specific fields are
/// optional. CronJob nests the same under `spec.jobTemplate.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Workload {
    pub metadata: ObjectMeta,
    pub spec: Option<WorkloadSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSpec {
    pub replicas: Option<i64>,
    pub parallelism: Option<i64>,
    pub completions: Option<i64>,
    pub template: Option<PodTemplate>,
    pub strategy: Option<DeploymentStrategy>,
    #[serde(deserialize_with = "null_as_default")]
    pub volume_claim_templates: Vec<ClaimTemplate>,
    // CronJob
    pub concurrency_policy: Option<String>,
    pub job_template: Option<Box<JobTemplate>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobTemplate {
    pub spec: Option<WorkloadSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClaimTemplate {
    pub metadata: ObjectMeta,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentStrategy {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RollingUpdate {
    pub max_surge: Option<IntOrString>,
    pub max_unavailable: Option<IntOrString>,
}

/// The kinds claimguard judges or stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    PersistentVolumeClaim,
    PersistentVolume,
    StorageClass,
    Namespace,
    Node,
    VolumeAttachment,
    Deployment,
    ReplicaSet,
    ReplicationController,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
}

impl Kind {
    /// From `kind` plus the group of `apiVersion` (`apps/v1` → `apps`).
    pub fn from_kind(group: &str, kind: &str) -> Option<Kind> {
        Some(match (group, kind) {
            ("", "Pod") => Kind::Pod,
            ("", "PersistentVolumeClaim") => Kind::PersistentVolumeClaim,
            ("", "PersistentVolume") => Kind::PersistentVolume,
            ("", "Namespace") => Kind::Namespace,
            ("", "Node") => Kind::Node,
            ("", "ReplicationController") => Kind::ReplicationController,
            ("storage.k8s.io", "StorageClass") => Kind::StorageClass,
            ("storage.k8s.io", "VolumeAttachment") => Kind::VolumeAttachment,
            ("apps", "Deployment") => Kind::Deployment,
            ("apps", "ReplicaSet") => Kind::ReplicaSet,
            ("apps", "StatefulSet") => Kind::StatefulSet,
            ("apps", "DaemonSet") => Kind::DaemonSet,
            ("batch", "Job") => Kind::Job,
            ("batch", "CronJob") => Kind::CronJob,
            _ => return None,
        })
    }

    /// From the bare kind name, whatever its group (for labels and logs).
    pub fn from_kind_name(kind: &str) -> Option<Kind> {
        ["", "apps", "batch", "storage.k8s.io"]
            .iter()
            .find_map(|g| Kind::from_kind(g, kind))
    }

    pub fn from_api_version(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        Kind::from_kind(group, kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::PersistentVolume => "PersistentVolume",
            Kind::StorageClass => "StorageClass",
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::VolumeAttachment => "VolumeAttachment",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ReplicationController => "ReplicationController",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
        }
    }

    /// What `kubectl apply` prints before the name: `deployment.apps/web`.
    pub fn kubectl_resource(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::PersistentVolumeClaim => "persistentvolumeclaim",
            Kind::PersistentVolume => "persistentvolume",
            Kind::StorageClass => "storageclass.storage.k8s.io",
            Kind::Namespace => "namespace",
            Kind::Node => "node",
            Kind::VolumeAttachment => "volumeattachment.storage.k8s.io",
            Kind::Deployment => "deployment.apps",
            Kind::ReplicaSet => "replicaset.apps",
            Kind::ReplicationController => "replicationcontroller",
            Kind::StatefulSet => "statefulset.apps",
            Kind::DaemonSet => "daemonset.apps",
            Kind::Job => "job.batch",
            Kind::CronJob => "cronjob.batch",
        }
    }

    pub fn is_workload(self) -> bool {
        matches!(
            self,
            Kind::Deployment
                | Kind::ReplicaSet
                | Kind::ReplicationController
                | Kind::StatefulSet
                | Kind::DaemonSet
                | Kind::Job
                | Kind::CronJob
        )
    }

    pub fn is_namespaced(self) -> bool {
        !matches!(
            self,
            Kind::PersistentVolume
                | Kind::StorageClass
                | Kind::Namespace
                | Kind::Node
                | Kind::VolumeAttachment
        )
    }
}

/// A parsed object of a kind claimguard knows. Short-lived (one request,
/// one document), so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Pod(Pod),
    PersistentVolumeClaim(PersistentVolumeClaim),
    PersistentVolume(PersistentVolume),
    StorageClass(StorageClass),
    Namespace(Namespace),
    Node(Node),
    VolumeAttachment(VolumeAttachment),
    /// Boxed: a workload is twice a pod's size, and every request (nearly
    /// all pods) would otherwise carry and move that much.
    Workload(Kind, Box<Workload>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
            Object::PersistentVolume(_) => Kind::PersistentVolume,
            Object::StorageClass(_) => Kind::StorageClass,
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::VolumeAttachment(_) => Kind::VolumeAttachment,
            Object::Workload(k, _) => *k,
        }
    }

    /// The kind of this object's controller, when it has one.
    pub fn controller_kind(&self) -> Option<&str> {
        self.metadata()
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind.as_str())
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::PersistentVolumeClaim(o) => &o.metadata,
            Object::PersistentVolume(o) => &o.metadata,
            Object::StorageClass(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::VolumeAttachment(o) => &o.metadata,
            Object::Workload(_, o) => &o.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Pod(o) => &mut o.metadata,
            Object::PersistentVolumeClaim(o) => &mut o.metadata,
            Object::PersistentVolume(o) => &mut o.metadata,
            Object::StorageClass(o) => &mut o.metadata,
            Object::Namespace(o) => &mut o.metadata,
            Object::Node(o) => &mut o.metadata,
            Object::VolumeAttachment(o) => &mut o.metadata,
            Object::Workload(_, o) => &mut o.metadata,
        }
    }

    /// Parse `value` as `kind`. Errors carry serde's one-line reason.
    pub fn from_value(kind: Kind, value: &serde_json::Value) -> Result<Object, serde_json::Error> {
        use serde::de::Deserialize as _;
        Ok(match kind {
            Kind::Pod => Object::Pod(Pod::deserialize(value)?),
            Kind::PersistentVolumeClaim => {
                Object::PersistentVolumeClaim(PersistentVolumeClaim::deserialize(value)?)
            }
            Kind::PersistentVolume => {
                Object::PersistentVolume(PersistentVolume::deserialize(value)?)
            }
            Kind::StorageClass => Object::StorageClass(StorageClass::deserialize(value)?),
            Kind::Namespace => Object::Namespace(Namespace::deserialize(value)?),
            Kind::Node => Object::Node(Node::deserialize(value)?),
            Kind::VolumeAttachment => {
                Object::VolumeAttachment(VolumeAttachment::deserialize(value)?)
            }
            k => Object::Workload(k, Box::new(Workload::deserialize(value)?)),
        })
    }

    /// Parse raw JSON bytes as `kind` without building a JSON tree.
    pub fn from_slice(kind: Kind, bytes: &[u8]) -> Result<Object, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let o = Object::deserialize_as(kind, &mut de)?;
        de.end()?;
        Ok(o)
    }

    /// Deserialize as `kind` from any deserializer: lets a caller parse an
    /// object in place, inside a larger document, in the same pass.
    pub fn deserialize_as<'de, D: serde::Deserializer<'de>>(
        kind: Kind,
        d: D,
    ) -> Result<Object, D::Error> {
        Ok(match kind {
            Kind::Pod => Object::Pod(Pod::deserialize(d)?),
            Kind::PersistentVolumeClaim => {
                Object::PersistentVolumeClaim(PersistentVolumeClaim::deserialize(d)?)
            }
            Kind::PersistentVolume => Object::PersistentVolume(PersistentVolume::deserialize(d)?),
            Kind::StorageClass => Object::StorageClass(StorageClass::deserialize(d)?),
            Kind::Namespace => Object::Namespace(Namespace::deserialize(d)?),
            Kind::Node => Object::Node(Node::deserialize(d)?),
            Kind::VolumeAttachment => Object::VolumeAttachment(VolumeAttachment::deserialize(d)?),
            k => Object::Workload(k, Box::new(Workload::deserialize(d)?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_keeps_only_the_metadata_a_rule_reads() {
        for read in [
            crate::policy::ALLOW_SHARED_WRITERS,
            crate::cluster::COLOCATE_LABEL,
        ] {
            assert!(read.starts_with(POD_ANNOTATION_PREFIX), "{read}");
        }
        let json = r#"{"metadata":{"name":"p","labels":{"app":"web","n":1},
            "annotations":{"claimguard.io/colocate":"true","claimguard.io\/allow-shared-writers":"true",
                           "prometheus.io/port":"8080"},
            "ownerReferences":[{"kind":"ReplicaSet","name":"rs","controller":true}]}}"#;
        let pod: Pod = serde_json::from_str(json).unwrap();
        assert!(pod.metadata.labels.is_empty());
        assert_eq!(
            pod.metadata.annotations.keys().collect::<Vec<_>>(),
            [
                "claimguard.io/allow-shared-writers",
                "claimguard.io/colocate"
            ]
        );
        assert_eq!(pod.metadata.owner_references[0].name, "rs");
        // YAML, as `check` reads manifests.
        let yaml = "metadata:\n  name: p\n  labels: {app: web}\n  annotations:\n    claimguard.io/colocate: \"true\"\n    other: x\n";
        let pod: Pod = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(pod.metadata.annotations.len(), 1);
        let empty: Pod = serde_json::from_str(r#"{"metadata":{"annotations":null}}"#).unwrap();
        assert!(empty.metadata.annotations.is_empty());
        // A dropped annotation is still checked to be a string.
        for bad in [r#"{"other":1}"#, r#"{"claimguard.io/colocate":true}"#, "[]"] {
            let json = format!(r#"{{"metadata":{{"annotations":{bad}}}}}"#);
            assert!(serde_json::from_str::<Pod>(&json).is_err(), "{json}");
        }
        // Other kinds keep their labels: namespaces and nodes are read by them.
        let ns: Namespace = serde_json::from_str(
            r#"{"metadata":{"name":"n","labels":{"claimguard.io/mode":"audit"}}}"#,
        )
        .unwrap();
        assert_eq!(ns.metadata.labels.len(), 1);
    }

    #[test]
    fn kind_from_api_version() {
        assert_eq!(Kind::from_api_version("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(
            Kind::from_api_version("apps/v1", "Deployment"),
            Some(Kind::Deployment)
        );
        assert_eq!(
            Kind::from_api_version("batch/v1", "CronJob"),
            Some(Kind::CronJob)
        );
        assert_eq!(Kind::from_api_version("v1", "Deployment"), None);
        assert_eq!(Kind::from_api_version("v1", "ConfigMap"), None);
    }

    #[test]
    fn nulls_are_empty() {
        let p: Pod = serde_json::from_str(
            r#"{"metadata":{"name":"a","labels":null},"spec":{"volumes":null,"containers":[{"volumeMounts":null}]}}"#,
        )
        .unwrap();
        assert!(p.spec.unwrap().volumes.is_empty());
    }

    #[test]
    fn int_or_string() {
        let r: RollingUpdate =
            serde_json::from_str(r#"{"maxSurge":"25%","maxUnavailable":0}"#).unwrap();
        assert_eq!(r.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(r.max_unavailable, Some(IntOrString::Int(0)));
    }
}
