//! The restricted unpickler on files written by torch.save
//! (fixtures from scripts/fixtures/model_pickle.py).

use saepipe_model::pickle::{TorchArchive, Value};
use saepipe_model::{LoadOptions, Model};
use std::path::PathBuf;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pickle").join(p)
}

/// Compares an unpickled value with its JSON rendering by the fixture script.
fn same(archive: &TorchArchive, got: &Value, want: &serde_json::Value, at: &str) {
    use serde_json::Value as J;
    match (got, want) {
        (Value::None, J::Null) => {}
        (Value::Bool(a), J::Bool(b)) => assert_eq!(a, b, "{at}"),
        (Value::Int(a), J::Number(b)) => assert_eq!(Some(*a), b.as_i64(), "{at}"),
        (Value::Float(a), J::Number(b)) => assert_eq!(Some(*a), b.as_f64(), "{at}"),
        (Value::Str(a), J::String(b)) => assert_eq!(a, b, "{at}"),
        (Value::Global(a), J::String(b)) => assert_eq!(a, b, "{at}"),
        (Value::List(a) | Value::Tuple(a), J::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                same(archive, x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Tensor(t), J::Object(o)) => {
            let shape: Vec<usize> = serde_json::from_value(o["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{at}");
            let values: Vec<f32> = serde_json::from_value(o["values"].clone()).unwrap();
            assert_eq!(archive.tensor_f32(t, at).unwrap(), values, "{at}");
        }
        (Value::Dict(items), J::Object(o)) => {
            assert_eq!(items.len(), o.len(), "{at}");
            for (k, v) in o {
                same(archive, got.get(k).unwrap_or_else(|| panic!("{at}.{k} missing")), v, &format!("{at}.{k}"));
            }
            let _ = items;
        }
        _ => panic!("{at}: {got:?} vs {want}"),
    }
}

#[test]
fn coder_file_value_tree_and_tensors() {
    let a = TorchArchive::open(&fixture("coder.pt")).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("coder_expected.json")).unwrap()).unwrap();
    same(&a, &a.root, &want, "root");
    // The transposed view really is strided, the slice really is offset.
    let sd = a.root.get("state_dict").unwrap();
    let w_dec = sd.get("W_dec").unwrap().as_tensor().unwrap();
    assert_eq!(w_dec.stride, vec![1, 4]);
    let b_enc = sd.get("b_enc").unwrap().as_tensor().unwrap();
    assert_eq!((b_enc.offset, &b_enc.storage_key), (8, &w_dec.storage_key));
}

#[test]
fn checkpoint_asking_for_os_system_is_rejected() {
    let e = Model::load(&fixture("evil"), &LoadOptions::default()).err().unwrap().to_string();
    // os.system pickles as posix.system on Unix.
    assert!(e.starts_with("pickle in pytorch_model.bin asks for forbidden global "), "{e}");
    assert!(e.ends_with("posix.system") || e.ends_with("os.system") || e.ends_with("nt.system"), "{e}");
}

#[test]
fn truncated_and_non_zip_files_give_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("coder.pt")).unwrap();
    let p = t.path().join("cut.pt");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = TorchArchive::open(&p).err().unwrap().to_string();
    assert!(e.contains("cut.pt") && e.contains("not a torch zip archive"), "{e}");
}
