//! Transport tests of the admission server: real sockets, real TLS, a client
//! that trusts only the test CA and verifies `claimguard.claimguard-system.svc`.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Every bad-input test ends with this: the server still answers a good review.
async fn still_serves(t: &TestServer) {
    let out = t
        .review(&pod_review("good-after-bad", "good-pod", "unrelated-claim"))
        .await;
    assert_eq!(out["response"]["uid"], "good-after-bad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let t = TestServer::start(engine(true)).await;
    let (status, _, body) = t.get("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _, _) = t.get("/readyz").await;
    assert_eq!(status, 200);
    let (status, ct, body) = t.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(
        body.contains("claimguard_admission_duration_seconds"),
        "{body}"
    );
    let (status, _, _) = t.get("/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_synced() {
    let engine = engine(false);
    let t = TestServer::start(Arc::clone(&engine)).await;
    let (status, _, body) = t.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    // Liveness does not depend on the cluster view.
    assert_eq!(t.get("/healthz").await.0, 200);
    engine.cluster().set_synced(true);
    assert_eq!(t.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_reviews_get_400_with_one_line() {
    let t = TestServer::start(engine(true)).await;
    let mut wrong_version = pod_review("u1", "p1", "c1");
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut no_request = pod_review("u2", "p2", "c2");
    no_request.as_object_mut().unwrap().remove("request");
    let mut no_object = pod_review("u3", "p3", "c3");
    no_object["request"]
        .as_object_mut()
        .unwrap()
        .remove("object");
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "this is not json {".to_owned()),
        ("empty body", String::new()),
        ("JSON, not a review", r#"{"hello":"world"}"#.to_owned()),
        ("JSON array", "[1,2,3]".to_owned()),
        ("wrong apiVersion", wrong_version.to_string()),
        ("missing request", no_request.to_string()),
        ("missing object", no_object.to_string()),
    ];
    for (what, body) in cases {
        let (status, text) = t.post_raw(body).await;
        assert_eq!(status, 400, "{what}: {text}");
        assert_eq!(
            text.trim_end().lines().count(),
            1,
            "{what}: one line: {text:?}"
        );
        assert!(!text.trim().is_empty(), "{what}: a reason");
        still_serves(&t).await;
    }
}

/// A 400 for a field of the wrong shape names the field by its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_names_the_field_that_does_not_parse() {
    let t = TestServer::start(engine(true)).await;
    let mut volumes = pod_review("u1", "p1", "c1");
    volumes["request"]["object"]["spec"]["volumes"] = "data".into();
    let mut mounts = pod_review("u2", "p2", "c2");
    mounts["request"]["object"]["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] =
        "yes".into();
    let mut uid = pod_review("u3", "p3", "c3");
    uid["request"]["uid"] = 7.into();
    for (review, want) in [
        (
            volumes,
            "request.object is not a valid Pod: spec.volumes: invalid type: string \"data\", expected a sequence",
        ),
        (
            mounts,
            "request.object is not a valid Pod: spec.containers[0].volumeMounts[0].readOnly: invalid type: string \"yes\", expected a boolean",
        ),
        (
            uid,
            "request body is not an AdmissionReview: request.uid: invalid type: integer `7`, expected a string",
        ),
    ] {
        let (status, text) = t.post_raw(review.to_string()).await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{text:?}");
        assert!(text.starts_with(want), "{text:?} does not start with {want:?}");
        still_serves(&t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_is_not_required() {
    let t = TestServer::start(engine(true)).await;
    let resp = t
        .client
        .post(t.url("/validate"))
        .header("content-type", "text/plain")
        .body(pod_review("ct", "ct-pod", "c").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let t = TestServer::start(engine(true)).await;
    // A valid review padded past 4 MiB, as a huge annotation would be.
    let mut big = pod_review("big", "big-pod", "c");
    big["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({"padding": "x".repeat(4 * 1024 * 1024)});
    let (status, text) = t.post_raw(big.to_string()).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(text.trim_end().lines().count(), 1);
    assert!(text.contains("4194304"), "{text}");
    still_serves(&t).await;

    // Chunked, so the server cannot refuse on Content-Length and must count.
    let (ca, addr) = (t.ca.pem(), t.addr);
    let head = tokio::task::spawn_blocking(move || {
        let mut s = raw_tls(&ca, addr);
        s.write_all(
            b"POST /validate HTTP/1.1\r\nHost: claimguard\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        let chunk = vec![b' '; 1024 * 1024];
        for _ in 0..5 {
            // The server may answer and stop reading before the last chunk.
            if write!(s, "{:x}\r\n", chunk.len()).is_err()
                || s.write_all(&chunk).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let _ = s.flush();
        read_response(&mut s).0
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    still_serves(&t).await;

    // Just under the limit is read in full (and then judged: here 400, whitespace).
    let (status, _) = t.post_raw(vec![b' '; 4 * 1024 * 1024 - 1]).await;
    assert_eq!(status, 400);
    still_serves(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_dropped() {
    let request_timeout = Duration::from_secs(2);
    // The handshake timeout also bounds the handshakes of the two TLS cases
    // below: 1 s was too tight for a loaded 2-core machine (a slow handshake
    // was cut and the test failed before it could ask its question).
    let t = TestServer::start_with(engine(true), |c| {
        c.tls_handshake_timeout = Duration::from_secs(3);
        c.request_timeout = request_timeout;
    })
    .await;
    let ca = t.ca.pem();
    let addr = t.addr;
    let (silent, partial_headers, headers_no_body) = tokio::task::spawn_blocking(move || {
        // TCP open, no TLS handshake at all.
        use std::io::Read;
        let started = Instant::now();
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut sink = Vec::new();
        let closed = tcp.read_to_end(&mut sink).is_ok()
            || started.elapsed() < Duration::from_secs(14);
        let silent = (closed, started.elapsed());

        // Part of a request head, then silence.
        let started = Instant::now();
        let mut s = raw_tls(&ca, addr);
        s.write_all(b"POST /validate HTTP/1.1\r\nHost: claimguard\r\nContent-Ty")
            .unwrap();
        s.flush().unwrap();
        let got = read_to_close(&mut s).expect("server closes the connection");
        let first = (started.elapsed(), String::from_utf8_lossy(&got).into_owned());

        // A whole head announcing a body that never comes.
        let started = Instant::now();
        let mut s = raw_tls(&ca, addr);
        s.write_all(
            b"POST /validate HTTP/1.1\r\nHost: claimguard\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"apiVersion\":",
        )
        .unwrap();
        s.flush().unwrap();
        let got = read_to_close(&mut s).expect("server closes the connection");
        (
            silent,
            first,
            (started.elapsed(), String::from_utf8_lossy(&got).into_owned()),
        )
    })
    .await
    .unwrap();
    // What is asserted is the answer: the server, not the client's 15 s read
    // timeout, ends each stalled connection, and a stalled body gets 408. The
    // server's timers fire on a loaded 2-core machine up to seconds late (the
    // actix timer wheel also rounds up), so the upper bounds are generous and
    // sit well below the reader's own 15 s.
    let server_ended = Duration::from_secs(12);
    // actix's timers read a cached clock, so they may fire a little early.
    let waited = request_timeout / 2;
    assert!(silent.0 && silent.1 < server_ended, "{silent:?}");
    assert!(
        partial_headers.0 >= waited && partial_headers.0 < server_ended,
        "{partial_headers:?}"
    );
    assert!(
        partial_headers.1.is_empty() || partial_headers.1.starts_with("HTTP/1.1 408"),
        "{partial_headers:?}"
    );
    assert!(
        headers_no_body.0 >= waited && headers_no_body.0 < server_ended,
        "{headers_no_body:?}"
    );
    assert!(
        headers_no_body.1.starts_with("HTTP/1.1 408"),
        "{headers_no_body:?}"
    );
    still_serves(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let t = TestServer::start(engine(true)).await;
    let ca = t.ca.pem();
    let addr = t.addr;
    let body = pod_review("ka", "ka-pod", "ka-claim").to_string();
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = raw_tls(&ca, addr);
        let mut ok = 0;
        for i in 0..50 {
            let body = body.replace("\"ka\"", &format!("\"ka-{i}\""));
            write!(
                s,
                "POST /validate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            s.flush().unwrap();
            let (head, resp_body) = read_response(&mut s);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(resp_body.contains(&format!("\"ka-{i}\"")), "{resp_body}");
            ok += 1;
        }
        ok
    })
    .await
    .unwrap();
    assert_eq!(answers, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_pieces_is_judged_as_a_body_in_one() {
    // The server keeps a body that arrives in one piece as it came and
    // gathers one that arrives in several: both must be read whole.
    let t = TestServer::start(engine(true)).await;
    let ca = t.ca.pem();
    let addr = t.addr;
    let mut body = pod_review("pieces", "pieces-pod", "pieces-claim");
    // Dry-run: the first answer must not change the cluster the second sees.
    body["request"]["dryRun"] = true.into();
    let body = body.to_string();
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = raw_tls(&ca, addr);
        let mut answers = Vec::new();
        for pieces in [1, 3] {
            write!(
                s,
                "POST /validate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            s.flush().unwrap();
            let step = body.len().div_ceil(pieces);
            for piece in body.as_bytes().chunks(step) {
                // A flush and a pause: each piece its own TLS record and read.
                std::thread::sleep(Duration::from_millis(30));
                s.write_all(piece).unwrap();
                s.flush().unwrap();
            }
            answers.push(read_response(&mut s));
        }
        answers
    })
    .await
    .unwrap();
    for (head, _) in &answers {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert!(
        answers[0].1.contains("\"uid\":\"pieces\""),
        "{}",
        answers[0].1
    );
    assert_eq!(answers[0].1, answers[1].1);
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(
    s: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
) -> (String, String) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "connection closed mid-head: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_without_failed_requests() {
    let t = TestServer::start(engine(true)).await;
    let ca = t.ca.pem();
    let first = served_cert(&[&ca], t.addr).await;
    let ca2 = Ca::new("second CA");
    let ca2_pem = ca2.pem();

    // Hammer the server over the kept-alive client and over new connections
    // while the files change.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let successes = Arc::new(AtomicUsize::new(0));
    let mut hammers = Vec::new();
    for fresh in [false, true] {
        let (stop, failures, successes) = (stop.clone(), failures.clone(), successes.clone());
        let (ca, ca2, addr) = (ca.clone(), ca2_pem.clone(), t.addr);
        // The kept-alive client must survive the switch to the second CA too.
        let kept = client(&[&ca, &ca2], addr);
        hammers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let c = if fresh {
                    client(&[&ca, &ca2], addr)
                } else {
                    kept.clone()
                };
                match c.get(url(addr, "/healthz")).send().await {
                    Ok(r) if r.status().is_success() => successes.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("request failed during rotation: {other:?}");
                        failures.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }

    // Pair B, written file by file: for a moment cert B sits beside key A,
    // which must be refused rather than served.
    let pair_b = t.ca.issue("pair-b");
    std::fs::write(&t.cert_path, &pair_b.cert_pem).unwrap();
    wait_for_metric(
        &t.client,
        t.addr,
        r#"claimguard_tls_reloads_total{result="error"} 1"#,
    )
    .await;
    assert_eq!(
        served_cert(&[&ca], t.addr).await,
        first,
        "cert B + key A must be refused"
    );
    std::fs::write(&t.key_path, &pair_b.key_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if served_cert(&[&ca], t.addr).await == pair_b.der() {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second CA the client also trusts, installed the way a Secret volume
    // changes: both files replaced by one atomic rename of a symlinked directory.
    let pair_c = ca2.issue("pair-c");
    let data1 = t.dir.path().join("data-1");
    std::fs::create_dir(&data1).unwrap();
    write_pair(&data1, &pair_c);
    let link_tmp = t.dir.path().join("..data_tmp");
    std::os::unix::fs::symlink(&data1, &link_tmp).unwrap();
    std::fs::rename(&link_tmp, t.dir.path().join("..data")).unwrap();
    std::fs::remove_file(&t.cert_path).unwrap();
    std::fs::remove_file(&t.key_path).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", &t.cert_path).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", &t.key_path).unwrap();
    let both = [ca.as_str(), &ca2_pem];
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_cert(&both, t.addr).await != pair_c.der() {
        assert!(
            Instant::now() < deadline,
            "symlinked certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same files' mtimes do not change when only ..data moves.
    let pair_d = ca2.issue("pair-d");
    let data2 = t.dir.path().join("data-2");
    std::fs::create_dir(&data2).unwrap();
    write_pair(&data2, &pair_d);
    std::os::unix::fs::symlink(&data2, &link_tmp).unwrap();
    std::fs::rename(&link_tmp, t.dir.path().join("..data")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_cert(&both, t.addr).await != pair_d.der() {
        assert!(Instant::now() < deadline, "..data swap never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop.store(true, Ordering::SeqCst);
    for h in hammers {
        h.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(successes.load(Ordering::SeqCst) > 10);

    let metrics = client(&both, t.addr)
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // At least the half-written pair (new certificate, old key) was refused;
    // the poller may also catch the moment the files are swapped for
    // symlinks, so the exact count depends on timing.
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"claimguard_tls_reloads_total{result="error"} "#))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(errors >= 1, "{metrics}");
    assert!(
        metrics.contains(r#"claimguard_tls_reloads_total{result="success"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_or_garbage_pairs_are_refused() {
    let t = TestServer::start(engine(true)).await;
    let ca = t.ca.pem();
    let first = served_cert(&[&ca], t.addr).await;
    let pair_b = t.ca.issue("pair-b");

    // Cert B with key A.
    std::fs::write(&t.cert_path, &pair_b.cert_pem).unwrap();
    wait_for_metric(
        &t.client,
        t.addr,
        r#"claimguard_tls_reloads_total{result="error"} 1"#,
    )
    .await;
    assert_eq!(served_cert(&[&ca], t.addr).await, first);
    // A half-written certificate.
    std::fs::write(&t.cert_path, &pair_b.cert_pem[..pair_b.cert_pem.len() / 2]).unwrap();
    wait_for_metric(
        &t.client,
        t.addr,
        r#"claimguard_tls_reloads_total{result="error"} 2"#,
    )
    .await;
    assert_eq!(served_cert(&[&ca], t.addr).await, first);
    // An empty key.
    std::fs::write(&t.key_path, "").unwrap();
    wait_for_metric(
        &t.client,
        t.addr,
        r#"claimguard_tls_reloads_total{result="error"} 3"#,
    )
    .await;
    assert_eq!(served_cert(&[&ca], t.addr).await, first);
    // Files gone.
    std::fs::remove_file(&t.cert_path).unwrap();
    wait_for_metric(
        &t.client,
        t.addr,
        r#"claimguard_tls_reloads_total{result="error"} 4"#,
    )
    .await;
    assert_eq!(served_cert(&[&ca], t.addr).await, first);

    let (_, _, metrics) = t.get("/metrics").await;
    assert!(
        metrics.contains(r#"claimguard_tls_reloads_total{result="error"} 4"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"result="success""#), "{metrics}");

    // A complete, matching pair is taken again.
    std::fs::write(&t.cert_path, &pair_b.cert_pem).unwrap();
    std::fs::write(&t.key_path, &pair_b.key_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_cert(&[&ca], t.addr).await != pair_b.der() {
        assert!(Instant::now() < deadline, "valid pair never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let a = ca.issue("a");
    let b = ca.issue("b");
    let cert = dir.path().join("c.pem");
    let key = dir.path().join("k.pem");
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    let config = claimguard::server::ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        cert.clone(),
        key.clone(),
    );
    let err = claimguard::server::start(config, engine(true))
        .await
        .err()
        .expect("mismatch refused");
    let msg = err.to_string();
    assert!(msg.contains("does not belong"), "{msg}");
    assert_eq!(msg.lines().count(), 1);

    let config = claimguard::server::ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("missing.pem"),
        key,
    );
    let msg = claimguard::server::start(config, engine(true))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("missing.pem"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_serves_through_the_grace_period() {
    let mut t = TestServer::start_with(engine(true), |c| {
        c.shutdown_grace = Duration::from_millis(1500);
    })
    .await;
    let server = t.server.take().unwrap();
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Not ready any more, but still answering, on a kept-alive and a new connection.
    assert_eq!(t.get("/readyz").await.0, 503);
    still_serves(&t).await;
    let fresh = client(&[&t.ca.pem()], t.addr);
    assert_eq!(
        fresh
            .get(t.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    stopping.await.unwrap().expect("clean shutdown");
    let after = client(&[&t.ca.pem()], t.addr)
        .get(t.url("/healthz"))
        .send()
        .await;
    assert!(after.is_err(), "listener closed after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_and_tls13_both_work_and_plain_http_is_refused() {
    let t = TestServer::start(engine(true)).await;
    let (ca, addr) = (t.ca.pem(), t.addr);
    let versions = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(root_store(&ca))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let mut s = raw_tls_with(config, addr);
            write!(s, "GET /healthz HTTP/1.1\r\nHost: {HOST}\r\n\r\n").unwrap();
            s.flush().unwrap();
            let (head, body) = read_response(&mut s);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body.trim(), "ok");
            seen.push(s.conn.protocol_version());
        }

        // Plain HTTP on the TLS port: no HTTP answer, the connection ends.
        use std::io::Read;
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = tcp.read_to_end(&mut got);
        assert!(
            !got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        seen
    })
    .await
    .unwrap();
    assert_eq!(
        versions,
        vec![
            Some(rustls::ProtocolVersion::TLSv1_2),
            Some(rustls::ProtocolVersion::TLSv1_3)
        ]
    );
    still_serves(&t).await;
}

fn root_store(ca_pem: &str) -> rustls::RootCertStore {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// ALPN offers h2 and http/1.1: an HTTP/2 client gets HTTP/2, the API
/// server's HTTP/1.1 client gets HTTP/1.1, both on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_h2_and_http11() {
    let t = TestServer::start(engine(true)).await;
    let ca = t.ca.pem();
    for (alpn, want) in [
        (
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            reqwest::Version::HTTP_2,
        ),
        (vec![b"http/1.1".to_vec()], reqwest::Version::HTTP_11),
    ] {
        let mut tls = rustls_client_config(&[&ca]);
        tls.alpn_protocols = alpn;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve(HOST, t.addr)
            .build()
            .unwrap();
        let resp = client
            .get(format!("https://{HOST}:{}/healthz", t.addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), want);
    }
}
