//! Workloads behind scale requests. A scale request (`kubectl scale`, an
//! HPA) carries an `autoscaling/v1` Scale without the pod template, so the
//! workload is looked up: in a snapshot (`serve --snapshot`), from the
//! workloads the snapshot held or that were admitted since; live, with one
//! bounded GET ([`WorkloadFetcher`]). The live view does not watch workloads:
//! scale requests are rare, and a template per workload would dwarf the index.

use crate::objects::{Kind, Workload};
use futures::future::BoxFuture;
use hashbrown::HashMap;

/// Workloads kept whole, by (kind, namespace, name). Only a snapshot feeds it.
#[derive(Debug, Default)]
pub(super) struct WorkloadTable {
    items: HashMap<(Kind, Box<str>, Box<str>), Box<Workload>>,
}

impl WorkloadTable {
    pub(super) fn apply(&mut self, kind: Kind, w: &Workload) {
        if w.metadata.name.is_empty() {
            return;
        }
        let ns = w.metadata.namespace.as_deref().unwrap_or("default");
        self.items.insert(
            (kind, ns.into(), w.metadata.name.as_str().into()),
            Box::new(w.clone()),
        );
    }

    pub(super) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Workload> {
        self.items
            .get(&(kind, Box::from(namespace), Box::from(name)))
            .map(|w| &**w)
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }
}

/// One GET of a workload for a scale request. `Ok(None)`: it does not exist.
pub trait WorkloadFetcher: Send + Sync {
    fn fetch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<Workload>, String>>;
}

/// The API path of a workload kind: `/apis/apps/v1/namespaces/{ns}/deployments`.
pub fn workload_collection(kind: Kind, namespace: &str) -> Option<String> {
    let (group, plural) = match kind {
        Kind::Deployment => ("apps", "deployments"),
        Kind::ReplicaSet => ("apps", "replicasets"),
        Kind::StatefulSet => ("apps", "statefulsets"),
        Kind::DaemonSet => ("apps", "daemonsets"),
        Kind::ReplicationController => ("", "replicationcontrollers"),
        Kind::Job => ("batch", "jobs"),
        Kind::CronJob => ("batch", "cronjobs"),
        _ => return None,
    };
    Some(if group.is_empty() {
        format!("/api/v1/namespaces/{namespace}/{plural}")
    } else {
        format!("/apis/{group}/v1/namespaces/{namespace}/{plural}")
    })
}

/// [`WorkloadFetcher`] over a kube client: one GET with a timeout.
pub struct LiveWorkloadFetcher {
    client: kube::Client,
    timeout: std::time::Duration,
}

impl LiveWorkloadFetcher {
    pub fn new(client: kube::Client, timeout: std::time::Duration) -> Self {
        LiveWorkloadFetcher { client, timeout }
    }
}

impl WorkloadFetcher for LiveWorkloadFetcher {
    fn fetch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<Workload>, String>> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let path = workload_collection(kind, namespace);
        let name = name.to_string();
        Box::pin(async move {
            let Some(path) = path else {
                return Ok(None);
            };
            let req = kube::core::Request::new(path)
                .get(&name, &kube::api::GetParams::default())
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(timeout, client.request::<Workload>(req)).await {
                Err(_) => Err(format!("timed out after {timeout:?}")),
                Ok(Ok(w)) => Ok(Some(w)),
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => Ok(None),
                Ok(Err(e)) => Err(e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")),
            }
        })
    }
}
