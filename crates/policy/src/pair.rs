//! The context-free half of a decision, memoised per principal, action and resource.
//!
//! An uncached decision used to spend about a third of its time building the principal and
//! resource entities and the entity store, and most of the rest evaluating policies that never
//! read the request context. For a given principal, action and resource both are fixed, so
//! they are computed once and kept here; a request then builds only its context and evaluates
//! only the policies that read it and can still hold or fail for the pair (see
//! `PolicyEngine::request_policies`).
//!
//! The key includes the principal's id, so the first request of each token for an action and
//! resource pays the full evaluation (plus the probes) once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cedar_policy::{Entities, EntityUid, PolicySet};

/// Upper bound on cached pairs. As for decisions, the map is emptied when full: bounded by
/// this constant whatever clients send, and simple.
const CAPACITY: usize = 1024;

/// What a principal doing an action on a resource gets from the context-free policies, plus
/// the entity store that the context-reading policies are evaluated against.
pub(crate) struct Pair {
    pub(crate) principal_uid: EntityUid,
    pub(crate) entities: Entities,
    pub(crate) outcome: Outcome,
    /// The context-reading policies that can still hold or fail for this pair.
    pub(crate) policies: PolicySet,
}

/// The result of evaluating part of the policy set. Cedar names the satisfied forbids when
/// one holds and the satisfied permits otherwise; the other list is then left empty, as a
/// satisfied forbid decides the outcome whatever permits hold.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) permits: Vec<String>,
    pub(crate) forbids: Vec<String>,
    /// With the position of the failing policy in the policy set, so merged outcomes list
    /// errors in the order one evaluation of the whole set would.
    pub(crate) errors: Vec<(usize, String)>,
}

pub(crate) struct PairCache {
    map: Mutex<HashMap<Vec<u8>, Arc<Pair>>>,
}

impl PairCache {
    pub(crate) fn new() -> Self {
        PairCache {
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Pair>> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn insert(&self, key: Vec<u8>, pair: Arc<Pair>) {
        let mut map = self.lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, pair);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Pair>>> {
        // Entries are only ever inserted whole, so a panic elsewhere cannot leave the map
        // half-updated; keep serving rather than propagate the poison.
        self.map.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
pub(crate) const fn capacity() -> usize {
    CAPACITY
}
