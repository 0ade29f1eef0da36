//! The one list of weight files a model directory loads from, which cache keys
//! fingerprint too: single or sharded, safetensors or torch pickles.

use saepipe_model::weights::weight_files;
use std::path::Path;

fn names(dir: &Path) -> Vec<String> {
    weight_files(dir).unwrap().all().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn every_checkpoint_layout_lists_every_file_a_load_reads() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    assert!(weight_files(d).is_err(), "no weights is an error naming what was looked for");
    std::fs::write(d.join("pytorch_model.bin"), b"x").unwrap();
    assert_eq!(names(d), ["pytorch_model.bin"]);
    let index = r#"{"metadata": {}, "weight_map": {"a": "pytorch_model-00002-of-00002.bin", "b": "pytorch_model-00001-of-00002.bin", "c": "pytorch_model-00001-of-00002.bin"}}"#;
    std::fs::remove_file(d.join("pytorch_model.bin")).unwrap();
    std::fs::write(d.join("pytorch_model.bin.index.json"), index).unwrap();
    assert_eq!(
        names(d),
        ["pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    );
    // Safetensors win over torch pickles, as in transformers.
    std::fs::write(
        d.join("model.safetensors.index.json"),
        index.replace("pytorch_model", "model").replace(".bin", ".safetensors"),
    )
    .unwrap();
    assert_eq!(
        names(d),
        ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    );
    std::fs::write(d.join("model.safetensors"), b"x").unwrap();
    assert_eq!(names(d), ["model.safetensors"]);
    // Shard names that leave the directory are refused.
    let t2 = tempfile::tempdir().unwrap();
    std::fs::write(t2.path().join("model.safetensors.index.json"), r#"{"weight_map": {"a": "../x.safetensors"}}"#)
        .unwrap();
    assert!(weight_files(t2.path()).is_err());
}
