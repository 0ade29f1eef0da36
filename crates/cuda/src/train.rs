//! The training seam's CUDA backend for TopK SAEs ([`GpuTrain`]): the device
//! work of `saepipe_sae::Trainer`'s step — the same loss (MSE + AuxK),
//! gradients, tangent projection of decoder-row gradients, Adam and
//! unit-norm decoder rows as the CPU backend. The step itself (dead latents,
//! the AuxK term, clipping, the learning rate, firing statistics) is the
//! trainer's, shared with the CPU; this file only knows tensors.
//!
//! Gradients: encoder GEMM, per-row top-k (and AuxK top-k over dead
//! latents), sparse decode, residual gradients, then every weight gradient
//! by segmented accumulation over the (row, latent) entries grouped by
//! latent — only active latents' rows are touched and no atomics hit the
//! weights. One host synchronisation per step reads the loss parts, the
//! gradient norm (for clipping) and the firing counts.

use crate::error::{CudaError, Result};
use crate::kernels::{Arg, Gpu, NULL, grid_1d, per_row};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, ValidAsZeroBits};
use saepipe_core::compute::Result as ComputeResult;
use saepipe_core::train::{
    AdamStep, CoderKind, CoderSetup, LossParts, Params, StepBatch, StepSums, TrainOps, TrainTensors,
};
use std::sync::Arc;

/// Blocks of `sum_squares_partial` per gradient tensor.
const NORM_BLOCKS: usize = 256;
/// Rows per split of the b_dec input-side gradient.
const BDEC_SPLIT_ROWS: usize = 256;

struct DevParams {
    enc: CudaSlice<f32>,
    b_enc: CudaSlice<f32>,
    dec: CudaSlice<f32>,
    b_dec: CudaSlice<f32>,
}

impl DevParams {
    fn upload(gpu: &Gpu, p: &Params) -> Result<DevParams> {
        Ok(DevParams {
            enc: gpu.upload(&p.enc)?,
            b_enc: gpu.upload(&p.b_enc)?,
            dec: gpu.upload(&p.dec)?,
            b_dec: gpu.upload(&p.b_dec)?,
        })
    }
    fn zeros(gpu: &Gpu, d: usize, d_sae: usize) -> Result<DevParams> {
        Ok(DevParams {
            enc: gpu.zeros(d_sae * d)?,
            b_enc: gpu.zeros(d_sae)?,
            dec: gpu.zeros(d_sae * d)?,
            b_dec: gpu.zeros(d)?,
        })
    }
    fn download(&self, gpu: &Gpu) -> Result<Params> {
        Ok(Params {
            enc: gpu.download(&self.enc)?,
            b_enc: gpu.download(&self.b_enc)?,
            dec: gpu.download(&self.dec)?,
            b_dec: gpu.download(&self.b_dec)?,
            skip: None,
        })
    }
}

/// Per-batch buffers, grown when a larger batch arrives.
struct Scratch {
    rows: usize,
    /// Entry slots per row (top-k plus AuxK).
    k2: usize,
    x: CudaSlice<f32>,
    xs: CudaSlice<f32>,
    xin: CudaSlice<f32>,
    pre: CudaSlice<f32>,
    pre_aux: Option<CudaSlice<f32>>,
    /// Entries [rows, k + k_aux]: top-k slots then AuxK slots per row.
    idx: CudaSlice<i32>,
    val: CudaSlice<f32>,
    dpre: CudaSlice<f32>,
    perm: CudaSlice<i32>,
    sort_tmp: CudaSlice<i32>,
    yhat: CudaSlice<f32>,
    g: CudaSlice<f32>,
    a: CudaSlice<f32>,
    h: CudaSlice<f32>,
    row_se: CudaSlice<f32>,
    row_var: CudaSlice<f32>,
    row_ae: CudaSlice<f32>,
}

/// TopK SAE training tensors on a GPU, with their gradients and scratch.
pub struct GpuTrain {
    gpu: Arc<Gpu>,
    d: usize,
    d_sae: usize,
    k: usize,
    /// Whether b_dec is subtracted from the scaled input before encoding.
    apply_b_dec: bool,
    params: DevParams,
    adam_m: DevParams,
    adam_v: DevParams,
    grads: DevParams,
    scratch: Option<Scratch>,
    counts: CudaSlice<i32>,
    offsets: CudaSlice<i32>,
    cursor: CudaSlice<i32>,
    fire: CudaSlice<i32>,
    dead: CudaSlice<u8>,
    ybar: CudaSlice<f32>,
    bdec_partial: CudaSlice<f32>,
    bdec_tmp: CudaSlice<f32>,
    norm_partial: CudaSlice<f64>,
}

fn alloc<T: DeviceRepr + ValidAsZeroBits>(gpu: &Gpu, n: usize) -> Result<CudaSlice<T>> {
    gpu.zeros::<T>(n)
}

impl GpuTrain {
    /// The k of a setup the GPU trains (TopK SAEs without a skip
    /// connection), or why it does not.
    pub fn supports(setup: &CoderSetup) -> std::result::Result<usize, String> {
        let CoderKind::TopK { k } = setup.kind else {
            return Err(format!("GPU training implements TopK SAEs; {:?} trains on the CPU", setup.kind));
        };
        if setup.d_in != setup.d_out || setup.skip_connection {
            return Err("GPU training of transcoders / skip connections; use the CPU trainer".into());
        }
        Ok(k)
    }

    /// Uploads a trainer's tensors (`Trainer::move_to`). Setups other than
    /// [`GpuTrain::supports`]'s are refused with the reason.
    pub fn new(gpu: Arc<Gpu>, setup: &CoderSetup, t: TrainTensors) -> Result<GpuTrain> {
        let k = GpuTrain::supports(setup).map_err(CudaError::Unsupported)?;
        let (d, d_sae) = (setup.d_in, setup.d_sae);
        if k == 0 || k > d_sae {
            return Err(CudaError::Shape(format!("k = {k} must be in 1..={d_sae}")));
        }
        if !(t.params.fits(setup) && t.adam_m.fits(setup) && t.adam_v.fits(setup)) {
            return Err(CudaError::Shape(format!("training tensors do not match d_in {d}, d_sae {d_sae}")));
        }
        let splits = d_sae.div_ceil(BDEC_SPLIT_ROWS);
        let g = &gpu;
        Ok(GpuTrain {
            params: DevParams::upload(g, &t.params)?,
            adam_m: DevParams::upload(g, &t.adam_m)?,
            adam_v: DevParams::upload(g, &t.adam_v)?,
            grads: DevParams::zeros(g, d, d_sae)?,
            counts: alloc(g, d_sae)?,
            offsets: alloc(g, d_sae + 1)?,
            cursor: alloc(g, d_sae)?,
            fire: alloc(g, d_sae)?,
            dead: alloc(g, d_sae)?,
            ybar: alloc(g, d)?,
            bdec_partial: alloc(g, splits * d)?,
            bdec_tmp: alloc(g, d)?,
            norm_partial: alloc(g, 4 * NORM_BLOCKS)?,
            scratch: None,
            d,
            d_sae,
            k,
            apply_b_dec: setup.apply_b_dec_to_input,
            gpu,
        })
    }

    /// The device it trains on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Buffers for `n` rows of `k2` entries. The AuxK share grows with the
    /// dead latents, so entry slots grow geometrically (to k + d_sae at most).
    fn ensure_scratch(&mut self, n: usize, k2: usize) -> Result<()> {
        if self.scratch.as_ref().is_some_and(|s| s.rows >= n && s.k2 >= k2) {
            return Ok(());
        }
        let (rows, k2) = match self.scratch.take() {
            // Free the old buffers first.
            Some(old) => (old.rows.max(n), k2.max((2 * old.k2).min(self.k + self.d_sae))),
            None => (n, k2),
        };
        let g = &self.gpu;
        let (d, e) = (self.d, rows * k2);
        self.scratch = Some(Scratch {
            rows,
            k2,
            x: alloc(g, rows * d)?,
            xs: alloc(g, rows * d)?,
            xin: alloc(g, rows * d)?,
            pre: alloc(g, rows * self.d_sae)?,
            pre_aux: None,
            idx: alloc(g, e)?,
            val: alloc(g, e)?,
            dpre: alloc(g, e)?,
            perm: alloc(g, e)?,
            sort_tmp: alloc(g, e)?,
            yhat: alloc(g, rows * d)?,
            g: alloc(g, rows * d)?,
            a: alloc(g, rows * d)?,
            h: alloc(g, rows * d)?,
            row_se: alloc(g, rows)?,
            row_var: alloc(g, rows)?,
            row_ae: alloc(g, rows)?,
        });
        Ok(())
    }

    /// The gradients of a batch into `self.grads`; see [`TrainOps::gradients`].
    fn compute_gradients(&mut self, b: &StepBatch<'_>) -> Result<StepSums> {
        let (d, d_sae, k, n, x) = (self.d, self.d_sae, self.k, b.n, b.x);
        if n == 0 {
            return Err(CudaError::Shape("training step on an empty batch".into()));
        }
        if x.len() != n * d || b.dead.len() != d_sae {
            return Err(CudaError::Shape(format!(
                "batch has {} values and {} latent flags, expected {n} x {d} and {d_sae}",
                x.len(),
                b.dead.len()
            )));
        }
        let (use_aux, k_aux, aux_scale) = match b.aux {
            Some(a) if a.k_aux > 0 => (true, a.k_aux.min(d_sae), a.scale),
            _ => (false, 0, 0.0),
        };
        let k2 = k + k_aux;
        self.ensure_scratch(n, k2)?;
        let inv_n = 1.0 / n as f32;

        let gpu = self.gpu.clone();
        let g = &*gpu;
        let s = self.scratch.as_mut().expect("scratch allocated above");
        let p = &self.params;
        g.stream.memcpy_htod(x, &mut s.x.slice_mut(0..n * d))?;
        let b_dec_in = if self.apply_b_dec { g.ptr(&p.b_dec) } else { NULL };
        g.launch(
            "prepare_input",
            grid_1d(n * d),
            &[g.ptr(&s.x), n.into(), d.into(), b.scale_in.into(), b_dec_in, g.ptr(&s.xs), g.ptr(&s.xin)],
        )?;

        // Forward: pre-activations, top-k (positive values only) and the reconstruction.
        g.gemm_nt_bias(&s.xin, &p.enc, Some(&p.b_enc), &mut s.pre, n, d_sae, d)?;
        g.topk_rows_into(&s.pre, n, d_sae, k, 2, &mut s.idx, 0, &mut s.val, 0, k2)?;
        if use_aux {
            if s.pre_aux.is_none() {
                s.pre_aux = Some(alloc(g, s.rows * d_sae)?);
            }
            let pa = s.pre_aux.as_mut().expect("allocated above");
            let mask: Vec<u8> = b.dead.iter().map(|&b| b as u8).collect();
            g.stream.memcpy_htod(&mask, &mut self.dead)?;
            g.stream.memcpy_dtod(&s.pre.slice(0..n * d_sae), &mut pa.slice_mut(0..n * d_sae))?;
            g.launch("mask_live_latents", grid_1d(n * d_sae), &[g.ptr(pa), n.into(), d_sae.into(), g.ptr(&self.dead)])?;
            g.topk_rows_into(pa, n, d_sae, k_aux, 0, &mut s.idx, k, &mut s.val, k, k2)?;
        }
        let (idx, val) = (g.ptr(&s.idx), g.ptr(&s.val));
        g.launch(
            "sparse_decode",
            per_row(n, 128),
            &[
                idx,
                val,
                NULL,
                n.into(),
                k.into(),
                k2.into(),
                g.ptr(&p.dec),
                d.into(),
                g.ptr(&p.b_dec),
                g.ptr(&s.yhat),
                0i32.into(),
            ],
        )?;

        // Loss and the gradients wrt the reconstruction and the active values.
        g.launch("column_sum", grid_1d(d), &[g.ptr(&s.xs), n.into(), d.into(), inv_n.into(), g.ptr(&self.ybar)])?;
        g.launch(
            "residual_loss",
            per_row(n, 128),
            &[
                g.ptr(&s.yhat),
                g.ptr(&s.xs),
                g.ptr(&self.ybar),
                n.into(),
                d.into(),
                inv_n.into(),
                g.ptr(&s.g),
                g.ptr(&s.row_se),
                g.ptr(&s.row_var),
            ],
        )?;
        g.launch(
            "sparse_grad_values",
            per_row(n, 256),
            &[idx, NULL, n.into(), k.into(), k2.into(), g.ptr(&p.dec), d.into(), g.ptr(&s.g), g.ptr(&s.dpre)],
        )?;
        if use_aux {
            let (idx_aux, val_aux) = (g.ptr_at(&s.idx, k), g.ptr_at(&s.val, k));
            g.launch(
                "sparse_decode",
                per_row(n, 128),
                &[
                    idx_aux,
                    val_aux,
                    NULL,
                    n.into(),
                    k_aux.into(),
                    k2.into(),
                    g.ptr(&p.dec),
                    d.into(),
                    NULL,
                    g.ptr(&s.a),
                    0i32.into(),
                ],
            )?;
            g.launch(
                "auxk_residual",
                per_row(n, 128),
                &[
                    g.ptr(&s.a),
                    g.ptr(&s.yhat),
                    g.ptr(&s.xs),
                    n.into(),
                    d.into(),
                    (2.0 * aux_scale * inv_n).into(),
                    g.ptr(&s.h),
                    g.ptr(&s.row_ae),
                ],
            )?;
            g.launch(
                "sparse_grad_values",
                per_row(n, 256),
                &[
                    idx_aux,
                    NULL,
                    n.into(),
                    k_aux.into(),
                    k2.into(),
                    g.ptr(&p.dec),
                    d.into(),
                    g.ptr(&s.h),
                    g.ptr_at(&s.dpre, k),
                ],
            )?;
        }

        // Group the entries by latent (counting sort, then a fixed order inside each group).
        let entries = n * k2;
        g.stream.memset_zeros(&mut self.counts)?;
        g.stream.memset_zeros(&mut self.fire)?;
        g.stream.memset_zeros(&mut self.cursor)?;
        g.launch("count_latents", grid_1d(entries), &[idx, NULL, n.into(), k2.into(), k2.into(), g.ptr(&self.counts)])?;
        g.launch("count_latents", grid_1d(n * k), &[idx, NULL, n.into(), k.into(), k2.into(), g.ptr(&self.fire)])?;
        g.launch(
            "exclusive_scan_1block",
            per_row(1, 1024),
            &[g.ptr(&self.counts), d_sae.into(), g.ptr(&self.offsets)],
        )?;
        g.launch(
            "scatter_by_latent",
            grid_1d(entries),
            &[idx, NULL, n.into(), k2.into(), k2.into(), g.ptr(&self.offsets), g.ptr(&self.cursor), g.ptr(&s.perm)],
        )?;
        g.launch(
            "sort_segments",
            per_row(d_sae, 256),
            &[g.ptr(&self.offsets), d_sae.into(), g.ptr(&s.perm), g.ptr(&s.sort_tmp)],
        )?;

        // Weight gradients, latent by latent.
        let gr = &self.grads;
        let (perm, offs) = (g.ptr(&s.perm), g.ptr(&self.offsets));
        let h_src = if use_aux { g.ptr(&s.h) } else { g.ptr(&s.g) };
        g.launch(
            "segment_outer_accumulate",
            per_row(d_sae, 128),
            &[perm, offs, k2.into(), k.into(), val, g.ptr(&s.g), h_src, d.into(), 1.0f32.into(), g.ptr(&gr.dec)],
        )?;
        g.launch(
            "segment_outer_accumulate",
            per_row(d_sae, 128),
            &[
                perm,
                offs,
                k2.into(),
                k2.into(),
                g.ptr(&s.dpre),
                g.ptr(&s.xin),
                g.ptr(&s.xin),
                d.into(),
                1.0f32.into(),
                g.ptr(&gr.enc),
            ],
        )?;
        g.launch(
            "segment_sum",
            grid_1d(d_sae),
            &[perm, offs, d_sae.into(), g.ptr(&s.dpre), 1.0f32.into(), g.ptr(&gr.b_enc)],
        )?;
        // b_dec: Σ_t g_t, and through the encoder input x − b_dec: −Σ_j (∂L/∂b_enc)_j enc_j.
        g.launch("column_sum", grid_1d(d), &[g.ptr(&s.g), n.into(), d.into(), 1.0f32.into(), g.ptr(&gr.b_dec)])?;
        if self.apply_b_dec {
            let splits = d_sae.div_ceil(BDEC_SPLIT_ROWS);
            let cfg = LaunchConfig {
                grid_dim: (d.div_ceil(128) as u32, splits as u32, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            g.launch(
                "weighted_rows_partial",
                cfg,
                &[
                    g.ptr(&p.enc),
                    g.ptr(&gr.b_enc),
                    d_sae.into(),
                    d.into(),
                    BDEC_SPLIT_ROWS.into(),
                    g.ptr(&self.bdec_partial),
                ],
            )?;
            g.launch(
                "column_sum",
                grid_1d(d),
                &[g.ptr(&self.bdec_partial), splits.into(), d.into(), (-1.0f32).into(), g.ptr(&self.bdec_tmp)],
            )?;
            g.launch_lm("add_inplace", grid_1d(d), &[g.ptr(&gr.b_dec), g.ptr(&self.bdec_tmp), Arg::U64(d as u64)])?;
        }
        // Only the tangential part of a unit-norm row's gradient matters.
        g.launch(
            "project_tangent_rows",
            per_row(d_sae, 128),
            &[g.ptr(&gr.dec), g.ptr(&p.dec), d_sae.into(), d.into()],
        )?;
        let norm_cfg =
            LaunchConfig { grid_dim: (NORM_BLOCKS as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        for (i, t) in [&gr.enc, &gr.b_enc, &gr.dec, &gr.b_dec].into_iter().enumerate() {
            g.launch(
                "sum_squares_partial",
                norm_cfg,
                &[g.ptr(t), Arg::U64(t.len() as u64), g.ptr(&self.norm_partial), ((i * NORM_BLOCKS) as i32).into()],
            )?;
        }

        // The one synchronisation: loss parts, gradient norm, firing counts.
        let sum = |v: &CudaSlice<f32>| -> Result<f64> { Ok(g.download(v)?[..n].iter().map(|&x| x as f64).sum()) };
        let mse_sum = sum(&s.row_se)?;
        let var_sum = sum(&s.row_var)?;
        let aux_sum = if use_aux { sum(&s.row_ae)? } else { 0.0 };
        let grad_norm = g.download(&self.norm_partial)?.iter().sum::<f64>().sqrt();
        let fire: Vec<u64> = g.download(&self.fire)?.into_iter().map(|c| c as u64).collect();
        let nf = n as f64;
        let parts = LossParts {
            mse: mse_sum / nf,
            l1: 0.0,
            auxk: aux_scale as f64 * aux_sum / nf,
            l0: fire.iter().sum::<u64>() as f64 / nf,
            explained_variance: if var_sum > 0.0 { 1.0 - mse_sum / var_sum } else { 0.0 },
        };
        // TopK keeps positive values only; the smallest is not needed (no BatchTopK here).
        Ok(StepSums { parts, grad_norm, fire_count: fire, min_pos: f32::INFINITY })
    }

    /// Adam on every tensor, then unit-norm decoder rows; see [`TrainOps::update`].
    fn apply_update(&mut self, a: &AdamStep) -> Result<()> {
        let g = &*self.gpu;
        let (d, d_sae) = (self.d, self.d_sae);
        let (b1, b2, eps, lr, clip) = (a.beta1, a.beta2, a.eps, a.lr, a.clip);
        let (bc1, bc2) = a.bias_corrections();
        let gr = &self.grads;
        let (pm, mm, vm) = (&self.params, &self.adam_m, &self.adam_v);
        for (pp, gg, m, v) in [
            (&pm.enc, &gr.enc, &mm.enc, &vm.enc),
            (&pm.b_enc, &gr.b_enc, &mm.b_enc, &vm.b_enc),
            (&pm.dec, &gr.dec, &mm.dec, &vm.dec),
            (&pm.b_dec, &gr.b_dec, &mm.b_dec, &vm.b_dec),
        ] {
            let len = pp.len();
            g.launch(
                "adam_step",
                grid_1d(len),
                &[
                    g.ptr(pp),
                    g.ptr(gg),
                    g.ptr(m),
                    g.ptr(v),
                    Arg::U64(len as u64),
                    lr.into(),
                    b1.into(),
                    b2.into(),
                    bc1.into(),
                    bc2.into(),
                    eps.into(),
                    clip.into(),
                ],
            )?;
        }
        g.launch("normalize_rows", per_row(d_sae, 128), &[g.ptr(&pm.dec), d_sae.into(), d.into()])?;

        Ok(())
    }
}

impl TrainOps for GpuTrain {
    fn device(&self) -> String {
        format!("cuda:{}", self.gpu.ctx.ordinal())
    }

    fn gradients(&mut self, batch: &StepBatch<'_>) -> ComputeResult<StepSums> {
        Ok(self.compute_gradients(batch)?)
    }

    fn update(&mut self, adam: &AdamStep) -> ComputeResult<()> {
        Ok(self.apply_update(adam)?)
    }

    fn tensors(&self) -> ComputeResult<TrainTensors> {
        let g = &self.gpu;
        Ok(TrainTensors {
            params: self.params.download(g)?,
            adam_m: self.adam_m.download(g)?,
            adam_v: self.adam_v.download(g)?,
        })
    }
}
