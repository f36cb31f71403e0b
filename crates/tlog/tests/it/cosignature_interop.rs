//! Cosigned checkpoints read by implementations this project did not write: Cloudflare's
//! `signed_note` crate and Go's `golang.org/x/mod/sumdb/note`. Both must keep the log's own
//! signature valid and find each witness's cosignature under the witness's name and key ID
//! (key type 0x04); the cosignatures themselves are checked by a verifier written from the
//! specification, in Rust against `signed_note`'s note reading and in Go with its
//! `crypto/ed25519`.

use std::process::Command;

use tlog::cosignature::{Cosigner, WitnessKey, add_signature_lines, cosigned_message};
use tlog::note::Signer;
use tlog::{Checkpoint, leaf_hash, sign_checkpoint};

/// A checkpoint signed by the log and cosigned by two witnesses; the log's vkey and the
/// witnesses' vkeys.
fn cosigned() -> (Vec<u8>, String, Vec<String>) {
    let log = Signer::from_ed25519_seed("sovereign.example/log", &[3; 32]).unwrap();
    let checkpoint = Checkpoint {
        origin: log.name().to_string(),
        size: 1234,
        hash: leaf_hash(b"root"),
        extensions: Vec::new(),
    };
    let note = sign_checkpoint(&checkpoint, &log).unwrap();
    let witnesses: Vec<Cosigner> = ["w1.example/witness", "w2.example/witness"]
        .iter()
        .enumerate()
        .map(|(i, name)| Cosigner::from_ed25519_seed(name, &[40 + i as u8; 32]).unwrap())
        .collect();
    let text = checkpoint.to_text();
    let lines: String = witnesses
        .iter()
        .map(|w| w.cosign(&text, 1_700_000_000))
        .collect();
    (
        add_signature_lines(&note, &lines),
        log.verifier().to_string(),
        witnesses
            .iter()
            .map(|w| w.witness_key().to_string())
            .collect(),
    )
}

/// A `signed_note` verifier for cosignature/v1 keys, written from the specification.
struct CosignatureV1 {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl signed_note::Verifier for CosignatureV1 {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((timestamp, signature)) = sig.split_first_chunk::<8>() else {
            return false;
        };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        let message = cosigned_message(
            std::str::from_utf8(msg).unwrap(),
            u64::from_be_bytes(*timestamp),
        );
        use ed25519_dalek::Verifier as _;
        self.key.verify(&message, &signature).is_ok()
    }
}

fn cosignature_verifier(vkey: &str) -> CosignatureV1 {
    let w = WitnessKey::new(vkey).unwrap();
    // name+keyid+base64, where the base64 may itself hold '+'.
    let b64 = vkey.splitn(3, '+').nth(2).unwrap();
    use base64::Engine as _;
    let typed = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(typed[0], 0x04);
    // signed_note computes key IDs itself: the witness key's ID must be the one it computes.
    assert_eq!(signed_note::key_id(w.name(), &typed), w.key_id());
    CosignatureV1 {
        name: w.name().to_string(),
        id: w.key_id(),
        key: ed25519_dalek::VerifyingKey::from_bytes(typed[1..].try_into().unwrap()).unwrap(),
    }
}

#[test]
fn signed_note_reads_cosigned_checkpoints() {
    let (note, log_vkey, witness_vkeys) = cosigned();
    let parsed = signed_note::Note::from_bytes(&note).unwrap();
    // The log's key alone: its signature verifies, the cosignatures are kept unverified
    // under the witnesses' names and key IDs.
    let log_only = signed_note::VerifierList::new(vec![Box::new(
        signed_note::StandardVerifier::new(&log_vkey).unwrap(),
    )]);
    let (verified, unverified) = parsed.verify(&log_only).unwrap();
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].name(), "sovereign.example/log");
    let witness_ids: Vec<(String, u32)> = witness_vkeys
        .iter()
        .map(|k| {
            let w = WitnessKey::new(k).unwrap();
            (w.name().to_string(), w.key_id())
        })
        .collect();
    let found: Vec<(String, u32)> = unverified
        .iter()
        .map(|s| (s.name().to_string(), s.id()))
        .collect();
    assert_eq!(found, witness_ids);
    // With the witnesses' keys too, every signature verifies.
    let mut all: Vec<Box<dyn signed_note::Verifier>> = vec![Box::new(
        signed_note::StandardVerifier::new(&log_vkey).unwrap(),
    )];
    for k in &witness_vkeys {
        all.push(Box::new(cosignature_verifier(k)));
    }
    let (verified, unverified) = parsed.verify(&signed_note::VerifierList::new(all)).unwrap();
    assert_eq!((verified.len(), unverified.len()), (3, 0));
    // A cosignature of another checkpoint is refused by signed_note as an invalid signature.
    let tampered = String::from_utf8(note)
        .unwrap()
        .replacen("1234\n", "1235\n", 1);
    let parsed = signed_note::Note::from_bytes(tampered.as_bytes()).unwrap();
    let witnesses_only = signed_note::VerifierList::new(
        witness_vkeys
            .iter()
            .map(|k| Box::new(cosignature_verifier(k)) as Box<dyn signed_note::Verifier>)
            .collect(),
    );
    assert!(parsed.verify(&witnesses_only).is_err());
}

/// Go's `golang.org/x/mod/sumdb/note`, from Debian's golang-golang-x-mod-dev, reads the note.
/// Skips where Go or that package is missing, unless `SOVEREIGN_REQUIRE_GO=1`.
#[test]
fn go_sumdb_note_reads_cosigned_checkpoints() {
    let gopath = "/usr/share/gocode";
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have_note = std::path::Path::new(gopath)
        .join("src/golang.org/x/mod/sumdb/note/note.go")
        .is_file();
    if !(have_go && have_note) {
        assert!(
            std::env::var("SOVEREIGN_REQUIRE_GO").as_deref() != Ok("1"),
            "SOVEREIGN_REQUIRE_GO=1 but go or golang.org/x/mod/sumdb/note (Debian golang-golang-x-mod-dev) is missing"
        );
        eprintln!("skipping: go or golang.org/x/mod/sumdb/note is missing");
        return;
    }
    let (note, log_vkey, witness_vkeys) = cosigned();
    let dir = tempfile::tempdir().unwrap();
    let note_file = dir.path().join("checkpoint");
    std::fs::write(&note_file, &note).unwrap();
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/cosigned_note.go");
    let run = |note_file: &std::path::Path| {
        Command::new("go")
            .arg("run")
            .arg(program)
            .arg(note_file)
            .arg(&log_vkey)
            .args(&witness_vkeys)
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOCACHE", dir.path().join("gocache"))
            .env("GOFLAGS", "")
            .output()
            .unwrap()
    };
    let output = run(&note_file);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 cosignatures verified"));
    // Go refuses a cosignature that is not over this checkpoint.
    let mut tampered = String::from_utf8(note).unwrap();
    let last = tampered.rfind("\u{2014} w2.example/witness ").unwrap();
    tampered.truncate(last);
    let other = Cosigner::from_ed25519_seed("w2.example/witness", &[41; 32])
        .unwrap()
        .cosign(
            "sovereign.example/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            1,
        );
    tampered.push_str(&other);
    std::fs::write(&note_file, tampered).unwrap();
    let output = run(&note_file);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not verify"));
}
