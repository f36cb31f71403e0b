//! The example algorithm in `examples/algorithms/ranker/` runs in the sandbox as its manifest
//! says: the committed module is its text source compiled, the manifest names its digest,
//! and a watch history gives a category and never a title.
//!
//! After changing `ranker.wat`, `SOVEREIGN_WRITE_EXAMPLES=1 cargo test -p algorithm --test
//! example` writes `ranker.wasm` and the digest into the manifest again.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use algorithm::{Input, Manifest, RunError, Runtime};

fn example(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/algorithms/ranker")
        .join(file)
}

fn history(items: &[&str]) -> Input {
    Input {
        fields: [(
            "activity".to_string(),
            [("watch_history".to_string(), json!(items))]
                .into_iter()
                .collect(),
        )]
        .into_iter()
        .collect(),
        protected: vec![("activity".to_string(), "watch_history".to_string())],
    }
}

#[test]
fn the_example_ranker_recommends_a_category_and_never_a_title() {
    let compiled = wat::parse_file(example("ranker.wat")).unwrap();
    let digest = hex::encode(Sha256::digest(&compiled));
    if std::env::var("SOVEREIGN_WRITE_EXAMPLES").as_deref() == Ok("1") {
        std::fs::write(example("ranker.wasm"), &compiled).unwrap();
        let mut manifest: Value =
            serde_json::from_slice(&std::fs::read(example("manifest.json")).unwrap()).unwrap();
        manifest["module_sha256"] = json!(digest);
        std::fs::write(
            example("manifest.json"),
            serde_json::to_string_pretty(&manifest).unwrap() + "\n",
        )
        .unwrap();
    }
    let module = std::fs::read(example("ranker.wasm")).unwrap();
    assert_eq!(
        module, compiled,
        "ranker.wasm is not ranker.wat compiled: write it again (see above)"
    );
    let manifest = Manifest::parse(&std::fs::read(example("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.module_sha256, digest);

    let runtime = Runtime::new().unwrap();
    let history_items = [
        "drama:The Long Night of Secrets",
        "comedy:Laughing Matters",
        "drama:Quiet Harbour",
    ];
    let outcome = runtime
        .run(&manifest, &module, &history(&history_items))
        .unwrap();
    assert_eq!(outcome.output["categories"], json!(["drama"]));
    let text = serde_json::to_string(&outcome.output).unwrap();
    for item in history_items {
        let title = item.split_once(':').unwrap().1;
        assert!(!text.contains(title), "{text}");
    }
    let outcome = runtime
        .run(
            &manifest,
            &module,
            &history(&["documentary:Deep Sea", "comedy:A", "documentary:B"]),
        )
        .unwrap();
    assert_eq!(outcome.output["categories"], json!(["documentary"]));
    let outcome = runtime.run(&manifest, &module, &history(&[])).unwrap();
    assert_eq!(outcome.output["categories"], json!([]));

    // A history item that is only a category is itself protected: recommending it back would
    // repeat it, and the sandbox refuses.
    let err = runtime
        .run(&manifest, &module, &history(&["comedy", "comedy:x"]))
        .unwrap_err();
    assert!(matches!(err, RunError::Output(_)), "{err}");
}
