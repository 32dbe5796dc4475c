//! Prometheus metrics (prometheus-client, OpenMetrics text).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets_range, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Static strings from a fixed set: counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    operation: &'static str,
    /// "true", "false", "error" when the request could not be judged, or
    /// "unauthenticated" when `--client-ca` refused it.
    allowed: &'static str,
}

/// Kinds with a name of their own; then "unknown" and "other".
const KINDS: usize = crate::objects::Kind::CronJob as usize + 1;
/// The `operation` and `allowed` labels `Metrics::request` writes.
const OPERATIONS: [&str; 6] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "unknown", "other"];
const VERDICTS: [&str; 5] = ["true", "false", "error", "unauthenticated", "other"];
/// Every (kind, operation, allowed) `Metrics::request` can count.
const REQUEST_LABEL_SETS: usize = (KINDS + 2) * OPERATIONS.len() * VERDICTS.len();
/// The `action` label of a finding (an `Off` rule finds nothing).
const ACTIONS: [&str; 3] = ["deny", "warn", "audit"];
/// Every (rule, action) the engine reports, counted without the family's
/// look-up; anything else (none today) goes through the family.
const VIOLATION_LABEL_SETS: usize = crate::policy::Rule::ALL.len() * ACTIONS.len();

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    rule: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// All metrics of the process. Other components (the live cluster view)
/// add their own through [`Metrics::register`].
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    /// `requests`' counters by label set, filled as label sets are first used.
    request_counters: Box<[OnceLock<Counter>]>,
    duration: Histogram,
    violations: Family<ViolationLabels, Counter>,
    /// `violations`' counters by (rule, action), as `request_counters`.
    violation_counters: Box<[OnceLock<Counter>]>,
    tls_reloads: Family<ResultLabels, Counter>,
    pods_pinned: Counter,
    mutations: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "claimguard_admission_requests",
            "Admission requests answered, by kind, operation and verdict",
            requests.clone(),
        );
        // 50µs..1s: a decision is normally well under a millisecond; the top
        // buckets catch lock contention and live claim look-ups.
        let duration = Histogram::new(exponential_buckets_range(0.000_05, 1.0, 16));
        registry.register(
            "claimguard_admission_duration_seconds",
            "Time from a complete request body to the serialized response",
            duration.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "claimguard_violations",
            "Rule findings, by rule id and the action taken",
            violations.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "claimguard_tls_reloads",
            "Certificate reload attempts after the files changed",
            tls_reloads.clone(),
        );
        let pods_pinned = Counter::default();
        registry.register(
            "claimguard_pods_pinned",
            "Pods pinned to the node of their ReadWriteOnce claim by POST /mutate (dry runs excluded)",
            pods_pinned.clone(),
        );
        let mutations = Family::<ResultLabels, Counter>::default();
        registry.register(
            "claimguard_mutate_requests",
            "POST /mutate requests answered, by result: pinned, unchanged or error",
            mutations.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            request_counters: (0..REQUEST_LABEL_SETS).map(|_| OnceLock::new()).collect(),
            duration,
            violations,
            violation_counters: (0..VIOLATION_LABEL_SETS).map(|_| OnceLock::new()).collect(),
            tls_reloads,
            pods_pinned,
            mutations,
        }
    }

    /// Registers an extra metric, e.g. `claimguard_watch_restarts` (a counter
    /// registered without `_total`; the encoder appends it).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, metric);
    }

    /// Registers and returns a plain counter.
    pub fn register_counter(&self, name: &str, help: &str) -> Counter {
        let counter = Counter::default();
        self.register(name, help, counter.clone());
        counter
    }

    /// Counts one answered request; `allowed` is "true", "false" or "error".
    /// Labels come from a fixed set: the request's kind and operation are
    /// client-controlled text, and a label set that grows with every new
    /// string is a memory leak anyone who reaches the Service can drive.
    pub fn request(&self, kind: &str, operation: &str, allowed: &str) {
        let (k, kind) = match crate::objects::Kind::from_kind_name(kind) {
            Some(k) => (k as usize, k.as_str()),
            None if kind == "unknown" => (KINDS, "unknown"),
            None => (KINDS + 1, "other"),
        };
        // Anything not in the lists counts as their last entry, "other".
        let o = OPERATIONS
            .iter()
            .position(|&op| op == operation)
            .unwrap_or(OPERATIONS.len() - 1);
        let a = VERDICTS
            .iter()
            .position(|&v| v == allowed)
            .unwrap_or(VERDICTS.len() - 1);
        // The family's own look-up hashes the label set (SipHash) under a
        // lock on every request: each label set's counter is looked up
        // once and kept (a clone shares the count).
        self.request_counters[(k * OPERATIONS.len() + o) * VERDICTS.len() + a]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        kind,
                        operation: OPERATIONS[o],
                        allowed: VERDICTS[a],
                    })
                    .clone()
            })
            .inc();
    }

    /// Records how long the engine took over one review.
    pub fn observe_duration(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
    }

    /// Rule ids and actions are the engine's own constants.
    pub fn violation(&self, rule: &'static str, action: &'static str) {
        let labels = ViolationLabels { rule, action };
        let r = crate::policy::Rule::ALL.iter().position(|r| r.id() == rule);
        let a = ACTIONS.iter().position(|&x| x == action);
        let (Some(r), Some(a)) = (r, a) else {
            self.violations.get_or_create(&labels).inc();
            return;
        };
        // As in `request`: the family hashes the labels under a lock.
        self.violation_counters[r * ACTIONS.len() + a]
            .get_or_init(|| self.violations.get_or_create(&labels).clone())
            .inc();
    }

    pub fn tls_reload(&self, result: &str) {
        self.tls_reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one `/mutate` answer: `pinned`, `unchanged` or `error`; a pin
    /// that is not a dry run also counts as a pod pinned.
    pub fn mutation(&self, result: &str, dry_run: bool) {
        let result = match result {
            "pinned" | "unchanged" | "error" => result,
            _ => "other",
        };
        if result == "pinned" && !dry_run {
            self.pods_pinned.inc();
        }
        self.mutations
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// OpenMetrics text of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names_are_exposed() {
        let m = Metrics::new();
        m.request("Pod", "CREATE", "false");
        m.observe_duration(Duration::from_micros(120));
        m.violation("rwop-exclusive", "deny");
        m.tls_reload("success");
        m.mutation("pinned", false);
        m.mutation("pinned", true);
        let restarts = m.register_counter("claimguard_watch_restarts", "watch restarts");
        restarts.inc();
        let text = m.encode();
        for needle in [
            r#"claimguard_admission_requests_total{kind="Pod",operation="CREATE",allowed="false"} 1"#,
            "claimguard_admission_duration_seconds_bucket{le=\"0.00005\"} 0",
            "claimguard_admission_duration_seconds_count 1",
            r#"claimguard_violations_total{rule="rwop-exclusive",action="deny"} 1"#,
            r#"claimguard_tls_reloads_total{result="success"} 1"#,
            "claimguard_watch_restarts_total 1",
            "claimguard_pods_pinned_total 1",
            r#"claimguard_mutate_requests_total{result="pinned"} 2"#,
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn every_label_set_counts_into_its_own_series() {
        let m = Metrics::new();
        let kinds = [
            "Pod",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "StorageClass",
            "Namespace",
            "Node",
            "VolumeAttachment",
            "Deployment",
            "ReplicaSet",
            "ReplicationController",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "CronJob",
            "unknown",
            "Widget",
        ];
        let operations = ["CREATE", "UPDATE", "DELETE", "CONNECT", "unknown", "PATCH"];
        let verdicts = ["true", "false", "error", "unauthenticated", "maybe"];
        // Each combination a different number of times: a counter shared
        // by two label sets would show their sum.
        let mut n = 0;
        for kind in kinds {
            for op in operations {
                for v in verdicts {
                    n += 1;
                    for _ in 0..n {
                        m.request(kind, op, v);
                    }
                }
            }
        }
        let text = m.encode();
        let mut n = 0;
        for kind in kinds {
            let kind = if kind == "Widget" { "other" } else { kind };
            for op in operations {
                let op = if op == "PATCH" { "other" } else { op };
                for v in verdicts {
                    let v = if v == "maybe" { "other" } else { v };
                    n += 1;
                    let line = format!(
                        r#"claimguard_admission_requests_total{{kind="{kind}",operation="{op}",allowed="{v}"}} {n}"#
                    );
                    assert!(text.contains(&line), "missing {line:?}");
                }
            }
        }
        assert_eq!(n, REQUEST_LABEL_SETS);
    }

    #[test]
    fn every_violation_label_set_counts_into_its_own_series() {
        let m = Metrics::new();
        let mut expected = Vec::new();
        let mut n = 0;
        for rule in crate::policy::Rule::ALL {
            for action in ACTIONS.iter().chain(&["off"]) {
                n += 1;
                for _ in 0..n {
                    m.violation(rule.id(), action);
                }
                expected.push(format!(
                    r#"claimguard_violations_total{{rule="{}",action="{action}"}} {n}"#,
                    rule.id()
                ));
            }
        }
        let text = m.encode();
        for line in expected {
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn request_labels_come_from_a_fixed_set() {
        let m = Metrics::new();
        for i in 0..100 {
            m.request(&format!("Kind{i}"), &format!("OP{i}"), "true");
        }
        m.request("Deployment", "UPDATE", "true");
        let text = m.encode();
        assert!(text.contains(r#"claimguard_admission_requests_total{kind="other",operation="other",allowed="true"} 100"#), "{text}");
        assert!(text.contains(r#"kind="Deployment",operation="UPDATE""#));
        assert!(!text.contains("Kind7"));
    }
}
