//! The explanation itself, built from a bundle of objects (a support bundle,
//! or what `fetch` read from the API server). Pure: no I/O.
//!
//! The findings come from `policy::judge_claim_use`, the function admission
//! and the audit call, so the messages are the ones `kubectl apply` printed
//! and `claimguard audit` lists.

use super::{ExplainError, Target, TargetKind};
use crate::cluster::{pod_claims, ClusterState, ClusterView, Consumer};
use crate::objects::{Kind, Object, PodSpec};
use crate::policy::{self, message, ClaimFinding, ClaimUser, Pin, Rule};
use serde::Serialize;
use serde_json::Value;

/// `apiVersion` of the JSON output.
pub const API_VERSION: &str = "claimguard.io/v1";

/// Objects as the API server prints them: every one with `kind` and
/// `apiVersion` (list items already flattened).
#[derive(Debug, Default, Clone)]
pub struct Bundle {
    pub objects: Vec<Value>,
}

impl Bundle {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && namespace.is_none_or(|ns| namespace_of(o) == ns)
        })
    }
}

fn namespace_of(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or("default")
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `claimguard explain -o json`: field names are the contract's.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub target: TargetRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodState>,
    pub claims: Vec<ClaimView>,
    pub findings: Vec<Finding>,
    pub events: Vec<EventView>,
    pub next: Option<String>,
    /// What could not be read (an RBAC 403 on a cluster-scoped kind): the
    /// explanation is partial there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub phase: Option<String>,
    pub node: Option<String>,
    /// Why it waits: `Unschedulable`, `ContainerCreating`, … (`None`: it does not).
    pub waiting: Option<String>,
    /// The condition's or container's message behind `waiting` (text output only).
    #[serde(skip)]
    pub waiting_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimView {
    pub name: String,
    /// `None`: the claim does not exist.
    pub access_modes: Option<Vec<String>>,
    pub volume: Option<String>,
    pub attachments: Vec<AttachmentView>,
    pub users: Vec<UserView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentView {
    pub node: String,
    pub attached: bool,
    /// `None` when the node is not known (not in the bundle, or not readable).
    pub node_down: Option<bool>,
    pub detach_error: Option<String>,
    /// The VolumeAttachment's name and the node's state (text output only).
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub node_state: String,
    #[serde(skip)]
    pub deleting: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub phase: Option<String>,
    pub terminating: bool,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub claim: String,
    /// The one-line message admission and the audit give, with its `[rule]`.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// When it was last seen (text output only; also the sort key).
    #[serde(skip)]
    pub last_seen: String,
    #[serde(skip)]
    pub count: u64,
}

/// Warning Events shown at most, newest last.
const MAX_EVENTS: usize = 8;

/// Build the explanation of `target` from `bundle`.
pub fn explain(
    bundle: &Bundle,
    target: &Target,
    namespace: &str,
) -> Result<Explanation, ExplainError> {
    let mut state = ClusterState::new();
    for o in &bundle.objects {
        let (Some(api), Some(kind)) = (o["apiVersion"].as_str(), o["kind"].as_str()) else {
            continue;
        };
        let Some(k) = Kind::from_api_version(api, kind) else {
            continue;
        };
        // One unreadable object must not hide the rest of the story.
        if let Ok(mut obj) = Object::from_value(k, o) {
            if k.is_namespaced() && obj.metadata().namespace.is_none() {
                obj.metadata_mut().namespace = Some("default".into());
            }
            state.apply_object(&obj);
        }
    }
    let (pod, claims, findings, events) = match target.kind {
        TargetKind::Pod => {
            let raw = bundle
                .find("Pod", Some(namespace), &target.name)
                .ok_or_else(|| ExplainError::NotFound {
                    what: format!("pods \"{}\"", target.name),
                    namespace: namespace.to_string(),
                })?;
            let pod: crate::objects::Pod =
                serde_json::from_value(raw.clone()).map_err(|e| ExplainError::Unreadable {
                    what: format!("pod {namespace}/{}", target.name),
                    reason: e.to_string(),
                })?;
            let spec = pod.spec.clone().unwrap_or_default();
            let claims: Vec<(String, bool)> = pod_claims(&spec)
                .into_iter()
                .map(|(c, ro)| (c.to_string(), ro))
                .collect();
            let mut findings = Vec::new();
            if !is_finished(raw) {
                for (claim, read_only) in &claims {
                    judge_pod(
                        &state,
                        namespace,
                        &pod.metadata,
                        &spec,
                        claim,
                        *read_only,
                        &mut findings,
                    );
                }
            }
            let views = claims
                .iter()
                .map(|(c, _)| claim_view(bundle, &state, namespace, c, Some(&target.name)))
                .collect();
            let events = events_of(bundle, "Pod", namespace, &target.name);
            (Some(pod_state(raw)), views, findings, events)
        }
        TargetKind::Claim => {
            let claim = &target.name;
            if bundle
                .find("PersistentVolumeClaim", Some(namespace), claim)
                .is_none()
            {
                return Err(ExplainError::NotFound {
                    what: format!("persistentvolumeclaims \"{claim}\""),
                    namespace: namespace.to_string(),
                });
            }
            // Every finding among its users, each judged as admission would.
            let mut findings: Vec<(Finding, Vec<Consumer<'_>>)> = Vec::new();
            let users = bundle
                .of_kind("Pod")
                .filter(|p| namespace_of(p) == namespace && !is_finished(p))
                .filter_map(|p| serde_json::from_value::<crate::objects::Pod>(p.clone()).ok());
            let users: Vec<crate::objects::Pod> = users
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .is_some_and(|s| pod_claims(s).iter().any(|(c, _)| c == claim))
                })
                .collect();
            for p in &users {
                if p.metadata.deletion_timestamp.is_some() {
                    continue; // leaving: never judged, as in the audit
                }
                let spec = p.spec.clone().unwrap_or_default();
                let ro = pod_claims(&spec)
                    .into_iter()
                    .find(|(c, _)| c == claim)
                    .is_some_and(|(_, ro)| ro);
                let mut found = Vec::new();
                judge_pod(&state, namespace, &p.metadata, &spec, claim, ro, &mut found);
                for f in found {
                    if !findings.iter().any(|(g, _)| g.message == f.0.message) {
                        findings.push(f);
                    }
                }
            }
            let views = vec![claim_view(bundle, &state, namespace, claim, None)];
            let events = events_of(bundle, "PersistentVolumeClaim", namespace, claim);
            (None, views, findings, events)
        }
    };
    let next = findings
        .iter()
        .find_map(|(f, pods)| next_step(f, pods, &claims, namespace));
    Ok(Explanation {
        api_version: API_VERSION,
        kind: "Explanation",
        target: TargetRef {
            kind: target.kind.as_str(),
            namespace: namespace.to_string(),
            name: target.name.clone(),
        },
        pod,
        claims,
        findings: findings.into_iter().map(|(f, _)| f).collect(),
        events,
        next,
        notes: Vec::new(),
    })
}

fn is_finished(pod: &Value) -> bool {
    matches!(
        str_of(pod, "/status/phase"),
        Some("Succeeded") | Some("Failed")
    )
}

/// One pod's use of one claim, judged by the admission rule function.
fn judge_pod<'a>(
    state: &'a ClusterState,
    namespace: &str,
    meta: &crate::objects::ObjectMeta,
    spec: &PodSpec,
    claim: &str,
    read_only: bool,
    out: &mut Vec<(Finding, Vec<Consumer<'a>>)>,
) {
    let modes = match state.claim(namespace, claim) {
        Ok(Some(f)) => f.effective,
        _ => {
            let text = format!(
                "PersistentVolumeClaim \"{claim}\" does not exist in namespace {namespace}; the pod will stay Pending until it is created: check the claimName or create the claim"
            );
            out.push((finding(Rule::ClaimNotFound, claim, &text), Vec::new()));
            return;
        }
    };
    let Ok(consumers) = state.consumers(namespace, claim) else {
        return;
    };
    let others: Vec<Consumer<'a>> = consumers
        .into_iter()
        .filter(|c| !policy::is_same_pod(c, meta))
        .collect();
    let user = ClaimUser {
        pin: Pin::new(spec, state),
        read_only,
        allow_shared_writers: meta
            .annotations
            .get(policy::ALLOW_SHARED_WRITERS)
            .map(String::as_str)
            == Some("true"),
    };
    if let Some(ClaimFinding { rule, pods, text }) =
        policy::judge_claim_use(namespace, claim, modes, &user, &others, state)
    {
        out.push((finding(rule, claim, &text), pods));
    }
}

fn finding(rule: Rule, claim: &str, text: &str) -> Finding {
    Finding {
        rule: rule.id(),
        claim: claim.to_string(),
        message: message::tagged(rule.id(), text),
    }
}

fn pod_state(pod: &Value) -> PodState {
    let conditions = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let unscheduled = conditions
        .iter()
        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False");
    let waiting_container = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            pod.pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .find_map(|c| c.pointer("/state/waiting"));
    let (waiting, waiting_message) = match (unscheduled, waiting_container) {
        (Some(c), _) => (
            Some(str_of(c, "/reason").unwrap_or("Unschedulable").to_string()),
            str_of(c, "/message").map(str::to_string),
        ),
        (None, Some(w)) => (
            str_of(w, "/reason").map(str::to_string),
            str_of(w, "/message").map(str::to_string),
        ),
        (None, None) if str_of(pod, "/status/phase") == Some("Pending") => {
            (Some("Pending".to_string()), None)
        }
        _ => (None, None),
    };
    PodState {
        phase: str_of(pod, "/status/phase").map(str::to_string),
        node: str_of(pod, "/spec/nodeName").map(str::to_string),
        waiting,
        waiting_message,
    }
}

fn claim_view(
    bundle: &Bundle,
    state: &ClusterState,
    namespace: &str,
    claim: &str,
    target_pod: Option<&str>,
) -> ClaimView {
    let pvc = bundle.find("PersistentVolumeClaim", Some(namespace), claim);
    let volume = pvc
        .and_then(|p| str_of(p, "/spec/volumeName"))
        .map(str::to_string);
    let pv = volume
        .as_deref()
        .and_then(|v| bundle.find("PersistentVolume", None, v));
    let modes_of = |o: &Value| -> Option<Vec<String>> {
        let m: Vec<String> = o
            .pointer("/spec/accessModes")?
            .as_array()?
            .iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    let access_modes = pvc.map(|p| {
        pv.and_then(modes_of)
            .or_else(|| modes_of(p))
            .unwrap_or_default()
    });
    let attachments = state
        .attachments(namespace, claim)
        .into_iter()
        .map(|a| AttachmentView {
            node: a.node.to_string(),
            attached: a.attached,
            node_down: a.node_health.map(|h| h.is_down()),
            detach_error: a.detach_error.map(str::to_string),
            node_state: a
                .node_health
                .map(|h| {
                    let mut s = h.describe();
                    if h.out_of_service {
                        s.push_str(", out-of-service");
                    }
                    s
                })
                .unwrap_or_else(|| "unknown".into()),
            deleting: a.deleting,
            name: a.name,
        })
        .collect();
    let mut users: Vec<UserView> = bundle
        .of_kind("Pod")
        .filter(|p| namespace_of(p) == namespace && !is_finished(p))
        .filter(|p| target_pod.is_none_or(|t| p["metadata"]["name"] != t))
        .filter_map(|p| {
            let pod: crate::objects::Pod = serde_json::from_value(p.clone()).ok()?;
            let (_, read_only) = pod_claims(pod.spec.as_ref()?)
                .into_iter()
                .find(|(c, _)| *c == claim)?;
            Some(UserView {
                namespace: namespace.to_string(),
                name: pod.metadata.name.clone(),
                node: str_of(p, "/spec/nodeName").map(str::to_string),
                phase: str_of(p, "/status/phase").map(str::to_string),
                terminating: pod.metadata.deletion_timestamp.is_some(),
                read_only,
            })
        })
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    ClaimView {
        name: claim.to_string(),
        access_modes,
        volume,
        attachments,
        users,
    }
}

/// The object's Warning Events, `core/v1` or `events.k8s.io/v1`, oldest first.
fn events_of(bundle: &Bundle, kind: &str, namespace: &str, name: &str) -> Vec<EventView> {
    let mut out: Vec<EventView> = bundle
        .of_kind("Event")
        .filter(|e| namespace_of(e) == namespace)
        .filter_map(|e| {
            let about = if e.get("involvedObject").is_some() {
                &e["involvedObject"]
            } else {
                &e["regarding"]
            };
            if about["kind"] != kind || about["name"] != name {
                return None;
            }
            let message = str_of(e, "/message")
                .or_else(|| str_of(e, "/note"))
                .unwrap_or_default();
            let last_seen = str_of(e, "/lastTimestamp")
                .or_else(|| str_of(e, "/series/lastObservedTime"))
                .or_else(|| str_of(e, "/eventTime"))
                .or_else(|| str_of(e, "/deprecatedLastTimestamp"))
                .or_else(|| str_of(e, "/metadata/creationTimestamp"))
                .unwrap_or_default();
            Some(EventView {
                type_: str_of(e, "/type").unwrap_or("Normal").to_string(),
                reason: str_of(e, "/reason").unwrap_or_default().to_string(),
                message: message::one_line(message),
                last_seen: last_seen.to_string(),
                count: e["count"]
                    .as_u64()
                    .or_else(|| e.pointer("/series/count").and_then(Value::as_u64))
                    .unwrap_or(1),
            })
        })
        .filter(|e| e.type_ == "Warning")
        .collect();
    // RFC 3339 in UTC sorts as text.
    out.sort_by(|a, b| a.last_seen.cmp(&b.last_seen));
    let skip = out.len().saturating_sub(MAX_EVENTS);
    out.drain(..skip);
    out
}

/// The command that clears the first finding that blocks the pod; `None`
/// for findings that do not block it (a shared writer, a placement risk).
fn next_step(
    f: &Finding,
    pods: &[Consumer<'_>],
    claims: &[ClaimView],
    namespace: &str,
) -> Option<String> {
    let holder = pods.iter().find(|p| !p.terminating).or(pods.first());
    match f.rule {
        "rwop-exclusive" | "rwo-cross-node" => {
            holder.map(|p| format!("kubectl delete pod -n {} {}", p.namespace, p.name))
        }
        "rwop-terminating-holder" => holder.map(|p| {
            format!(
                "kubectl wait --for=delete pod/{} -n {} --timeout=10m",
                p.name, p.namespace
            )
        }),
        "rwo-stuck-attachment" => {
            let claim = claims.iter().find(|c| c.name == f.claim)?;
            let a = claim
                .attachments
                .iter()
                .find(|a| a.detach_error.is_some() || a.node_down == Some(true))?;
            Some(match a.detach_error {
                Some(_) => format!("kubectl describe volumeattachment {}", a.name),
                None => format!(
                    "kubectl taint node {} {}:NoExecute",
                    a.node,
                    crate::cluster::OUT_OF_SERVICE_TAINT
                ),
            })
        }
        "claim-not-found" => Some(format!("kubectl get pvc -n {namespace}")),
        _ => None,
    }
}

/// What a finding's rule asks of the person before they run `next`.
pub fn caution(e: &Explanation) -> Option<String> {
    let next = e.next.as_deref()?;
    let node = next
        .strip_prefix("kubectl taint node ")?
        .split(' ')
        .next()?;
    Some(format!("only once {node} is really shut down"))
}
