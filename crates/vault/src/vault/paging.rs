//! Interoperable egress: a resumable walk over one collection at every site that hands out
//! only interoperable fields (nothing is unwrapped), and the opaque [`Cursor`] it resumes from.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{VaultError, validate_id};
use crate::layout::is_name;
use crate::store::RecordRow;
use crate::vault::{RECORD_KEY, SUBJECT_ID, Vault};

/// The largest page [`Vault::records_page`] returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Where [`Vault::records_page`] goes on: after this record of this collection. Its text form
/// is opaque and URL-safe; pass it back as it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    collection: String,
    site: String,
    subject: String,
    key: String,
}

const CURSOR_VERSION: &str = "v1";
/// Far longer than any cursor this build writes; longer text is refused before decoding.
const MAX_CURSOR_LEN: usize = 1024;

impl Cursor {
    /// Reads a cursor's text form. Anything that is not a cursor this build wrote is
    /// [`VaultError::InvalidPage`].
    pub fn parse(text: &str) -> Result<Cursor, VaultError> {
        // The text is not repeated: it came from a client.
        let malformed = || {
            VaultError::InvalidPage(
                "the cursor is malformed: pass back exactly the `next` cursor a previous page \
                 returned, or none to start from the beginning"
                    .into(),
            )
        };
        if text.is_empty() || text.len() > MAX_CURSOR_LEN {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let parts: Vec<&str> = text.split('/').collect();
        let [version, collection, site, subject, key] = parts[..] else {
            return Err(malformed());
        };
        let valid = version == CURSOR_VERSION
            && is_name(collection)
            && is_name(site)
            && validate_id(SUBJECT_ID, subject).is_ok()
            && validate_id(RECORD_KEY, key).is_ok();
        if !valid {
            return Err(malformed());
        }
        Ok(Cursor {
            collection: collection.into(),
            site: site.into(),
            subject: subject.into(),
            key: key.into(),
        })
    }

    fn after(collection: &str, site: &str, row: &RecordRow) -> Cursor {
        Cursor {
            collection: collection.into(),
            site: site.into(),
            subject: row.subject.clone(),
            key: row.key.clone(),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and ids cannot contain '/', so the parts split back unambiguously.
        let plain = format!(
            "{CURSOR_VERSION}/{}/{}/{}/{}",
            self.collection, self.site, self.subject, self.key
        );
        f.write_str(&URL_SAFE_NO_PAD.encode(plain))
    }
}

impl std::str::FromStr for Cursor {
    type Err = VaultError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Cursor::parse(text)
    }
}

impl Vault {
    /// One page of a resumable walk over every site's records of `collection`, ordered by
    /// (site, subject, record key), with **only the interoperable fields** (nothing is
    /// unwrapped). Returns the rows as (subject, site, record) and the cursor to pass for the
    /// next page, `None` after the last. `limit` is 1 to [`MAX_PAGE_SIZE`].
    #[allow(clippy::type_complexity)]
    pub fn records_page(
        &self,
        collection: &str,
        after: Option<&Cursor>,
        limit: usize,
    ) -> Result<(Vec<(String, String, RecordRow)>, Option<Cursor>), VaultError> {
        self.declared_collection(collection)?;
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(VaultError::InvalidPage(format!(
                "the page size is {limit}: ask for 1 to {MAX_PAGE_SIZE} records"
            )));
        }
        if let Some(cursor) = after
            && cursor.collection != collection
        {
            return Err(VaultError::InvalidPage(format!(
                "the cursor was issued for collection `{}`, not `{collection}`: start again \
                 without a cursor",
                cursor.collection
            )));
        }
        let _shared = self.shared();
        // One row more than asked for tells whether another page follows.
        let mut rows: Vec<(&str, RecordRow)> = Vec::new();
        for (site, store) in &self.stores {
            let start = match after {
                Some(cursor) if site.as_str() < cursor.site.as_str() => continue,
                Some(cursor) if *site == cursor.site => {
                    Some((cursor.subject.as_str(), cursor.key.as_str()))
                }
                _ => None,
            };
            let wanted = limit + 1 - rows.len();
            for row in store.records_after(collection, start, wanted)? {
                rows.push((site, row));
            }
            if rows.len() > limit {
                break;
            }
        }
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|(site, row)| Cursor::after(collection, site, row))
        } else {
            None
        };
        let page = rows
            .into_iter()
            .map(|(site, row)| {
                let fields = self.interoperable_fields(collection, row.fields);
                let row = RecordRow { fields, ..row };
                (row.subject.clone(), site.to_string(), row)
            })
            .collect();
        Ok((page, next))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let row = super::RecordRow {
            subject: "a:b.c-d_e".into(),
            collection: "profile".into(),
            key: "K.1".into(),
            fields: Default::default(),
        };
        let cursor = super::Cursor::after("profile", "us-east", &row);
        let text = cursor.to_string();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        assert_eq!(super::Cursor::parse(&text).unwrap(), cursor);
        let forged = |plain: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain)
        };
        for bad in [
            String::new(),
            "!!!".into(),
            "x".repeat(2000),
            forged("v2/profile/us-east/a/k"),
            forged("v1/profile/us-east/a"),
            forged("v1/profile/us-east/a/k/extra"),
            forged("v1/Profile/us-east/a/k"),
            forged("v1/profile/us-east/.a/k"),
            forged("v1/profile/us-east/a/"),
            format!("{text}="),
        ] {
            let err = super::Cursor::parse(&bad).unwrap_err();
            assert!(
                err.to_string().contains("cursor is malformed"),
                "{bad}: {err}"
            );
        }
    }
}
