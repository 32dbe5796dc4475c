//! `--metrics-listen` and the monitoring overlay: /metrics over plain HTTP on
//! a second port, and every metric the shipped alerts use is one the server
//! really exposes.

mod common;

use std::sync::Arc;

use claimguard::server::{self, Metrics, ServeConfig};
use common::*;

/// The metric names (without `_total`/`_bucket` suffixes) the PrometheusRule uses.
fn alert_metrics() -> Vec<String> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("manifests/components/monitoring/prometheusrule.yaml"),
    )
    .unwrap();
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("claimguard_"))
        .map(|w| {
            w.trim_end_matches("_bucket")
                .trim_end_matches("_total")
                .to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_over_plain_http_cover_every_alert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("serving");
    let (cert, key) = write_pair(dir.path(), &ca.issue("pair"));
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), cert.clone(), key);
    config.reload_interval = std::time::Duration::from_millis(100);
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.workers = Some(1);
    config.shutdown_grace = std::time::Duration::from_millis(100);
    let metrics = Arc::new(Metrics::new());
    // Registered by `serve` in live mode, as main.rs does.
    metrics.register_counter(
        "claimguard_watch_restarts",
        "Watch errors after which a watcher retried or re-listed",
    );
    let running = server::start_with_metrics(config, engine(false), metrics)
        .await
        .expect("starts");
    let plain_addr = running.metrics_addr().expect("metrics listener bound");
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();

    // Traffic on the webhook port, and a refused certificate, so that every
    // labelled family has a sample to show.
    let tls = client(&[&ca.pem()], running.local_addr());
    let answered = tls
        .post(url(running.local_addr(), "/validate"))
        .header("content-type", "application/json")
        .body(pod_review("0d0e0000-0000-4000-8000-000000000001", "web", "data").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    std::fs::write(&cert, "not a certificate").unwrap();
    let plain_url = format!("http://{plain_addr}/metrics");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !http
        .get(&plain_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains(r#"claimguard_tls_reloads_total{result="error"} 1"#)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "reload error never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let resp = http
        .get(format!("http://{plain_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    // Not synced: the readiness gauge says so, as /readyz does.
    assert!(text.contains("claimguard_ready 0"), "{text}");
    let ready = http
        .get(format!("http://{plain_addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // Only metrics and probes on the plain port: never a decision.
    let validate = http
        .post(format!("http://{plain_addr}/validate"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(validate.status(), 404);

    let names = alert_metrics();
    assert!(names.len() >= 5, "{names:?}");
    for name in &names {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "alert uses {name}, which the server does not expose:\n{text}"
        );
    }
    running.shutdown().await.expect("clean shutdown");
}
