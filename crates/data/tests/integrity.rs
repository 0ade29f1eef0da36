//! Activation store integrity: per-shard blake3 in the store index checked on read,
//! partial shards checked on resume, unique temporaries shared partial directories
//! survive, non-finite activations refused (or stored and counted).

use saepipe_data::activations::{
    Compression, Dtype, HookSpec, Rows, ShardedWriter, StoreInfo, StoreMeta, WriterOptions,
};
use saepipe_data::reader::ActivationReader;
use saepipe_data::rng::SplitMix64;
use saepipe_data::{Batch, DataError};
use std::path::Path;

const HOOKS: [(&str, usize); 2] = [("blocks.0.hook_resid_pre", 12), ("blocks.1.hook_mlp_out", 5)];
const CTX: usize = 16;
const ROWS_PER_SHARD: u64 = 40;
const TOTAL: u64 = 190; // 4 full shards of 40 and a last one of 30

fn meta(dtype: Dtype) -> StoreMeta {
    StoreMeta {
        model: "toy".into(),
        revision: None,
        weight_fingerprint: "abc123".into(),
        hooks: HOOKS.iter().map(|(n, d)| HookSpec { name: n.to_string(), d: *d }).collect(),
        dtype,
        processing: serde_json::json!({}),
        token_artifact: "tok-key".into(),
        context_size: CTX,
        extra: serde_json::json!({}),
    }
}

fn opts() -> WriterOptions {
    WriterOptions {
        rows_per_shard: ROWS_PER_SHARD as usize,
        row_group_rows: 16,
        compression: Compression::None,
        allow_nonfinite: false,
    }
}

/// Deterministic rows `first..first + rows`: (seq, pos, token, hooks).
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
    let idx = first..first + rows as u64;
    (
        idx.clone().map(|r| r / CTX as u64).collect(),
        idx.clone().map(|r| (r % CTX as u64) as u32).collect(),
        idx.map(|r| (r * 7 % 50) as u32).collect(),
        hooks,
    )
}

fn push_hooks(w: &mut ShardedWriter, first: u64, hooks: &[Vec<f32>]) -> Result<(), DataError> {
    let rows = hooks[0].len() / HOOKS[0].1;
    let (s, p, t, _) = data(first, rows);
    let hs: Vec<&[f32]> = hooks.iter().map(|v| v.as_slice()).collect();
    w.push(first, &Rows { seq: &s, pos: &p, token: &t, hooks: &hs })
}

fn push(w: &mut ShardedWriter, first: u64, rows: usize) {
    push_hooks(w, first, &data(first, rows).3).unwrap();
}

fn write_all(dir: &Path, dtype: Dtype) -> StoreInfo {
    let mut w = ShardedWriter::open(&dir.join("partial"), meta(dtype), opts()).unwrap();
    push(&mut w, 0, TOTAL as usize);
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

fn names(dir: &Path) -> Vec<String> {
    files(dir).into_iter().map(|f| f.0).collect()
}

fn flip_middle_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(path, &b).unwrap();
}

/// Store indices of the rows of a batch.
fn row_ids(b: &Batch) -> impl Iterator<Item = u64> + '_ {
    (0..b.rows).map(|i| b.seq[i] * CTX as u64 + b.pos[i] as u64)
}

#[test]
fn store_json_records_each_shards_blake3() {
    let t = tempfile::tempdir().unwrap();
    let info = write_all(t.path(), Dtype::F32);
    assert_eq!(info.shards.len(), 5);
    for s in &info.shards {
        let h = s.blake3.as_deref().expect("new stores record a hash per shard");
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{h}");
        let bytes = std::fs::read(t.path().join("store").join(&s.file)).unwrap();
        assert_eq!(h, blake3::hash(&bytes).to_hex().as_str());
        assert_eq!(s.bytes, bytes.len() as u64);
    }
    // Nothing but the shards and the index (named so dataset readers skip it) in
    // the store; the partial directory is gone.
    let mut want: Vec<String> = info.shards.iter().map(|s| s.file.clone()).collect();
    want.push("_store.json".into());
    want.sort();
    assert_eq!(names(&t.path().join("store")), want);
    assert!(!t.path().join("partial").exists());
}

#[test]
fn a_flipped_byte_in_a_shard_is_damaged_and_none_of_its_rows_are_returned() {
    // f32 stores decode through the typed column readers, f16 ones through Arrow.
    for dtype in [Dtype::F32, Dtype::F16] {
        let t = tempfile::tempdir().unwrap();
        write_all(t.path(), dtype);
        let dir = t.path().join("store");
        flip_middle_byte(&dir.join("shard-00002.parquet"));
        let damaged = 2 * ROWS_PER_SHARD..3 * ROWS_PER_SHARD;
        // Opening reads footers only and still succeeds.
        let open = || ActivationReader::open(&dir, &[HOOKS[0].0, HOOKS[1].0]).unwrap();
        for (what, r) in [
            ("sequential", open()),
            ("shuffled", open().shuffled(3, 8)),
            ("sequential, prefetch 1", open().prefetch(1)),
        ] {
            let mut rows = Vec::new();
            let mut err = None;
            for b in r.batches(16) {
                match b {
                    Ok(b) => rows.extend(row_ids(&b)),
                    Err(e) => err = Some(e),
                }
            }
            let e = err.unwrap_or_else(|| panic!("{dtype:?} {what}: no error"));
            let msg = e.to_string();
            assert!(matches!(e, DataError::Damaged { .. }), "{dtype:?} {what}: {msg}");
            assert!(
                msg.contains("shard-00002.parquet") && msg.contains("damaged") && msg.contains("not used"),
                "{msg}"
            );
            assert!(rows.iter().all(|r| !damaged.contains(r)), "{dtype:?} {what}: rows of the damaged shard returned");
            if what.starts_with("sequential") {
                // The shards before it were read.
                assert_eq!(rows, (0..rows.len() as u64).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn a_truncated_shard_is_damaged() {
    let t = tempfile::tempdir().unwrap();
    write_all(t.path(), Dtype::F32);
    let dir = t.path().join("store");
    let shard = dir.join("shard-00001.parquet");
    let good = std::fs::read(&shard).unwrap();
    // Opened before the damage: caught when the shard is read.
    let r = ActivationReader::open(&dir, &[HOOKS[0].0]).unwrap();
    std::fs::write(&shard, &good[..good.len() - 100]).unwrap();
    let e = r.batches(16).find_map(|b| b.err()).expect("an error");
    assert!(matches!(e, DataError::Damaged { .. }) && e.to_string().contains("shard-00001.parquet"), "{e}");
    assert!(e.to_string().contains(&format!("{} bytes", good.len())), "{e}");
    // Opened after: caught at open (a size check, before the footer is parsed).
    let e = ActivationReader::open(&dir, &[HOOKS[0].0]).err().unwrap();
    assert!(matches!(e, DataError::Damaged { .. }) && e.to_string().contains("shard-00001.parquet"), "{e}");
    // Grown by a byte: also damaged.
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&shard, &longer).unwrap();
    assert!(matches!(ActivationReader::open(&dir, &[HOOKS[0].0]), Err(DataError::Damaged { .. })));
}

#[test]
fn an_old_store_json_without_hashes_still_reads() {
    let t = tempfile::tempdir().unwrap();
    write_all(t.path(), Dtype::F32);
    let dir = t.path().join("store");
    // As older versions wrote it: the index named `store.json`, no shard hashes.
    let sj = dir.join("store.json");
    std::fs::rename(dir.join("_store.json"), &sj).unwrap();
    assert_eq!(StoreInfo::index_path(&dir), sj);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sj).unwrap()).unwrap();
    for s in v["shards"].as_array_mut().unwrap() {
        assert!(s.as_object_mut().unwrap().remove("blake3").is_some());
    }
    std::fs::write(&sj, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let info = StoreInfo::load(&dir).unwrap();
    assert!(info.shards.iter().all(|s| s.blake3.is_none()));
    assert!(!serde_json::to_string(&info).unwrap().contains("blake3"), "absent hashes are not written as null");
    let r = ActivationReader::open(&dir, &[HOOKS[0].0]).unwrap();
    let batches: Vec<Batch> = r.batches(64).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().flat_map(|b| b.hooks[0].clone()).collect::<Vec<f32>>(), data(0, TOTAL as usize).3[0]);
    // The size is still checked.
    let shard = dir.join("shard-00004.parquet");
    let good = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &good[..good.len() - 1]).unwrap();
    assert!(matches!(ActivationReader::open(&dir, &[HOOKS[0].0]), Err(DataError::Damaged { .. })));
}

/// Writes 95 rows (shards 0 and 1 complete, shard 2 half written) and drops the writer.
fn interrupted(partial: &Path) {
    let mut w = ShardedWriter::open(partial, meta(Dtype::F32), opts()).unwrap();
    push(&mut w, 0, 95);
    drop(w);
    assert!(partial.join("shard-00001.parquet").is_file() && partial.join("shard-00001.parquet.blake3").is_file());
}

/// Resumes at the context holding `resume_row` and finishes.
fn resume(mut w: ShardedWriter, dest: &Path) -> StoreInfo {
    let from = w.resume_row() / CTX as u64 * CTX as u64;
    push(&mut w, from, (TOTAL - from) as usize);
    w.finish(dest).unwrap()
}

#[test]
fn resume_discards_a_damaged_partial_shard_and_rewrites_it_identically() {
    let a = tempfile::tempdir().unwrap();
    let info = write_all(a.path(), Dtype::F32);

    // A flipped byte in shard 1 (its footer still parses).
    let b = tempfile::tempdir().unwrap();
    let partial = b.path().join("partial");
    interrupted(&partial);
    flip_middle_byte(&partial.join("shard-00001.parquet"));
    let w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    assert_eq!((w.next_shard_index(), w.resume_row()), (1, 40));
    assert_eq!(w.discarded().len(), 1, "{:?}", w.discarded());
    assert!(
        w.discarded()[0].contains("shard-00001.parquet") && w.discarded()[0].contains("blake3"),
        "{:?}",
        w.discarded()
    );
    assert!(!partial.join("shard-00001.parquet").exists() && !partial.join("shard-00001.parquet.blake3").exists());
    let info_b = resume(w, &b.path().join("store"));
    assert_eq!(info_b, info, "same store.json, shard hashes included");
    assert_eq!(files(&a.path().join("store")), files(&b.path().join("store")));

    // Damage in shard 0: shard 0 and the (intact) shard 1 after it are redone.
    let c = tempfile::tempdir().unwrap();
    let partial = c.path().join("partial");
    interrupted(&partial);
    flip_middle_byte(&partial.join("shard-00000.parquet"));
    let w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    assert_eq!(w.resume_row(), 0);
    let d = w.discarded().to_vec();
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        d[0].starts_with("shard-00000.parquet")
            && d[1].starts_with("shard-00001.parquet")
            && d[1].contains("comes after"),
        "{d:?}"
    );
    assert_eq!(resume(w, &c.path().join("store")), info);
    assert_eq!(files(&a.path().join("store")), files(&c.path().join("store")));

    // A shard without a recorded hash (a partial directory of an older saepipe) is redone.
    let e = tempfile::tempdir().unwrap();
    let partial = e.path().join("partial");
    interrupted(&partial);
    std::fs::remove_file(partial.join("shard-00001.parquet.blake3")).unwrap();
    let w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    assert_eq!(w.resume_row(), 40);
    assert!(w.discarded().len() == 1 && w.discarded()[0].contains("no recorded hash"), "{:?}", w.discarded());
    assert_eq!(resume(w, &e.path().join("store")), info);

    // An intact partial directory discards nothing.
    let f = tempfile::tempdir().unwrap();
    let partial = f.path().join("partial");
    interrupted(&partial);
    let w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    assert_eq!((w.resume_row(), w.discarded().len()), (80, 0));
    assert_eq!(resume(w, &f.path().join("store")), info);
}

#[test]
fn open_leaves_temporaries_of_live_writers_alone() {
    let t = tempfile::tempdir().unwrap();
    let partial = t.path().join("partial");
    let mut w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    push(&mut w, 0, 20); // one row group written into shard 0's temporary
    let own: Vec<String> = names(&partial).into_iter().filter(|n| n.ends_with(".tmp")).collect();
    assert_eq!(own.len(), 1, "{own:?}");
    // `shard-00000.parquet.<host>-<pid>-<unique>.tmp`
    let tag = own[0].strip_prefix("shard-00000.parquet.").and_then(|s| s.strip_suffix(".tmp")).unwrap();
    let mut parts = tag.rsplitn(3, '-');
    let (_, pid, host) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    assert_eq!(pid, std::process::id().to_string());
    drop(w); // its temporary is now abandoned

    let mut live = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let foreign = format!("shard-00000.parquet.{host}-{}-00000000deadbeef.tmp", live.id());
    let dead = format!("shard-00000.parquet.{host}-{gone_pid}-00000000deadbeef.tmp");
    let other_host = "shard-00001.parquet.some-other-host-77-0000000000000001.tmp";
    let legacy_fresh = "shard-00002.parquet.tmp";
    let legacy_old = "writer.json.tmp";
    for n in [&foreign, &dead, other_host, legacy_fresh, legacy_old] {
        std::fs::write(partial.join(n), b"half a shard").unwrap();
    }
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(partial.join(legacy_old)).unwrap().set_modified(an_hour_ago).unwrap();

    let mut w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    let left = names(&partial);
    assert!(left.contains(&foreign), "a live process's temporary was removed: {left:?}");
    assert!(
        left.contains(&other_host.to_string()) && left.contains(&legacy_fresh.to_string()),
        "recent unattributable temporaries are kept: {left:?}"
    );
    for n in [&own[0], &dead, &legacy_old.to_string()] {
        assert!(!left.contains(n), "{n} should be removed: {left:?}");
    }
    assert!(std::fs::read(partial.join(&foreign)).unwrap() == b"half a shard");

    // The writer works around it; finish leaves the partial directory to the live writer.
    push(&mut w, 0, TOTAL as usize);
    let info = w.finish(&t.path().join("store")).unwrap();
    assert!(partial.join(&foreign).is_file());
    let a = tempfile::tempdir().unwrap();
    assert_eq!(info, write_all(a.path(), Dtype::F32));
    assert_eq!(files(&a.path().join("store")), files(&t.path().join("store")));
    live.kill().unwrap();
    live.wait().unwrap();
}

#[test]
fn two_writers_on_one_partial_directory_both_finish() {
    // A writer suspended mid-shard while another takes over the stage, then wakes up.
    let a = tempfile::tempdir().unwrap();
    let info = write_all(a.path(), Dtype::F32);

    let t = tempfile::tempdir().unwrap();
    let (partial, dest) = (t.path().join("partial"), t.path().join("store"));
    let mut first = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    push(&mut first, 0, 100); // shards 0, 1 done; a row group of shard 2 in its temporary
    let second = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    assert_eq!((second.resume_row(), second.discarded().len()), (80, 0));
    assert_eq!(
        names(&partial).iter().filter(|n| n.ends_with(".tmp")).count(),
        1,
        "the first writer's temporary is kept"
    );
    assert_eq!(resume(second, &dest), info);
    assert_eq!(files(&a.path().join("store")), files(&dest));

    // The first writer wakes up and completes: its shards match what is there.
    push(&mut first, 100, (TOTAL - 100) as usize);
    assert_eq!(first.finish(&dest).unwrap(), info);
    assert_eq!(files(&a.path().join("store")), files(&dest));
    assert!(!partial.exists());

    // Suspended between shards (no temporary): the other writer's finish removes the
    // partial directory; the first one recreates it and finishes all the same.
    let t = tempfile::tempdir().unwrap();
    let (partial, dest) = (t.path().join("partial"), t.path().join("store"));
    let mut first = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    push(&mut first, 0, 80);
    assert_eq!(resume(ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap(), &dest), info);
    assert!(!partial.exists());
    push(&mut first, 80, (TOTAL - 80) as usize);
    assert_eq!(first.finish(&dest).unwrap(), info);
    assert_eq!(files(&a.path().join("store")), files(&dest));
    assert!(!partial.exists());
}

#[test]
fn non_finite_values_are_refused_naming_hook_and_row() {
    let a = tempfile::tempdir().unwrap();
    let info = write_all(a.path(), Dtype::F32);
    let t = tempfile::tempdir().unwrap();
    let mut w = ShardedWriter::open(&t.path().join("partial"), meta(Dtype::F32), opts()).unwrap();
    let mut h = data(0, 30).3;
    h[1][21 * 5 + 3] = f32::NAN;
    let e = push_hooks(&mut w, 0, &h).unwrap_err();
    let msg = e.to_string();
    match &e {
        DataError::NonFinite { hook, row, value, .. } => {
            assert_eq!((hook.as_str(), *row, value.as_str()), (HOOKS[1].0, 21, "NaN"))
        }
        other => panic!("{other:?}"),
    }
    assert!(msg.contains(HOOKS[1].0) && msg.contains("row 21") && msg.contains("NaN"), "{msg}");
    // Rows of the row group holding it were not taken; the writer goes on from there.
    assert_eq!(w.rows_done(), 16);
    let mut h = data(16, 20).3;
    h[0][7] = f32::NEG_INFINITY;
    let e = push_hooks(&mut w, 16, &h).unwrap_err();
    assert!(
        matches!(&e, DataError::NonFinite { hook, row: 16, value, .. } if hook == HOOKS[0].0 && value == "-inf"),
        "{e}"
    );
    assert_eq!(w.rows_done(), 16);
    push(&mut w, 16, (TOTAL - 16) as usize);
    assert_eq!(w.nonfinite_count(), 0);
    assert_eq!(w.finish(&t.path().join("store")).unwrap(), info);
    assert_eq!(files(&a.path().join("store")), files(&t.path().join("store")));

    // float16 stores also refuse finite values that become infinite as float16.
    let t = tempfile::tempdir().unwrap();
    let mut w = ShardedWriter::open(&t.path().join("partial"), meta(Dtype::F16), opts()).unwrap();
    let mut h = data(0, 8).3;
    h[0][5 * 12] = 70000.0;
    h[0][4 * 12 + 1] = 65504.0; // the largest float16
    h[0][4 * 12 + 2] = -65519.0; // rounds to -65504
    let e = push_hooks(&mut w, 0, &h).unwrap_err();
    assert!(matches!(&e, DataError::NonFinite { row: 5, value, .. } if value.contains("float16")), "{e}");
    let mut h = data(0, 8).3;
    h[1][3 * 5 + 4] = -65520.0; // the first value that rounds to -infinity
    let e = push_hooks(&mut w, 0, &h).unwrap_err();
    assert!(matches!(&e, DataError::NonFinite { row: 3, .. }), "{e}");
    assert_eq!(half::f16::from_f32(-65520.0), half::f16::NEG_INFINITY);
    assert_eq!(half::f16::from_f32(-65519.0).to_f32(), -65504.0);
}

#[test]
fn allowed_non_finite_values_are_stored_and_counted() {
    let t = tempfile::tempdir().unwrap();
    let partial = t.path().join("partial");
    let o = WriterOptions { allow_nonfinite: true, ..opts() };
    let mut w = ShardedWriter::open(&partial, meta(Dtype::F32), o.clone()).unwrap();
    let wj = std::fs::read_to_string(partial.join("writer.json")).unwrap();
    assert!(wj.contains("\"allow_nonfinite\": true"), "{wj}");
    let mut h = data(0, TOTAL as usize).3;
    h[0][0] = f32::NAN;
    h[0][100 * 12 + 11] = f32::INFINITY;
    h[1][189 * 5] = f32::NEG_INFINITY;
    push_hooks(&mut w, 0, &h).unwrap();
    assert_eq!(w.nonfinite_count(), 3);
    w.finish(&t.path().join("store")).unwrap();
    let r = ActivationReader::open(&t.path().join("store"), &[HOOKS[0].0, HOOKS[1].0]).unwrap();
    let batches: Vec<Batch> = r.batches(64).collect::<Result<_, _>>().unwrap();
    let got0: Vec<f32> = batches.iter().flat_map(|b| b.hooks[0].clone()).collect();
    let got1: Vec<f32> = batches.iter().flat_map(|b| b.hooks[1].clone()).collect();
    assert!(got0[0].is_nan());
    assert_eq!(got0[100 * 12 + 11], f32::INFINITY);
    assert_eq!(got1[189 * 5], f32::NEG_INFINITY);
    assert_eq!(got0[1..], h[0][1..]);

    // float16: overflowing values are counted too.
    let mut w = ShardedWriter::open(&t.path().join("partial16"), meta(Dtype::F16), o).unwrap();
    let mut h = data(0, 4).3;
    h[0][3] = 1e6;
    h[1][2] = f32::NAN;
    push_hooks(&mut w, 0, &h).unwrap();
    assert_eq!(w.nonfinite_count(), 2);
}

#[test]
fn writer_identity_is_unchanged_without_allow_nonfinite() {
    // Partial directories started before the option existed resume with the default.
    let t = tempfile::tempdir().unwrap();
    let partial = t.path().join("partial");
    let w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    drop(w);
    let wj = std::fs::read_to_string(partial.join("writer.json")).unwrap();
    assert!(!wj.contains("allow_nonfinite"), "{wj}");
    // Turning it on resumes the saved (finite) shards ...
    let mut w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    push_hooks(&mut w, 0, &data(0, ROWS_PER_SHARD as usize).3).unwrap();
    drop(w);
    let w = ShardedWriter::open(&partial, meta(Dtype::F32), WriterOptions { allow_nonfinite: true, ..opts() }).unwrap();
    assert_eq!((w.next_shard_index(), w.discarded().len()), (1, 0));
    drop(w);
    // ... turning it off again starts over: saved shards may hold values it refuses.
    let w = ShardedWriter::open(&partial, meta(Dtype::F32), opts()).unwrap();
    assert_eq!(w.next_shard_index(), 0);
    assert!(w.discarded()[0].contains("allow_nonfinite"), "{:?}", w.discarded());
    drop(w);
    assert!(!std::fs::read_to_string(partial.join("writer.json")).unwrap().contains("allow_nonfinite"));
}
