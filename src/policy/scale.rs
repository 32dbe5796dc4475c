//! Scale subresources (`kubectl scale`, an HPA): an `autoscaling/v1` Scale
//! carries a replica count and no template, so the workload behind it is
//! judged by the workload rules with the new count. Scaling down or to the
//! same count is always allowed; a violation the workload already had at its
//! old count is a warning, never a denial (as on any workload UPDATE).

use super::{evaluate_rules, Operation, Request, Rule, Verdict};
use crate::cluster::ClusterView;
use crate::objects::{Kind, Object, Workload};

/// Judge scaling `workload` (of `kind`) from `old` to `new` replicas. `old`
/// is the Scale's old count when the request has one, else the workload's.
pub fn evaluate_scale(
    policy: &super::Policy,
    namespace: &str,
    kind: Kind,
    workload: &Workload,
    old: Option<i64>,
    new: Option<i64>,
    view: &dyn ClusterView,
) -> Verdict {
    let current = workload.spec.as_ref().and_then(|s| s.replicas);
    let old = old.or(current).unwrap_or(1);
    let Some(new) = new else {
        return Verdict::allow();
    };
    if new <= old {
        return Verdict::allow();
    }
    let with_replicas = |n: i64| {
        let mut w = workload.clone();
        if w.metadata.namespace.as_deref().is_none_or(str::is_empty) {
            w.metadata.namespace = Some(namespace.to_string());
        }
        w.spec.get_or_insert_with(Default::default).replicas = Some(n);
        Object::Workload(kind, Box::new(w))
    };
    let after = with_replicas(new);
    let before = with_replicas(old);
    evaluate_rules(
        policy,
        &Request {
            operation: Operation::Update,
            namespace,
            object: &after,
            old_object: Some(&before),
        },
        view,
        |r| {
            matches!(
                r,
                Rule::WorkloadRwopReplicas | Rule::WorkloadRwoReplicas | Rule::LookupError
            )
        },
    )
}
