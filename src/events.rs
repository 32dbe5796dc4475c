//! Kubernetes Events for findings on controller-made pods.
//!
//! Warnings go back to whoever sent the request. For a pod a ReplicaSet,
//! StatefulSet, Job or DaemonSet creates, that is the controller, which drops
//! them. So such findings are also recorded as an `events.k8s.io/v1` Event of
//! type Warning on the pod's top owner (the Deployment behind a ReplicaSet,
//! the CronJob behind a Job, when the owner can be read), where
//! `kubectl describe` shows them.
//!
//! Off the request path: the engine hands a note to a bounded queue and never
//! waits; one task resolves the owner (one bounded GET) and publishes through
//! kube's `Recorder`, which turns repeats into one Event with a growing
//! `series.count`. On top of that, one Event per (object, reason) per
//! [`MIN_INTERVAL`]: a crash-looping controller that makes a pod a second
//! costs the API server one PATCH a minute, not one a second. Dry runs
//! record nothing (the engine never hands them over).

use crate::objects::{OwnerReference, Workload};
use crate::policy::{Effect, Verdict};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// At most one Event per object and reason in this interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Notes waiting to be published; beyond this they are dropped (and logged).
const QUEUE: usize = 1024;
/// The owner lookup's timeout.
const GET_TIMEOUT: Duration = Duration::from_secs(2);

/// A finding to record on a controller-made pod's owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub namespace: String,
    /// The pod's controller (`ownerReferences` with `controller: true`).
    pub owner: OwnerReference,
    /// `ResourceWithClaim` style reason: the rule id in PascalCase.
    pub reason: String,
    /// One line: the pod, then the finding's message.
    pub message: String,
}

/// `rwo-shared-writer` → `RwoSharedWriter`.
pub fn reason_of(rule_id: &str) -> String {
    rule_id
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The notes a decision about a pod gives: one per finding the requester was
/// told about (warnings, audit-mode would-be denials, pre-existing ones), for
/// an admitted pod made by a controller. Denied pods are not created; the
/// controller's own `FailedCreate` event carries the denial.
pub fn notes_for(pod: &crate::objects::Pod, namespace: &str, verdict: &Verdict) -> Vec<Note> {
    if !verdict.allowed {
        return Vec::new();
    }
    let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
    else {
        return Vec::new();
    };
    let who = pod.metadata.display_name();
    verdict
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f.effect,
                Effect::Warn | Effect::NotEnforced | Effect::PreExisting
            )
        })
        .map(|f| Note {
            namespace: namespace.to_string(),
            owner: owner.clone(),
            reason: reason_of(f.rule.id()),
            // Event notes may be up to 1 kB; a pod name and a message fit.
            message: crate::policy::message::one_line(&format!("pod {who}: {}", f.message)),
        })
        .collect()
}

/// Hands notes to the publishing task. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Note>,
}

impl EventSink {
    /// Start the publishing task on the current tokio runtime.
    pub fn start(client: kube::Client, instance: Option<String>) -> EventSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        let reporter = Reporter {
            controller: "claimguard".into(),
            instance,
        };
        tokio::spawn(publish_loop(client, reporter, rx));
        EventSink { tx }
    }

    pub fn send(&self, note: Note) {
        if let Err(e) = self.tx.try_send(note) {
            tracing::warn!(error = %e, "event queue full: finding not recorded as an Event");
        }
    }
}

async fn publish_loop(client: kube::Client, reporter: Reporter, mut rx: mpsc::Receiver<Note>) {
    let recorder = Recorder::new(client.clone(), reporter);
    let mut last: HashMap<(String, String, String, String), Instant> = HashMap::new();
    while let Some(note) = rx.recv().await {
        // Keyed by the direct owner: checked before the owner's GET, so a
        // controller in a loop costs no request at all between Events.
        let key = (
            note.namespace.clone(),
            note.owner.kind.clone(),
            note.owner.name.clone(),
            note.reason.clone(),
        );
        let now = Instant::now();
        if last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < MIN_INTERVAL)
        {
            tracing::debug!(reason = %note.reason, "event rate-limited");
            continue;
        }
        last.retain(|_, t| now.duration_since(*t) < MIN_INTERVAL);
        last.insert(key, now);
        let regarding = top_owner(&client, &note).await;
        let ev = Event {
            type_: EventType::Warning,
            reason: note.reason.clone(),
            note: Some(note.message.clone()),
            action: "Admit".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &regarding).await {
            tracing::warn!(error = %e, reason = %note.reason, "could not record Event");
        }
    }
}

/// The pod's controller, or the Deployment / CronJob behind it when its
/// ReplicaSet / Job can be read and names one.
async fn top_owner(client: &kube::Client, note: &Note) -> ObjectReference {
    let direct = reference(&note.owner, &note.namespace);
    let (path, parent) = match note.owner.kind.as_str() {
        "ReplicaSet" => ("/apis/apps/v1", "Deployment"),
        "Job" => ("/apis/batch/v1", "CronJob"),
        _ => return direct,
    };
    let plural = if parent == "Deployment" {
        "replicasets"
    } else {
        "jobs"
    };
    let req =
        match kube::core::Request::new(format!("{path}/namespaces/{}/{plural}", note.namespace))
            .get(&note.owner.name, &kube::api::GetParams::default())
        {
            Ok(r) => r,
            Err(_) => return direct,
        };
    let got = tokio::time::timeout(GET_TIMEOUT, client.request::<Workload>(req)).await;
    match got {
        Ok(Ok(w)) => w
            .metadata
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == parent)
            .map(|o| reference(o, &note.namespace))
            .unwrap_or(direct),
        _ => direct,
    }
}

fn reference(o: &OwnerReference, namespace: &str) -> ObjectReference {
    ObjectReference {
        api_version: (!o.api_version.is_empty()).then(|| o.api_version.clone()),
        kind: Some(o.kind.clone()),
        name: Some(o.name.clone()),
        namespace: Some(namespace.to_string()),
        uid: (!o.uid.is_empty()).then(|| o.uid.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_pascal_case() {
        assert_eq!(reason_of("rwo-shared-writer"), "RwoSharedWriter");
        assert_eq!(reason_of("rwop-exclusive"), "RwopExclusive");
    }
}
