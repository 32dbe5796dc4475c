//! The live read of `explain`: get and list only, no watch, no claimguard
//! server. It reads what the explanation needs and no more:
//!
//! | call | how many |
//! |---|---|
//! | GET the pod (or the claim) | 1 |
//! | GET each claim of the pod | one per claim |
//! | GET each bound PersistentVolume | one per bound claim |
//! | LIST the namespace's pods (paged, 500 a page) | ⌈pods / 500⌉ |
//! | LIST VolumeAttachments (paged; kept: those of the claims' volumes) | ⌈attachments / 500⌉ |
//! | GET each Node involved (the pod's, its users', the attachments') | one per node |
//! | LIST the target's Events (`fieldSelector` on the involved object) | 1 |
//!
//! The pods of the namespace cannot be filtered by claim on the server, so
//! they are listed and all but the claims' users dropped as each page
//! arrives. PersistentVolumes, VolumeAttachments and Nodes are cluster-scoped:
//! an ordinary user may not read them. A 403 there leaves that part out and
//! says so in the explanation's notes; a 403 on the pod, its claims, the
//! namespace's pods or its events is an error.

use super::{Bundle, ExplainError, Target, TargetKind};
use crate::one_shot::{code, reason};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

const PAGE: u32 = 500;

/// A client for the kubeconfig (else kube's inference: in-cluster, then
/// `$KUBECONFIG` / `~/.kube/config`) and context, and the context's namespace.
pub(crate) async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<(Connection, String), ExplainError> {
    let opts = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ExplainError::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| ExplainError::Kubeconfig(format!("{}: {e}", path.display())))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| ExplainError::Kubeconfig(e.to_string()))?,
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| ExplainError::Kubeconfig(e.to_string()))?,
    };
    let ns = config.default_namespace.clone();
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| ExplainError::Unreachable {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    Ok((Connection { client, url }, ns))
}

/// A client and the server it talks to, for messages.
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) url: String,
}

struct Reader<'a> {
    client: &'a Client,
    url: &'a str,
    namespace: &'a str,
    notes: Vec<String>,
}

fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural)
}

fn to_value(mut o: DynamicObject, ar: &ApiResource) -> Value {
    // List items carry no kind; the bundle wants every object whole.
    o.types = Some(kube::core::TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    serde_json::to_value(&o).unwrap_or(Value::Null)
}

impl Reader<'_> {
    fn fail(&self, verb: &'static str, what: &str, e: kube::Error) -> ExplainError {
        match code(&e) {
            Some(403) => ExplainError::Forbidden {
                verb,
                what: what.to_string(),
                namespace: self.namespace.to_string(),
                reason: reason(&e),
            },
            Some(_) => ExplainError::Api {
                verb,
                what: what.to_string(),
                reason: reason(&e),
            },
            None => ExplainError::Unreachable {
                url: self.url.to_string(),
                reason: reason(&e),
            },
        }
    }

    /// A namespaced object; `None` when it does not exist.
    async fn get(&mut self, ar: &ApiResource, name: &str) -> Result<Option<Value>, ExplainError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), self.namespace, ar);
        match api.get(name).await {
            Ok(o) => Ok(Some(to_value(o, ar))),
            Err(e) if code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.fail("get", &format!("{} \"{name}\"", ar.plural), e)),
        }
    }

    /// A cluster-scoped object; `None` when it does not exist or may not be read (noted).
    async fn get_cluster(
        &mut self,
        ar: &ApiResource,
        name: &str,
    ) -> Result<Option<Value>, ExplainError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), ar);
        match api.get(name).await {
            Ok(o) => Ok(Some(to_value(o, ar))),
            Err(e) if code(&e) == Some(404) => Ok(None),
            Err(e) if code(&e) == Some(403) => {
                self.note(format!("cannot get {} (forbidden): not shown", ar.plural));
                Ok(None)
            }
            Err(e) => Err(self.fail("get", &format!("{} \"{name}\"", ar.plural), e)),
        }
    }

    fn note(&mut self, n: String) {
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    /// Every object of a list, paged, keeping those `keep` accepts.
    async fn list(
        &mut self,
        ar: &ApiResource,
        namespaced: bool,
        params: ListParams,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Option<Vec<Value>>, ExplainError> {
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(self.client.clone(), self.namespace, ar)
        } else {
            Api::all_with(self.client.clone(), ar)
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = params.clone().limit(PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = match api.list(&lp).await {
                Ok(p) => p,
                Err(e) if !namespaced && code(&e) == Some(403) => {
                    self.note(format!("cannot list {} (forbidden): not shown", ar.plural));
                    return Ok(None);
                }
                Err(e) => return Err(self.fail("list", &ar.plural, e)),
            };
            out.extend(
                page.items
                    .into_iter()
                    .map(|o| to_value(o, ar))
                    .filter(|v| keep(v)),
            );
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(Some(out));
            }
        }
    }
}

fn claims_of(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn node_of(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Read the bundle `target` needs, and notes on what could not be read.
pub(super) async fn read(
    conn: &Connection,
    target: &Target,
    namespace: &str,
) -> Result<(Bundle, Vec<String>), ExplainError> {
    let mut r = Reader {
        client: &conn.client,
        url: &conn.url,
        namespace,
        notes: Vec::new(),
    };
    let pods = resource("", "Pod", "pods");
    let pvcs = resource("", "PersistentVolumeClaim", "persistentvolumeclaims");
    let mut objects: Vec<Value> = Vec::new();
    let (claims, event_kind) = match target.kind {
        TargetKind::Pod => {
            let pod = r
                .get(&pods, &target.name)
                .await?
                .ok_or_else(|| ExplainError::NotFound {
                    what: format!("pods \"{}\"", target.name),
                    namespace: namespace.to_string(),
                })?;
            let claims = claims_of(&pod);
            objects.push(pod);
            (claims, "Pod")
        }
        TargetKind::Claim => (vec![target.name.clone()], "PersistentVolumeClaim"),
    };
    let claim_set: BTreeSet<String> = claims.iter().cloned().collect();
    let mut volumes = BTreeSet::new();
    for c in &claim_set {
        match r.get(&pvcs, c).await? {
            Some(pvc) => {
                if let Some(v) = node_of(&pvc, "/spec/volumeName") {
                    volumes.insert(v);
                }
                objects.push(pvc);
            }
            None if target.kind == TargetKind::Claim => {
                return Err(ExplainError::NotFound {
                    what: format!("persistentvolumeclaims \"{c}\""),
                    namespace: namespace.to_string(),
                })
            }
            None => {}
        }
    }
    let pvs = resource("", "PersistentVolume", "persistentvolumes");
    for v in &volumes {
        if let Some(pv) = r.get_cluster(&pvs, v).await? {
            objects.push(pv);
        }
    }
    // The claims' users among the namespace's pods (the target pod is already in).
    if !claim_set.is_empty() {
        let users = r
            .list(&pods, true, ListParams::default(), |p| {
                p["metadata"]["name"] != target.name.as_str() || target.kind == TargetKind::Claim
            })
            .await?
            .unwrap_or_default();
        objects.extend(
            users
                .into_iter()
                .filter(|p| claims_of(p).iter().any(|c| claim_set.contains(c))),
        );
    }
    let vas = resource("storage.k8s.io", "VolumeAttachment", "volumeattachments");
    if !volumes.is_empty() {
        let attached = r
            .list(&vas, false, ListParams::default(), |va| {
                va.pointer("/spec/source/persistentVolumeName")
                    .and_then(Value::as_str)
                    .is_some_and(|v| volumes.contains(v))
            })
            .await?
            .unwrap_or_default();
        objects.extend(attached);
    }
    let mut nodes = BTreeSet::new();
    for o in &objects {
        match o["kind"].as_str() {
            Some("Pod") => nodes.extend(node_of(o, "/spec/nodeName")),
            Some("VolumeAttachment") => nodes.extend(node_of(o, "/spec/nodeName")),
            _ => {}
        }
    }
    let node_ar = resource("", "Node", "nodes");
    for n in &nodes {
        if let Some(node) = r.get_cluster(&node_ar, n).await? {
            objects.push(node);
        }
    }
    let events = resource("", "Event", "events");
    let selector = format!(
        "involvedObject.kind={event_kind},involvedObject.name={}",
        target.name
    );
    let evs = r
        .list(
            &events,
            true,
            ListParams::default().fields(&selector),
            |_| true,
        )
        .await?
        .unwrap_or_default();
    objects.extend(evs);
    Ok((Bundle { objects }, r.notes))
}
