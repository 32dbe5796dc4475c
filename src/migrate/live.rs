//! The API calls of `claimguard migrate`, with the user's kubeconfig (the
//! client `explain` builds). Objects travel as the API server's JSON, whole,
//! so a replace sends back every field claimguard does not know, and
//! `metadata.resourceVersion` as read: a change made meanwhile fails the
//! write with 409 Conflict instead of being overwritten.
//!
//! | call | when |
//! |---|---|
//! | GET the claim | every look at where the migration stands |
//! | GET its volume (by `spec.volumeName`, or the one already known) | every look |
//! | LIST PersistentVolumes (paged) | only when neither names the volume: the claim is gone and this run has not seen the volume yet |
//! | LIST the namespace's pods (paged) | before the claim is deleted (nobody may use it) |
//! | LIST the namespace's workloads, 7 kinds | before anything is written (a template that runs two pods) |
//! | PUT the volume (resourceVersion as read) | steps 2, 4 and 6 |
//! | DELETE the claim (preconditions: uid and resourceVersion) | step 3 |
//! | POST the new claim | step 5 |

use super::{plan, MigrateError, Neighbours, Observed};
use crate::audit::reporter::ReporterError;
use crate::cluster::workload_collection;
use crate::objects::Kind;
use crate::one_shot::{code, reason};
use kube::api::{DeleteParams, GetParams, ListParams, PostParams, Preconditions};
use kube::Client;
use serde_json::Value;
use std::path::PathBuf;

const PAGE: u32 = 500;

/// Who claimguard says it is in `managedFields`.
const FIELD_MANAGER: &str = "claimguard-migrate";

const WORKLOADS: [Kind; 7] = [
    Kind::Deployment,
    Kind::StatefulSet,
    Kind::DaemonSet,
    Kind::ReplicaSet,
    Kind::ReplicationController,
    Kind::Job,
    Kind::CronJob,
];

/// A client for one namespace.
pub(crate) struct Kube {
    client: Client,
    pub(crate) url: String,
    pub(crate) namespace: String,
}

/// The error of a read (`verb` `what`).
pub(crate) fn read_error(
    url: &str,
    verb: &'static str,
    what: &str,
    e: kube::Error,
) -> MigrateError {
    match code(&e) {
        Some(403) => MigrateError::Forbidden {
            verb,
            what: what.to_string(),
            reason: reason(&e),
        },
        Some(_) => MigrateError::Api {
            verb,
            what: what.to_string(),
            reason: reason(&e),
        },
        None => MigrateError::Unreachable {
            url: url.to_string(),
            reason: reason(&e),
        },
    }
}

/// `--list`'s read (the audit's) failed.
pub(crate) fn reporter_error(url: &str, e: ReporterError) -> MigrateError {
    match e {
        ReporterError::List { what, source } => read_error(url, "list", &what, source),
        other => MigrateError::Unreadable {
            what: "the cluster".into(),
            reason: other.to_string(),
        },
    }
}

/// Does volume `v` (JSON) record the migration of claim `ns/name`?
pub(crate) fn records(v: &Value, ns: &str, name: &str) -> bool {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(plan::ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| plan::Record::parse(s).ok())
        .is_some_and(|r| r.claim.namespace == ns && r.claim.name == name)
}

fn with_type(mut v: Value, kind: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), "v1".into());
        o.insert("kind".into(), kind.into());
    }
    v
}

impl Kube {
    /// Connect with the kubeconfig conventions of the other commands; the
    /// namespace is `namespace`, else the context's.
    pub(crate) async fn connect(
        kubeconfig: &Option<PathBuf>,
        context: &Option<String>,
        namespace: Option<&str>,
    ) -> Result<(Kube, String), MigrateError> {
        let (conn, default_ns) =
            crate::explain::fetch::client(kubeconfig.as_deref(), context.as_deref()).await?;
        let ns = namespace.map(str::to_string).unwrap_or(default_ns);
        Ok((
            Kube {
                client: conn.client,
                url: conn.url,
                namespace: ns.clone(),
            },
            ns,
        ))
    }

    fn pvcs(&self) -> kube::core::Request {
        kube::core::Request::new(format!(
            "/api/v1/namespaces/{}/persistentvolumeclaims",
            self.namespace
        ))
    }

    fn pvs(&self) -> kube::core::Request {
        kube::core::Request::new("/api/v1/persistentvolumes")
    }

    fn claim_what(&self, name: &str) -> String {
        format!(
            "persistentvolumeclaims \"{name}\" in namespace {}",
            self.namespace
        )
    }

    async fn get(
        &self,
        req: kube::core::Request,
        name: &str,
        what: &str,
    ) -> Result<Option<Value>, MigrateError> {
        let r = req
            .get(name, &GetParams::default())
            .map_err(|e| read_error(&self.url, "get", what, kube::Error::BuildRequest(e)))?;
        match self.client.request::<Value>(r).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if code(&e) == Some(404) => Ok(None),
            Err(e) => Err(read_error(&self.url, "get", what, e)),
        }
    }

    /// Every item of a collection, paged. `Ok(None)`: the server does not
    /// serve it (404) or `optional` and forbidden (403).
    async fn list(
        &self,
        req: impl Fn() -> kube::core::Request,
        what: &str,
        optional: bool,
    ) -> Result<Option<Vec<Value>>, MigrateError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let r = req()
                .list(&lp)
                .map_err(|e| read_error(&self.url, "list", what, kube::Error::BuildRequest(e)))?;
            let page: Value = match self.client.request(r).await {
                Ok(p) => p,
                Err(e) if code(&e) == Some(404) => return Ok(None),
                Err(e) if optional && code(&e) == Some(403) => return Ok(None),
                Err(e) => return Err(read_error(&self.url, "list", what, e)),
            };
            if let Some(items) = page["items"].as_array() {
                out.extend(items.iter().cloned());
            }
            token = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(Some(out));
            }
        }
    }

    pub(crate) async fn get_pvc(&self, name: &str) -> Result<Option<Value>, MigrateError> {
        let what = self.claim_what(name);
        Ok(self
            .get(self.pvcs(), name, &what)
            .await?
            .map(|v| with_type(v, "PersistentVolumeClaim")))
    }

    pub(crate) async fn get_pv(&self, name: &str) -> Result<Option<Value>, MigrateError> {
        let what = format!("persistentvolumes \"{name}\"");
        Ok(self
            .get(self.pvs(), name, &what)
            .await?
            .map(|v| with_type(v, "PersistentVolume")))
    }

    /// The claim and its volume: the one it is bound to, else `known` (a
    /// volume this run has seen) when it still records the claim, else the
    /// one volume that records the claim's migration (a LIST).
    pub(crate) async fn observe(
        &self,
        name: &str,
        known: Option<&str>,
    ) -> Result<Observed, MigrateError> {
        let pvc = self.get_pvc(name).await?;
        let bound = pvc
            .as_ref()
            .and_then(|p| p.pointer("/spec/volumeName"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(v) = &bound {
            if let Some(pv) = self.get_pv(v).await? {
                return Ok(Observed { pvc, pv: Some(pv) });
            }
        }
        if let Some(k) = known.filter(|k| Some(*k) != bound.as_deref()) {
            if let Some(pv) = self.get_pv(k).await? {
                if records(&pv, &self.namespace, name) {
                    return Ok(Observed { pvc, pv: Some(pv) });
                }
            }
        }
        let pvs = self
            .list(|| self.pvs(), "persistentvolumes", false)
            .await?
            .unwrap_or_default();
        let pv = pvs
            .into_iter()
            .find(|v| records(v, &self.namespace, name))
            .map(|v| with_type(v, "PersistentVolume"));
        Ok(Observed { pvc, pv })
    }

    /// The namespace's pods.
    pub(crate) async fn pods(&self) -> Result<Vec<crate::objects::Pod>, MigrateError> {
        let req =
            || kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", self.namespace));
        let mut out = Vec::new();
        for v in self.list(req, "pods", false).await?.unwrap_or_default() {
            if let Ok(p) = serde_json::from_value(v) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The namespace's pods and workloads. A workload kind that may not be
    /// listed is left out with a note: its template is not checked.
    pub(crate) async fn neighbours(&self) -> Result<Neighbours, MigrateError> {
        let mut n = Neighbours {
            pods: self.pods().await?,
            ..Neighbours::default()
        };
        for kind in WORKLOADS {
            let Some(path) = workload_collection(kind, &self.namespace) else {
                continue;
            };
            let plural = path.rsplit('/').next().unwrap_or_default().to_string();
            let req = || kube::core::Request::new(path.clone());
            match self.list(req, &plural, true).await? {
                Some(items) => {
                    for v in items {
                        if let Ok(w) = serde_json::from_value(v) {
                            n.workloads.push((kind, w));
                        }
                    }
                }
                None => n.notes.push(format!(
                    "cannot list {plural} in namespace {}: their templates were not checked",
                    self.namespace
                )),
            }
        }
        Ok(n)
    }

    /// PUT the volume as given (its `metadata.resourceVersion` as read).
    pub(crate) async fn replace_pv(&self, pv: &Value) -> Result<Value, kube::Error> {
        let name = pv
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let body = serde_json::to_vec(&with_type(pv.clone(), "PersistentVolume"))
            .map_err(kube::Error::SerdeError)?;
        let r = self
            .pvs()
            .replace(name, &pp, body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request(r).await
    }

    /// DELETE the claim, only if it is still the one read (uid and resourceVersion).
    pub(crate) async fn delete_pvc(
        &self,
        name: &str,
        uid: &str,
        resource_version: Option<&str>,
    ) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: resource_version.map(str::to_string),
            }),
            ..DeleteParams::default()
        };
        let r = self
            .pvcs()
            .delete(name, &dp)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Value>(r).await.map(|_| ())
    }

    /// POST a new claim.
    pub(crate) async fn create_pvc(&self, pvc: &Value) -> Result<Value, kube::Error> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let body = serde_json::to_vec(pvc).map_err(kube::Error::SerdeError)?;
        let r = self
            .pvcs()
            .create(&pp, body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request(r).await
    }
}
