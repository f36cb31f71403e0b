//! prove's integration tests, one binary.

mod prove;
