//! The policy context a data access states in its headers: its purpose and reason code.

use axum::http::HeaderMap;

use crate::auth::{Authenticated, now_unix};
use crate::http::error::{ApiError, AppResult, ErrorCode};
use crate::http::vocab::{PURPOSE_HEADER, REASON_HEADER};

const MAX_PURPOSE_BYTES: usize = 256;
const MAX_REASON_BYTES: usize = 64;

/// The policy context of a data access: the stated purpose and reason code (headers a client
/// may set, since they are claims about the request, not about who is asking), the zone and
/// the time. 400 `invalid_header` when one is malformed.
pub fn access_context(headers: &HeaderMap, who: &Authenticated) -> AppResult<policy::Context> {
    let text_header = |name: &'static str, max: usize| -> AppResult<String> {
        let Some(value) = headers.get(name) else {
            return Ok(String::new());
        };
        let text = value.to_str().map_err(|_| {
            ApiError::bad_request(
                ErrorCode::InvalidHeader,
                format!("`{name}` must be printable ASCII"),
            )
        })?;
        let text = text.trim();
        if text.len() > max {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidHeader,
                format!("`{name}` is longer than {max} bytes"),
            ));
        }
        Ok(text.to_string())
    };
    let purpose = text_header(PURPOSE_HEADER, MAX_PURPOSE_BYTES)?;
    let reason_code = text_header(REASON_HEADER, MAX_REASON_BYTES)?;
    if !reason_code
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidHeader,
            "`Sovereign-Reason-Code` must be lower-case letters, digits, `_` and `-`",
        ));
    }
    Ok(policy::Context {
        purpose,
        reason_code,
        network_zone: who.network_zone.clone(),
        time: now_unix(),
        grant: String::new(),
        own_data: false,
    })
}
