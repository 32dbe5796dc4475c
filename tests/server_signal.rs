//! `server::run` and SIGTERM, in a test binary of its own: once tokio handles
//! SIGTERM the whole process is affected.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_serves_through_grace_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("signal CA");
    let (cert, key) = write_pair(dir.path(), &ca.issue("signal"));
    // run() binds by itself; find a free port first.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = claimguard::server::ServeConfig::new(addr, cert, key);
    config.workers = Some(1);
    config.shutdown_grace = Duration::from_millis(1500);
    let server = tokio::spawn(claimguard::server::run(config, engine(true)));

    let c = client(&[&ca.pem()], addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.get(url(addr, "/healthz")).send().await {
            Ok(r) if r.status().as_u16() == 200 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("server never came up: {other:?}"),
        }
    }

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    // In the grace period: not ready, still serving.
    let ready = c.get(url(addr, "/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let review = pod_review("during-grace", "p", "c").to_string();
    let resp = c
        .post(url(addr, "/validate"))
        .body(review)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let result = tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("run() returns after grace and drain")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "grace was honoured"
    );
    assert!(client(&[&ca.pem()], addr)
        .get(url(addr, "/healthz"))
        .send()
        .await
        .is_err());
}
