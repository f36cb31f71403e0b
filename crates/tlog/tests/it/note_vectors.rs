//! Signed-note and checkpoint vectors: Go's note tests (PeterNeumann, EnochRoot)
//! and the C2SP spec examples (see tests/data/README.md).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tlog::checkpoint::Checkpoint;
use tlog::note::{NoteError, Signer, Verifier, open, sign};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/note")
        .join(name)
}

struct Go {
    peter_vkey: String,
    peter_skey: String,
    enoch_vkey: String,
    text: String,
    peter_sig: String,
    enoch_sig: String,
}

fn go() -> Go {
    let v: Value = serde_json::from_slice(&fs::read(data("go-note-test.json")).unwrap()).unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    Go {
        peter_vkey: s("peterVerifierKey"),
        peter_skey: s("peterSignerKey"),
        enoch_vkey: s("enochVerifierKey"),
        text: s("text"),
        peter_sig: s("peterSignatureLine"),
        enoch_sig: s("enochSignatureLine"),
    }
}

#[test]
fn verifier_key_and_its_manglings() {
    let g = go();
    let v = Verifier::new(&g.peter_vkey).unwrap();
    assert_eq!(v.name(), "PeterNeumann");
    assert_eq!(v.key_id(), 0xc74f20a3);
    assert_eq!(v.to_string(), g.peter_vkey);

    // As Go's TestNewVerifier: no proper substring, and no string with one byte
    // incremented, is accepted.
    let b = g.peter_vkey.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            if let Ok(s) = std::str::from_utf8(&b[i..j]) {
                assert!(Verifier::new(s).is_err(), "{s:?} accepted");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(Verifier::new(s).is_err(), "{s:?} accepted");
        }
    }
    // Wrong key length, and unknown algorithm, each with an adjusted key ID.
    assert!(
        Verifier::new("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
            .is_err()
    );
    assert!(matches!(
        Verifier::new("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::UnknownAlgorithm(0x65))
    ));
}

#[test]
fn signer_key_and_its_manglings() {
    let g = go();
    let s = Signer::new(&g.peter_skey).unwrap();
    assert_eq!(s.name(), "PeterNeumann");
    assert_eq!(s.key_id(), 0xc74f20a3);
    assert_eq!(s.to_skey(), g.peter_skey);
    assert_eq!(s.verifier().to_string(), g.peter_vkey);

    let b = g.peter_skey.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            let s = std::str::from_utf8(&b[i..j]).unwrap();
            assert!(Signer::new(s).is_err(), "{s:?} accepted");
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let s = std::str::from_utf8(&m).unwrap();
        assert!(Signer::new(s).is_err(), "{s:?} accepted");
    }
}

#[test]
fn signing_reproduces_go_byte_for_byte() {
    let g = go();
    let signer = Signer::new(&g.peter_skey).unwrap();
    let note = sign(&g.text, [&signer]).unwrap();
    let want = fs::read(data("peter-neumann.note")).unwrap();
    assert_eq!(
        String::from_utf8(note).unwrap(),
        String::from_utf8(want).unwrap()
    );
}

#[test]
fn open_as_go_does() {
    let g = go();
    let peter = Verifier::new(&g.peter_vkey).unwrap();
    let enoch = Verifier::new(&g.enoch_vkey).unwrap();
    let both = fs::read(data("peter-neumann-enoch-root.note")).unwrap();
    assert_eq!(
        both,
        format!("{}\n{}{}", g.text, g.peter_sig, g.enoch_sig).into_bytes()
    );

    // One verified, one not.
    let n = open(&both, [&peter]).unwrap();
    assert_eq!(n.text, g.text);
    assert_eq!(n.sigs.len(), 1);
    assert_eq!(
        (n.sigs[0].name.as_str(), n.sigs[0].key_id),
        ("PeterNeumann", 0xc74f20a3)
    );
    assert_eq!(
        n.sigs[0].base64,
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    );
    assert_eq!(n.unverified_sigs.len(), 1);
    assert_eq!(
        (
            n.unverified_sigs[0].name.as_str(),
            n.unverified_sigs[0].key_id
        ),
        ("EnochRoot", 0xaf0cfe78)
    );

    // Both verified.
    let n = open(&both, [&peter, &enoch]).unwrap();
    assert_eq!(n.sigs.len(), 2);
    assert!(n.unverified_sigs.is_empty());

    // Neither known: the note comes back inside the error.
    match open(&both, []) {
        Err(e @ NoteError::Unverified(_)) => {
            assert!(
                e.to_string()
                    .contains("PeterNeumann+c74f20a3, EnochRoot+af0cfe78"),
                "{e}"
            );
            let NoteError::Unverified(n) = e else {
                unreachable!()
            };
            assert_eq!(n.unverified_sigs.len(), 2);
        }
        other => panic!("{other:?}"),
    }

    // A duplicated known key is ambiguous only if its signature is present.
    let enoch_only = format!("{}\n{}", g.text, g.enoch_sig);
    assert!(matches!(
        open(enoch_only.as_bytes(), [&enoch, &peter, &enoch]),
        Err(NoteError::AmbiguousKey { .. })
    ));
    let peter_only = format!("{}\n{}", g.text, g.peter_sig);
    open(peter_only.as_bytes(), [&enoch, &peter, &enoch]).unwrap();

    // Too many signatures.
    let many = format!("{}\n{}", g.text, g.peter_sig.repeat(101));
    assert!(matches!(
        open(many.as_bytes(), [&peter]),
        Err(NoteError::TooManySignatures { .. })
    ));

    // A corrupted known signature rejects the note.
    let corrupt = format!(
        "{}\n{}ABCD{}",
        g.text,
        &g.peter_sig[..60],
        &g.peter_sig[60..]
    );
    let err = open(corrupt.as_bytes(), [&peter]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid signature for key PeterNeumann+c74f20a3"
    );

    // Repeats: verified once, unknown identical lines once, distinct unknown kept.
    let enoch_abcd = format!("{}ABCD{}", &g.enoch_sig[..60], &g.enoch_sig[60..]);
    let msg = format!(
        "{}\n{}{}{}{}{}",
        g.text, g.peter_sig, g.peter_sig, g.enoch_sig, g.enoch_sig, enoch_abcd
    );
    let n = open(msg.as_bytes(), [&peter]).unwrap();
    assert_eq!(n.sigs.len(), 1);
    assert_eq!(n.unverified_sigs.len(), 2);

    // Malformed notes.
    for bad in [
        g.text.clone(),
        format!("{}\n", g.text),
        format!("{}\n{}", g.text, &g.peter_sig[..g.peter_sig.len() - 1]),
        format!("\u{1}{}\n{}", g.text, g.peter_sig),
        format!(
            "{}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
            g.text
        ),
        format!("{}\n{}Unexpected line.\n", g.text, g.peter_sig),
        format!(
            "{}\n- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
            g.text
        ),
        format!("{}\n\u{2014} PeterNeumann\n", g.text),
        format!("{}\n\u{2014} PeterNeumann AAAA\n", g.text),
    ] {
        assert!(
            matches!(open(bad.as_bytes(), [&peter]), Err(NoteError::Malformed(_))),
            "{bad:?}"
        );
    }
    let mut invalid_utf8 = b"\xff".to_vec();
    invalid_utf8.extend_from_slice(peter_only.as_bytes());
    assert!(matches!(
        open(&invalid_utf8, [&peter]),
        Err(NoteError::Malformed(_))
    ));

    // A key with the right name but another ID, or the right ID but another name,
    // is unknown (the signature is ignored, not failed).
    let renamed = peter_only.replace("PeterNeumann", "CarmenSandiego");
    assert!(matches!(
        open(renamed.as_bytes(), [&peter]),
        Err(NoteError::Unverified(_))
    ));
}

#[test]
fn c2sp_examples_parse() {
    // The signed-note example: its text has an empty line of its own; the last
    // blank line separates the signatures. Its key is not published, so the note
    // opens as unverified.
    let msg = fs::read(data("c2sp-signed-note-example.note")).unwrap();
    match open(&msg, []) {
        Err(NoteError::Unverified(n)) => {
            assert_eq!(
                n.text,
                "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u{e8} subito sera.\n"
            );
            assert_eq!(n.unverified_sigs.len(), 1);
            assert_eq!(n.unverified_sigs[0].name, "quasimodo.example/salvatore");
        }
        other => panic!("{other:?}"),
    }

    let msg = fs::read(data("c2sp-checkpoint-example.note")).unwrap();
    let Err(NoteError::Unverified(n)) = open(&msg, []) else {
        panic!("expected an unverified note");
    };
    let cp = Checkpoint::parse(&n.text).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20852163);
    assert_eq!(
        tlog::hash_to_base64(&cp.hash),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(cp.extensions.is_empty());
    assert_eq!(cp.to_text(), n.text);
    assert_eq!(n.unverified_sigs[0].name, "example.com/behind-the-sofa");
}
