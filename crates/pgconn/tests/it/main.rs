//! pgconn's integration tests, one binary.

mod tls;
