//! The index shared between the request path and its feeders.

use super::ClusterState;
use crate::objects;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Cache miss: a live GET of one PVC (bounded, short timeout).
/// `Ok(None)` means the claim does not exist.
pub trait ClaimFetcher: Send + Sync {
    fn fetch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<objects::PersistentVolumeClaim>, String>>;
}

pub struct SharedCluster {
    state: RwLock<ClusterState>,
    synced: AtomicBool,
    fetcher: arc_swap::ArcSwapOption<Box<dyn ClaimFetcher>>,
    workload_fetcher: arc_swap::ArcSwapOption<Box<dyn super::WorkloadFetcher>>,
    reservation_ttl: Option<Duration>,
    /// Reservations in the API server (live mode across replicas).
    reservations: arc_swap::ArcSwapOption<super::reservations::ReservationBook>,
}

/// How long an admitted pod holds its claims before the watch shows it.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(15);

impl SharedCluster {
    /// A view fed by watchers: admitted pods are reservations that end when
    /// the watch shows them or after `DEFAULT_RESERVATION_TTL`.
    pub fn new(state: ClusterState, synced: bool) -> Self {
        Self::with_reservation_ttl(state, synced, Some(DEFAULT_RESERVATION_TTL))
    }

    /// A view with no feeder (a snapshot): admitted pods are stored for good,
    /// as a cluster that stored them.
    pub fn stored(state: ClusterState) -> Self {
        Self::with_reservation_ttl(state, true, None)
    }

    pub fn with_reservation_ttl(state: ClusterState, synced: bool, ttl: Option<Duration>) -> Self {
        SharedCluster {
            state: RwLock::new(state),
            synced: AtomicBool::new(synced),
            fetcher: arc_swap::ArcSwapOption::empty(),
            workload_fetcher: arc_swap::ArcSwapOption::empty(),
            reservation_ttl: ttl,
            reservations: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// A panic while the lock was held cannot leave the index half-written in
    /// a way later reads care about more than a dead server, so poisoning is
    /// ignored rather than turned into a panic on every later request.
    pub fn read(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, ClusterState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn set_fetcher(&self, f: Arc<dyn ClaimFetcher>) {
        self.fetcher.store(Some(Arc::new(Box::new(ArcFetcher(f)))));
    }

    pub fn fetcher(&self) -> Option<Arc<Box<dyn ClaimFetcher>>> {
        self.fetcher.load_full()
    }

    /// How scale requests find a workload the view does not hold (live).
    pub fn set_workload_fetcher(&self, f: Box<dyn super::WorkloadFetcher>) {
        self.workload_fetcher.store(Some(Arc::new(f)));
    }

    pub fn fetcher_for_workloads(&self) -> Option<Arc<Box<dyn super::WorkloadFetcher>>> {
        self.workload_fetcher.load_full()
    }

    pub fn reservation_ttl(&self) -> Option<Duration> {
        self.reservation_ttl
    }

    /// Keep reservations in the API server through `book` from now on.
    pub fn set_reservations(&self, book: Arc<super::reservations::ReservationBook>) {
        self.reservations.store(Some(book));
    }

    pub fn reservations(&self) -> Option<Arc<super::reservations::ReservationBook>> {
        self.reservations.load_full()
    }
}

struct ArcFetcher(Arc<dyn ClaimFetcher>);

impl ClaimFetcher for ArcFetcher {
    fn fetch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<objects::PersistentVolumeClaim>, String>> {
        self.0.fetch(namespace, name)
    }
}
