//! Public Merkle tree test vectors: transparency-dev/merkle's inclusion and
//! consistency proof vectors and the RFC 6962 reference tree (see tests/data/README.md).

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tlog::{
    Hash, check_record, check_tree, leaf_hash, node_hash, prove_record, prove_tree, stored_hashes,
    tree_hash,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// All JSON files under `dir`, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Decodes a base64 field; `None` when it is not exactly a hash (the vectors use
/// short garbage such as "V3JvbmdMZWFm" for "wrong leaf").
fn hash(v: &Value) -> Option<Hash> {
    STANDARD.decode(v.as_str()?).ok()?.try_into().ok()
}

/// The proof hashes, `None` if any is not exactly 32 bytes.
fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => panic!("proof is {v}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_hash(v: &Value) -> Hash {
    hex(v.as_str().unwrap()).try_into().unwrap()
}

#[test]
fn inclusion_vectors() {
    let files = json_files(&data_dir().join("merkle/inclusion"));
    assert!(files.len() >= 20, "only {} inclusion vectors", files.len());
    let (mut ok, mut rejected) = (0, 0);
    for file in &files {
        let v: Value = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let index = v["leafIdx"].as_u64().unwrap();
        let size = v["treeSize"].as_u64().unwrap();
        let result = match (hash(&v["root"]), hash(&v["leafHash"]), proof(&v["proof"])) {
            (Some(root), Some(leaf), Some(p)) => {
                check_record(&p, size, &root, index, &leaf).map_err(|e| e.to_string())
            }
            _ => Err("not a hash".to_string()),
        };
        match (want_err, result) {
            (false, Ok(())) => ok += 1,
            (true, Err(_)) => rejected += 1,
            (false, Err(e)) => panic!("{}: {} rejected: {e}", file.display(), v["desc"]),
            (true, Ok(())) => panic!("{}: {} accepted", file.display(), v["desc"]),
        }
    }
    assert_eq!(ok, 5, "one happy path per folder");
    assert!(rejected >= 15);
}

#[test]
fn consistency_vectors() {
    let files = json_files(&data_dir().join("merkle/consistency"));
    assert!(
        files.len() >= 20,
        "only {} consistency vectors",
        files.len()
    );
    let (mut ok, mut rejected) = (0, 0);
    for file in &files {
        let v: Value = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let size1 = v["size1"].as_u64().unwrap();
        let size2 = v["size2"].as_u64().unwrap();
        let result = match (hash(&v["root1"]), hash(&v["root2"]), proof(&v["proof"])) {
            (Some(r1), Some(r2), Some(p)) => {
                check_tree(&p, size2, &r2, size1, &r1).map_err(|e| e.to_string())
            }
            _ => Err("not a hash".to_string()),
        };
        match (want_err, result) {
            (false, Ok(())) => ok += 1,
            (true, Err(_)) => rejected += 1,
            (false, Err(e)) => panic!("{}: {} rejected: {e}", file.display(), v["desc"]),
            (true, Ok(())) => panic!("{}: {} accepted", file.display(), v["desc"]),
        }
    }
    assert_eq!(ok, 5, "one happy path per folder");
    assert!(rejected >= 15);
}

/// The RFC 6962 reference tree, built with `stored_hashes`.
fn reference() -> (Value, Vec<Vec<u8>>, Vec<Hash>) {
    let v: Value =
        serde_json::from_slice(&fs::read(data_dir().join("merkle/reference-tree.json")).unwrap())
            .unwrap();
    let leaves: Vec<Vec<u8>> = v["leafInputsHex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| hex(l.as_str().unwrap()))
        .collect();
    let mut store: Vec<Hash> = Vec::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let new = stored_hashes(i as u64, leaf, &store).unwrap();
        store.extend(new);
    }
    (v, leaves, store)
}

#[test]
fn rfc6962_reference_tree() {
    let (v, leaves, store) = reference();
    for (size, want) in v["rootHashesHex"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            tree_hash(size as u64, &store).unwrap(),
            hex_hash(want),
            "root of size {size}"
        );
    }
    // Every node hash of the complete subtrees, at its stored hash index.
    for (level, row) in v["nodeHashesHex"].as_array().unwrap().iter().enumerate() {
        for (n, want) in row.as_array().unwrap().iter().enumerate() {
            let index = tlog::stored_hash_index(level as u32, n as u64);
            assert_eq!(store[index as usize], hex_hash(want), "node ({level}, {n})");
        }
    }
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(leaf_hash(leaf), hex_hash(&v["nodeHashesHex"][0][i]));
    }
    assert_eq!(
        node_hash(
            &hex_hash(&v["nodeHashesHex"][0][0]),
            &hex_hash(&v["nodeHashesHex"][0][1])
        ),
        hex_hash(&v["nodeHashesHex"][1][0])
    );
}

/// The proofs this crate generates for the reference tree are exactly the
/// vectors' happy-path proofs (the vectors are built on the same tree).
#[test]
fn generated_proofs_equal_the_vectors() {
    let (_, _, store) = reference();
    let mut checked = 0;
    for file in json_files(&data_dir().join("merkle/inclusion")) {
        let v: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        if v["wantErr"].as_bool().unwrap() {
            continue;
        }
        let (index, size) = (
            v["leafIdx"].as_u64().unwrap(),
            v["treeSize"].as_u64().unwrap(),
        );
        assert_eq!(
            tree_hash(size, &store).unwrap(),
            hash(&v["root"]).unwrap(),
            "{}",
            file.display()
        );
        assert_eq!(
            prove_record(size, index, &store).unwrap(),
            proof(&v["proof"]).unwrap(),
            "{}",
            file.display()
        );
        checked += 1;
    }
    for file in json_files(&data_dir().join("merkle/consistency")) {
        let v: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        if v["wantErr"].as_bool().unwrap() {
            continue;
        }
        let (size1, size2) = (v["size1"].as_u64().unwrap(), v["size2"].as_u64().unwrap());
        assert_eq!(
            tree_hash(size1, &store).unwrap(),
            hash(&v["root1"]).unwrap()
        );
        assert_eq!(
            prove_tree(size2, size1, &store).unwrap(),
            proof(&v["proof"]).unwrap(),
            "{}",
            file.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 10);
}
