// Language-model forward kernels for the CUDA backend: layer norm (with the
// TransformerLens hook_scale output), GELU variants, bias/residual adds,
// GPT-NeoX rotary embeddings and causal softmax attention. Dense projections
// go through cuBLAS.

#include "common.cuh"

// out = (x - mean) / sqrt(var + eps) [* w + b]; scale_out[r] = sqrt(var + eps)
// (TransformerLens's lnX.hook_scale). w/b may be null (folded layer norm).
// One block per row.
extern "C" __global__ void layer_norm(const float* __restrict__ X, int rows, int d, float eps,
                                      const float* __restrict__ w, const float* __restrict__ b,
                                      float* __restrict__ out, float* __restrict__ scale_out) {
    __shared__ float scratch[33];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = X + (size_t)r * d;
    float s = 0.0f;
    for (int c = threadIdx.x; c < d; c += blockDim.x) s += x[c];
    float mean = block_sum(s, scratch) / d;
    float v = 0.0f;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float t = x[c] - mean;
        v += t * t;
    }
    float scale = sqrtf(block_sum(v, scratch) / d + eps);
    float inv = 1.0f / scale;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float y = (x[c] - mean) * inv;
        if (w) y *= w[c];
        if (b) y += b[c];
        out[(size_t)r * d + c] = y;
    }
    if (scale_out && threadIdx.x == 0) scale_out[r] = scale;
}

// out = x / sqrt(mean(x^2) + eps) [* w]; scale_out[r] = sqrt(mean(x^2) + eps)
// (RMSNorm, TransformerLens's lnX.hook_scale). w may be null (folded RMSNorm).
// One block per row.
extern "C" __global__ void rms_norm(const float* __restrict__ X, int rows, int d, float eps,
                                    const float* __restrict__ w, float* __restrict__ out,
                                    float* __restrict__ scale_out) {
    __shared__ float scratch[33];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = X + (size_t)r * d;
    float s = 0.0f;
    for (int c = threadIdx.x; c < d; c += blockDim.x) s += x[c] * x[c];
    float scale = sqrtf(block_sum(s, scratch) / d + eps);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float y = x[c] / scale;
        if (w) y *= w[c];
        out[(size_t)r * d + c] = y;
    }
    if (scale_out && threadIdx.x == 0) scale_out[r] = scale;
}

// The MLP non-linearities by code (0 gelu_tanh, 1 gelu_erf, 2 relu, 3 silu),
// for the gated MLP kernel.
__device__ __forceinline__ float lm_act(float x, int act) {
    switch (act) {
        case 0: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
        case 1: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
        case 2: return fmaxf(x, 0.0f);
        default: return x / (1.0f + expf(-x));
    }
}

// SiLU (x * sigmoid(x)), in place.
extern "C" __global__ void silu_inplace(float* X, unsigned long long n) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) X[i] = lm_act(X[i], 3);
}

// Gated MLP hidden layer: G = act(G) * L, in place (SwiGLU with act = 3).
extern "C" __global__ void gated_act(float* G, const float* __restrict__ L, unsigned long long n, int act) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) G[i] = lm_act(G[i], act) * L[i];
}

// GPT-2's gelu_new (tanh approximation), in place.
extern "C" __global__ void gelu_tanh(float* X, unsigned long long n) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = X[i];
    X[i] = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

// Exact GELU (GPT-NeoX / Pythia), in place.
extern "C" __global__ void gelu_erf(float* X, unsigned long long n) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = X[i];
    X[i] = 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

// X[r, c] += bias[c].
extern "C" __global__ void add_bias_rows(float* X, int rows, int d, const float* __restrict__ bias) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (unsigned long long)rows * d) X[i] += bias[i % d];
}

// X += Y.
extern "C" __global__ void add_inplace(float* X, const float* __restrict__ Y, unsigned long long n) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) X[i] += Y[i];
}

// X[i] = cap * tanh(X[i] / cap) for finite X[i] (Gemma 2's final logit
// soft-capping); infinities stay.
extern "C" __global__ void soft_cap_inplace(float* X, unsigned long long n, float cap) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && isfinite(X[i])) X[i] = cap * tanhf(X[i] / cap);
}

// Rotary embedding, GPT-NeoX half-split style, on the first rot_dims of every
// head of Q [batch, ctx, heads, d_head] in place: pairs (i, i + rot_dims/2),
// angle = pos * base^(-2i / rot_dims).
extern "C" __global__ void rotary_neox(float* Q, int batch, int ctx, int heads, int d_head, int rot_dims, float base) {
    int half = rot_dims / 2;
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long total = (unsigned long long)batch * ctx * heads * half;
    if (i >= total) return;
    int p = (int)(i % half);
    unsigned long long rest = i / half;                 // (b, t, h)
    int t = (int)((rest / heads) % ctx);
    float* q = Q + rest * d_head;
    float inv_freq = powf(base, -2.0f * p / rot_dims);
    float angle = t * inv_freq;
    float cs = cosf(angle), sn = sinf(angle);
    float x1 = q[p], x2 = q[p + half];
    q[p] = x1 * cs - x2 * sn;
    q[p + half] = x2 * cs + x1 * sn;
}

// Rotary embedding, half-split style, on the first rot_dims of every head of
// Q [batch, ctx, heads, d_head] in place, with the model's inverse frequencies
// inv_freq [rot_dims / 2]: pairs (i, i + rot_dims/2) turn by pos * inv_freq[i].
extern "C" __global__ void rotary_freqs(float* Q, int batch, int ctx, int heads, int d_head, int rot_dims,
                                        const float* __restrict__ inv_freq) {
    int half = rot_dims / 2;
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long total = (unsigned long long)batch * ctx * heads * half;
    if (i >= total) return;
    int p = (int)(i % half);
    unsigned long long rest = i / half;                 // (b, t, h)
    int t = (int)((rest / heads) % ctx);
    float* q = Q + rest * d_head;
    float angle = t * inv_freq[p];
    float cs = cosf(angle), sn = sinf(angle);
    float x1 = q[p], x2 = q[p + half];
    q[p] = x1 * cs - x2 * sn;
    q[p + half] = x2 * cs + x1 * sn;
}

// Grouped-query attention: OUT [rows, heads * groups, d_head] with head h a copy
// of head h / groups of X [rows, heads, d_head].
extern "C" __global__ void repeat_heads(const float* __restrict__ X, unsigned long long rows, int heads,
                                        int d_head, int groups, float* __restrict__ OUT) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned long long per_row = (unsigned long long)heads * groups * d_head;
    if (i >= rows * per_row) return;
    unsigned long long r = i / per_row;
    int rest = (int)(i % per_row);
    int h = rest / d_head, c = rest % d_head;
    OUT[i] = X[(r * heads + h / groups) * d_head + c];
}

// Causal softmax attention for one (query position, head, batch) per block.
// Q, K, V: [batch, ctx, heads, d_head]; Z (out): same layout. Scores are
// q.k * scale, then soft_cap * tanh(score / soft_cap) when soft_cap > 0; the
// query at t sees keys max(0, t - window + 1) ..= t (all keys up to t when
// window <= 0: plain causal attention). Optional outputs: scores [batch,
// heads, ctx, ctx] (masked positions = -inf, as TransformerLens's
// attn.hook_attn_scores) and pattern [batch, heads, ctx, ctx] (softmax, zeros
// where masked). Dynamic shared memory: ctx floats.
extern "C" __global__ void causal_attention(const float* __restrict__ Q, const float* __restrict__ K,
                                            const float* __restrict__ V, int ctx, int heads, int d_head, float scale,
                                            float soft_cap, int window, float* __restrict__ Z,
                                            float* __restrict__ scores_out, float* __restrict__ pattern_out) {
    extern __shared__ float p[];
    __shared__ float scratch[33];
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int lo = (window > 0 && t + 1 > window) ? t + 1 - window : 0;
    size_t row_stride = (size_t)heads * d_head;
    const float* q = Q + ((size_t)b * ctx + t) * row_stride + (size_t)h * d_head;
    float local_max = -3.402823466e38f;
    for (int s = lo + threadIdx.x; s <= t; s += blockDim.x) {
        const float* k = K + ((size_t)b * ctx + s) * row_stride + (size_t)h * d_head;
        float acc = 0.0f;
        for (int i = 0; i < d_head; ++i) acc += q[i] * k[i];
        acc *= scale;
        if (soft_cap > 0.0f) acc = soft_cap * tanhf(acc / soft_cap);
        p[s] = acc;
        local_max = fmaxf(local_max, acc);
    }
    float mx = block_max(local_max, scratch);
    float local_sum = 0.0f;
    size_t sc_base = (((size_t)b * heads + h) * ctx + t) * ctx;
    for (int s = threadIdx.x; s < ctx; s += blockDim.x) {
        if (s >= lo && s <= t) {
            if (scores_out) scores_out[sc_base + s] = p[s];
            float e = expf(p[s] - mx);
            p[s] = e;
            local_sum += e;
        } else if (scores_out) {
            scores_out[sc_base + s] = -__int_as_float(0x7f800000);
        }
    }
    float inv = 1.0f / block_sum(local_sum, scratch);
    for (int s = threadIdx.x; s < ctx; s += blockDim.x) {
        bool seen = s >= lo && s <= t;
        if (seen) p[s] *= inv;
        if (pattern_out) pattern_out[sc_base + s] = seen ? p[s] : 0.0f;
    }
    __syncthreads();
    float* z = Z + ((size_t)b * ctx + t) * row_stride + (size_t)h * d_head;
    for (int i = threadIdx.x; i < d_head; i += blockDim.x) {
        float acc = 0.0f;
        for (int s = lo; s <= t; ++s) acc += p[s] * V[((size_t)b * ctx + s) * row_stride + (size_t)h * d_head + i];
        z[i] = acc;
    }
}

// out[r, :] = W[idx[r], :] (token and position embeddings).
extern "C" __global__ void gather_rows(const float* __restrict__ W, const int* __restrict__ idx, int rows, int d,
                                       float* __restrict__ out) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (unsigned long long)rows * d) return;
    int r = (int)(i / d), c = (int)(i % d);
    out[i] = W[(size_t)idx[r] * d + c];
}

// X[r, c] = X[r, c] * w[c] + b[c]: a LayerNorm's affine, applied after a
// pre-affine hook (TransformerLens 3.x hook_normalized) has seen the value.
extern "C" __global__ void scale_shift_rows(float* X, int rows, int d, const float* __restrict__ w,
                                            const float* __restrict__ b) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (unsigned long long)rows * d) X[i] = X[i] * w[i % d] + b[i % d];
}

// max(x, 0) in place (MLPs with a ReLU activation).
extern "C" __global__ void relu_inplace(float* X, unsigned long long n) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) X[i] = fmaxf(X[i], 0.0f);
}

// Per-row cross-entropy: out[r] = logsumexp(logits[r, :]) - logits[r, target[r]];
// rows whose target is negative (a sequence's last position) get 0. One block per row.
extern "C" __global__ void token_ce(const float* __restrict__ logits, int rows, int vocab,
                                    const int* __restrict__ target, float* __restrict__ out) {
    __shared__ float scratch[33];
    int r = blockIdx.x;
    if (r >= rows) return;
    int tgt = target[r];
    if (tgt < 0) {
        if (threadIdx.x == 0) out[r] = 0.0f;
        return;
    }
    const float* x = logits + (size_t)r * vocab;
    float m = -3.402823466e38f;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) m = fmaxf(m, x[c]);
    float mx = block_max(m, scratch);
    float s = 0.0f;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) s += expf(x[c] - mx);
    float total = block_sum(s, scratch);
    if (threadIdx.x == 0) out[r] = mx + logf(total) - x[tgt];
}
