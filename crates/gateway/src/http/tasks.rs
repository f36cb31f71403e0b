//! Where work runs when it must not run on the request's own future: store and log work
//! that blocks ([`blocking`]; reads from local files run in place, [`store_read`]), and changes that must finish with their log entry even if the
//! client disconnects, since axum drops a request's future then ([`detached`]).

use crate::http::error::{ApiError, AppResult};

/// Runs blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

/// Runs a read of subject data: in place when every store is a local file, since a read of
/// cached pages takes microseconds, less than the trip to a blocking thread and back that
/// would otherwise be most of a governed read's cost; on a blocking thread when a store is
/// across the network.
pub async fn store_read<T: Send + 'static>(
    local: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> AppResult<T> {
    if local {
        return Ok(f());
    }
    blocking(f).await
}

/// Runs `work` to completion on its own task: axum drops a request's future when its client
/// disconnects, and work that changes data must not stop between the change and its entry.
pub async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = AppResult<T>> + Send + 'static,
) -> AppResult<T> {
    tokio::spawn(work).await.map_err(ApiError::internal)?
}
