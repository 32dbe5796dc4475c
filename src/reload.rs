//! Policy hot reload: a ConfigMap mounted as a volume changes by an atomic
//! symlink swap, which file watchers miss; polling the content is simple and
//! sure. A bad new policy is logged and the last good one kept.

use crate::admission::Engine;
use crate::policy::Policy;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Poll `path` every `interval`; install each new valid policy in `engine`.
pub fn spawn_policy_reloader(
    path: PathBuf,
    engine: Arc<Engine>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    // The baseline is what the caller loaded, read now, not when the task first runs.
    let mut last = std::fs::read(&path).ok();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Ok(now) = tokio::fs::read(&path).await else {
                continue; // mid-swap or briefly absent: try again next tick
            };
            if last.as_deref() == Some(now.as_slice()) {
                continue;
            }
            last = Some(now.clone());
            match std::str::from_utf8(&now)
                .map_err(|e| e.to_string())
                .and_then(Policy::parse)
            {
                Ok(p) => {
                    tracing::info!(path = %path.display(), mode = ?p.mode, "policy reloaded");
                    engine.set_policy(p);
                }
                Err(reason) => {
                    tracing::error!(path = %path.display(), %reason, "new policy refused; keeping the last good one");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterState, SharedCluster};
    use crate::policy::Mode;

    #[tokio::test]
    async fn reloads_good_policies_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "mode: enforce\n").unwrap();
        let engine = Arc::new(Engine::new(
            Policy::load(&path).unwrap(),
            Arc::new(SharedCluster::stored(ClusterState::new())),
        ));
        let h = spawn_policy_reloader(path.clone(), engine.clone(), Duration::from_millis(20));
        std::fs::write(&path, "mode: audit\n").unwrap();
        let mut ok = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if engine.policy().mode == Mode::Audit {
                ok = true;
                break;
            }
        }
        assert!(ok, "policy was not reloaded");
        std::fs::write(&path, "mode: [broken\n").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(engine.policy().mode, Mode::Audit);
        h.abort();
    }
}
