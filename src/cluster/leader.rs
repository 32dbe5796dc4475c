//! Leader election on a `coordination.k8s.io/v1` Lease, for work one replica
//! should do for all (the periodic audit's PolicyReports).
//!
//! The same compare-and-swap as the claim reservations: the holder renews
//! `spec.renewTime` with a replace that carries the resourceVersion; another
//! replica takes the Lease over only when it is free (no holder) or its
//! holder has not renewed for `leaseDurationSeconds`, again by a CAS replace,
//! so two replicas never both win. A leader that cannot renew for the lease
//! duration steps down on its own. A replica that stops cleanly releases the
//! Lease (clears the holder): the next replica takes over at its next try,
//! not a lease duration later.
//!
//! Why not a crate: `kube-lease-manager` 0.13 fits kube 5 but updates the
//! Lease with server-side apply, whose field-manager conflicts the tests'
//! fake API server does not model; this module needs only create, replace
//! with a resourceVersion and GET, the semantics the reservations already use.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Timing of an election. `Default`: 15 s lease, a try every 2 s.
#[derive(Debug, Clone)]
pub struct ElectionOptions {
    /// How long a holder that stopped renewing keeps the Lease.
    pub lease_duration: Duration,
    /// How often the holder renews and the others try.
    pub retry_period: Duration,
    /// Timeout of each API call.
    pub call_timeout: Duration,
}

impl Default for ElectionOptions {
    fn default() -> Self {
        ElectionOptions {
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            call_timeout: Duration::from_secs(2),
        }
    }
}

/// A running election. `is_leader()` follows it; dropping the handle (or
/// `stop`) releases the Lease if this replica holds it.
pub struct Election {
    rx: watch::Receiver<bool>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Election {
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Stop trying and release the Lease if held; returns once released.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
    }
}

struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    opts: ElectionOptions,
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl Elector {
    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.opts.lease_duration.as_secs().max(1) as i32),
            acquire_time: acquire,
            renew_time: Some(MicroTime(now())),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One round: create, renew or take over. `Ok(true)` when this replica
    /// holds the Lease after the round.
    async fn try_once(&self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(Some(MicroTime(now())), 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        let duration = spec
            .lease_duration_seconds
            .map(|s| SignedDuration::from_secs(i64::from(s)))
            .unwrap_or(SignedDuration::from_secs(15));
        let expired = match &spec.renew_time {
            Some(MicroTime(t)) => t.checked_add(duration).map_or(true, |until| until < now()),
            None => true,
        };
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquire = if mine {
            spec.acquire_time.clone()
        } else {
            Some(MicroTime(now()))
        };
        let mut next = current.clone();
        next.spec = Some(self.spec(acquire, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Clear the holder if it is still this replica (CAS; best effort).
    async fn release(&self) {
        let Ok(Some(mut current)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = current.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "released the leader Lease"),
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "could not release the leader Lease")
            }
        }
    }
}

/// Take part in the election for the Lease `name` in `namespace` as
/// `identity`. Must run inside a tokio runtime.
pub fn elect(
    client: kube::Client,
    namespace: &str,
    name: &str,
    identity: &str,
    opts: ElectionOptions,
) -> Election {
    let elector = Elector {
        api: Api::namespaced(client, namespace),
        name: name.to_string(),
        identity: identity.to_string(),
        opts,
    };
    let (tx, rx) = watch::channel(false);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let e = elector;
        // Since when this replica holds the Lease without a successful renewal.
        let mut last_renewed: Option<tokio::time::Instant> = None;
        loop {
            let round = tokio::time::timeout(e.opts.call_timeout * 2, e.try_once()).await;
            let leader = match round {
                Ok(Ok(held)) => {
                    last_renewed = held.then(tokio::time::Instant::now);
                    held
                }
                Ok(Err(err)) => {
                    tracing::warn!(lease = %e.name, error = %err, "leader election: API error");
                    // Keep leading until the lease would have run out for the others.
                    last_renewed.is_some_and(|t| t.elapsed() < e.opts.lease_duration)
                }
                Err(_) => {
                    tracing::warn!(lease = %e.name, "leader election: API server timed out");
                    last_renewed.is_some_and(|t| t.elapsed() < e.opts.lease_duration)
                }
            };
            if !leader {
                last_renewed = None;
            }
            if *tx.borrow() != leader {
                tracing::info!(lease = %e.name, identity = %e.identity, leader, "leader election changed");
                let _ = tx.send(leader);
            }
            tokio::select! {
                _ = tokio::time::sleep(e.opts.retry_period) => {}
                _ = &mut stop_rx => break,
            }
        }
        let _ = tx.send(false);
        let _ = tokio::time::timeout(e.opts.call_timeout, e.release()).await;
    });
    Election {
        rx,
        stop_tx: Some(stop_tx),
        task: Some(task),
    }
}

/// Run `work` while `election` says this replica leads: started on winning,
/// aborted on losing, started again on winning again. Never returns.
pub async fn run_while_leader<F, Fut>(mut leader: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut running: Option<JoinHandle<()>> = None;
    loop {
        let is_leader = *leader.borrow_and_update();
        match (is_leader, running.is_some()) {
            (true, false) => running = Some(tokio::spawn(work())),
            (false, true) => {
                if let Some(t) = running.take() {
                    t.abort();
                }
            }
            _ => {}
        }
        if leader.changed().await.is_err() {
            if let Some(t) = running.take() {
                t.abort();
            }
            // The election ended: nothing more will happen.
            std::future::pending::<()>().await;
        }
    }
}
