//! Activation store: resumable writing, byte-identical resume, reader values,
//! shuffled reading, error reporting.

use saepipe_data::DataError;
use saepipe_data::activations::{
    Compression, Dtype, HookSpec, Rows, ShardedWriter, StoreInfo, StoreMeta, WriterOptions,
};
use saepipe_data::reader::ActivationReader;
use saepipe_data::rng::SplitMix64;
use std::path::Path;

const HOOKS: [(&str, usize); 2] = [("blocks.0.hook_resid_pre", 12), ("blocks.1.hook_mlp_out", 5)];
const CTX: usize = 16;

fn meta(dtype: Dtype) -> StoreMeta {
    StoreMeta {
        model: "toy".into(),
        revision: Some("step1000".into()),
        weight_fingerprint: "abc123".into(),
        hooks: HOOKS.iter().map(|(n, d)| HookSpec { name: n.to_string(), d: *d }).collect(),
        dtype,
        processing: serde_json::json!({"fold_ln": true}),
        token_artifact: "tok-key".into(),
        context_size: CTX,
        extra: serde_json::json!({"stage": "acts"}),
    }
}

fn opts(compression: Compression) -> WriterOptions {
    WriterOptions { rows_per_shard: 40, row_group_rows: 16, compression, allow_nonfinite: false }
}

/// Deterministic data for `rows` rows from row `first`: (seq, pos, token, hooks).
fn data(first: u64, rows: usize) -> (Vec<u64>, Vec<u32>, Vec<u32>, Vec<Vec<f32>>) {
    let mut hooks = Vec::new();
    for (k, (_, d)) in HOOKS.iter().enumerate() {
        let mut v = Vec::with_capacity(rows * d);
        for r in 0..rows as u64 {
            let mut rng = SplitMix64::new((first + r) * 31 + k as u64);
            v.extend((0..*d).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 20) as f32 - 8.0));
        }
        hooks.push(v);
    }
    let rows_idx = first..first + rows as u64;
    (
        rows_idx.clone().map(|r| r / CTX as u64).collect(),
        rows_idx.clone().map(|r| (r % CTX as u64) as u32).collect(),
        rows_idx.map(|r| (r * 7 % 50) as u32).collect(),
        hooks,
    )
}

fn push(w: &mut ShardedWriter, first: u64, rows: usize) {
    let (s, p, t, h) = data(first, rows);
    let hs: Vec<&[f32]> = h.iter().map(|v| v.as_slice()).collect();
    w.push(first, &Rows { seq: &s, pos: &p, token: &t, hooks: &hs }).unwrap();
}

const TOTAL: u64 = 190; // 4 full shards of 40 and a last one of 30

fn write_all(dir: &Path, dtype: Dtype, c: Compression) -> StoreInfo {
    let mut w = ShardedWriter::open(&dir.join("partial"), meta(dtype), opts(c)).unwrap();
    let mut r = 0;
    for chunk in [7usize, 33, 50, 1, 99] {
        push(&mut w, r, chunk);
        r += chunk as u64;
    }
    assert_eq!(r, TOTAL);
    w.finish(&dir.join("store")).unwrap()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn interrupted_run_resumes_to_identical_files() {
    for c in [Compression::None, Compression::Zstd(1)] {
        let a = tempfile::tempdir().unwrap();
        let info = write_all(a.path(), Dtype::F32, c);
        assert_eq!(info.shards.len(), 5);
        assert_eq!(info.total_tokens, TOTAL);
        assert_eq!(info.shards[4].rows, 30);

        let b = tempfile::tempdir().unwrap();
        let partial = b.path().join("partial");
        let mut w = ShardedWriter::open(&partial, meta(Dtype::F32), opts(c)).unwrap();
        push(&mut w, 0, 95); // 2 shards complete, a third half written
        drop(w); // killed
        assert!(partial.join("shard-00001.parquet").is_file());
        assert!(!partial.join("shard-00002.parquet").exists());
        let mut w = ShardedWriter::open(&partial, meta(Dtype::F32), opts(c)).unwrap();
        assert_eq!(w.next_shard_index(), 2);
        assert_eq!(w.resume_row(), 80);
        assert!(std::fs::read_dir(&partial).unwrap().all(|e| !e.unwrap().path().to_string_lossy().ends_with(".tmp")));
        // The caller restarts at the context holding the resume row; rows before it are skipped.
        push(&mut w, 64, 100);
        push(&mut w, 164, 26);
        let info_b = w.finish(&b.path().join("store")).unwrap();
        assert_eq!(info_b, info);
        assert_eq!(files(&a.path().join("store")), files(&b.path().join("store")));
        assert!(!partial.exists());
    }
}

#[test]
fn resume_rejects_other_metadata_and_gaps() {
    let t = tempfile::tempdir().unwrap();
    let mut w = ShardedWriter::open(t.path(), meta(Dtype::F32), opts(Compression::None)).unwrap();
    push(&mut w, 0, 10);
    let (s, p, tk, h) = data(20, 1);
    let hs: Vec<&[f32]> = h.iter().map(|v| v.as_slice()).collect();
    let err = w.push(20, &Rows { seq: &s, pos: &p, token: &tk, hooks: &hs }).unwrap_err().to_string();
    assert!(err.contains("rows start at 20"), "{err}");
    let bad = [&h[0][..], &h[1][..4]];
    assert!(matches!(w.push(10, &Rows { seq: &s, pos: &p, token: &tk, hooks: &bad }), Err(DataError::Shape { .. })));
    drop(w);
    let mut m = meta(Dtype::F32);
    m.weight_fingerprint = "other".into();
    let err = ShardedWriter::open(t.path(), m, opts(Compression::None)).err().unwrap().to_string();
    assert!(err.contains("writer.json") && err.contains("different metadata"), "{err}");
}

fn read_all(r: &ActivationReader, batch: usize) -> Vec<saepipe_data::Batch> {
    r.batches(batch).collect::<Result<Vec<_>, _>>().unwrap()
}

#[test]
fn reader_returns_written_values() {
    for (dtype, c) in [
        (Dtype::F32, Compression::None),
        (Dtype::F32, Compression::SplitZstd(1)),
        (Dtype::F16, Compression::Lz4),
        (Dtype::F16, Compression::SplitZstd(3)),
    ] {
        let t = tempfile::tempdir().unwrap();
        write_all(t.path(), dtype, c);
        let r = ActivationReader::open(&t.path().join("store"), &[HOOKS[1].0, HOOKS[0].0]).unwrap();
        assert_eq!(r.widths(), vec![5, 12]);
        let batches = read_all(&r, 64);
        assert_eq!(batches.iter().map(|b| b.rows).collect::<Vec<_>>(), vec![64, 64, 62]);
        let (s, p, tk, h) = data(0, TOTAL as usize);
        let cat = |f: &dyn Fn(&saepipe_data::Batch) -> Vec<f32>| batches.iter().flat_map(f).collect::<Vec<f32>>();
        assert_eq!(batches.iter().flat_map(|b| b.seq.clone()).collect::<Vec<_>>(), s);
        assert_eq!(batches.iter().flat_map(|b| b.pos.clone()).collect::<Vec<_>>(), p);
        assert_eq!(batches.iter().flat_map(|b| b.token.clone()).collect::<Vec<_>>(), tk);
        let round = |v: &[f32]| -> Vec<f32> {
            if dtype == Dtype::F16 { v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() } else { v.to_vec() }
        };
        assert_eq!(cat(&|b| b.hooks[1].clone()), round(&h[0]), "{dtype:?} {c:?}");
        assert_eq!(cat(&|b| b.hooks[0].clone()), round(&h[1]));
    }
}

#[test]
fn shuffled_reading_is_a_reproducible_permutation() {
    let t = tempfile::tempdir().unwrap();
    write_all(t.path(), Dtype::F32, Compression::None);
    let dir = t.path().join("store");
    let read = |seed: u64| -> Vec<(u64, u32, Vec<f32>)> {
        let r = ActivationReader::open(&dir, &[HOOKS[0].0]).unwrap().shuffled(seed, 50).prefetch(1);
        let mut rows = Vec::new();
        for b in read_all(&r, 32) {
            for i in 0..b.rows {
                rows.push((b.seq[i], b.pos[i], b.hooks[0][i * 12..(i + 1) * 12].to_vec()));
            }
        }
        rows
    };
    let a = read(5);
    assert_eq!(a, read(5));
    assert_ne!(a, read(6));
    let (_, _, _, h) = data(0, TOTAL as usize);
    let mut seen: Vec<bool> = vec![false; TOTAL as usize];
    for (seq, pos, v) in &a {
        let row = (seq * CTX as u64 + *pos as u64) as usize;
        assert!(!seen[row], "row {row} twice");
        seen[row] = true;
        assert_eq!(v, &h[0][row * 12..(row + 1) * 12], "values travel with their row");
    }
    assert!(seen.iter().all(|&s| s));
    assert_ne!(a.iter().map(|x| x.0 * 16 + x.1 as u64).collect::<Vec<_>>(), (0..TOTAL).collect::<Vec<_>>());
}

#[test]
fn dropping_the_iterator_early_stops_the_reader() {
    let t = tempfile::tempdir().unwrap();
    write_all(t.path(), Dtype::F32, Compression::None);
    let r = ActivationReader::open(&t.path().join("store"), &[HOOKS[0].0]).unwrap().prefetch(1);
    let first = r.batches(8).next().unwrap().unwrap();
    assert_eq!(first.rows, 8);
}

#[test]
fn errors_name_the_file_and_hook() {
    let t = tempfile::tempdir().unwrap();
    write_all(t.path(), Dtype::F32, Compression::None);
    let dir = t.path().join("store");

    match ActivationReader::open(&dir, &["blocks.9.hook_resid_post"]) {
        Err(e @ DataError::MissingHook { .. }) => {
            assert!(e.to_string().contains("_store.json") && e.to_string().contains("blocks.0.hook_resid_pre"), "{e}")
        }
        other => panic!("{:?}", other.err()),
    }

    // Width mismatch between the store index and the shards.
    let sj = dir.join("_store.json");
    let orig = std::fs::read_to_string(&sj).unwrap();
    std::fs::write(&sj, orig.replace("\"d\": 5", "\"d\": 6")).unwrap();
    match ActivationReader::open(&dir, &[HOOKS[1].0]) {
        Err(e @ DataError::Shape { .. }) => {
            assert!(e.to_string().contains("shard-00000.parquet") && e.to_string().contains("expected 6"), "{e}")
        }
        other => panic!("{:?}", other.err()),
    }
    std::fs::write(&sj, orig.replace("\"format_version\": 1", "\"format_version\": 99")).unwrap();
    match ActivationReader::open(&dir, &[HOOKS[1].0]) {
        Err(e @ DataError::UnsupportedVersion { .. }) => assert!(e.to_string().contains("99"), "{e}"),
        other => panic!("{:?}", other.err()),
    }
    std::fs::write(&sj, &orig).unwrap();

    // A damaged footer: caught at open.
    let shard = dir.join("shard-00003.parquet");
    let good = std::fs::read(&shard).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 12..n - 8].copy_from_slice(&[0xff; 4]);
    std::fs::write(&shard, &bad).unwrap();
    let e = ActivationReader::open(&dir, &[HOOKS[0].0]).err().unwrap();
    assert!(matches!(e, DataError::Parquet { .. }) && e.to_string().contains("shard-00003.parquet"), "{e}");

    // Damaged data pages (footer intact): caught while reading, naming the shard.
    let mut bad = good.clone();
    for b in &mut bad[4..200] {
        *b = 0xA5;
    }
    std::fs::write(&shard, &bad).unwrap();
    let r = ActivationReader::open(&dir, &[HOOKS[0].0]).unwrap();
    let e = r.batches(16).find_map(|b| b.err()).expect("an error");
    assert!(e.to_string().contains("shard-00003.parquet"), "{e}");
}
