//! Every hook point, the logits and the per-token loss of the Llama family
//! (Llama 2/3/3.1/3.2, Mistral, Qwen2) equal TransformerLens 3.9's within 1e-4
//! relative, without and with weight processing (fixtures from
//! scripts/fixtures/model_tl_llama.py): `llama` has grouped-query attention and
//! llama3 rope scaling, `mistral` one key/value head, head_dim ≠ d_model /
//! n_heads and tied embeddings, `qwen2` query/key/value biases.

#[path = "support/golden.rs"]
mod golden;
#[path = "support/shards.rs"]
mod shards;

use golden::{check_optional, check_runner, fixture};
use saepipe_model::{LnHook, LoadOptions, Model, Processing, RunRequest};
use safetensors::SafeTensors;
use std::path::Path;

const FAMILY: [&str; 3] = ["llama", "mistral", "qwen2"];

fn load(dir: &Path, processing: Processing, ln_hook: LnHook) -> Model {
    Model::load(dir, &LoadOptions { processing: Some(processing), ln_hook }).unwrap()
}

fn meta(arch: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(arch).join("meta.json")).unwrap()).unwrap()
}

/// The golden file of a mode: a mode whose TransformerLens hooks equal another
/// mode's (the script compares them) is recorded in meta.json's `same_as`
/// rather than stored twice.
fn golden_mode(arch: &str, mode: &str) -> String {
    meta(arch)["same_as"][mode].as_str().unwrap_or(mode).to_string()
}

fn check(arch: &str, mode: &str) {
    let model = load(&fixture(arch), Processing::parse(mode).unwrap(), LnHook::PreAffine);
    check_runner(&model, arch, &golden_mode(arch, mode), 1e-4);
}

#[test]
fn llama_without_processing() {
    check("llama", "none");
}
#[test]
fn llama_with_full_processing() {
    check("llama", "full");
}
#[test]
fn mistral_without_processing() {
    check("mistral", "none");
}
#[test]
fn mistral_with_full_processing() {
    check("mistral", "full");
}

#[test]
fn qwen2_without_processing() {
    check("qwen2", "none");
}
#[test]
fn qwen2_with_full_processing() {
    check("qwen2", "full");
}

/// TransformerLens's optional hooks, without and with weight processing.
#[test]
fn optional_hooks_match_transformer_lens() {
    for arch in FAMILY {
        for mode in ["none", "full"] {
            let model = load(&fixture(arch), Processing::parse(mode).unwrap(), LnHook::PreAffine);
            check_optional(&model, arch, &golden_mode(arch, mode), mode, 1e-4);
        }
    }
}

#[test]
fn processing_steps_one_at_a_time() {
    for arch in FAMILY {
        for mode in ["fold_ln", "fold_ln+center_writing_weights", "fold_ln+center_unembed", "fold_ln+fold_value_biases"]
        {
            check(arch, mode);
        }
        // TransformerLens does not center an RMSNorm model's writing weights;
        // folding value biases changes nothing where they are zero.
        let meta = meta(arch);
        assert_eq!(meta["same_as"]["fold_ln+center_writing_weights"], "fold_ln");
        let zero_value_biases = arch != "qwen2";
        assert_eq!(meta["same_as"]["fold_ln+fold_value_biases"] == "fold_ln", zero_value_biases, "{arch}");
    }
}

/// TransformerLens skips center_writing_weights on RMSNorm models; the model
/// records the processing it actually applied.
#[test]
fn rms_models_record_the_processing_they_get() {
    let model = load(&fixture("llama"), Processing::FULL, LnHook::PreAffine);
    assert_eq!(model.processing, Processing { center_writing_weights: false, ..Processing::FULL });
    assert!(model.params.layers.iter().all(|l| l.ln1.is_none() && l.ln2.is_none()));
}

/// RMSNorm's `hook_normalized` is before the norm's weight in TransformerLens
/// 2.x as in 3.x: the 2.x semantics change nothing on these models.
#[test]
fn post_affine_semantics_leave_rms_hooks_unchanged() {
    for arch in FAMILY {
        let model = load(&fixture(arch), Processing::NONE, LnHook::PostAffine);
        check_runner(&model, arch, "none", 1e-4);
    }
}

/// The fixtures' weights as bf16, in two shards with an index (as the hub
/// ships Llama checkpoints), give the same run as the f32 file holding the
/// same bf16-rounded values.
#[test]
fn bf16_sharded_checkpoint_matches_f32() {
    for arch in FAMILY {
        shards::bf16_shards_match_f32(arch, "blocks.1.attn.hook_rot_k");
    }
}

#[test]
fn hook_shapes_follow_grouped_query_attention() {
    let model = load(&fixture("mistral"), Processing::NONE, LnHook::PreAffine);
    let c = &model.cfg;
    assert_eq!((c.n_heads, c.n_kv_heads, c.d_head, c.d_model), (4, 1, 16, 32));
    assert_eq!(model.hook_shape("blocks.0.attn.hook_q", 2, 5).unwrap(), vec![2, 5, 4, 16]);
    assert_eq!(model.hook_shape("blocks.0.attn.hook_k", 2, 5).unwrap(), vec![2, 5, 1, 16]);
    assert_eq!(model.hook_shape("blocks.0.attn.hook_rot_k", 2, 5).unwrap(), vec![2, 5, 1, 16]);
    assert_eq!(model.hook_shape("blocks.0.attn.hook_v", 2, 5).unwrap(), vec![2, 5, 1, 16]);
    assert_eq!(model.hook_shape("blocks.0.attn.hook_z", 2, 5).unwrap(), vec![2, 5, 4, 16]);
    assert_eq!(model.hook_shape("blocks.0.mlp.hook_pre_linear", 2, 5).unwrap(), vec![2, 5, 64]);
    assert_eq!(model.check_hook("blocks.0.attn.hook_k").unwrap().token_width(c, 5), 16);
    let e = model.check_hook("hook_pos_embed").unwrap_err().to_string();
    assert!(e.contains("unknown hook point `hook_pos_embed`"), "{e}");
}

/// Mistral's sliding window is not implemented: longer contexts are refused,
/// naming the window; shorter ones (the fixtures) are exact.
#[test]
fn contexts_beyond_the_sliding_window_are_refused() {
    let model = load(&fixture("mistral"), Processing::NONE, LnHook::PreAffine);
    assert_eq!(model.cfg.sliding_window, Some(16));
    let toks = vec![3u32; 17];
    let e = model.run(&toks, 1, 17, &mut RunRequest { want_loss: true, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("sliding attention window of 16 tokens"), "{e}");
    model.run(&toks[..16], 1, 16, &mut RunRequest { want_loss: true, ..Default::default() }).unwrap();
}

#[test]
fn bad_checkpoints_name_the_tensor_and_the_family() {
    let t = tempfile::tempdir().unwrap();
    // An architecture outside the supported list.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama").join("config.json")).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    std::fs::write(t.path().join("config.json"), cfg.to_string()).unwrap();
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(
        e.contains("unsupported architecture `MambaForCausalLM` (its `architectures`; supported: GPT2LMHeadModel, GPTNeoXForCausalLM, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM)"),
        "{e}"
    );
    std::fs::copy(fixture("llama").join("config.json"), t.path().join("config.json")).unwrap();
    let bytes = std::fs::read(fixture("llama").join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    let write = |ts: &[(String, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, safetensors::tensor::TensorView)> = ts
            .iter()
            .map(|(n, s, d)| {
                (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &t.path().join("model.safetensors")).unwrap();
    };
    // k_proj with the query heads' width instead of the key/value heads'.
    let k = "model.layers.1.self_attn.k_proj.weight";
    for t in tensors.iter_mut().filter(|t| t.0 == k) {
        assert_eq!(t.1, vec![16, 32]);
        t.1 = vec![32, 16];
    }
    write(&tensors);
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains(&format!("tensor `{k}` has shape [32, 16], expected [16, 32]")), "{e}");
    tensors.retain(|t| t.0 != "model.layers.0.mlp.gate_proj.weight");
    for t in tensors.iter_mut().filter(|t| t.0 == k) {
        t.1 = vec![16, 32];
    }
    write(&tensors);
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("tensor `model.layers.0.mlp.gate_proj.weight` is missing"), "{e}");
}

/// Qwen2's query, key and value biases are required; its output projection
/// has none; its sliding window is off unless `use_sliding_window` says so.
#[test]
fn qwen2_reads_its_biases() {
    let model = load(&fixture("qwen2"), Processing::NONE, LnHook::PreAffine);
    let c = &model.cfg;
    assert_eq!((c.attention_bias, c.attn_out_bias, c.sliding_window, c.tie_word_embeddings), (true, false, None, true));
    assert!(model.params.layers[1].b_v.iter().any(|&x| x != 0.0));
    assert!(model.params.layers[1].b_o.iter().all(|&x| x == 0.0));
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("qwen2").join("config.json"), t.path().join("config.json")).unwrap();
    let bytes = std::fs::read(fixture("qwen2").join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| n != "model.layers.0.self_attn.k_proj.bias").collect();
    safetensors::serialize_to_file(views, None, &t.path().join("model.safetensors")).unwrap();
    let e = Model::load(t.path(), &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("tensor `model.layers.0.self_attn.k_proj.bias` is missing"), "{e}");
}

/// Per-head inputs and results edited one head at a time, as path patching
/// does: zeroing head 1's query input leaves its query the bias alone
/// (zero here) and no other head's query changed; zeroing a head's result
/// removes exactly its share of hook_attn_out; replaced token ids are what the
/// embedding reads.
#[test]
fn optional_hooks_edit_one_head() {
    let model = load(&fixture("llama"), Processing::NONE, LnHook::PreAffine);
    let (nh, dh, d) = (4, 8, 32);
    let (tokens, batch, ctx) = golden::tokens("llama");
    let run = |edit: Option<&str>| {
        let mut req = RunRequest {
            capture: ["blocks.0.attn.hook_q", "blocks.0.attn.hook_result", "blocks.0.hook_attn_out", "hook_embed"]
                .map(String::from)
                .into(),
            ..Default::default()
        };
        if let Some(name) = edit {
            let width = if name.ends_with("hook_q_input") || name.ends_with("hook_result") { d } else { 1 };
            let f: saepipe_model::HookFn = match width {
                1 => Box::new(|t: &mut [f32], _s: &[usize]| t.iter_mut().for_each(|x| *x = 7.0)),
                _ => Box::new(move |t: &mut [f32], _s: &[usize]| {
                    t.chunks_mut(d).skip(1).step_by(nh).flatten().for_each(|x| *x = 0.0);
                }),
            };
            req.replace.insert(name.to_string(), f);
        }
        model.run(&tokens, batch, ctx, &mut req).unwrap().captured
    };
    let clean = run(None);
    let q_edit = run(Some("blocks.0.hook_q_input"));
    for (i, (a, b)) in
        q_edit["blocks.0.attn.hook_q"].1.chunks(dh).zip(clean["blocks.0.attn.hook_q"].1.chunks(dh)).enumerate()
    {
        if i % nh == 1 {
            assert!(a.iter().all(|&x| x == 0.0), "head 1's query is its (zero) bias");
        } else {
            assert!(golden::rel_err(a, b) < 1e-5, "other heads' queries are unchanged");
        }
    }
    assert_ne!(q_edit["blocks.0.hook_attn_out"].1, clean["blocks.0.hook_attn_out"].1);
    let r_edit = run(Some("blocks.0.attn.hook_result"));
    let result = &clean["blocks.0.attn.hook_result"].1;
    let want: Vec<f32> = clean["blocks.0.hook_attn_out"]
        .1
        .iter()
        .enumerate()
        .map(|(i, x)| x - result[(i / d * nh + 1) * d + i % d])
        .collect();
    assert!(golden::rel_err(&r_edit["blocks.0.hook_attn_out"].1, &want) < 1e-5);
    let t_edit = run(Some("hook_tokens"));
    let embed = &t_edit["hook_embed"].1;
    assert!(embed.chunks(d).all(|row| row == &embed[..d]), "every position embeds token 7");
    let mut bad = RunRequest { capture: ["hook_embed".to_string()].into(), ..Default::default() };
    bad.replace.insert("hook_tokens".into(), Box::new(|t: &mut [f32], _s: &[usize]| t[0] = 50.0));
    let e = model.run(&tokens, batch, ctx, &mut bad).unwrap_err().to_string();
    assert!(e.contains("hook_tokens was replaced by 50, which is not a token id of the vocabulary (0 to 49)"), "{e}");
    // use_attn_in alone is not a model TransformerLens can run with grouped-query attention.
    let mut gqa = RunRequest { capture: ["blocks.0.hook_attn_in".to_string()].into(), ..Default::default() };
    let e = model.run(&tokens, batch, ctx, &mut gqa).unwrap_err().to_string();
    assert!(e.contains("also request a blocks.L.hook_q_input"), "{e}");
}
