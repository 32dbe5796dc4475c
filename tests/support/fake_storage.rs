//! The storage half of the fake API server: what `claimguard migrate` needs of the
//! API server's write path and of the PV controller, so a test can see a volume lost.
//!
//! **Writes** (PersistentVolumes and PersistentVolumeClaims), as the API server answers:
//! - `PUT` replaces the object. `metadata.resourceVersion` is required and must be the
//!   stored one, else `409 Conflict` ("the object has been modified"). `status` is a
//!   subresource: the stored one is kept. A claim's spec is immutable but for
//!   `resources.requests` (and `volumeName` while empty): `422`.
//! - `PATCH`: merge patch (a `metadata.resourceVersion` in it must match: `409`) or JSON
//!   patch (a failed `test` op: `422`, as the API server answers).
//! - `DELETE` honours `preconditions` (`uid`, `resourceVersion`: `409` on mismatch). An
//!   object with finalizers gets a `deletionTimestamp` and stays until its finalizer is
//!   done (below); a PersistentVolume deleted through the API counts as lost.
//! - `POST` creates (`409 AlreadyExists`); a claim starts `Pending` with the
//!   `kubernetes.io/pvc-protection` finalizer the admission plugin adds.
//! - `ReadWriteOncePod` mixed with another mode is refused (`422`), as validation does.
//!
//! **The PV controller** (`start_storage_controller`, a tick every 20 ms):
//! - pvc-protection: a terminating claim no non-finished pod uses is removed;
//! - a volume whose `claimRef` names a claim (with a uid) that no longer exists is
//!   `Released` when its reclaim policy is `Retain`, and **deleted** when it is `Delete`
//!   (recorded in `lost_volumes`: the disk is gone);
//! - a volume whose `claimRef` has no uid (or no claimRef) is `Available`;
//! - a Pending claim with `volumeName` binds to that volume when the volume's `claimRef`
//!   allows it (none, or the claim's namespace/name with no uid or the claim's uid) and
//!   the claim fits (access modes a subset of the volume's, same storage class and volume
//!   mode): volume `claimRef` with the claim's uid, both `Bound`. A Pending claim without
//!   `volumeName` gets a new volume when its StorageClass provisions now (`Immediate`,
//!   or `WaitForFirstConsumer` with a selected node): `provisioned_volumes`.
//!
//! **Faults**, counted over writes (any PUT/PATCH/DELETE/POST of a PV or PVC):
//! `fail_nth_write(n)` answers the n-th write from now with 500 without applying it;
//! `kill_on_nth_write(n)` applies it, then kills the process registered with
//! `set_victim` (SIGKILL) before answering; `edit_before_nth_write` changes an object
//! just before the n-th write is handled (a concurrent edit).

// Handlers answer errors as ready-made responses (test code: size does not matter).
#![allow(clippy::result_large_err)]

use super::fake_apiserver::{
    status_response, with_type, EventType, FakeApiServer, Inner, Kind, Shared, Target,
};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::sync::{Arc, Weak};
use std::time::Duration;

type Edit = Box<dyn FnOnce(&mut Value) + Send>;

/// A request the server received: method, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
}

impl Request {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct Storage {
    log: Vec<Request>,
    writes: u64,
    fail_at: Vec<u64>,
    kill_at: Option<u64>,
    victim: Option<u32>,
    killed: Vec<u32>,
    edits: Vec<(u64, Kind, String, String, Edit)>,
    lost: Vec<String>,
    provisioned: Vec<String>,
}

impl Storage {
    pub(super) fn note_request(&mut self, method: &str, path: &str, query: &str) {
        self.log.push(Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
        });
    }
}

impl FakeApiServer {
    fn storage<T>(&self, f: impl FnOnce(&mut Storage) -> T) -> T {
        f(&mut self.shared.lock().storage)
    }

    /// Run the PV controller (pvc-protection, release or delete, bind, provision) every
    /// 20 ms until the server is dropped.
    pub fn start_storage_controller(&self) {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let Some(shared) = weak.upgrade() else { return };
                reconcile(&mut shared.lock());
            }
        });
    }

    /// One pass of the PV controller, now.
    pub fn reconcile_storage(&self) {
        reconcile(&mut self.shared.lock());
    }

    /// Every request received so far (GET, LIST and writes), in order.
    pub fn requests(&self) -> Vec<Request> {
        self.storage(|s| s.log.clone())
    }

    /// How many PV/PVC writes were received (failed ones included).
    pub fn write_count(&self) -> u64 {
        self.storage(|s| s.writes)
    }

    /// Volumes deleted (by the PV controller for a `Delete` policy, or through the API).
    pub fn lost_volumes(&self) -> Vec<String> {
        self.storage(|s| s.lost.clone())
    }

    /// Volumes the controller provisioned for claims without `volumeName`.
    pub fn provisioned_volumes(&self) -> Vec<String> {
        self.storage(|s| s.provisioned.clone())
    }

    /// The `n`-th write from now (1 = the next) gets 500 and is not applied.
    pub fn fail_nth_write(&self, n: u64) {
        self.storage(|s| {
            let at = s.writes + n;
            s.fail_at.push(at)
        });
    }

    /// The `n`-th write from now is applied, then the victim (`set_victim`) is killed
    /// with SIGKILL before the answer is sent: the process dies right after its write
    /// landed, never knowing it did.
    pub fn kill_on_nth_write(&self, n: u64) {
        self.storage(|s| s.kill_at = Some(s.writes + n));
    }

    pub fn set_victim(&self, pid: u32) {
        self.storage(|s| s.victim = Some(pid));
    }

    /// The processes killed so far.
    pub fn killed(&self) -> Vec<u32> {
        self.storage(|s| s.killed.clone())
    }

    /// Just before the `n`-th write from now is handled, change an object (its
    /// resourceVersion moves on, as when someone else edits it).
    pub fn edit_before_nth_write(
        &self,
        n: u64,
        kind: Kind,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        self.storage(|s| {
            let at = s.writes + n;
            s.edits.push((
                at,
                kind,
                namespace.to_string(),
                name.to_string(),
                Box::new(f),
            ))
        });
    }
}

fn ok(code: u16, kind: Kind, v: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status"))
        .content_type("application/json")
        .body(with_type(kind, v).to_string())
}

fn conflict(kind: Kind, name: &str, why: &str) -> HttpResponse {
    status_response(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            kind.plural()
        ),
    )
}

fn invalid(kind: Kind, name: &str, why: &str) -> HttpResponse {
    status_response(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {why}", kind.kind()),
    )
}

fn not_found(kind: Kind, name: &str) -> HttpResponse {
    status_response(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.plural()),
    )
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn modes(v: &Value) -> Vec<String> {
    v.pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What the API server's validation says about access modes.
fn validate(kind: Kind, v: &Value) -> Result<(), String> {
    let m = modes(v);
    if m.is_empty() && kind == Kind::Pvc {
        return Err("spec.accessModes: Required value: at least 1 access mode is required".into());
    }
    if m.iter().any(|x| x == "ReadWriteOncePod") && m.len() > 1 {
        return Err(
            "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes"
                .into(),
        );
    }
    if kind == Kind::Pvc && v.pointer("/spec/resources/requests/storage").is_none() {
        return Err("spec.resources[storage]: Required value".into());
    }
    Ok(())
}

/// A claim's spec may change only in `resources` (and `volumeName` while empty).
fn immutable_claim_spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut s = v["spec"].clone();
        if let Some(o) = s.as_object_mut() {
            o.remove("resources");
            o.remove("volumeName");
        }
        s
    };
    let old_volume = text(old, "/spec/volumeName");
    strip(old) != strip(new)
        || (old_volume.is_some() && old_volume != text(new, "/spec/volumeName"))
}

pub(super) async fn write(
    shared: &Arc<Shared>,
    req: &HttpRequest,
    body: &Bytes,
    t: Target,
) -> HttpResponse {
    let method = req.method().as_str().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (resp, kill) = {
        let mut inner = shared.lock();
        inner.storage.writes += 1;
        let n = inner.storage.writes;
        let due: Vec<(u64, Kind, String, String, Edit)> = {
            let (due, keep) = std::mem::take(&mut inner.storage.edits)
                .into_iter()
                .partition(|e| e.0 == n);
            inner.storage.edits = keep;
            due
        };
        for (_, kind, ns, name, f) in due {
            if let Some(mut v) = inner.get_value(kind, &ns, &name) {
                f(&mut v);
                inner.upsert(kind, v, Some(EventType::Modified));
            }
        }
        if inner.storage.fail_at.contains(&n) {
            return status_response(
                500,
                "InternalError",
                &format!(
                    "fake API server: injected failure of write {n} ({method} {})",
                    req.path()
                ),
            );
        }
        if inner.forbidden.contains(&t.kind) {
            let verb = match method.as_str() {
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "create",
            };
            return status_response(
                403,
                "Forbidden",
                &format!(
                    "{} is forbidden: User \"jane\" cannot {verb} resource \"{}\" in API group \"\"",
                    t.kind.plural(),
                    t.kind.plural()
                ),
            );
        }
        let ns = t.namespace.clone().unwrap_or_default();
        let resp = match (method.as_str(), t.name.as_deref()) {
            ("PUT", Some(name)) => replace(&mut inner, t.kind, &ns, name, body),
            ("PATCH", Some(name)) => patch(&mut inner, t.kind, &ns, name, body, &content_type),
            ("DELETE", Some(name)) => delete(&mut inner, t.kind, &ns, name, body),
            ("POST", None) => create(&mut inner, t.kind, &ns, body),
            _ => status_response(
                405,
                "MethodNotAllowed",
                "fake API server: method not allowed here",
            ),
        };
        (resp, inner.storage.kill_at == Some(n))
    };
    if kill {
        // The write landed; the client dies before it hears so.
        let mut victim = None;
        for _ in 0..500 {
            victim = shared.lock().storage.victim;
            if victim.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = victim.expect("kill_on_nth_write needs set_victim(pid)");
        // Noted first: the test sees the process die as soon as the signal lands.
        shared.lock().storage.killed.push(pid);
        let pid_t = libc::pid_t::try_from(pid).expect("a pid");
        // SAFETY: kill(2) only sends a signal; the pid is the child the test
        // spawned and still owns (not yet waited for, so not reused).
        let rc = unsafe { libc::kill(pid_t, libc::SIGKILL) };
        assert_eq!(
            rc,
            0,
            "kill -KILL {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
    resp
}

fn parse(body: &[u8]) -> Result<Value, HttpResponse> {
    serde_json::from_slice(body).map_err(|e| {
        status_response(
            400,
            "BadRequest",
            &format!("fake API server: body is not JSON: {e}"),
        )
    })
}

/// The stored object, if its resourceVersion is `rv` (or `rv` is `None`).
fn check_rv(
    inner: &Inner,
    kind: Kind,
    ns: &str,
    name: &str,
    rv: Option<&str>,
) -> Result<Value, HttpResponse> {
    let stored = inner
        .get_value(kind, ns, name)
        .ok_or_else(|| not_found(kind, name))?;
    if let Some(rv) = rv {
        if text(&stored, "/metadata/resourceVersion") != Some(rv) {
            return Err(conflict(
                kind,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
    }
    Ok(stored)
}

/// Store `new` over `stored` as an update: status and deletion are kept.
fn store_update(
    inner: &mut Inner,
    kind: Kind,
    name: &str,
    stored: &Value,
    mut new: Value,
) -> HttpResponse {
    if text(&new, "/metadata/name") != Some(name) {
        return status_response(
            400,
            "BadRequest",
            "fake API server: the name in the body does not match the URL",
        );
    }
    if let Err(e) = validate(kind, &new) {
        return invalid(kind, name, &e);
    }
    if kind == Kind::Pvc && immutable_claim_spec_changed(stored, &new) {
        return invalid(
            kind,
            name,
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        );
    }
    new["status"] = stored["status"].clone();
    if let Some(ts) = stored.pointer("/metadata/deletionTimestamp") {
        new["metadata"]["deletionTimestamp"] = ts.clone();
    }
    if kind.namespaced() {
        new["metadata"]["namespace"] = stored["metadata"]["namespace"].clone();
    }
    inner.upsert(kind, new, Some(EventType::Modified));
    let ns = text(stored, "/metadata/namespace")
        .unwrap_or_default()
        .to_string();
    ok(
        200,
        kind,
        inner.get_value(kind, &ns, name).expect("just stored"),
    )
}

fn replace(inner: &mut Inner, kind: Kind, ns: &str, name: &str, body: &[u8]) -> HttpResponse {
    let new = match parse(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(rv) = text(&new, "/metadata/resourceVersion").map(str::to_string) else {
        return invalid(
            kind,
            name,
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
        );
    };
    let stored = match check_rv(inner, kind, ns, name, Some(&rv)) {
        Ok(s) => s,
        Err(r) => return r,
    };
    store_update(inner, kind, name, &stored, new)
}

fn patch(
    inner: &mut Inner,
    kind: Kind,
    ns: &str,
    name: &str,
    body: &[u8],
    content_type: &str,
) -> HttpResponse {
    let p = match parse(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let stored = match check_rv(inner, kind, ns, name, None) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut new = stored.clone();
    if content_type.starts_with("application/json-patch+json") {
        let ops: json_patch::Patch = match serde_json::from_value(p) {
            Ok(o) => o,
            Err(e) => return status_response(400, "BadRequest", &e.to_string()),
        };
        if let Err(e) = json_patch::patch(&mut new, &ops) {
            return status_response(422, "Invalid", &e.to_string());
        }
    } else {
        if let Some(rv) = text(&p, "/metadata/resourceVersion") {
            if text(&stored, "/metadata/resourceVersion") != Some(rv) {
                return conflict(
                    kind,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
        }
        json_patch::merge(&mut new, &p);
    }
    store_update(inner, kind, name, &stored, new)
}

fn delete(inner: &mut Inner, kind: Kind, ns: &str, name: &str, body: &[u8]) -> HttpResponse {
    let opts: Value = if body.is_empty() {
        json!({})
    } else {
        match parse(body) {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
    let stored = match check_rv(inner, kind, ns, name, None) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(uid) = text(&opts, "/preconditions/uid") {
        let have = text(&stored, "/metadata/uid").unwrap_or_default();
        if uid != have {
            return conflict(
                kind,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            );
        }
    }
    if let Some(rv) = text(&opts, "/preconditions/resourceVersion") {
        let have = text(&stored, "/metadata/resourceVersion").unwrap_or_default();
        if rv != have {
            return conflict(
                kind,
                name,
                &format!("the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({have}). The object might have been modified"),
            );
        }
    }
    if kind == Kind::Pv {
        inner.storage.lost.push(name.to_string());
    }
    let finalizers = stored
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if finalizers && kind == Kind::Pvc {
        if stored.pointer("/metadata/deletionTimestamp").is_none() {
            let mut v = stored.clone();
            v["metadata"]["deletionTimestamp"] = json!("2026-12-07T11:00:00Z");
            inner.upsert(kind, v, Some(EventType::Modified));
        }
        return ok(200, kind, inner.get_value(kind, ns, name).expect("stored"));
    }
    inner.delete(kind, ns, name);
    ok(200, kind, stored)
}

fn create(inner: &mut Inner, kind: Kind, ns: &str, body: &[u8]) -> HttpResponse {
    let mut v = match parse(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(name) = text(&v, "/metadata/name").map(str::to_string) else {
        return invalid(
            kind,
            "",
            "metadata.name: Required value: name or generateName is required",
        );
    };
    if kind.namespaced() {
        match text(&v, "/metadata/namespace") {
            Some(n) if n != ns => {
                return status_response(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            }
            _ => v["metadata"]["namespace"] = json!(ns),
        }
    }
    if inner.get_value(kind, ns, &name).is_some() {
        return status_response(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", kind.plural()),
        );
    }
    if text(&v, "/metadata/resourceVersion").is_some() {
        return invalid(kind, &name, "metadata.resourceVersion: Invalid value: resourceVersion should not be set on objects to be created");
    }
    if let Err(e) = validate(kind, &v) {
        return invalid(kind, &name, &e);
    }
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("uid");
        m.remove("deletionTimestamp");
        m.remove("creationTimestamp");
    }
    let protection = if kind == Kind::Pvc {
        "kubernetes.io/pvc-protection"
    } else {
        "kubernetes.io/pv-protection"
    };
    v["metadata"]["finalizers"] = json!([protection]);
    v["status"] = json!({"phase": "Pending"});
    inner.upsert(kind, v, Some(EventType::Added));
    ok(
        201,
        kind,
        inner.get_value(kind, ns, &name).expect("just stored"),
    )
}

// ---- the PV controller ----------------------------------------------------------

fn values(inner: &Inner, kind: Kind) -> Vec<Value> {
    inner
        .objects
        .get(&kind)
        .map(|m| {
            m.values()
                .map(|s| serde_json::from_slice(&s.body).expect("stored JSON"))
                .collect()
        })
        .unwrap_or_default()
}

fn used_by_pod(pods: &[Value], ns: &str, claim: &str) -> bool {
    pods.iter().any(|p| {
        text(p, "/metadata/namespace") == Some(ns)
            && !matches!(text(p, "/status/phase"), Some("Succeeded") | Some("Failed"))
            && p.pointer("/spec/volumes")
                .and_then(Value::as_array)
                .is_some_and(|vs| {
                    vs.iter()
                        .any(|v| text(v, "/persistentVolumeClaim/claimName") == Some(claim))
                })
    })
}

fn set_phase(inner: &mut Inner, kind: Kind, mut v: Value, phase: &str) {
    if text(&v, "/status/phase") != Some(phase) {
        v["status"]["phase"] = json!(phase);
        inner.upsert(kind, v, Some(EventType::Modified));
    }
}

/// Does the claim's StorageClass provision a volume now: it exists, and binds
/// `Immediate`ly or the scheduler has picked a node (`WaitForFirstConsumer`).
fn provisions_now(inner: &Inner, pvc: &Value) -> bool {
    let Some(class) = text(pvc, "/spec/storageClassName") else {
        return false;
    };
    let Some(sc) = inner.get_value(Kind::StorageClass, "", class) else {
        return false;
    };
    text(&sc, "/volumeBindingMode") != Some("WaitForFirstConsumer")
        || text(
            pvc,
            "/metadata/annotations/volume.kubernetes.io~1selected-node",
        )
        .is_some()
}

/// One pass of the PV controller (see the module docs).
pub(super) fn reconcile(inner: &mut Inner) {
    // pvc-protection: a terminating claim goes once no pod uses it.
    let pods = values(inner, Kind::Pod);
    for pvc in values(inner, Kind::Pvc) {
        if pvc.pointer("/metadata/deletionTimestamp").is_some() {
            let ns = text(&pvc, "/metadata/namespace")
                .unwrap_or("default")
                .to_string();
            let name = text(&pvc, "/metadata/name").unwrap_or_default().to_string();
            if !used_by_pod(&pods, &ns, &name) {
                inner.delete(Kind::Pvc, &ns, &name);
            }
        }
    }
    // Volumes: released, deleted, or available.
    let claims = values(inner, Kind::Pvc);
    let claim_uid = |ns: &str, name: &str| {
        claims
            .iter()
            .find(|c| {
                text(c, "/metadata/namespace") == Some(ns)
                    && text(c, "/metadata/name") == Some(name)
            })
            .and_then(|c| text(c, "/metadata/uid").map(str::to_string))
    };
    for pv in values(inner, Kind::Pv) {
        let name = text(&pv, "/metadata/name").unwrap_or_default().to_string();
        let (ns, claim, uid) = (
            text(&pv, "/spec/claimRef/namespace").unwrap_or_default(),
            text(&pv, "/spec/claimRef/name").unwrap_or_default(),
            text(&pv, "/spec/claimRef/uid"),
        );
        match uid {
            Some(uid) if claim_uid(ns, claim).as_deref() != Some(uid) => {
                // Its claim is gone.
                let policy = text(&pv, "/spec/persistentVolumeReclaimPolicy").unwrap_or("Retain");
                if policy == "Delete" {
                    inner.delete(Kind::Pv, "", &name);
                    inner.storage.lost.push(name);
                } else {
                    set_phase(inner, Kind::Pv, pv, "Released");
                }
            }
            Some(_) => set_phase(inner, Kind::Pv, pv, "Bound"),
            None => set_phase(inner, Kind::Pv, pv, "Available"),
        }
    }
    // Pending claims: bind to the named volume, or provision one.
    for pvc in values(inner, Kind::Pvc) {
        if pvc.pointer("/metadata/deletionTimestamp").is_some()
            || text(&pvc, "/status/phase") == Some("Bound")
        {
            continue;
        }
        let ns = text(&pvc, "/metadata/namespace")
            .unwrap_or("default")
            .to_string();
        let name = text(&pvc, "/metadata/name").unwrap_or_default().to_string();
        let uid = text(&pvc, "/metadata/uid").unwrap_or_default().to_string();
        let volume = match text(&pvc, "/spec/volumeName") {
            Some(v) => v.to_string(),
            None if !provisions_now(inner, &pvc) => continue,
            None => {
                let v = format!("pvc-{uid}");
                let pv = json!({
                    "metadata": {"name": v, "annotations": {"pv.kubernetes.io/provisioned-by": "fake.csi.example.com"},
                                 "finalizers": ["kubernetes.io/pv-protection"]},
                    "spec": {"accessModes": modes(&pvc),
                             "capacity": {"storage": pvc.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("1Gi"))},
                             "csi": {"driver": "fake.csi.example.com", "volumeHandle": format!("vol-{uid}")},
                             "persistentVolumeReclaimPolicy": "Delete",
                             "storageClassName": text(&pvc, "/spec/storageClassName").unwrap_or_default(),
                             "volumeMode": text(&pvc, "/spec/volumeMode").unwrap_or("Filesystem"),
                             "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name}},
                    "status": {"phase": "Available"}
                });
                inner.upsert(Kind::Pv, pv, Some(EventType::Added));
                inner.storage.provisioned.push(v.clone());
                let mut c = pvc.clone();
                c["spec"]["volumeName"] = json!(v);
                inner.upsert(Kind::Pvc, c, Some(EventType::Modified));
                v
            }
        };
        let Some(mut pv) = inner.get_value(Kind::Pv, "", &volume) else {
            continue;
        };
        let pvc = inner.get_value(Kind::Pvc, &ns, &name).expect("claim");
        let allows = match pv.pointer("/spec/claimRef") {
            None | Some(Value::Null) => true,
            Some(r) => {
                text(r, "/namespace") == Some(ns.as_str())
                    && text(r, "/name") == Some(name.as_str())
                    && text(r, "/uid").is_none_or(|u| u == uid)
            }
        };
        let pv_modes = modes(&pv);
        let fits = modes(&pvc).iter().all(|m| pv_modes.contains(m))
            && text(&pvc, "/spec/storageClassName").unwrap_or_default()
                == text(&pv, "/spec/storageClassName").unwrap_or_default()
            && text(&pvc, "/spec/volumeMode").unwrap_or("Filesystem")
                == text(&pv, "/spec/volumeMode").unwrap_or("Filesystem");
        if !allows || !fits {
            continue;
        }
        pv["spec"]["claimRef"] = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": ns, "name": name, "uid": uid,
            "resourceVersion": text(&pvc, "/metadata/resourceVersion").unwrap_or_default()});
        pv["status"]["phase"] = json!("Bound");
        inner.upsert(Kind::Pv, pv.clone(), Some(EventType::Modified));
        let mut c = pvc;
        c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
        c["status"] = json!({"phase": "Bound", "accessModes": pv_modes,
                             "capacity": pv["spec"]["capacity"].clone()});
        inner.upsert(Kind::Pvc, c, Some(EventType::Modified));
    }
}
