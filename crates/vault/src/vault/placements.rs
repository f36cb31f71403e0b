//! Where subjects are held, remembered, so that a governed request does not search every
//! site's store for its subject (one read per site, twice: once for the decision, once for
//! the data) on each request.
//!
//! Only placements at a site the subject's rule allows are kept. Those change only when the
//! subject is erased (and perhaps registered again), which this vault forgets them for, under
//! the same exclusive lock that orders erasure against reads and writes; a legacy copy at a
//! non-compliant site is always looked up afresh, since a migration moves it. A remembered
//! placement is never trusted alone for data: the vault reads a record at that site with a
//! query that also confirms the site still holds the subject with that jurisdiction
//! (`SiteStore::get_record_held`), and when it does not, forgets the placement and looks the
//! subject up again. So a gateway sharing site stores with another that erased or moved a
//! subject still reads and writes where the subject is now.
//!
//! Bounded by configuration: when full it is emptied rather than grown, which costs only
//! look-ups.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::domain::SubjectPlacement;

/// How many placements a vault remembers unless told otherwise: about 100 bytes each.
pub const DEFAULT_PLACEMENT_CACHE_ENTRIES: usize = 100_000;

pub(crate) struct PlacementCache {
    capacity: usize,
    map: RwLock<HashMap<String, SubjectPlacement>>,
}

impl PlacementCache {
    pub(crate) fn new(capacity: usize) -> Self {
        PlacementCache {
            capacity,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<SubjectPlacement> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Remembers `placement` if its site is one the subject's rule allows.
    pub(crate) fn remember(&self, placement: &SubjectPlacement) {
        if self.capacity == 0 || !placement.allowed {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(placement.id.clone(), placement.clone());
    }

    pub(crate) fn forget(&self, id: &str) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    pub(crate) fn forget_all(&self) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(id: &str, allowed: bool) -> SubjectPlacement {
        SubjectPlacement {
            id: id.into(),
            jurisdiction: "US".into(),
            site: "us-east".into(),
            site_jurisdiction: "US".into(),
            allowed,
        }
    }

    #[test]
    fn only_allowed_placements_are_kept_and_the_size_is_bounded() {
        let cache = PlacementCache::new(2);
        cache.remember(&placement("legacy", false));
        assert_eq!(cache.get("legacy"), None);
        cache.remember(&placement("a", true));
        cache.remember(&placement("b", true));
        assert_eq!(cache.get("a"), Some(placement("a", true)));
        // Full: emptied, then the new one kept.
        cache.remember(&placement("c", true));
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.get("c"), Some(placement("c", true)));
        cache.forget("c");
        assert_eq!(cache.get("c"), None);
    }

    #[test]
    fn a_zero_capacity_keeps_nothing() {
        let cache = PlacementCache::new(0);
        cache.remember(&placement("a", true));
        assert_eq!(cache.get("a"), None);
    }
}
