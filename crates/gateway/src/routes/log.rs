//! The transparency log, served exactly as C2SP tlog-tiles lays it out under `/log`
//! (`checkpoint`, `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), plus the verifier key
//! and JSON inclusion and consistency proofs. Anyone may read these: they hold no field values
//! and no raw subject ids, and they are what monitors check the gateway with.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, ErrorBody, ErrorCode};
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::openapi::route_documented;
use crate::http::tasks::blocking;
use crate::state::AppState;

type Shared = State<Arc<AppState>>;

/// The routes of the log. Tile paths have several segments, which the documented
/// `/log/tile/{path}` cannot route: that route is registered as a wildcard, with the
/// operation its annotation describes.
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    let router = OpenApiRouter::new()
        .routes(routes!(checkpoint))
        .routes(routes!(key))
        .routes(routes!(inclusion))
        .routes(routes!(consistency));
    route_documented::<__path_tile, _>(router, "/log/tile/{*path}", axum::routing::get(tile))
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// The latest signed checkpoint (C2SP tlog-checkpoint, as a signed note). With witnesses
/// (`log.witness_quorum` above 0), the newest checkpoint that at least the quorum of them
/// cosigned (C2SP tlog-cosignature), their cosignatures following the log's signature.
#[utoipa::path(get, path = "/log/checkpoint", tag = "log",
    responses(
        (status = 200, description = "the signed checkpoint note", content_type = "text/plain", body = String,
            headers(("Sovereign-Log-Size" = u64, description = "entries durably in the log now: a checkpoint of a smaller size does not cover them yet (checkpoints follow every `log.checkpoint_interval_ms`, later with witnesses); `sovereign audit verify --wait` waits for one that does"))),
        (status = 503, description = "`checkpoint_unwitnessed`: no checkpoint has the witnesses' quorum yet", body = ErrorBody),
    ))]
pub async fn checkpoint(State(app): Shared) -> Result<Response, ApiError> {
    let published = app.served_checkpoint();
    if published.note.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::CheckpointUnwitnessed,
            "no checkpoint has the quorum of witness cosignatures yet; the dashboard shows which witnesses fail",
        ));
    }
    let mut response = text(published.note.clone(), REVALIDATE);
    response
        .headers_mut()
        .insert(LOG_SIZE_HEADER, HeaderValue::from(app.log.size()));
    Ok(response)
}

/// The header of `/log/checkpoint` telling how many entries the log holds now, whether or
/// not a checkpoint covers them yet.
pub const LOG_SIZE_HEADER: &str = "sovereign-log-size";

/// The log's verifier key in signed-note form (`origin+keyhash+base64`).
#[utoipa::path(get, path = "/log/key", tag = "log",
    responses((status = 200, description = "the verifier key", content_type = "text/plain", body = String)))]
pub async fn key(State(app): Shared) -> Response {
    text(
        format!("{}\n", app.log.verifier_key()).into_bytes(),
        REVALIDATE,
    )
}

/// A hash tile or entry bundle (C2SP tlog-tiles). Full tiles never change and are served with
/// long cache lifetimes; partial tiles (`.p/<W>`) are revalidated.
#[utoipa::path(get, path = "/log/tile/{path}", tag = "log",
    params(("path" = String, Path, description = "`<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`, N as x001/x234/067 (each `/` may be sent as `%2F`)",
        pattern = r"^(entries|[0-9]|[1-5][0-9]|6[0-3])/(x[0-9]{3}/)*[0-9]{3}(\.p/([1-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]))?$", example = "0/000.p/3")),
    responses(
        (status = 200, description = "the tile or bundle", content_type = "application/octet-stream"),
        (status = 400, description = "`invalid_tile_path`: not a C2SP tlog-tiles path", body = ErrorBody),
        (status = 404, description = "`tile_not_found`: not in the log (yet)", body = ErrorBody),
    ))]
pub async fn tile(
    State(app): Shared,
    ApiPath(path): ApiPath<String>,
) -> Result<Response, ApiError> {
    let full_path = format!("tile/{path}");
    let (kind, tile) = tlog::parse_tile_path(&full_path).map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidTilePath,
            format!("`{full_path}` is not a C2SP tlog-tiles path"),
        )
    })?;
    let log = app.log.clone();
    let data = blocking(move || log.tile(kind, &tile))
        .await?
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::TileNotFound,
                format!("the log holds no `{full_path}` yet"),
            )
        })?;
    let cache = if tile.is_full() {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    // The log may keep the same bytes for the next request: the body shares them.
    Ok(bytes(
        Bytes::from_owner(SharedTile(data)),
        "application/octet-stream",
        cache,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The entry's index.
    index: u64,
    /// The tree size to prove against; the latest checkpoint's by default.
    #[param(value_type = u64, required = false)]
    size: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct InclusionProof {
    index: u64,
    size: u64,
    /// The tree's root hash at `size`, base64.
    root: String,
    /// The RFC 6962 inclusion proof, base64 hashes from the leaf up.
    hashes: Vec<String>,
}

/// The inclusion proof of an entry in a tree the log has signed.
#[utoipa::path(get, path = "/log/proof/inclusion", tag = "log", params(InclusionQuery),
    responses(
        (status = 200, description = "the proof", body = InclusionProof),
        (status = 400, description = "`invalid_query` (no `index`, not a number, an unknown parameter), `out_of_range` (`index` not below `size`, or `size` beyond the tree)", body = ErrorBody),
    ))]
pub async fn inclusion(
    State(app): Shared,
    ApiQuery(query): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    let size = query.size.unwrap_or_else(|| app.served_checkpoint().size);
    let log = app.log.clone();
    let (root, proof) = blocking(move || {
        Ok::<_, logstore::LogError>((
            log.tree_hash(size)?,
            log.inclusion_proof(query.index, size)?,
        ))
    })
    .await?
    .map_err(proof_error)?;
    Ok(Json(InclusionProof {
        index: query.index,
        size,
        root: tlog::hash_to_base64(&root),
        hashes: proof.iter().map(tlog::hash_to_base64).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree size, at least 1.
    #[param(minimum = 1)]
    from: u64,
    /// The newer tree size; the latest checkpoint's by default.
    #[param(value_type = u64, required = false)]
    to: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ConsistencyProof {
    from: u64,
    to: u64,
    /// RFC 6962 consistency proof, base64 hashes.
    hashes: Vec<String>,
}

/// The consistency proof between two tree sizes.
#[utoipa::path(get, path = "/log/proof/consistency", tag = "log", params(ConsistencyQuery),
    responses(
        (status = 200, description = "the proof", body = ConsistencyProof),
        (status = 400, description = "`invalid_query` (no `from`, not a number, an unknown parameter), `out_of_range` (`from` 0 or above `to`, or `to` beyond the tree)", body = ErrorBody),
    ))]
pub async fn consistency(
    State(app): Shared,
    ApiQuery(query): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let to = query.to.unwrap_or_else(|| app.served_checkpoint().size);
    let log = app.log.clone();
    let from = query.from;
    // An empty tree has no consistency proof (RFC 6962 proves from a size of at least 1);
    // the log store reports it as a storage failure, which it is not.
    if from == 0 {
        return Err(ApiError::bad_request(
            ErrorCode::OutOfRange,
            "no consistency proof from an empty tree: `from` must be at least 1",
        ));
    }
    let proof = blocking(move || log.consistency_proof(from, to))
        .await?
        .map_err(proof_error)?;
    Ok(Json(ConsistencyProof {
        from,
        to,
        hashes: proof.iter().map(tlog::hash_to_base64).collect(),
    }))
}

fn proof_error(e: logstore::LogError) -> ApiError {
    match e {
        logstore::LogError::OutOfRange(message) => {
            ApiError::bad_request(ErrorCode::OutOfRange, message)
        }
        other => ApiError::internal(other),
    }
}

/// A tile's bytes as the log keeps them, for a response body.
struct SharedTile(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedTile {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn text(body: Vec<u8>, cache: &'static str) -> Response {
    bytes(body.into(), "text/plain; charset=utf-8", cache)
}

fn bytes(body: Bytes, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
