//! `POST /mutate`: the co-location webhook's route. Moves bytes, counts and
//! logs; the engine decides (`admission::mutate`, `policy::colocate`).

use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{guarded, plain, read_body, AppState};

pub(super) async fn mutate(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(refused) = super::refuse_unauthenticated(&req, &state) {
        return refused;
    }
    let body = match read_body(&req, payload, &state).await {
        Ok(b) => b,
        Err(e) => {
            state.metrics.mutation("error", false);
            return super::refuse_body(e, &state, "mutate");
        }
    };
    let started = std::time::Instant::now();
    match guarded(state.engine.mutate(&body)).await {
        Ok(Ok(m)) => {
            let s = &m.summary;
            let pinned = s.pinned_to.is_some();
            state
                .metrics
                .mutation(if pinned { "pinned" } else { "unchanged" }, s.dry_run);
            // One line per decision: every pin at info, the rest at debug
            // (most pods are not opted in).
            macro_rules! decision {
                ($level:expr) => {
                    tracing::event!(
                        $level,
                        uid = %s.uid,
                        kind = %s.kind,
                        namespace = %s.namespace,
                        name = %s.name,
                        operation = %s.operation,
                        pinned_to = s.pinned_to.as_deref().unwrap_or(""),
                        claims = %s.claims.join(","),
                        opt_in = s.opt_in.unwrap_or(""),
                        reason = s.reason,
                        detail = %s.detail,
                        dry_run = s.dry_run,
                        duration_us = started.elapsed().as_micros() as u64,
                        "co-location decision"
                    )
                };
            }
            if pinned {
                decision!(tracing::Level::INFO);
            } else {
                decision!(tracing::Level::DEBUG);
            }
            HttpResponse::Ok()
                .content_type(ContentType::json())
                .body(m.body)
        }
        Ok(Err(e)) => {
            state.metrics.mutation("error", false);
            tracing::warn!(error = %e, bytes = body.len(), "unreadable admission review on /mutate");
            plain(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(what) => {
            state.metrics.mutation("error", false);
            tracing::error!(panic = %what, bytes = body.len(), "co-location engine panicked");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while reviewing the request",
            )
        }
    }
}
