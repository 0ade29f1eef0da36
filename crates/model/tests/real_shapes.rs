//! Real Pythia-70m and GPT-2-small shapes (random bf16 weights written in the
//! test): every hook point exists with TransformerLens's name and shape; both
//! GPT-NeoX config dialects parse to the same configuration.

use saepipe_model::{Arch, LoadOptions, Model, ModelConfig, OptionalHooks, Processing, RunRequest};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::path::Path;

const PYTHIA_70M: &str = r#"{
  "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
  "hidden_size": 512, "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
  "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8, "num_hidden_layers": 6,
  "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false, "torch_dtype": "float16",
  "transformers_version": "4.24.0", "use_cache": true, "use_parallel_residual": true, "vocab_size": 50304
}"#;

const GPT2_SMALL: &str = r#"{
  "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1, "bos_token_id": 50256,
  "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
  "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1,
  "summary_activation": null, "summary_first_dropout": 0.1, "summary_proj_to_labels": true,
  "summary_type": "cls_index", "summary_use_proj": true, "vocab_size": 50257
}"#;

/// Writes config.json and random bf16 weights for the given tensor shapes.
fn write_model(dir: &Path, config: &str, tensors: &[(String, Vec<usize>)]) {
    std::fs::write(dir.join("config.json"), config).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| {
            let n: usize = shape.iter().product();
            let mut out = Vec::with_capacity(2 * n);
            for _ in 0..n {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let x = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                out.extend(half::bf16::from_f32(x).to_le_bytes());
            }
            out
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), d)| (n.clone(), TensorView::new(Dtype::BF16, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

fn pythia_tensors(d: usize, layers: usize, f: usize, v: usize) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![("gpt_neox.embed_in.weight".to_string(), vec![v, d])];
    for l in 0..layers {
        for (n, s) in [
            ("input_layernorm.weight", vec![d]),
            ("input_layernorm.bias", vec![d]),
            ("post_attention_layernorm.weight", vec![d]),
            ("post_attention_layernorm.bias", vec![d]),
            ("attention.query_key_value.weight", vec![3 * d, d]),
            ("attention.query_key_value.bias", vec![3 * d]),
            ("attention.dense.weight", vec![d, d]),
            ("attention.dense.bias", vec![d]),
            ("mlp.dense_h_to_4h.weight", vec![f, d]),
            ("mlp.dense_h_to_4h.bias", vec![f]),
            ("mlp.dense_4h_to_h.weight", vec![d, f]),
            ("mlp.dense_4h_to_h.bias", vec![d]),
        ] {
            t.push((format!("gpt_neox.layers.{l}.{n}"), s));
        }
    }
    t.push(("gpt_neox.final_layer_norm.weight".into(), vec![d]));
    t.push(("gpt_neox.final_layer_norm.bias".into(), vec![d]));
    t.push(("embed_out.weight".into(), vec![v, d]));
    t
}

fn gpt2_tensors(d: usize, layers: usize, v: usize, n_ctx: usize) -> Vec<(String, Vec<usize>)> {
    // The original `gpt2` repo's names: no `transformer.` prefix, no lm_head (tied).
    let mut t = vec![("wte.weight".to_string(), vec![v, d]), ("wpe.weight".to_string(), vec![n_ctx, d])];
    for l in 0..layers {
        for (n, s) in [
            ("ln_1.weight", vec![d]),
            ("ln_1.bias", vec![d]),
            ("attn.c_attn.weight", vec![d, 3 * d]),
            ("attn.c_attn.bias", vec![3 * d]),
            ("attn.c_proj.weight", vec![d, d]),
            ("attn.c_proj.bias", vec![d]),
            ("ln_2.weight", vec![d]),
            ("ln_2.bias", vec![d]),
            ("mlp.c_fc.weight", vec![d, 4 * d]),
            ("mlp.c_fc.bias", vec![4 * d]),
            ("mlp.c_proj.weight", vec![4 * d, d]),
            ("mlp.c_proj.bias", vec![d]),
        ] {
            t.push((format!("h.{l}.{n}"), s));
        }
    }
    t.push(("ln_f.weight".into(), vec![d]));
    t.push(("ln_f.bias".into(), vec![d]));
    t
}

/// Runs 1×4 tokens capturing every hook and checks the TransformerLens names and shapes.
fn check_all_hooks(model: &Model, per_layer: &[&str], global: &[&str], dims: &[(&str, Vec<usize>)]) {
    let n_layers = model.cfg.n_layers;
    let mut want: Vec<String> = global.iter().map(|s| s.to_string()).collect();
    for l in 0..n_layers {
        want.extend(per_layer.iter().map(|h| format!("blocks.{l}.{h}")));
    }
    let all = model.hook_names();
    let optional = |n: &String| model.check_hook(n).unwrap().is_optional();
    let mut got: Vec<String> = all.iter().filter(|n| !optional(n)).cloned().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let (batch, ctx) = (1, 4);
    let tokens = [0u32, 17, 50255, 3];
    let mut req =
        RunRequest { capture: got.iter().cloned().collect(), want_logits: true, want_loss: true, ..Default::default() };
    let out = model.run(&tokens, batch, ctx, &mut req).unwrap();
    for name in &got {
        let leaf = name.rsplit('.').next().unwrap();
        let want_shape = &dims.iter().find(|(k, _)| *k == leaf).unwrap_or_else(|| panic!("no shape for {name}")).1;
        let (shape, values) = &out.captured[name];
        assert_eq!(shape, want_shape, "{name}");
        assert_eq!(&model.hook_shape(name, batch, ctx).unwrap(), want_shape, "{name}");
        assert_eq!(values.len(), want_shape.iter().product::<usize>(), "{name}");
        assert!(values.iter().all(|x| x.is_finite() || leaf == "hook_attn_scores"), "{name} has non-finite values");
    }
    // With TransformerLens's optional hooks too: each has the shape its name
    // gives in a run that requests them (ln1's with a head dimension).
    let opt = OptionalHooks::of(all.iter().map(String::as_str));
    let mut with_optional = RunRequest { capture: all.iter().cloned().collect(), ..Default::default() };
    let captured = model.run(&tokens, batch, ctx, &mut with_optional).unwrap().captured;
    assert!(all.iter().any(optional) && captured.len() == all.len());
    for name in &all {
        let (shape, values) = &captured[name];
        assert_eq!(shape, &model.check_hook(name).unwrap().shape_with(&model.cfg, batch, ctx, opt), "{name}");
        assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
    }
    assert_eq!(out.logits.as_ref().unwrap().len(), ctx * model.cfg.d_vocab);
    let loss = out.loss_per_token.unwrap();
    assert_eq!(loss.len(), ctx - 1);
    assert!(loss.iter().all(|x| x.is_finite() && *x > 0.0));
}

#[test]
fn pythia_70m_shapes() {
    let t = tempfile::tempdir().unwrap();
    write_model(t.path(), PYTHIA_70M, &pythia_tensors(512, 6, 2048, 50304));
    let model =
        Model::load(t.path(), &LoadOptions { processing: Some(Processing::FULL), ..Default::default() }).unwrap();
    let c = &model.cfg;
    assert_eq!(
        (c.arch, c.d_model, c.n_layers, c.n_heads, c.d_head, c.d_mlp, c.d_vocab),
        (Arch::NeoX, 512, 6, 8, 64, 2048, 50304)
    );
    assert_eq!((c.rotary_dim, c.rotary_base, c.parallel, c.tie_word_embeddings), (16, 10000.0, true, false));
    let (b, s) = (1, 4);
    let per_layer = [
        "hook_resid_pre",
        "ln1.hook_scale",
        "ln1.hook_normalized",
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        "attn.hook_rot_q",
        "attn.hook_rot_k",
        "attn.hook_attn_scores",
        "attn.hook_pattern",
        "attn.hook_z",
        "hook_attn_out",
        "ln2.hook_scale",
        "ln2.hook_normalized",
        "mlp.hook_pre",
        "mlp.hook_post",
        "hook_mlp_out",
        "hook_resid_post",
    ];
    let global =
        ["hook_embed", "ln_final.hook_scale", "ln_final.hook_normalized", "unembed.hook_in", "unembed.hook_out"];
    let dims = [
        ("hook_embed", vec![b, s, 512]),
        ("hook_resid_pre", vec![b, s, 512]),
        ("hook_scale", vec![b, s, 1]),
        ("hook_normalized", vec![b, s, 512]),
        ("hook_q", vec![b, s, 8, 64]),
        ("hook_k", vec![b, s, 8, 64]),
        ("hook_v", vec![b, s, 8, 64]),
        ("hook_rot_q", vec![b, s, 8, 64]),
        ("hook_rot_k", vec![b, s, 8, 64]),
        ("hook_z", vec![b, s, 8, 64]),
        ("hook_attn_scores", vec![b, 8, s, s]),
        ("hook_pattern", vec![b, 8, s, s]),
        ("hook_attn_out", vec![b, s, 512]),
        ("hook_pre", vec![b, s, 2048]),
        ("hook_post", vec![b, s, 2048]),
        ("hook_mlp_out", vec![b, s, 512]),
        ("hook_resid_post", vec![b, s, 512]),
        ("hook_in", vec![b, s, 512]),
        ("hook_out", vec![b, s, 50304]),
    ];
    check_all_hooks(&model, &per_layer, &global, &dims);
    assert!(model.check_hook("blocks.3.hook_resid_mid").is_err(), "parallel blocks have no resid_mid");
    assert_eq!(model.check_hook("blocks.3.hook_resid_pre").unwrap().layer(), Some(3));
}

#[test]
fn gpt2_small_shapes() {
    let t = tempfile::tempdir().unwrap();
    write_model(t.path(), GPT2_SMALL, &gpt2_tensors(768, 12, 50257, 1024));
    let model = Model::load(t.path(), &LoadOptions::default()).unwrap();
    let c = &model.cfg;
    assert_eq!(
        (c.arch, c.d_model, c.n_layers, c.n_heads, c.d_head, c.d_mlp, c.d_vocab, c.n_ctx),
        (Arch::Gpt2, 768, 12, 12, 64, 3072, 50257, 1024)
    );
    let (b, s) = (1, 4);
    let per_layer = [
        "hook_resid_pre",
        "ln1.hook_scale",
        "ln1.hook_normalized",
        "attn.hook_q",
        "attn.hook_k",
        "attn.hook_v",
        "attn.hook_attn_scores",
        "attn.hook_pattern",
        "attn.hook_z",
        "hook_attn_out",
        "hook_resid_mid",
        "ln2.hook_scale",
        "ln2.hook_normalized",
        "mlp.hook_pre",
        "mlp.hook_post",
        "hook_mlp_out",
        "hook_resid_post",
    ];
    let global = [
        "hook_embed",
        "hook_pos_embed",
        "ln_final.hook_scale",
        "ln_final.hook_normalized",
        "unembed.hook_in",
        "unembed.hook_out",
    ];
    let dims = [
        ("hook_embed", vec![b, s, 768]),
        ("hook_pos_embed", vec![b, s, 768]),
        ("hook_resid_pre", vec![b, s, 768]),
        ("hook_resid_mid", vec![b, s, 768]),
        ("hook_scale", vec![b, s, 1]),
        ("hook_normalized", vec![b, s, 768]),
        ("hook_q", vec![b, s, 12, 64]),
        ("hook_k", vec![b, s, 12, 64]),
        ("hook_v", vec![b, s, 12, 64]),
        ("hook_z", vec![b, s, 12, 64]),
        ("hook_attn_scores", vec![b, 12, s, s]),
        ("hook_pattern", vec![b, 12, s, s]),
        ("hook_attn_out", vec![b, s, 768]),
        ("hook_pre", vec![b, s, 3072]),
        ("hook_post", vec![b, s, 3072]),
        ("hook_mlp_out", vec![b, s, 768]),
        ("hook_resid_post", vec![b, s, 768]),
        ("hook_in", vec![b, s, 768]),
        ("hook_out", vec![b, s, 50257]),
    ];
    check_all_hooks(&model, &per_layer, &global, &dims);
    let e = model.check_hook("blocks.11.hook_resid_psot").unwrap_err().to_string();
    assert!(e.contains("did you mean `blocks.11.hook_resid_post`?"), "{e}");
    let e = model.run(&[0; 1025], 1, 1025, &mut RunRequest::default()).unwrap_err().to_string();
    assert!(e.contains("context 1025 exceeds the model's 1024 positions"), "{e}");
}

#[test]
fn neox_config_dialects_agree() {
    let p = Path::new("config.json");
    let hub: serde_json::Value = serde_json::from_str(PYTHIA_70M).unwrap();
    // transformers >= 5 writes the rotary settings under rope_parameters.
    let mut v5 = hub.clone();
    let o = v5.as_object_mut().unwrap();
    o.remove("rotary_pct");
    o.remove("rotary_emb_base");
    o.insert(
        "rope_parameters".into(),
        serde_json::json!({"partial_rotary_factor": 0.25, "rope_theta": 10000, "rope_type": "default"}),
    );
    o.insert("attention_bias".into(), serde_json::json!(true));
    let a = ModelConfig::from_json(&hub, p).unwrap();
    let b = ModelConfig::from_json(&v5, p).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.rotary_dim, a.rotary_base), (16, 10000.0));
    // Unsupported rotary variants are refused, not silently run as default rotary.
    let mut scaled = v5.clone();
    scaled["rope_parameters"]["rope_type"] = serde_json::json!("linear");
    let e = ModelConfig::from_json(&scaled, p).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("rope_type `linear` is not supported"), "{e}");
    // GPT-2: n_inner null means 4·n_embd.
    let mut g: serde_json::Value = serde_json::from_str(GPT2_SMALL).unwrap();
    g["n_inner"] = serde_json::Value::Null;
    assert_eq!(ModelConfig::from_json(&g, p).unwrap().d_mlp, 3072);
    g["n_inner"] = serde_json::json!(1000);
    assert_eq!(ModelConfig::from_json(&g, p).unwrap().d_mlp, 1000);
    g["n_head"] = serde_json::json!(7);
    let e = ModelConfig::from_json(&g, p).unwrap_err().to_string();
    assert!(e.contains("not divisible by 7 attention heads"), "{e}");
}
