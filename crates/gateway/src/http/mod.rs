//! The HTTP vocabulary every route module shares, and nothing route-specific:
//!
//! - `extract`: typed extractors (the authenticated [`extract::Caller`], path, JSON, query
//!   and raw bodies), each refusing with the project's own JSON error rather than axum's
//!   plain text;
//! - `context`: the policy context a data access states in its headers (purpose, reason);
//! - `error`: [`error::ApiError`], the JSON error body and every status mapping;
//! - `response`: [`response::Logged`], an answer that names its log entry;
//! - `vocab`: the roles and header names the routes read;
//! - `tasks`: where work runs off the request's own future (blocking store work, and changes
//!   that must finish after a client leaves);
//! - `openapi`: the document's shared parts (security scheme, the statuses whole kinds of
//!   operations share, the path and header parameters);
//! - `middleware`: what wraps every route (timeouts, request log and metrics, fallbacks).

pub mod context;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod response;
pub mod tasks;
pub mod vocab;
