//! The pod rules for one use of one claim: a pod (new or existing) against
//! the other pods that use the claim. Admission calls this for the pod it
//! admits; the audit calls it for every existing pod against the others. One
//! function, so the two cannot drift.

use super::message::{pods_at, MAX_WARNING_CHARS};
use super::pin::{hostname_of, Pin};
use super::{Rule, ALLOW_SHARED_WRITERS};
use crate::cluster::{AccessModes, Attachment, ClusterView, Consumer, OUT_OF_SERVICE_TAINT};

/// The pod being judged, as far as one claim goes.
#[derive(Clone, Copy)]
pub struct ClaimUser<'a> {
    /// Where it may run.
    pub pin: Pin<'a>,
    /// Every use of the claim is read-only.
    pub read_only: bool,
    /// Annotated `claimguard.io/allow-shared-writers: "true"`.
    pub allow_shared_writers: bool,
}

/// A pod rule that fired for one use of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimFinding<'a> {
    pub rule: Rule,
    /// The other pods it is about.
    pub pods: Vec<Consumer<'a>>,
    /// Without the `[rule-id]` prefix.
    pub text: String,
}

/// Judge `user`'s use of `claim` (effective modes `modes`) against `others`:
/// every other pod that uses the claim, terminating or not, never the user
/// itself; and against where the claim's volume is attached. At most one
/// rule fires per claim, in the contract's order: `rwop-exclusive`,
/// `rwo-cross-node`, `rwo-stuck-attachment`, `rwop-terminating-holder`,
/// `rwo-shared-writer`, `rwo-readonly-placement`.
pub fn judge<'a>(
    namespace: &str,
    claim: &str,
    modes: AccessModes,
    user: &ClaimUser<'_>,
    others: &[Consumer<'a>],
    view: &dyn ClusterView,
) -> Option<ClaimFinding<'a>> {
    if !modes.is_rwop() && !modes.is_single_node() {
        return None;
    }
    let (terminating, active): (Vec<Consumer<'a>>, Vec<Consumer<'a>>) =
        others.iter().partition(|c| c.terminating);
    let finding = |rule, pods: Vec<Consumer<'a>>, text| Some(ClaimFinding { rule, pods, text });
    if modes.is_rwop() {
        if !active.is_empty() {
            let that = if active.len() == 1 {
                "that pod"
            } else {
                "those pods"
            };
            let text = format!(
                "PersistentVolumeClaim \"{claim}\" is ReadWriteOncePod and already used by {}; delete {that} first or use another claim",
                pods_at(&active)
            );
            return finding(Rule::RwopExclusive, active, text);
        }
        if let Some(text) = stuck_attachment(namespace, claim, modes, user, view) {
            return finding(Rule::RwoStuckAttachment, Vec::new(), text);
        }
        if !terminating.is_empty() {
            let text = format!(
                "PersistentVolumeClaim \"{claim}\" is ReadWriteOncePod and still held by terminating {}; this pod will wait until it is gone",
                pods_at(&terminating)
            );
            return finding(Rule::RwopTerminatingHolder, terminating, text);
        }
        return None;
    }
    // Single-node (ReadWriteOnce): attached to one node at a time.
    let pin = user.pin;
    let blocked: Vec<Consumer<'a>> = active
        .iter()
        .filter(|c| c.node.is_some_and(|n| !pin.allows(n)))
        .copied()
        .collect();
    if let Some(first) = blocked.first() {
        let node = first.node.unwrap_or_default();
        let text = format!(
            "PersistentVolumeClaim \"{claim}\" is ReadWriteOnce and already used by {}, but this pod is {}: it can never attach (Multi-Attach error); run it on {node}, stop {}, or use a ReadWriteMany claim",
            pods_at(&blocked),
            pin.describe(),
            if blocked.len() == 1 { first.name } else { "those pods" }
        );
        return finding(Rule::RwoCrossNode, blocked, text);
    }
    if let Some(text) = stuck_attachment(namespace, claim, modes, user, view) {
        return finding(Rule::RwoStuckAttachment, Vec::new(), text);
    }
    if user.read_only {
        // A read-only mount still attaches the volume: elsewhere than the
        // node that holds it, the pod hangs with a Multi-Attach error.
        let mut nodes: Vec<&str> = active.iter().filter_map(|c| c.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let [node] = nodes[..] else { return None };
        if pin.only(node) {
            return None;
        }
        let holders: Vec<Consumer<'a>> = active
            .iter()
            .filter(|c| c.node == Some(node))
            .copied()
            .collect();
        let text = format!(
            "PersistentVolumeClaim \"{claim}\" is ReadWriteOnce and attached to node {node} for {}; this pod mounts it read-only but can be scheduled elsewhere and hang (Multi-Attach error): pin it with nodeSelector kubernetes.io/hostname: {}",
            pods_at(&holders),
            hostname_of(view, node)
        );
        return finding(Rule::RwoReadOnlyPlacement, holders, text);
    }
    if user.allow_shared_writers {
        return None;
    }
    let writers: Vec<Consumer<'a>> = active.iter().filter(|c| !c.read_only).copied().collect();
    let first = writers.first()?;
    let place = match first.node {
        Some(n) => format!("this pod must share {n}"),
        None => "this pod must share its node".to_string(),
    };
    let text = format!(
        "PersistentVolumeClaim \"{claim}\" is ReadWriteOnce and written by {}; {place} and write too: mount it readOnly or annotate {ALLOW_SHARED_WRITERS}",
        pods_at(&writers)
    );
    finding(Rule::RwoSharedWriter, writers, text)
}

/// `rwo-stuck-attachment`: the claim's volume is stuck on node A (A is down
/// and not declared out of service, or its detach fails) and the pod is not
/// pinned to A. Kubernetes refuses to attach the volume anywhere else until
/// it is detached, so the pod hangs in ContainerCreating with a Multi-Attach
/// error. A pod pinned to A gets nothing: it waits for A itself.
fn stuck_attachment(
    namespace: &str,
    claim: &str,
    modes: AccessModes,
    user: &ClaimUser<'_>,
    view: &dyn ClusterView,
) -> Option<String> {
    let attachments = view.attachments(namespace, claim);
    let a = attachments
        .iter()
        .find(|a| a.is_stuck() && !user.pin.only(a.node))?;
    Some(stuck_attachment_text(claim, modes, a))
}

/// The message of a stuck attachment, with the command that releases it
/// after the last `; ` (what a long warning keeps whole). It names the
/// volume only when the warning still fits the API server's 256 bytes with
/// it: the claim, the node, its state and the command come first.
pub fn stuck_attachment_text(claim: &str, modes: AccessModes, a: &Attachment<'_>) -> String {
    let mode = if modes.is_rwop() {
        "ReadWriteOncePod"
    } else {
        "ReadWriteOnce"
    };
    let node = a.node;
    let (state, fix) = match a.detach_error {
        Some(err) => {
            let down = a
                .node_health
                .filter(|h| h.is_down())
                .map(|h| format!(" ({})", h.describe()))
                .unwrap_or_default();
            (
                format!("{down}, whose detach fails: {}", short(err, 60)),
                format!("kubectl describe volumeattachment {}", a.name),
            )
        }
        None => (
            format!(
                ", {}",
                a.node_health
                    .map(|h| h.describe())
                    .unwrap_or_else(|| "down".into())
            ),
            format!("if {node} is shut down, kubectl taint node {node} {OUT_OF_SERVICE_TAINT}:NoExecute"),
        ),
    };
    let text = |what: String| {
        format!(
            "PersistentVolumeClaim \"{claim}\" is {mode} and {what} still attached to node {node}{state}, so this pod hangs; {fix}"
        )
    };
    let full = text(format!("its volume {} is", a.volume));
    let prefix = Rule::RwoStuckAttachment.id().len() + 3;
    if full.len() + prefix <= MAX_WARNING_CHARS {
        full
    } else {
        text(String::new()).replacen(" and  still", " and still", 1)
    }
}

/// At most `max` characters of a one-line text, cut at a character boundary.
fn short(text: &str, max: usize) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &one[..i]),
        None => one,
    }
}
