//! Builds a static log the way a tile server publishes it (hash tiles, entry bundles and a
//! signed checkpoint at their C2SP paths), filled with valid v1 entries. Shared by the audit
//! tests, the monitor's tests and the audit benchmark.

use std::path::Path;

use serde_json::{Value, json};
use tlog::checkpoint::{Checkpoint, sign_checkpoint};
use tlog::note::{Signer, generate_key};
use tlog::{Hash, TILE_HEIGHT, encode_bundle, new_tiles, read_tile_data, stored_hashes, tree_hash};

pub const ORIGIN: &str = "sovereign.test/log";

pub struct Key {
    pub signer: Signer,
    pub vkey: String,
}

pub fn new_key() -> Key {
    let (skey, vkey) = generate_key(ORIGIN).unwrap();
    Key {
        signer: Signer::new(&skey).unwrap(),
        vkey,
    }
}

/// Entry `i` of the test logs: a mix of config entries and access decisions
/// with every outcome, as the gateway writes them (format v1).
pub fn entry(i: u64) -> Value {
    let time = format!(
        "2026-11-22T{:02}:{:02}:{:02}.{:03}Z",
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60,
        (i * 37) % 1000
    );
    if i.is_multiple_of(10) {
        return json!({
            "v": 1,
            "kind": "config",
            "time": time,
            "event": "started",
            "policy_set": "ab".repeat(32),
            "policies": ["usds-staff-read", "restricted-country-forbid"],
            "config_sha256": format!("{:064x}", i + 1),
            "version": "0.1.0",
        });
    }
    let outcome = outcome_of(i);
    let action = ["register", "list", "read", "write", "delete"][(i % 5) as usize];
    json!({
        "v": 1,
        "kind": "access",
        "time": time,
        "principal": {
            "id": format!("user-{}", i % 37),
            "entity": if outcome == "deny" { "parent" } else { "usds" },
            "entity_country": if outcome == "deny" { "CN" } else { "US" },
            "location": if outcome == "deny" { "CN" } else { "US" },
            "clearance": ["us-data"],
            "roles": ["engineer"],
            "network_zone": "corp",
        },
        "action": action,
        "subject": format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
        "subject_jurisdiction": "US",
        "site": "us-east",
        "collection": if i.is_multiple_of(4) { Value::Null } else { json!("profile") },
        "fields": ["email", "display_name"],
        "outcome": outcome,
        "decisions": [
            {"field_class": "protected", "allowed": outcome == "allow", "policies": ["usds-staff-read"]},
            {"field_class": null, "allowed": outcome != "deny", "policies": []},
        ],
        "policies": ["usds-staff-read"],
        "policy_set": "ab".repeat(32),
        "purpose": "customer-support",
        "reason_code": format!("ticket-{i}"),
        "trace_id": "an unknown member a later gateway may add",
    })
}

pub fn outcome_of(i: u64) -> &'static str {
    ["allow", "deny", "partial"][(i % 3) as usize]
}

pub fn entries(n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| serde_json::to_vec(&entry(i)).unwrap())
        .collect()
}

/// Writes the log of `entries` into `dir` as a static tile server serves it:
/// hash tiles and entry bundles at their C2SP paths, and a signed checkpoint.
pub fn publish(dir: &Path, key: &Key, entries: &[Vec<u8>]) -> Checkpoint {
    let mut store: Vec<Hash> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let new = stored_hashes(i as u64, e, &store).unwrap();
        store.extend(new);
    }
    let size = entries.len() as u64;
    for tile in new_tiles(TILE_HEIGHT, 0, size) {
        write_file(dir, &tile.path(), &read_tile_data(&tile, &store).unwrap());
        if tile.level == 0 {
            let start = (tile.n << TILE_HEIGHT) as usize;
            let end = start + usize::from(tile.width);
            let bundle = encode_bundle(entries[start..end].iter().map(Vec::as_slice)).unwrap();
            write_file(dir, &tile.entries_path(), &bundle);
        }
    }
    let cp = Checkpoint {
        origin: key.signer.name().to_string(),
        size,
        hash: tree_hash(size, &store).unwrap(),
        extensions: Vec::new(),
    };
    write_file(
        dir,
        "checkpoint",
        &sign_checkpoint(&cp, &key.signer).unwrap(),
    );
    cp
}

pub fn write_file(dir: &Path, rel: &str, data: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}
