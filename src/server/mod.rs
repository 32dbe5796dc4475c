//! The webhook server: actix-web over rustls.
//!
//! `POST /validate` hands the raw body to the admission [`Engine`], which makes
//! every decision; this module only moves bytes, enforces limits and
//! timeouts, records metrics and logs, and keeps the process alive if the
//! engine ever panics.

pub mod client_auth;
pub mod metrics;
mod mutate;
mod read_ahead;
pub mod tls;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, ContentType};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::{FutureExt, StreamExt};

pub use self::metrics::Metrics;
use self::tls::TlsError;
use crate::admission::Engine;

/// Default request body limit. The API server sends at most about 3 MiB.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// How `claimguard serve` listens and behaves. Build with [`ServeConfig::new`]
/// and adjust the public fields.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// After SIGTERM, keep serving this long before refusing new connections:
    /// the API server keeps using keep-alive connections to a terminating pod.
    pub shutdown_grace: Duration,
    /// Then give in-flight requests this long to finish (rounded up to seconds).
    pub drain_timeout: Duration,
    /// How often the certificate files are compared with what is served.
    pub reload_interval: Duration,
    /// Worker threads; `None` = one per physical core.
    pub workers: Option<usize>,
    /// Limit for receiving the request head, and separately the body.
    pub request_timeout: Duration,
    /// How long a closing connection may linger.
    pub disconnect_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub keep_alive: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_body_bytes: usize,
    /// `--client-ca`: the deciding routes require a client certificate that
    /// chains to this CA (reloaded like the serving pair); probes and
    /// `/metrics` do not.
    pub client_ca: Option<PathBuf>,
    /// `--metrics-listen`: also serve `/metrics`, `/healthz` and `/readyz`
    /// over plain HTTP on this address, so Prometheus needs no webhook CA.
    pub metrics_listen: Option<SocketAddr>,
}

impl ServeConfig {
    pub fn new(listen: SocketAddr, tls_cert: PathBuf, tls_key: PathBuf) -> Self {
        Self {
            listen,
            tls_cert,
            tls_key,
            shutdown_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            reload_interval: Duration::from_secs(2),
            workers: None,
            request_timeout: Duration::from_secs(5),
            disconnect_timeout: Duration::from_secs(1),
            // Longer than the API server's idle-connection timeout (Go's 90 s),
            // so the client closes an idle connection first: if the server
            // closed it, a POST already on its way would fail the admission call.
            keep_alive: Duration::from_secs(120),
            tls_handshake_timeout: Duration::from_secs(5),
            max_body_bytes: DEFAULT_MAX_BODY,
            client_ca: None,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("server task failed: {0}")]
    Join(String),
}

struct AppState {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    max_body: usize,
    body_timeout: Duration,
    shutting_down: Arc<AtomicBool>,
    require_client_cert: bool,
    /// `claimguard_ready`, set at each scrape: what `/readyz` would answer.
    ready: prometheus_client::metrics::gauge::Gauge,
    /// `claimguard_stuck_attachments`, counted at each scrape: node status
    /// updates (hundreds a second in a large cluster) then cost nothing.
    stuck_attachments: prometheus_client::metrics::gauge::Gauge,
}

/// A server started by [`start`]: its address and the means to stop it.
pub struct RunningServer {
    addr: SocketAddr,
    handle: ServerHandle,
    /// The plain-HTTP metrics listener (`--metrics-listen`), if any.
    metrics_server: Option<(SocketAddr, ServerHandle)>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    reloader: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
    shutting_down: Arc<AtomicBool>,
    grace: Duration,
    /// Zero: in-flight requests are not waited for (`serve --dev`).
    drain: Duration,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The bound plain-HTTP metrics address (`--metrics-listen`), if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(a, _)| *a)
    }

    /// Graceful shutdown: `/readyz` turns 503 at once, requests keep being
    /// served for the grace period, then the listener closes and in-flight
    /// requests drain. With no grace and no drain time (`serve --dev`), it
    /// stops at once.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.shutting_down.store(true, Ordering::SeqCst);
        if self.grace.is_zero() && self.drain.is_zero() {
            tracing::info!("shutting down now (no grace period, no drain)");
            self.handle.stop(false).await;
            let res = (&mut self.task).await;
            self.reloader.abort();
            if let Some((_, h)) = &self.metrics_server {
                h.stop(false).await;
            }
            return res
                .map_err(|e| ServerError::Join(e.to_string()))?
                .map_err(ServerError::Io);
        }
        tracing::info!(grace = ?self.grace, "shutting down: serving through the grace period");
        // The server may also be stopped meanwhile (a second signal).
        let stopped_early = tokio::select! {
            () = tokio::time::sleep(self.grace) => None,
            res = &mut self.task => Some(res),
        };
        let res = match stopped_early {
            Some(res) => res,
            None => {
                tracing::info!("grace period over: closing the listener and draining");
                self.handle.stop(true).await;
                (&mut self.task).await
            }
        };
        self.reloader.abort();
        if let Some((_, h)) = &self.metrics_server {
            h.stop(false).await;
        }
        res.map_err(|e| ServerError::Join(e.to_string()))?
            .map_err(ServerError::Io)
    }

    /// Serves until `signal` completes (then shuts down gracefully) or the
    /// server stops by itself.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        tokio::select! {
            () = signal => self.shutdown().await,
            res = &mut self.task => {
                self.reloader.abort();
                res.map_err(|e| ServerError::Join(e.to_string()))?.map_err(ServerError::Io)
            }
        }
    }
}

/// Binds the listener, loads the certificate (a start-up error is fatal) and
/// serves in the background.
pub async fn start(config: ServeConfig, engine: Arc<Engine>) -> Result<RunningServer, ServerError> {
    start_with_metrics(config, engine, Arc::new(Metrics::new())).await
}

/// As [`start`], with a metrics registry shared with other components.
pub async fn start_with_metrics(
    config: ServeConfig,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
) -> Result<RunningServer, ServerError> {
    tls::install_crypto_provider();
    let files = tls::CertFiles::load(&config.tls_cert, &config.tls_key)?;
    let client_ca = match &config.client_ca {
        Some(path) => Some(client_auth::ClientCaFile::load(path)?),
        None => None,
    };
    let tls_config = tls::server_config(
        files.resolver(),
        client_ca.as_ref().map(|c| c.verifier() as _),
    )?;

    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;

    let shutting_down = Arc::new(AtomicBool::new(false));
    let ready = prometheus_client::metrics::gauge::Gauge::default();
    metrics.register(
        "claimguard_ready",
        "1 when this replica answers /readyz with 200 (cluster view synced, not shutting down)",
        ready.clone(),
    );
    let stuck_attachments = prometheus_client::metrics::gauge::Gauge::default();
    metrics.register(
        "claimguard_stuck_attachments",
        "VolumeAttachments of ReadWriteOnce/ReadWriteOncePod volumes stuck on a node that is down (not out-of-service) or failing to detach",
        stuck_attachments.clone(),
    );
    let state = web::Data::new(AppState {
        engine,
        metrics: Arc::clone(&metrics),
        max_body: config.max_body_bytes,
        body_timeout: config.request_timeout,
        shutting_down: Arc::clone(&shutting_down),
        require_client_cert: client_ca.is_some(),
        ready,
        stuck_attachments,
    });
    let metrics_server = match config.metrics_listen {
        Some(listen) => Some(start_metrics_listener(listen, state.clone())?),
        None => None,
    };

    let app_state = state.clone();
    let app = move || {
        App::new()
            .app_data(app_state.clone())
            .route("/validate", web::post().to(validate))
            .route("/mutate", web::post().to(mutate::mutate))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_endpoint))
            .default_service(web::to(not_found))
    };
    let server = tls_listener(listener, tls_config, &config, app)?.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    let reloader = tls::spawn_reloader(
        files,
        client_ca,
        config.reload_interval,
        Arc::clone(&metrics),
    );
    tracing::info!(%addr, "serving admission reviews over TLS");
    Ok(RunningServer {
        addr,
        handle,
        metrics_server,
        task,
        reloader,
        metrics,
        shutting_down,
        grace: config.shutdown_grace,
        drain: config.drain_timeout,
    })
}

/// `claimguard serve`: runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: ServeConfig, engine: Arc<Engine>) -> Result<(), ServerError> {
    run_with_metrics(config, engine, Arc::new(Metrics::new())).await
}

/// As [`run`], with a metrics registry shared with other components.
pub async fn run_with_metrics(
    config: ServeConfig,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
) -> Result<(), ServerError> {
    let running = start_with_metrics(config, engine, metrics).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let handle = running.handle.clone();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    // First signal: graceful shutdown. Second: an operator who means it now.
    let signals = tokio::spawn(async move {
        let mut first = Some(first_tx);
        loop {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
            match first.take() {
                Some(tx) => {
                    let _ = tx.send(());
                }
                None => {
                    tracing::warn!("second signal: stopping without draining");
                    handle.stop(false).await;
                    return;
                }
            }
        }
    });
    let result = running
        .run_until(async move {
            let _ = first_rx.await;
        })
        .await;
    signals.abort();
    result
}

/// With `--client-ca`, a deciding route answers only a client that presented
/// a certificate from that CA (one that presented a wrong one never got past
/// the handshake).
fn refuse_unauthenticated(req: &HttpRequest, state: &AppState) -> Option<HttpResponse> {
    if !state.require_client_cert || req.conn_data::<client_auth::VerifiedClient>().is_some() {
        return None;
    }
    state
        .metrics
        .request("unknown", "unknown", "unauthenticated");
    tracing::warn!(
        peer = ?req.peer_addr(),
        path = req.path(),
        "refused a request without a client certificate (--client-ca is set)"
    );
    Some(plain(
        actix_web::http::StatusCode::UNAUTHORIZED,
        format!(
            "{} needs a client certificate signed by the CA given to --client-ca (the API server's, from its AdmissionConfiguration)",
            req.path()
        ),
    ))
}

fn plain(status: actix_web::http::StatusCode, line: impl Into<String>) -> HttpResponse {
    let mut line: String = line.into();
    // One line, whatever the error text held.
    line = line.replace(['\r', '\n'], " ");
    line.push('\n');
    HttpResponse::build(status)
        .content_type(ContentType::plaintext())
        .body(line)
}

enum BodyError {
    TooLarge,
    Timeout,
    Read(String),
}

async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
) -> Result<web::Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Body::default();
    let take = |body: &mut Body, chunk: Result<web::Bytes, _>| {
        let chunk =
            chunk.map_err(|e: actix_web::error::PayloadError| BodyError::Read(e.to_string()))?;
        if body.len() + chunk.len() > state.max_body {
            return Err(BodyError::TooLarge);
        }
        body.push(chunk, declared);
        Ok(())
    };
    // A review's body has nearly always arrived with its head (one TLS
    // record): take what is there without arming a timer. actix-http starts
    // this handler as soon as it has decoded the head, before it feeds the
    // body it already holds, so the first look finds nothing: one turn back
    // to the dispatcher lets it feed the body (a timer armed and dropped for
    // every request cost ~1.4k instructions and a lock on the timer wheel).
    let mut yielded = false;
    loop {
        match payload.next().now_or_never() {
            Some(Some(chunk)) => take(&mut body, chunk)?,
            Some(None) => return Ok(body.into_bytes()),
            None if !yielded => {
                yielded = true;
                tokio::task::yield_now().await;
            }
            None => break,
        }
    }
    let read = async {
        while let Some(chunk) = payload.next().await {
            take(&mut body, chunk)?;
        }
        Ok(())
    };
    // The head timeout does not cover the body: a client that sends headers
    // and then stalls would otherwise hold a worker slot indefinitely.
    match tokio::time::timeout(state.body_timeout, read).await {
        Ok(Ok(())) => Ok(body.into_bytes()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::Timeout),
    }
}

/// A body being read: a lone chunk is kept as it came (no copy: a review
/// nearly always arrives in one), later chunks are gathered into a copy.
#[derive(Default)]
struct Body {
    whole: Option<web::Bytes>,
    gathered: Vec<u8>,
}

impl Body {
    fn len(&self) -> usize {
        self.whole.as_ref().map_or(0, |b| b.len()) + self.gathered.len()
    }

    fn push(&mut self, chunk: web::Bytes, declared: Option<usize>) {
        if self.whole.is_none() && self.gathered.is_empty() {
            self.whole = Some(chunk);
            return;
        }
        if let Some(first) = self.whole.take() {
            // Trust a declared length only so far: a client that announces
            // 4 MiB and then trickles should not pin 4 MiB per connection.
            let expected = declared.unwrap_or(0).min(256 * 1024);
            self.gathered
                .reserve(expected.max(first.len() + chunk.len()));
            self.gathered.extend_from_slice(&first);
        }
        self.gathered.extend_from_slice(&chunk);
    }

    fn into_bytes(self) -> web::Bytes {
        self.whole
            .unwrap_or_else(|| web::Bytes::from(self.gathered))
    }
}

/// The answer to a body that could not be read, logged once; `what` names
/// the route's requests in the log line (`admission`, `mutate`).
fn refuse_body(e: BodyError, state: &AppState, what: &str) -> HttpResponse {
    use actix_web::http::StatusCode;
    match e {
        BodyError::TooLarge => {
            tracing::warn!(
                limit = state.max_body,
                "refused {what} request: body too large"
            );
            plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {} bytes", state.max_body),
            )
            .tap_close()
        }
        BodyError::Timeout => {
            tracing::warn!(timeout = ?state.body_timeout, "{what} request body not received in time");
            plain(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {:?}", state.body_timeout),
            )
            .tap_close()
        }
        BodyError::Read(e) => {
            tracing::warn!(error = %e, "cannot read {what} request body");
            plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            )
        }
    }
}

async fn validate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    use actix_web::http::StatusCode;

    if let Some(refused) = refuse_unauthenticated(&req, &state) {
        return refused;
    }
    let body = match read_body(&req, payload, &state).await {
        Ok(b) => b,
        Err(e) => {
            state.metrics.request("unknown", "unknown", "error");
            return refuse_body(e, &state, "admission");
        }
    };

    let started = Instant::now();
    let outcome = guarded(state.engine.review(&body)).await;
    let took = started.elapsed();
    state.metrics.observe_duration(took);
    match outcome {
        Ok(Ok(reviewed)) => {
            let s = &reviewed.summary;
            let allowed = if s.allowed { "true" } else { "false" };
            state.metrics.request(&s.kind, &s.operation, allowed);
            for f in &s.findings {
                state.metrics.violation(f.rule, f.action);
            }
            // Formatted only when the line is written (`%` captures Display).
            let findings = Findings(&s.findings);
            // One line per decision. Clean allows — most of the traffic — log at
            // debug: formatting and writing the line costs about as much CPU
            // as the decision itself (docs/performance.md). Anything with a
            // finding, and every denial, logs at info.
            macro_rules! decision {
                ($level:expr) => {
                    tracing::event!(
                        target: crate::log_line::DECISION_TARGET,
                        $level,
                        uid = %s.uid,
                        kind = %s.kind,
                        namespace = %s.namespace,
                        name = %s.name,
                        operation = %s.operation,
                        allowed = s.allowed,
                        findings = %findings,
                        dry_run = s.dry_run,
                        duration_us = took.as_micros() as u64,
                        "admission decision"
                    )
                };
            }
            if s.allowed && s.findings.is_empty() {
                decision!(tracing::Level::DEBUG);
            } else {
                decision!(tracing::Level::INFO);
            }
            HttpResponse::Ok()
                .content_type(ContentType::json())
                .body(reviewed.body)
        }
        Ok(Err(e)) => {
            state.metrics.request("unknown", "unknown", "error");
            tracing::warn!(error = %e, bytes = body.len(), "unreadable admission review");
            plain(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(what) => {
            state.metrics.request("unknown", "unknown", "error");
            tracing::error!(panic = %what, bytes = body.len(), "admission engine panicked");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while reviewing the request",
            )
        }
    }
}

/// `rule:action,rule:action` for the decision log, written straight into
/// the log line rather than into a String per request.
struct Findings<'a>(&'a [crate::admission::FindingSummary]);

impl std::fmt::Display for Findings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, x) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(x.rule)?;
            f.write_str(":")?;
            f.write_str(x.action)?;
        }
        Ok(())
    }
}

/// Runs the engine future, turning a panic into `Err(panic message)`.
///
/// A panic must reach the API server as a 500 on this one request, not as a
/// dead worker thread that drops every connection it carries.
async fn guarded<T>(fut: impl std::future::Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(fut).catch_unwind().await.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned())
    })
}

trait CloseAfter {
    fn tap_close(self) -> HttpResponse;
}

impl CloseAfter for HttpResponse {
    /// The rest of a refused or stalled body may still arrive; the connection
    /// cannot be reused for another request.
    fn tap_close(mut self) -> HttpResponse {
        self.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        self
    }
}

async fn healthz() -> HttpResponse {
    plain(actix_web::http::StatusCode::OK, "ok")
}

/// What `/readyz` answers: `None` when ready, else why not.
fn not_ready(state: &AppState) -> Option<&'static str> {
    if state.shutting_down.load(Ordering::SeqCst) {
        Some("shutting down")
    } else if state.engine.cluster().is_synced() {
        None
    } else {
        Some("cluster view not synced yet")
    }
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    use actix_web::http::StatusCode;
    match not_ready(&state) {
        None => plain(StatusCode::OK, "ok"),
        Some(why) => plain(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// The webhook's listener: what actix-web's `HttpServer::listen_rustls_0_23`
/// builds (the same acceptor, HTTP service, timeouts, ALPN and graceful
/// shutdown), with one change: rustls reads from a read-ahead stream instead
/// of the bare socket, one system call per review instead of two (see
/// `read_ahead.rs`). Public so the bench's stand-in servers (`loadgen
/// --null-server`, `--engine-server`) run on the same transport.
pub fn tls_listener<F, A>(
    listener: std::net::TcpListener,
    mut tls_config: rustls::ServerConfig,
    config: &ServeConfig,
    app: F,
) -> std::io::Result<actix_server::ServerBuilder>
where
    F: Fn() -> App<A> + Send + Clone + 'static,
    A: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
{
    use actix_http::{HttpService, Protocol};
    use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
    use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
    use read_ahead::ReadAhead;

    let mut protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    protocols.append(&mut tls_config.alpn_protocols);
    tls_config.alpn_protocols = protocols;
    let (keep_alive, request_timeout) = (config.keep_alive, config.request_timeout);
    let (disconnect_timeout, handshake_timeout) =
        (config.disconnect_timeout, config.tls_handshake_timeout);

    let mut builder = actix_server::Server::build()
        .disable_signals()
        .shutdown_timeout(config.drain_timeout.as_secs_f64().ceil() as u64);
    if let Some(workers) = config.workers {
        builder = builder.workers(workers.max(1));
    }
    let shutdown = builder.graceful_shutdown_signal();
    builder.listen("claimguard-webhook", listener, move || {
        let shutdown = shutdown.clone();
        let http = HttpService::build()
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .keep_alive(keep_alive)
            .client_request_timeout(request_timeout)
            .client_disconnect_timeout(disconnect_timeout)
            .on_connect_ext(
                |io: &TlsStream<ReadAhead>, ext: &mut actix_web::dev::Extensions| {
                    client_auth::mark_verified_client(io, ext)
                },
            )
            // Handlers read neither the connection's scheme nor its host
            // (`AppConfig::new` is private to actix-web).
            .finish(map_config(
                app()
                    .into_factory()
                    .map_err(|err: actix_web::Error| err.error_response()),
                |_| actix_web::dev::AppConfig::default(),
            ));
        let mut acceptor = Acceptor::new(tls_config.clone());
        acceptor.set_handshake_timeout(handshake_timeout);
        fn_service(
            |io: actix_web::rt::net::TcpStream| async move { Ok::<_, ()>(ReadAhead::new(io)) },
        )
        .and_then(acceptor.map_err(|e| tracing::debug!(error = %e, "TLS handshake failed")))
        .and_then(|io: TlsStream<ReadAhead>| async move {
            let protocol = match io.get_ref().1.alpn_protocol() {
                Some(p) if p == b"h2" => Protocol::Http2,
                _ => Protocol::Http1,
            };
            let peer = io.get_ref().0.get_ref().peer_addr().ok();
            Ok::<_, ()>((io, protocol, peer))
        })
        .and_then(http.map_err(|e| tracing::debug!(error = %e, "connection ended with an error")))
    })
}

/// `--metrics-listen`: `/metrics` and the probes over plain HTTP, one worker,
/// sharing the webhook's state. Stopped with the webhook.
fn start_metrics_listener(
    listen: SocketAddr,
    state: web::Data<AppState>,
) -> Result<(SocketAddr, ServerHandle), ServerError> {
    let listener = std::net::TcpListener::bind(listen).map_err(|source| ServerError::Bind {
        addr: listen,
        source,
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(metrics_endpoint))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .default_service(web::to(|| async {
                plain(
                    actix_web::http::StatusCode::NOT_FOUND,
                    "not found; this port serves GET /metrics, /healthz and /readyz",
                )
            }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    tracing::info!(%addr, "serving /metrics over plain HTTP");
    Ok((addr, handle))
}

async fn metrics_endpoint(state: web::Data<AppState>) -> HttpResponse {
    state.ready.set(i64::from(not_ready(&state).is_none()));
    let stuck = state.engine.cluster().read().stuck_attachments().len();
    state.stuck_attachments.set(stuck as i64);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, metrics::CONTENT_TYPE))
        .body(state.metrics.encode())
}

async fn not_found() -> HttpResponse {
    plain(
        actix_web::http::StatusCode::NOT_FOUND,
        "not found; the webhook paths are POST /validate and POST /mutate",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_line_lists_findings_as_rule_colon_action() {
        use crate::admission::FindingSummary;
        let two = [
            FindingSummary {
                rule: "rwop-exclusive",
                action: "deny",
            },
            FindingSummary {
                rule: "rwo-readonly-placement",
                action: "warn",
            },
        ];
        assert_eq!(
            Findings(&two).to_string(),
            "rwop-exclusive:deny,rwo-readonly-placement:warn"
        );
        assert_eq!(
            Findings(&two[1..]).to_string(),
            "rwo-readonly-placement:warn"
        );
        assert_eq!(Findings(&[]).to_string(), "");
    }

    #[tokio::test]
    async fn a_panicking_review_becomes_an_error() {
        let ok = guarded(async { 7 }).await;
        assert_eq!(ok, Ok(7));
        let name = String::from("pod-x");
        let caught = guarded(async move {
            if !name.is_empty() {
                panic!("index out of range for {name}");
            }
            7
        })
        .await;
        assert_eq!(caught, Err("index out of range for pod-x".to_owned()));
    }

    #[tokio::test]
    async fn plain_bodies_are_one_line() {
        let resp = plain(actix_web::http::StatusCode::BAD_REQUEST, "a\nb\r\nc");
        assert_eq!(resp.status().as_u16(), 400);
        let body = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
        assert_eq!(&body[..], b"a b  c\n");
    }
}
