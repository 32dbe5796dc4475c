//! The in-server periodic audit against a fake API server (actix-web on
//! 127.0.0.1:0, real HTTP): PolicyReports created, updated in place when a
//! violation disappears, never duplicated, deleted when a namespace is clean;
//! a missing CRD is reported and the loop keeps going.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use claimguard::audit::reporter::{self, AuditGauges, ReporterError, CRD_MISSING_MESSAGE};
use claimguard::audit::{self};
use claimguard::cluster::SharedCluster;
use claimguard::policy::Policy;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REPORTS: &str = "/apis/wgpolicyk8s.io/v1alpha2";

#[derive(Default)]
struct Fake {
    crd_installed: bool,
    /// (namespace, name) → stored report
    reports: BTreeMap<(String, String), Value>,
    /// list path → items (served two per page, to exercise `continue`)
    lists: HashMap<String, Vec<Value>>,
    /// "METHOD path?query" of every request, in order
    log: Vec<String>,
    next_rv: u64,
    next_uid: u64,
}

type Shared = Arc<Mutex<Fake>>;

fn status(code: u16, reason: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    }))
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    url_pairs(req.query_string())
}

fn url_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn matches_selector(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => obj["metadata"]["labels"][k] == v,
        None => false,
    })
}

fn list_body(items: Vec<Value>, cont: Option<String>) -> Value {
    json!({
        "apiVersion": "v1", "kind": "List",
        "metadata": {"resourceVersion": "1", "continue": cont.unwrap_or_default()},
        "items": items,
    })
}

async fn handle(req: HttpRequest, body: web::Bytes, fake: web::Data<Shared>) -> HttpResponse {
    let mut f = fake.lock().unwrap();
    let path = req.path().to_string();
    let method = req.method().as_str().to_string();
    f.log
        .push(format!("{method} {path}?{}", req.query_string()));
    let q = query(&req);

    if let Some(rest) = path.strip_prefix(REPORTS) {
        if !f.crd_installed {
            // What the API server answers for a group it does not serve.
            return HttpResponse::NotFound()
                .content_type("text/plain")
                .body("404 page not found\n");
        }
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        return match (method.as_str(), parts.as_slice()) {
            ("GET", ["policyreports"]) | ("GET", ["namespaces", _, "policyreports"]) => {
                let ns = (parts.len() == 3).then(|| parts[1].to_string());
                let items: Vec<Value> = f
                    .reports
                    .iter()
                    .filter(|((n, _), _)| ns.as_ref().is_none_or(|x| x == n))
                    .map(|(_, v)| v.clone())
                    .filter(|v| matches_selector(v, q.get("labelSelector")))
                    .collect();
                HttpResponse::Ok().json(list_body(items, None))
            }
            ("GET", ["namespaces", ns, "policyreports", name]) => {
                match f.reports.get(&(ns.to_string(), name.to_string())) {
                    Some(v) => HttpResponse::Ok().json(v),
                    None => status(404, "NotFound", "not found"),
                }
            }
            ("POST", ["namespaces", ns, "policyreports"])
            | ("PUT", ["namespaces", ns, "policyreports", _])
            | ("PATCH", ["namespaces", ns, "policyreports", _]) => {
                let mut obj: Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => return status(400, "BadRequest", &e.to_string()),
                };
                if method == "PATCH" {
                    let ct = req
                        .headers()
                        .get("content-type")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("");
                    if ct != "application/apply-patch+yaml" {
                        return status(415, "UnsupportedMediaType", ct);
                    }
                    if q.get("fieldManager").map(String::as_str) != Some("claimguard") {
                        return status(422, "Invalid", "fieldManager is required for apply");
                    }
                }
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                if let [_, _, _, url_name] = parts.as_slice() {
                    if *url_name != name {
                        return status(400, "BadRequest", "name in body and URL differ");
                    }
                }
                let key = (ns.to_string(), name);
                let existing = f.reports.get(&key).cloned();
                if method == "POST" && existing.is_some() {
                    return status(409, "AlreadyExists", "already exists");
                }
                if method == "PUT" && existing.is_none() {
                    return status(404, "NotFound", "not found");
                }
                f.next_rv += 1;
                let uid = match &existing {
                    Some(e) => e["metadata"]["uid"].clone(),
                    None => {
                        f.next_uid += 1;
                        json!(format!("uid-{}", f.next_uid))
                    }
                };
                obj["metadata"]["namespace"] = json!(ns);
                obj["metadata"]["uid"] = uid;
                obj["metadata"]["resourceVersion"] = json!(f.next_rv.to_string());
                f.reports.insert(key, obj.clone());
                if existing.is_some() {
                    HttpResponse::Ok().json(obj)
                } else {
                    HttpResponse::Created().json(obj)
                }
            }
            ("DELETE", ["namespaces", ns, "policyreports", name]) => {
                match f.reports.remove(&(ns.to_string(), name.to_string())) {
                    Some(v) => HttpResponse::Ok().json(v),
                    None => status(404, "NotFound", "not found"),
                }
            }
            _ => status(405, "MethodNotAllowed", "not served by the fake"),
        };
    }

    if method == "GET" {
        if let Some(items) = f.lists.get(&path) {
            // Two items per page, whatever the limit: the client must follow `continue`.
            let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
            let page: Vec<Value> = items.iter().skip(start).take(2).cloned().collect();
            let next = (start + 2 < items.len()).then(|| (start + 2).to_string());
            return HttpResponse::Ok().json(list_body(page, next));
        }
    }
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// Start the fake on its own thread and actix system; returns its base URL.
fn start_fake(fake: Shared) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = web::Data::new(fake);
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(16 << 20))
                    .default_service(web::to(handle))
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .expect("bind");
            let addr = server.addrs()[0];
            tx.send(addr).unwrap();
            server.run().await.unwrap();
        })
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("fake started");
    format!("http://{addr}")
}

fn client(base: &str) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = kube::Config::new(base.parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit/cluster.yaml")
}

/// The fixture's PVCs and workloads, as the API server would list them.
fn lists_from_fixture() -> HashMap<String, Vec<Value>> {
    let text = std::fs::read_to_string(fixture()).unwrap();
    let list: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut lists: HashMap<String, Vec<Value>> = HashMap::new();
    for path in [
        "/api/v1/namespaces",
        "/apis/storage.k8s.io/v1/storageclasses",
        "/api/v1/persistentvolumes",
        "/api/v1/pods",
        "/api/v1/nodes",
        "/apis/storage.k8s.io/v1/volumeattachments",
        "/api/v1/persistentvolumeclaims",
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/statefulsets",
        "/apis/apps/v1/daemonsets",
        "/apis/apps/v1/replicasets",
        "/api/v1/replicationcontrollers",
        "/apis/batch/v1/jobs",
        // cronjobs left out: the server answers 404 and the audit goes on without them.
    ] {
        lists.insert(path.to_string(), Vec::new());
    }
    for item in list["items"].as_array().unwrap() {
        let path = match item["kind"].as_str().unwrap() {
            "Namespace" => "/api/v1/namespaces",
            "StorageClass" => "/apis/storage.k8s.io/v1/storageclasses",
            "PersistentVolume" => "/api/v1/persistentvolumes",
            "Pod" => "/api/v1/pods",
            "Node" => "/api/v1/nodes",
            "VolumeAttachment" => "/apis/storage.k8s.io/v1/volumeattachments",
            "PersistentVolumeClaim" => "/api/v1/persistentvolumeclaims",
            "Deployment" => "/apis/apps/v1/deployments",
            "StatefulSet" => "/apis/apps/v1/statefulsets",
            "ReplicaSet" => "/apis/apps/v1/replicasets",
            _ => continue,
        };
        lists.get_mut(path).unwrap().push(item.clone());
    }
    lists
}

fn reports(fake: &Shared) -> BTreeMap<(String, String), Value> {
    fake.lock().unwrap().reports.clone()
}

fn results_by_claim(report: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["properties"]["claim"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_created_updated_and_deleted_never_duplicated() {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        crd_installed: true,
        lists: lists_from_fixture(),
        ..Fake::default()
    }));
    let base = start_fake(fake.clone());
    let client = client(&base);
    let (state, _) = audit::load_for_audit(&[fixture()]).unwrap();
    let cluster = Arc::new(SharedCluster::new(state, true));
    let policy = Arc::new(Policy::default());
    let gauges = AuditGauges::new();

    // What the offline audit of the same cluster finds, per namespace.
    let (s, o) = audit::load_for_audit(&[fixture()]).unwrap();
    let offline = audit::audit_state(&s, &o, &policy);
    let offline_shop = offline
        .violations
        .iter()
        .filter(|v| v.namespace == "shop")
        .count();

    // 1. First pass: one report per namespace with violations.
    let out = reporter::run_once(&client, &cluster, policy.clone(), &gauges)
        .await
        .expect("audit pass");
    assert_eq!(out.violations, offline.violations.len());
    assert_eq!((out.written, out.unchanged, out.deleted), (2, 0, 0));
    let r = reports(&fake);
    let keys: Vec<_> = r.keys().cloned().collect();
    assert_eq!(
        keys,
        vec![
            ("shop".to_string(), "claimguard".to_string()),
            ("staging".to_string(), "claimguard".to_string())
        ]
    );
    let shop = &r[&("shop".to_string(), "claimguard".to_string())];
    assert_eq!(shop["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(shop["kind"], "PolicyReport");
    assert_eq!(
        shop["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "claimguard"
    );
    assert_eq!(shop["results"].as_array().unwrap().len(), offline_shop);
    assert!(results_by_claim(shop).contains(&("rwop-exclusive".into(), "pg-data".into())));
    // Workload rules work in-cluster: the Deployment came from the paged list,
    // its ReplicaSet was not reported a second time.
    assert!(results_by_claim(shop).contains(&("workload-rwop-replicas".into(), "api-data".into())));
    assert_eq!(
        results_by_claim(shop)
            .iter()
            .filter(|(r, _)| r == "workload-rwop-replicas")
            .count(),
        1
    );
    let shop_uid = shop["metadata"]["uid"].clone();
    let shop_rv = shop["metadata"]["resourceVersion"].clone();
    let gauge = |rule: &str| {
        gauges
            .snapshot()
            .into_iter()
            .find(|(r, _)| *r == rule)
            .unwrap()
            .1
    };
    assert_eq!(gauge("rwop-exclusive"), 3);
    {
        let log = &fake.lock().unwrap().log;
        // Paging was followed: the PVC list has more than two items.
        assert!(log
            .iter()
            .any(|l| l.starts_with("GET /api/v1/persistentvolumeclaims?")
                && l.contains("continue=2")));
        assert!(log.iter().any(|l| l.starts_with(
            "PATCH /apis/wgpolicyk8s.io/v1alpha2/namespaces/shop/policyreports/claimguard?"
        ) && l.contains("fieldManager=claimguard")));
    }

    // 2. Nothing changed: nothing is written, nothing duplicated.
    let writes_before = count_writes(&fake);
    let out = reporter::run_once(&client, &cluster, policy.clone(), &gauges)
        .await
        .unwrap();
    assert_eq!((out.written, out.unchanged, out.deleted), (0, 2, 0));
    assert_eq!(count_writes(&fake), writes_before);
    assert_eq!(reports(&fake).len(), 2);

    // 3. Violations disappear: pg-b goes (shop updated in place, that result
    //    gone) and cache-b goes (staging clean: its report deleted).
    {
        let mut st = cluster.write();
        st.delete_pod("shop", "pg-b");
        st.delete_pod("staging", "cache-b");
    }
    let out = reporter::run_once(&client, &cluster, policy.clone(), &gauges)
        .await
        .unwrap();
    assert_eq!((out.written, out.unchanged, out.deleted), (1, 0, 1));
    let r = reports(&fake);
    assert_eq!(r.len(), 1);
    let shop = &r[&("shop".to_string(), "claimguard".to_string())];
    assert_eq!(shop["metadata"]["uid"], shop_uid, "updated in place");
    assert_ne!(shop["metadata"]["resourceVersion"], shop_rv);
    assert_eq!(shop["results"].as_array().unwrap().len(), offline_shop - 1);
    assert!(!results_by_claim(shop).contains(&("rwop-exclusive".into(), "pg-data".into())));
    assert_eq!(
        shop["summary"]["fail"].as_u64().unwrap() as usize,
        shop["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["result"] == "fail")
            .count()
    );
    assert_eq!(gauge("rwop-exclusive"), 1);

    // 4. A policy reload applies at the next pass: turning every rule off
    //    leaves nothing, so the last report goes too.
    let quiet = Arc::new(
        Policy::parse(
            "rules: {rwop-exclusive: off, rwop-terminating-holder: off, rwo-cross-node: off, rwo-shared-writer: off, rwo-readonly-placement: off, rwo-stuck-attachment: off, stale-attachment: off, workload-rwop-replicas: off, workload-rwo-replicas: off, rollout-deadlock: off, pvc-mode-unsupported: off, claim-not-found: off}",
        )
        .unwrap(),
    );
    let out = reporter::run_once(&client, &cluster, quiet, &gauges)
        .await
        .unwrap();
    assert_eq!((out.violations, out.written, out.deleted), (0, 0, 1));
    assert!(reports(&fake).is_empty());
    assert!(gauges.snapshot().iter().all(|(_, n)| *n == 0));
}

fn count_writes(fake: &Shared) -> usize {
    fake.lock()
        .unwrap()
        .log
        .iter()
        .filter(|l| {
            l.starts_with("PATCH ")
                || l.starts_with("PUT ")
                || l.starts_with("POST ")
                || l.starts_with("DELETE ")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_is_named_and_the_loop_keeps_going() {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        crd_installed: false,
        lists: lists_from_fixture(),
        ..Fake::default()
    }));
    let base = start_fake(fake.clone());
    let client = client(&base);
    let (state, _) = audit::load_for_audit(&[fixture()]).unwrap();
    let cluster = Arc::new(SharedCluster::new(state, true));
    let gauges = Arc::new(AuditGauges::new());

    let err = reporter::run_once(&client, &cluster, Arc::new(Policy::default()), &gauges)
        .await
        .unwrap_err();
    assert!(matches!(err, ReporterError::CrdMissing), "{err:?}");
    assert_eq!(err.to_string(), CRD_MISSING_MESSAGE);
    assert!(err.to_string().contains("wgpolicyk8s.io/v1alpha2"));
    // The gauge does not need the CRD.
    assert!(gauges
        .snapshot()
        .iter()
        .any(|(r, n)| *r == "rwop-exclusive" && *n == 3));

    // The periodic loop logs and carries on: several passes reach the server.
    let task = tokio::spawn(reporter::run_periodic(
        client.clone(),
        cluster.clone(),
        || Arc::new(Policy::default()),
        Duration::from_secs(1),
        gauges.clone(),
    ));
    let report_lists = || {
        fake.lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.starts_with("GET /apis/wgpolicyk8s.io/v1alpha2/policyreports?"))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while report_lists() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!task.is_finished(), "the loop must survive a missing CRD");
    task.abort();
    assert!(report_lists() >= 3);

    // Once the CRD is installed the next pass writes the reports.
    fake.lock().unwrap().crd_installed = true;
    let out = reporter::run_once(&client, &cluster, Arc::new(Policy::default()), &gauges)
        .await
        .unwrap();
    assert_eq!(out.written, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_view_is_not_audited() {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        crd_installed: true,
        ..Fake::default()
    }));
    let base = start_fake(fake.clone());
    let cluster = Arc::new(SharedCluster::new(Default::default(), false));
    let err = reporter::run_once(
        &client(&base),
        &cluster,
        Arc::new(Policy::default()),
        &AuditGauges::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReporterError::NotSynced));
    // An empty view must not delete reports written before a restart.
    assert!(fake.lock().unwrap().log.is_empty());

    // The periodic audit waits for the sync, then runs at once rather than
    // one (long) interval later.
    let task = tokio::spawn(reporter::run_periodic(
        client(&base),
        cluster.clone(),
        || Arc::new(Policy::default()),
        Duration::from_secs(3600),
        Arc::new(AuditGauges::new()),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(fake.lock().unwrap().log.is_empty());
    cluster.set_synced(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fake.lock().unwrap().log.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert!(!fake.lock().unwrap().log.is_empty(), "no pass after sync");
}

#[test]
fn the_gauge_is_a_prometheus_collector() {
    let gauges = Arc::new(AuditGauges::new());
    let (s, o) = audit::load_for_audit(&[fixture()]).unwrap();
    gauges.set(&audit::audit_state(&s, &o, &Policy::default()));
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(gauges.clone()));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("# TYPE claimguard_audit_violations gauge"),
        "{text}"
    );
    assert!(
        text.contains("claimguard_audit_violations{rule=\"rwop-exclusive\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("claimguard_audit_violations{rule=\"workload-rwo-replicas\"} 0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_one_off_audit_equals_the_snapshot_audit() {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        crd_installed: true,
        lists: lists_from_fixture(),
        ..Fake::default()
    }));
    let base = start_fake(fake.clone());
    let (state, objects) = reporter::load_from_cluster(&client(&base)).await.unwrap();
    let policy = Policy::default();
    let live = audit::audit_state(&state, &objects, &policy);
    let (s, o) = audit::load_for_audit(&[fixture()]).unwrap();
    let offline = audit::audit_state(&s, &o, &policy);
    assert_eq!(audit::render_json(&live), audit::render_json(&offline));
    assert_eq!(state.canonical_dump(), s.canonical_dump());
    // Listing pods must work: without them there would be nothing to find.
    fake.lock().unwrap().lists.remove("/api/v1/pods");
    let err = reporter::load_from_cluster(&client(&base))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("listing pods"), "{err}");
}

#[test]
fn the_gauge_is_a_family_for_registry_register() {
    let gauges = AuditGauges::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register(
        "claimguard_audit_violations",
        "Violations found by the last periodic audit, by rule",
        gauges.family(),
    );
    let encode = |r: &prometheus_client::registry::Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, r).unwrap();
        text
    };
    // Every rule is there before the first audit, at zero.
    let before = encode(&registry);
    assert!(
        before.contains("claimguard_audit_violations{rule=\"rwop-exclusive\"} 0"),
        "{before}"
    );
    let (s, o) = audit::load_for_audit(&[fixture()]).unwrap();
    gauges.set(&audit::audit_state(&s, &o, &Policy::default()));
    let after = encode(&registry);
    assert!(
        after.contains("# TYPE claimguard_audit_violations gauge"),
        "{after}"
    );
    assert!(
        after.contains("claimguard_audit_violations{rule=\"rwop-exclusive\"} 3"),
        "{after}"
    );
    assert!(
        after.contains("claimguard_audit_violations{rule=\"rollout-deadlock\"} 2"),
        "{after}"
    );
    gauges.set(&audit::AuditReport::default());
    assert!(encode(&registry).contains("claimguard_audit_violations{rule=\"rwop-exclusive\"} 0"));
}
