//! Choosing and opening a site's store from its `store` setting (`sqlite:PATH` or a
//! PostgreSQL URL). Kept apart from the trait module, which knows no backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::layout::{StoreUrl, parse_store_url};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{SiteStore, StoreError};

/// Opens the store a site's `store` setting names. `sqlite:PATH` opens (or creates) a SQLite
/// file, relative paths being relative to `base_dir`; `postgres://…` or `postgresql://…`
/// opens a PostgreSQL database ([`PostgresStore`], which must be called from blocking threads).
/// `readers` sizes the read connections of either.
pub fn open_store(
    url: &str,
    base_dir: &Path,
    readers: usize,
) -> Result<Arc<dyn SiteStore>, StoreError> {
    match parse_store_url(url) {
        StoreUrl::Sqlite(path) if path.trim().is_empty() => Err(StoreError::InvalidUrl(
            "the SQLite store has no path: use `sqlite:PATH`".into(),
        )),
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(
            &resolve_sqlite_path(path, base_dir),
            readers,
        )?)),
        StoreUrl::Postgres(url) => Ok(Arc::new(PostgresStore::open(url, readers + 1)?)),
        StoreUrl::Other => Err(StoreError::InvalidUrl(format!(
            "unsupported store scheme `{}`: use `sqlite:PATH` or `postgres://…`",
            scheme_of(url)
        ))),
    }
}

/// A setting's scheme (before the first `:`), cut short, to name in an error: the whole
/// setting is never repeated, as a URL may carry credentials.
pub(crate) fn scheme_of(url: &str) -> String {
    url.split(':')
        .next()
        .unwrap_or_default()
        .chars()
        .take(32)
        .collect()
}

pub(crate) fn resolve_sqlite_path(path: &str, base_dir: &Path) -> PathBuf {
    // `Path::join` keeps an absolute path as it is.
    base_dir.join(path)
}
