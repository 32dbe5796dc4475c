//! `--client-ca`: the deciding routes answer only clients with a certificate
//! from that CA, over real TLS; probes and metrics stay open; a rotated CA
//! applies without a restart.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A client certificate as the API server's kubeconfig would hold it.
fn client_identity(ca: &Ca, cn: &str) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = ca.sign(params, &key);
    (cert, key.serialize_pem())
}

/// A reqwest client that trusts the server CA and, when given, presents a
/// client certificate.
fn client_with(
    server_ca: &str,
    identity: Option<&(String, String)>,
    t: &TestServer,
) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .resolve(HOST, t.addr)
        .http1_only()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post_review(
    client: &reqwest::Client,
    t: &TestServer,
) -> Result<(u16, String), reqwest::Error> {
    let resp = client
        .post(t.url("/validate"))
        .header("content-type", "application/json")
        .body(pod_review("1b0e5a8c-0000-4000-8000-000000000001", "web", "data").to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_api_servers_certificate_gets_decisions() {
    let apiserver_ca = Ca::new("kube-apiserver client CA");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, apiserver_ca.pem()).unwrap();
    let t = TestServer::start_with(engine(true), |c| {
        c.client_ca = Some(ca_path.clone());
    })
    .await;
    let server_ca = t.ca.pem();

    // The API server's identity: decided.
    let apiserver = client_identity(&apiserver_ca, "kube-apiserver");
    let good = client_with(&server_ca, Some(&apiserver), &t);
    let (status, body) = post_review(&good, &t)
        .await
        .expect("verified client answered");
    assert_eq!(status, 200, "{body}");
    let review: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(review["response"]["allowed"], true, "{body}");

    // No certificate: the TLS handshake succeeds (probes need it), the
    // deciding route refuses with one line.
    let anonymous = client_with(&server_ca, None, &t);
    let (status, body) = post_review(&anonymous, &t).await.expect("answered");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(
        body.contains("/validate needs a client certificate"),
        "{body}"
    );
    let mutate = anonymous
        .post(t.url("/mutate"))
        .header("content-type", "application/json")
        .body(pod_review("1b0e5a8c-0000-4000-8000-000000000002", "web", "data").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(mutate.status(), 401, "/mutate decides too");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = anonymous.get(t.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path} must stay open to probes");
    }

    // A certificate from another CA (a forged identity): refused in the handshake.
    let other = client_identity(&Ca::new("someone else"), "kube-apiserver");
    let forged = client_with(&server_ca, Some(&other), &t);
    let err = post_review(&forged, &t).await;
    assert!(
        !matches!(err, Ok((200, _))),
        "a foreign client certificate was answered: {err:?}"
    );

    // The refusals are counted under their own label.
    let metrics = anonymous
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"allowed="unauthenticated""#),
        "{metrics}"
    );

    // The API server's CA rotated: the new CA applies to new connections
    // without a restart, and the old identity stops working.
    let rotated_ca = Ca::new("kube-apiserver client CA 2");
    std::fs::write(&ca_path, rotated_ca.pem()).unwrap();
    let new_identity = client_identity(&rotated_ca, "kube-apiserver");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A fresh client each time: a new connection, a new handshake.
        let c = client_with(&server_ca, Some(&new_identity), &t);
        if matches!(post_review(&c, &t).await, Ok((200, _))) {
            break;
        }
        assert!(Instant::now() < deadline, "rotated client CA never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = client_with(&server_ca, Some(&apiserver), &t);
    assert!(!matches!(post_review(&old, &t).await, Ok((200, _))));

    // A broken CA file is refused and the last good one kept.
    std::fs::write(&ca_path, "not a certificate").unwrap();
    wait_for_metric(
        &t.client,
        t.addr,
        r#"claimguard_tls_reloads_total{result="error"} 1"#,
    )
    .await;
    let c = client_with(&server_ca, Some(&new_identity), &t);
    assert_eq!(post_review(&c, &t).await.unwrap().0, 200);
}

#[tokio::test]
async fn without_client_ca_nobody_is_asked_for_a_certificate() {
    let t = TestServer::start(engine(true)).await;
    let anonymous = client_with(&t.ca.pem(), None, &t);
    assert_eq!(post_review(&anonymous, &t).await.unwrap().0, 200);
}

#[tokio::test]
async fn a_bad_client_ca_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("serving");
    let (cert, key) = write_pair(dir.path(), &ca.issue("pair"));
    let bad = dir.path().join("client-ca.crt");
    std::fs::write(&bad, "garbage").unwrap();
    let mut config =
        claimguard::server::ServeConfig::new("127.0.0.1:0".parse().unwrap(), cert, key);
    config.client_ca = Some(bad);
    let err = match claimguard::server::start(config, engine(true)).await {
        Ok(_) => panic!("started with a garbage client CA"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("client-ca.crt"), "{err}");
}
