//! Tokenization against golden fixtures from TransformerLens (3.x and 2.x) and SAELens
//! (scripts/fixtures/data_tokenize.py, data_tokenize_tl2.py), and the corpus readers.

use saepipe_data::corpus::{Corpus, FileFormat, FormatChoice};
use saepipe_data::tokenize::{
    Mode, SpecialTokens, Tl2Pad, TokenizeOptions, Tokenizer, for_each_context, tokenize_to_table,
};
use saepipe_data::{DataError, TokenTableReader};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenize")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&fixtures().join("tokenizer.json")).unwrap()
}

fn corpus(name: &str) -> Corpus {
    Corpus::resolve(&[fixtures().join(name).to_str().unwrap()], &FormatChoice::Auto, "text").unwrap()
}

fn contexts(c: &Corpus, opts: &TokenizeOptions) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for_each_context(c, &tokenizer(), opts, |x| {
        out.push(x.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn special_tokens_and_per_document_ids_match_transformers() {
    let e = expected();
    let tok = tokenizer();
    assert_eq!(tok.special.bos, Some(e["bos"].as_u64().unwrap() as u32));
    assert_eq!(tok.special.eos, Some(e["eos"].as_u64().unwrap() as u32));
    assert_eq!(tok.special.pad, None);
    let docs: Vec<String> = corpus("corpus.jsonl").documents().take(50).collect::<Result<_, _>>().unwrap();
    let want = rows(&e["doc_tokens_first_50"]);
    for (d, w) in docs.iter().zip(&want) {
        assert_eq!(&tok.encode(d, false).unwrap(), w, "document {d:?}");
    }
}

#[test]
fn saelens_mode_matches_saelens() {
    let e = expected();
    let got = contexts(&corpus("corpus.jsonl"), &TokenizeOptions::new(Mode::SaeLens, 32));
    let want = rows(&e["saelens"]);
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

#[test]
fn transformer_lens_mode_matches_tokenize_and_concatenate() {
    let e = expected();
    let c = corpus("corpus.jsonl");
    let mut opts = TokenizeOptions::new(Mode::TransformerLens, 32);
    assert_eq!(contexts(&c, &opts), rows(&e["tl_num_proc_10"]), "num_proc=10");
    opts.transformer_lens.num_proc = None;
    assert_eq!(contexts(&c, &opts), rows(&e["tl_num_proc_none"]), "num_proc=None");
    // Fewer tokens than one row: one row padded with EOS (no pad token).
    assert_eq!(contexts(&corpus("tiny.jsonl"), &opts), rows(&e["tl_tiny_num_proc_none"]));
}

#[test]
fn parquet_directory_and_glob_read_the_same_documents() {
    let jsonl: Vec<String> = corpus("corpus.jsonl").documents().collect::<Result<_, _>>().unwrap();
    let dir = corpus("corpus_parquet");
    assert_eq!(dir.files.len(), 2);
    assert!(matches!(&dir.files[0].1, FileFormat::Parquet { column } if column == "text"));
    let from_dir: Vec<String> = dir.documents().collect::<Result<_, _>>().unwrap();
    assert_eq!(from_dir, jsonl);
    let pattern = fixtures().join("corpus_parquet/data/train-*.parquet");
    let globbed = Corpus::resolve(&[pattern.to_str().unwrap()], &FormatChoice::Auto, "text").unwrap();
    assert_eq!(globbed.documents().collect::<Result<Vec<_>, _>>().unwrap(), jsonl);
    let e = expected();
    assert_eq!(contexts(&dir, &TokenizeOptions::new(Mode::SaeLens, 32)), rows(&e["saelens"]));
}

#[test]
fn missing_parquet_column_and_bad_jsonl_name_the_file() {
    let dir = Corpus::resolve(&[fixtures().join("corpus_parquet").to_str().unwrap()], &FormatChoice::Auto, "content")
        .unwrap();
    let err = dir.documents().next().unwrap().unwrap_err().to_string();
    assert!(err.contains("train-00000-of-00002.parquet") && err.contains("no column `content`"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.jsonl");
    std::fs::write(&p, "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n").unwrap();
    let c = Corpus::resolve(&[p.to_str().unwrap()], &FormatChoice::Auto, "text").unwrap();
    let r: Vec<_> = c.documents().collect();
    assert_eq!(r[0].as_ref().unwrap(), "ok");
    let err = r[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("bad.jsonl") && err.contains("line 2") && err.contains("`text`"), "{err}");
    assert!(matches!(
        Corpus::resolve(&[tmp.path().join("nope*.jsonl").to_str().unwrap()], &FormatChoice::Auto, "text"),
        Err(DataError::Corpus { .. })
    ));
}

#[test]
fn text_files_by_line_and_whole_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.txt"), "first line\r\n\nthird\n").unwrap();
    std::fs::write(tmp.path().join("b.txt"), "whole\nfile").unwrap();
    let lines = Corpus::resolve(&[tmp.path().to_str().unwrap()], &FormatChoice::Auto, "text").unwrap();
    let docs: Vec<String> = lines.documents().collect::<Result<_, _>>().unwrap();
    assert_eq!(docs, ["first line", "", "third", "whole", "file"]);
    let files =
        Corpus::resolve(&[tmp.path().to_str().unwrap()], &FormatChoice::Fixed(FileFormat::TextFile), "text").unwrap();
    let docs: Vec<String> = files.documents().collect::<Result<_, _>>().unwrap();
    assert_eq!(docs, ["first line\r\n\nthird\n", "whole\nfile"]);
}

#[test]
fn document_shuffle_is_a_seeded_permutation() {
    let c = corpus("corpus.jsonl");
    let plain: Vec<String> = c.documents().collect::<Result<_, _>>().unwrap();
    let a: Vec<String> = c.shuffled_documents(7, 100).collect::<Result<_, _>>().unwrap();
    let b: Vec<String> = c.shuffled_documents(7, 100).collect::<Result<_, _>>().unwrap();
    let other: Vec<String> = c.shuffled_documents(8, 100).collect::<Result<_, _>>().unwrap();
    assert_eq!(a, b);
    assert_ne!(a, plain);
    assert_ne!(a, other);
    let (mut s1, mut s2) = (a.clone(), plain.clone());
    s1.sort();
    s2.sort();
    assert_eq!(s1, s2);
    // Shuffled tokenization is reproducible too.
    let mut opts = TokenizeOptions::new(Mode::SaeLens, 16);
    opts.shuffle = Some((7, 100));
    assert_eq!(contexts(&c, &opts), contexts(&c, &opts));
}

#[test]
fn token_table_round_trip_and_max_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tokens.parquet");
    let mut opts = TokenizeOptions::new(Mode::SaeLens, 32);
    opts.max_tokens = Some(32 * 100 + 31);
    let tok = tokenizer();
    let s =
        tokenize_to_table(&corpus("corpus.jsonl"), &tok, &opts, &out, serde_json::json!({"dataset": "fixture"}), &[])
            .unwrap();
    assert_eq!((s.contexts, s.tokens), (100, 3200));
    let r = TokenTableReader::open(&out).unwrap();
    assert_eq!(r.num_contexts, 100);
    assert_eq!(r.meta.mode, "saelens");
    assert_eq!(r.meta.context_size, 32);
    assert_eq!(r.meta.bos_id, Some(0));
    assert_eq!(
        r.meta.tokenizer_fingerprint,
        blake3::hash(&std::fs::read(fixtures().join("tokenizer.json")).unwrap()).to_hex().to_string()
    );
    assert_eq!(r.meta.extra["user"]["dataset"], "fixture");
    let got: Vec<Vec<u32>> = r.collect::<Result<_, _>>().unwrap();
    assert_eq!(got, rows(&expected()["saelens"])[..100].to_vec());
    assert!(!tmp.path().join("tokens.parquet.tmp").exists());
    // Same input, same bytes (no timestamps).
    let out2 = tmp.path().join("again.parquet");
    tokenize_to_table(&corpus("corpus.jsonl"), &tok, &opts, &out2, serde_json::json!({"dataset": "fixture"}), &[])
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
}

#[test]
fn tokenization_streams_and_stops_at_max_tokens() {
    // A corpus whose tail is broken: with max_tokens reached early it is never read,
    // which shows documents are pulled lazily rather than loaded up front.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("c.jsonl");
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!("{{\"text\": \"the model layer {i} of the stream\"}}\n"));
    }
    text.push_str("not json\n");
    std::fs::write(&p, text).unwrap();
    let c = Corpus::resolve(&[p.to_str().unwrap()], &FormatChoice::Auto, "text").unwrap();
    let mut opts = TokenizeOptions::new(Mode::SaeLens, 16);
    opts.max_tokens = Some(16 * 10);
    assert_eq!(contexts(&c, &opts).len(), 10);
    opts.max_tokens = None;
    let err = for_each_context(&c, &tokenizer(), &opts, |_| Ok(())).unwrap_err().to_string();
    assert!(err.contains("c.jsonl") && err.contains("line 5001"), "{err}");
}

fn expected_tl2() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected_tl2.json")).unwrap()).unwrap()
}

fn tl2_opts(pad: &str, num_proc: Option<usize>) -> (TokenizeOptions, Option<u32>) {
    let mut opts = TokenizeOptions::new(Mode::TransformerLens2, 32);
    opts.transformer_lens.num_proc = num_proc;
    let own = expected_tl2()["meta"]["own_pad_id"].as_u64().unwrap() as u32;
    let own_pad = match pad {
        "eos" => None,
        "none" => {
            opts.transformer_lens.tl2_pad = Tl2Pad::Added;
            None
        }
        "own" => Some(own),
        other => panic!("{other}"),
    };
    (opts, own_pad)
}

fn tl2_contexts(c: &Corpus, pad: &str, num_proc: Option<usize>, add_bos: bool) -> Vec<Vec<u32>> {
    let (mut opts, own_pad) = tl2_opts(pad, num_proc);
    opts.transformer_lens.add_bos_token = add_bos;
    let tok = tokenizer();
    let special = SpecialTokens { pad: own_pad, ..tok.special };
    let tok = tok.with_special(special);
    let mut out = Vec::new();
    for_each_context(c, &tok, &opts, |x| {
        out.push(x.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

fn check(got: Vec<Vec<u32>>, want: Vec<Vec<u32>>, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{what}: row {i}");
    }
}

/// TransformerLens 2.x `tokenize_and_concatenate` (the version is in the fixture's meta):
/// EOS-string joins, 20 character chunks, pad removal (pad = EOS as a HookedTransformer
/// holds the tokenizer, `<PAD>` added to a bare one, or the tokenizer's own), 1000-document
/// batches inside num_proc contiguous shards.
#[test]
fn transformer_lens_2_mode_matches_tokenize_and_concatenate_2x() {
    let e = expected_tl2();
    assert!(e["meta"]["transformer_lens"].as_str().unwrap().starts_with("2."));
    let c = corpus("corpus.jsonl");
    check(tl2_contexts(&c, "eos", Some(10), true), rows(&e["pad_eos_num_proc_10"]), "pad=eos, num_proc=10");
    check(tl2_contexts(&c, "eos", None, true), rows(&e["pad_eos_num_proc_none"]), "pad=eos, num_proc=None");
    check(tl2_contexts(&c, "none", Some(10), true), rows(&e["no_pad_num_proc_10"]), "<PAD> added, num_proc=10");
    check(tl2_contexts(&c, "own", None, true), rows(&e["pad_token_num_proc_none"]), "own pad token, num_proc=None");
    // num_proc=1 shards like None.
    check(tl2_contexts(&c, "eos", Some(1), true), rows(&e["pad_eos_num_proc_none"]), "pad=eos, num_proc=1");
    // Removing every EOS (pad = EOS) is what sets this mode apart: no EOS in the rows.
    let eos = tokenizer().special.eos.unwrap();
    assert!(rows(&e["pad_eos_num_proc_10"]).iter().all(|r| !r[1..].contains(&eos)));
    assert!(rows(&e["no_pad_num_proc_10"]).iter().any(|r| r[1..].contains(&eos)));

    let tmp = tempfile::tempdir().unwrap();
    for (i, case) in e["small"].as_array().unwrap().iter().enumerate() {
        let p = tmp.path().join(format!("small{i}.jsonl"));
        let docs: Vec<String> = serde_json::from_value(case["docs"].clone()).unwrap();
        let text: String = docs.iter().map(|d| serde_json::json!({ "text": d }).to_string() + "\n").collect();
        std::fs::write(&p, text).unwrap();
        let c = Corpus::resolve(&[p.to_str().unwrap()], &FormatChoice::Auto, "text").unwrap();
        let num_proc = case["num_proc"].as_u64().map(|n| n as usize);
        let got = tl2_contexts(&c, case["pad"].as_str().unwrap(), num_proc, case["add_bos_token"].as_bool().unwrap());
        check(got, rows(&case["rows"]), &format!("small case {i}: {docs:?}, pad {}", case["pad"]));
    }
}

#[test]
fn transformer_lens_2_table_records_mode_and_pad() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tokens.parquet");
    let (mut opts, _) = tl2_opts("none", Some(10));
    opts.max_tokens = Some(32 * 50);
    let s = tokenize_to_table(&corpus("corpus.jsonl"), &tokenizer(), &opts, &out, serde_json::json!({}), &[]).unwrap();
    assert_eq!(s.contexts, 50);
    let r = TokenTableReader::open(&out).unwrap();
    assert_eq!(r.meta.mode, "transformer_lens_2");
    assert_eq!(r.meta.pad_id, Some(expected_tl2()["meta"]["added_pad_id"].as_u64().unwrap() as u32));
    let got: Vec<Vec<u32>> = r.collect::<Result<_, _>>().unwrap();
    assert_eq!(got, rows(&expected_tl2()["no_pad_num_proc_10"])[..50].to_vec());
}
