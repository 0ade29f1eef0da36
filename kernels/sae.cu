// Sparse-coder kernels: encoder GEMM with fused bias and activation, per-row and
// batch top-k by radix select, sparse decoder (gather-accumulate of active rows)
// and the training backward pieces, which keep every weight gradient
// restricted to active latents and accumulate it latent by latent (no atomics on
// weights, deterministic summation order).
//
// Layouts: row-major. The encoder is kept transposed on the device, W_encT
// [d_sae, d_in], so that encoder-side gathers and gradients are row operations
// exactly like the decoder's W_dec [d_sae, d_out].

#include "common.cuh"

#define GEMM_TM 64
#define GEMM_TN 64
#define GEMM_TK 16

// C[M,N] = act(A[M,K] * op(B) + bias[N]), op(B) = B [K,N] (b_trans = 0) or B^T with
// B [N,K] (b_trans = 1). act: 0 none, 1 ReLU, 2 JumpReLU (keep v where v > threshold[n]).
// 256 threads per block; each computes a 4x4 micro-tile strided by 16 so shared
// memory reads are conflict-free and global writes coalesce.
extern "C" __global__ void gemm_bias_act(const float* __restrict__ A, const float* __restrict__ B,
                                         const float* __restrict__ bias, const float* __restrict__ threshold,
                                         float* __restrict__ C, int M, int N, int K, int b_trans, int act) {
    __shared__ float As[GEMM_TK][GEMM_TM + 1];
    __shared__ float Bs[GEMM_TK][GEMM_TN + 1];
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    int row0 = blockIdx.y * GEMM_TM, col0 = blockIdx.x * GEMM_TN;
    float acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += GEMM_TK) {
        for (int i = threadIdx.x; i < GEMM_TM * GEMM_TK; i += 256) {
            int r = i / GEMM_TK, c = i % GEMM_TK;
            int gr = row0 + r, gc = k0 + c;
            As[c][r] = (gr < M && gc < K) ? A[(size_t)gr * K + gc] : 0.0f;
        }
        for (int i = threadIdx.x; i < GEMM_TK * GEMM_TN; i += 256) {
            int kk, n;
            if (b_trans) { n = i / GEMM_TK; kk = i % GEMM_TK; } else { kk = i / GEMM_TN; n = i % GEMM_TN; }
            int gk = k0 + kk, gn = col0 + n;
            float v = 0.0f;
            if (gk < K && gn < N) v = b_trans ? B[(size_t)gn * K + gk] : B[(size_t)gk * N + gn];
            Bs[kk][n] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_TK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i) {
        int r = row0 + ty + 16 * i;
        if (r >= M) continue;
        for (int j = 0; j < 4; ++j) {
            int c = col0 + tx + 16 * j;
            if (c >= N) continue;
            float v = acc[i][j] + (bias ? bias[c] : 0.0f);
            if (act == 1) v = fmaxf(v, 0.0f);
            else if (act == 2) v = v > threshold[c] ? v : 0.0f;
            C[(size_t)r * N + c] = v;
        }
    }
}

// out[r, c] = X[r, c] - bias[c] (e.g. x - b_dec before encoding).
extern "C" __global__ void sub_bias_rows(const float* X, const float* bias, float* out, int rows, int d) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)rows * d) out[i] = X[i] - bias[i % d];
}

// Per-row top-k of X [rows, m] by 4-pass radix select on order-preserving keys
// (no sort). One block per row. Writes exactly k (index, value) pairs per row,
// at out[row * out_stride + j], in increasing index order; ties at the k-th
// value are taken in index order, so the output is deterministic.
// relu: 0 keeps values as they are, 1 clamps negative kept values to 0, 2 drops
// kept values <= 0 (index -1, value 0: TopK training keeps only positive ones,
// and every consumer below skips negative indices).
extern "C" __global__ void topk_rows(const float* __restrict__ X, int rows, int m, int k,
                                     int* __restrict__ out_idx, float* __restrict__ out_val, int relu,
                                     int out_stride) {
    __shared__ unsigned int hist[256];
    __shared__ unsigned int s_prefix;
    __shared__ int s_kleft;
    __shared__ int scan_scratch[33];
    int row = blockIdx.x;
    if (row >= rows) return;
    const float* x = X + (size_t)row * m;
    unsigned int prefix = 0, mask = 0;
    int kleft = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < m; i += blockDim.x) {
            unsigned int key = float_key(x[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int cum = 0, b = 255;
            for (; b > 0; --b) {
                if (cum + (int)hist[b] >= kleft) break;
                cum += (int)hist[b];
            }
            s_prefix = prefix | ((unsigned int)b << shift);
            s_kleft = kleft - cum;
        }
        __syncthreads();
        prefix = s_prefix;
        kleft = s_kleft;
        mask |= 255u << shift;
        __syncthreads();
    }
    // prefix is now the key of the k-th largest value; take everything above it
    // and the first `kleft` elements equal to it.
    int written = 0, equal_taken = 0;
    size_t base_out = (size_t)row * out_stride;
    for (int base = 0; base < m; base += blockDim.x) {
        int i = base + threadIdx.x;
        unsigned int key = i < m ? float_key(x[i]) : 0u;
        int gt = (i < m && key > prefix) ? 1 : 0;
        int eq = (i < m && key == prefix) ? 1 : 0;
        int eq_total, gt_total;
        int eq_before = block_exclusive_scan(eq, scan_scratch, &eq_total);
        int take_eq = eq && (equal_taken + eq_before < kleft);
        int take = gt | take_eq;
        int pos = block_exclusive_scan(take, scan_scratch, &gt_total);
        if (take) {
            float v = x[i];
            int id = i;
            if (relu == 1 && v < 0.0f) v = 0.0f;
            if (relu == 2 && !(v > 0.0f)) { v = 0.0f; id = -1; }
            out_idx[base_out + written + pos] = id;
            out_val[base_out + written + pos] = v;
        }
        written += gt_total;
        equal_taken += eq_total;
        if (written >= k) break;
    }
}

// Histogram of the 8-bit digit at `shift` over all elements whose key matches
// `prefix` under `mask` (one pass of the batch-top-k radix select; the host
// walks the digits and reads the 256-bin histogram after each pass).
extern "C" __global__ void radix_histogram(const float* __restrict__ X, unsigned long long n, unsigned int prefix,
                                           unsigned int mask, int shift, unsigned int* __restrict__ hist) {
    __shared__ unsigned int local[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;
    __syncthreads();
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned int key = float_key(X[i]);
        if ((key & mask) == prefix) atomicAdd(&local[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += blockDim.x)
        if (local[i]) atomicAdd(&hist[i], local[i]);
}

// Batch top-k selection once the threshold key is known: per row, keep values
// whose key is >= threshold_key (at most max_per_row, in index order), as CSR
// rows of fixed capacity: out_idx/out_val [rows, max_per_row], out_count [rows].
extern "C" __global__ void select_at_least(const float* __restrict__ X, int rows, int m, unsigned int threshold_key,
                                           int max_per_row, int* __restrict__ out_idx, float* __restrict__ out_val,
                                           int* __restrict__ out_count, int relu) {
    __shared__ int scan_scratch[33];
    int row = blockIdx.x;
    if (row >= rows) return;
    const float* x = X + (size_t)row * m;
    int written = 0;
    for (int base = 0; base < m && written < max_per_row; base += blockDim.x) {
        int i = base + threadIdx.x;
        int take = (i < m && float_key(x[i]) >= threshold_key) ? 1 : 0;
        int total;
        int pos = block_exclusive_scan(take, scan_scratch, &total);
        if (take && written + pos < max_per_row) {
            float v = x[i];
            out_idx[(size_t)row * max_per_row + written + pos] = i;
            out_val[(size_t)row * max_per_row + written + pos] = (relu && v < 0.0f) ? 0.0f : v;
        }
        written += total;
    }
    if (threadIdx.x == 0) out_count[row] = written < max_per_row ? written : max_per_row;
}

// Sparse entries of a batch: row r owns slots [r * stride, r * stride + stride);
// the first `count` of them are used (count = counts ? counts[r] : k) and a slot
// whose index is negative is empty. Entry number e = r * stride + j.

// Sparse decode: out[r, :] = (accumulate ? out[r, :] : 0) + bias + sum_j val[e] * W[idx[e], :].
// One block per row; threads walk the output columns, so every W row read coalesces.
extern "C" __global__ void sparse_decode(const int* __restrict__ idx, const float* __restrict__ val,
                                         const int* __restrict__ counts, int rows, int k, int stride,
                                         const float* __restrict__ W, int d, const float* __restrict__ bias,
                                         float* __restrict__ out, int accumulate) {
    __shared__ int s_idx[256];
    __shared__ float s_val[256];
    int row = blockIdx.x;
    if (row >= rows) return;
    int count = counts ? counts[row] : k;
    for (int c0 = 0; c0 < d; c0 += blockDim.x * 4) {
        float acc[4];
        for (int u = 0; u < 4; ++u) {
            int c = c0 + threadIdx.x + u * blockDim.x;
            acc[u] = (c < d) ? ((bias ? bias[c] : 0.0f) + (accumulate ? out[(size_t)row * d + c] : 0.0f)) : 0.0f;
        }
        for (int j0 = 0; j0 < count; j0 += 256) {
            __syncthreads();
            for (int j = threadIdx.x; j < 256 && j0 + j < count; j += blockDim.x) {
                s_idx[j] = idx[(size_t)row * stride + j0 + j];
                s_val[j] = val[(size_t)row * stride + j0 + j];
            }
            __syncthreads();
            int n = count - j0 < 256 ? count - j0 : 256;
            for (int j = 0; j < n; ++j) {
                if (s_idx[j] < 0) continue;
                const float* w = W + (size_t)s_idx[j] * d;
                float v = s_val[j];
                for (int u = 0; u < 4; ++u) {
                    int c = c0 + threadIdx.x + u * blockDim.x;
                    if (c < d) acc[u] += v * w[c];
                }
            }
        }
        for (int u = 0; u < 4; ++u) {
            int c = c0 + threadIdx.x + u * blockDim.x;
            if (c < d) out[(size_t)row * d + c] = acc[u];
        }
    }
}

// Gradient wrt the entry values: gval[e] = <grad_out[r, :], W[idx[e], :]> (0 for empty slots).
// One block per row, one warp per entry.
extern "C" __global__ void sparse_grad_values(const int* __restrict__ idx, const int* __restrict__ counts, int rows, int k,
                                              int stride, const float* __restrict__ W, int d,
                                              const float* __restrict__ grad_out, float* __restrict__ gval) {
    int row = blockIdx.x;
    if (row >= rows) return;
    int count = counts ? counts[row] : k;
    int lane = threadIdx.x % SAEPIPE_WARP, warp = threadIdx.x / SAEPIPE_WARP;
    int nwarps = blockDim.x / SAEPIPE_WARP;
    const float* g = grad_out + (size_t)row * d;
    for (int j = warp; j < count; j += nwarps) {
        int l = idx[(size_t)row * stride + j];
        float acc = 0.0f;
        if (l >= 0) {
            const float* w = W + (size_t)l * d;
            for (int c = lane; c < d; c += SAEPIPE_WARP) acc += g[c] * w[c];
            acc = warp_sum(acc);
        }
        if (lane == 0) gval[(size_t)row * stride + j] = acc;
    }
}

// --- latent-major regrouping of the sparse entries (counting sort) ---

// counts[l] += 1 for every used, non-empty entry with latent l.
extern "C" __global__ void count_latents(const int* __restrict__ idx, const int* __restrict__ counts_per_row, int rows, int k,
                                         int stride, int* __restrict__ counts) {
    size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (size_t)rows * k) return;
    int r = (int)(t / k), j = (int)(t % k);
    if (counts_per_row && j >= counts_per_row[r]) return;
    int l = idx[(size_t)r * stride + j];
    if (l >= 0) atomicAdd(&counts[l], 1);
}

// offsets[0..n] = exclusive prefix sum of counts[0..n) with offsets[n] = total.
// One block of 1024 threads; each thread scans a contiguous chunk.
extern "C" __global__ void exclusive_scan_1block(const int* __restrict__ counts, int n, int* __restrict__ offsets) {
    __shared__ int scratch[33];
    int per = (n + blockDim.x - 1) / blockDim.x;
    int begin = threadIdx.x * per;
    int end = begin + per < n ? begin + per : n;
    int local = 0;
    for (int i = begin; i < end; ++i) local += counts[i];
    int total;
    int run = block_exclusive_scan(local, scratch, &total);
    for (int i = begin; i < end; ++i) {
        offsets[i] = run;
        run += counts[i];
    }
    if (threadIdx.x == 0) offsets[n] = total;
}

// perm[offsets[l] + slot] = e: entries grouped by latent (order within a group
// fixed afterwards by sort_segments).
extern "C" __global__ void scatter_by_latent(const int* __restrict__ idx, const int* __restrict__ counts_per_row, int rows, int k,
                                             int stride, const int* __restrict__ offsets, int* __restrict__ cursor,
                                             int* __restrict__ perm) {
    size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (size_t)rows * k) return;
    int r = (int)(t / k), j = (int)(t % k);
    if (counts_per_row && j >= counts_per_row[r]) return;
    int e = r * stride + j;
    int l = idx[e];
    if (l < 0) return;
    int slot = atomicAdd(&cursor[l], 1);
    perm[offsets[l] + slot] = e;
}

#define SORT_CAP 4096

// Sorts each latent's entries by entry number so gradient sums have a fixed
// order (bit-reproducible training). One block per latent: a bitonic sort in
// shared memory, or for segments longer than SORT_CAP (a latent active on
// thousands of rows) a rank sort through `scratch` (same size as perm).
extern "C" __global__ void sort_segments(const int* __restrict__ offsets, int n_latents, int* __restrict__ perm,
                                         int* __restrict__ scratch) {
    __shared__ int s[SORT_CAP];
    int l = blockIdx.x;
    if (l >= n_latents) return;
    int a = offsets[l], len = offsets[l + 1] - a;
    if (len <= 1) return;
    if (len <= SORT_CAP) {
        int p2 = 1;
        while (p2 < len) p2 <<= 1;
        for (int i = threadIdx.x; i < p2; i += blockDim.x) s[i] = i < len ? perm[a + i] : 0x7fffffff;
        __syncthreads();
        for (int size = 2; size <= p2; size <<= 1) {
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                for (int i = threadIdx.x; i < p2; i += blockDim.x) {
                    int j = i ^ stride;
                    if (j > i) {
                        bool up = (i & size) == 0;
                        int x = s[i], y = s[j];
                        if ((x > y) == up) { s[i] = y; s[j] = x; }
                    }
                }
                __syncthreads();
            }
        }
        for (int i = threadIdx.x; i < len; i += blockDim.x) perm[a + i] = s[i];
        return;
    }
    // Entry numbers are distinct, so an element's rank is the count of smaller ones.
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        int v = perm[a + i], rank = 0;
        for (int j = 0; j < len; ++j) rank += perm[a + j] < v;
        scratch[a + rank] = v;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < len; i += blockDim.x) perm[a + i] = scratch[a + i];
}

// dW[l, :] = scale * sum_{e in segment l} coef[e] * src(e)[e / stride, :], where
// src(e) = X for slots e % stride < split and X2 otherwise (rows without entries
// get zeros). Serves dW_dec (coef = latent value; X = residual gradient, X2 =
// AuxK gradient) and dW_encT (coef = grad of the pre-activation, X = X2 =
// encoder input). One block per latent: no atomics, each output row written once.
extern "C" __global__ void segment_outer_accumulate(const int* __restrict__ perm, const int* __restrict__ offsets, int stride,
                                                    int split, const float* __restrict__ coef, const float* __restrict__ X,
                                                    const float* __restrict__ X2, int d, float scale, float* __restrict__ dW) {
    __shared__ int s_row[128];
    __shared__ float s_coef[128];
    __shared__ const float* s_src[128];
    int l = blockIdx.x;
    int a = offsets[l], b = offsets[l + 1];
    for (int c0 = 0; c0 < d; c0 += blockDim.x * 4) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int s0 = a; s0 < b; s0 += 128) {
            __syncthreads();
            for (int i = threadIdx.x; i < 128 && s0 + i < b; i += blockDim.x) {
                int e = perm[s0 + i];
                s_row[i] = e / stride;
                s_coef[i] = coef[e];
                s_src[i] = (e % stride) < split ? X : X2;
            }
            __syncthreads();
            int n = b - s0 < 128 ? b - s0 : 128;
            for (int i = 0; i < n; ++i) {
                const float* x = s_src[i] + (size_t)s_row[i] * d;
                float cf = s_coef[i];
                for (int u = 0; u < 4; ++u) {
                    int c = c0 + threadIdx.x + u * blockDim.x;
                    if (c < d) acc[u] += cf * x[c];
                }
            }
        }
        for (int u = 0; u < 4; ++u) {
            int c = c0 + threadIdx.x + u * blockDim.x;
            if (c < d) dW[(size_t)l * d + c] = scale * acc[u];
        }
    }
}

// out[l] = scale * sum_{e in segment l} coef[e]  (bias gradient of active latents).
extern "C" __global__ void segment_sum(const int* __restrict__ perm, const int* __restrict__ offsets, int n_latents,
                                       const float* __restrict__ coef, float scale, float* __restrict__ out) {
    int l = blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= n_latents) return;
    float acc = 0.0f;
    for (int s = offsets[l]; s < offsets[l + 1]; ++s) acc += coef[perm[s]];
    out[l] = scale * acc;
}

// out[c] = scale * sum_r X[r, c] (bias gradient of dense outputs); one thread per column.
extern "C" __global__ void column_sum(const float* __restrict__ X, int rows, int d, float scale, float* __restrict__ out) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    float acc = 0.0f;
    for (int r = 0; r < rows; ++r) acc += X[(size_t)r * d + c];
    out[c] = scale * acc;
}

// partial[s, c] = sum_{j in split s} coef[j] * W[j, c], splits of rows_per_split
// rows (grid: x over columns, y over splits); rows with coef 0 are skipped, so
// with sparse coefficients only active rows are read. column_sum over the
// partials finishes the product in a fixed order.
extern "C" __global__ void weighted_rows_partial(const float* __restrict__ W, const float* __restrict__ coef, int rows,
                                                 int d, int rows_per_split, float* __restrict__ partial) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    int s = blockIdx.y;
    if (c >= d) return;
    int r0 = s * rows_per_split, r1 = r0 + rows_per_split < rows ? r0 + rows_per_split : rows;
    float acc = 0.0f;
    for (int r = r0; r < r1; ++r) {
        float cf = coef[r];
        if (cf != 0.0f) acc += cf * W[(size_t)r * d + c];
    }
    partial[(size_t)s * d + c] = acc;
}

// Sets pre-activations of live latents to -inf so a top-k over the result only
// sees dead latents (AuxK). dead[l] != 0 marks a dead latent.
extern "C" __global__ void mask_live_latents(float* X, int rows, int m, const unsigned char* __restrict__ dead) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)rows * m && !dead[i % m]) X[i] = -3.402823466e38f;
}

// diff = a - b elementwise (residuals for MSE and its gradient).
extern "C" __global__ void sub_elementwise(const float* a, const float* b, float* diff, unsigned long long n) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) diff[i] = a[i] - b[i];
}

// Adam, in the CPU trainer's exact arithmetic: g is scaled by clip (global-norm
// clipping), bc1/bc2 are the bias corrections.
extern "C" __global__ void adam_step(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                     float* __restrict__ v, unsigned long long n, float lr, float beta1, float beta2,
                                     float bc1, float bc2, float eps, float clip) {
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i] * clip;
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
}

// Rescales each row of W [rows, d] to unit L2 norm (decoder rows of TopK SAEs);
// zero rows stay zero.
extern "C" __global__ void normalize_rows(float* W, int rows, int d) {
    __shared__ float scratch[33];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* w = W + (size_t)r * d;
    float s = 0.0f;
    for (int c = threadIdx.x; c < d; c += blockDim.x) s += w[c] * w[c];
    s = block_sum(s, scratch);
    if (!(s > 0.0f)) return;
    float nrm = sqrtf(s);
    for (int c = threadIdx.x; c < d; c += blockDim.x) w[c] /= nrm;
}

// G[r, :] -= <G[r, :], W[r, :]> W[r, :]: keeps the part of a unit-norm row's
// gradient tangent to the sphere. One block per row.
extern "C" __global__ void project_tangent_rows(float* G, const float* __restrict__ W, int rows, int d) {
    __shared__ float scratch[33];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* g = G + (size_t)r * d;
    const float* w = W + (size_t)r * d;
    float s = 0.0f;
    for (int c = threadIdx.x; c < d; c += blockDim.x) s += g[c] * w[c];
    s = block_sum(s, scratch);
    for (int c = threadIdx.x; c < d; c += blockDim.x) g[c] -= s * w[c];
}

// xs = X * scale (the training target of an SAE) and xin = xs - bias (encoder
// input; bias may be null).
extern "C" __global__ void prepare_input(const float* __restrict__ X, int rows, int d, float scale,
                                         const float* __restrict__ bias, float* __restrict__ xs, float* __restrict__ xin) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * d) return;
    float v = X[i] * scale;
    xs[i] = v;
    xin[i] = bias ? v - bias[i % d] : v;
}

// Reconstruction loss of one row per block: e = yhat - y, g = 2 e inv_n (the
// gradient of the mean over rows of the squared error), row_se[r] = sum e^2,
// row_var[r] = sum (y - ybar)^2 (explained variance).
extern "C" __global__ void residual_loss(const float* __restrict__ yhat, const float* __restrict__ y,
                                         const float* __restrict__ ybar, int rows, int d, float inv_n,
                                         float* __restrict__ g, float* __restrict__ row_se, float* __restrict__ row_var) {
    __shared__ float scratch[33];
    int r = blockIdx.x;
    if (r >= rows) return;
    size_t o = (size_t)r * d;
    float se = 0.0f, var = 0.0f;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float e = yhat[o + c] - y[o + c];
        se += e * e;
        g[o + c] = 2.0f * e * inv_n;
        float t = y[o + c] - ybar[c];
        var += t * t;
    }
    se = block_sum(se, scratch);
    var = block_sum(var, scratch);
    if (threadIdx.x == 0) {
        row_se[r] = se;
        row_var[r] = var;
    }
}

// AuxK residual of one row per block: v = a + (yhat - y) (the dead latents'
// reconstruction against the residual, held constant), h = coef * v,
// row_ae[r] = sum v^2.
extern "C" __global__ void auxk_residual(const float* __restrict__ a, const float* __restrict__ yhat,
                                         const float* __restrict__ y, int rows, int d, float coef,
                                         float* __restrict__ h, float* __restrict__ row_ae) {
    __shared__ float scratch[33];
    int r = blockIdx.x;
    if (r >= rows) return;
    size_t o = (size_t)r * d;
    float ae = 0.0f;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float v = a[o + c] + (yhat[o + c] - y[o + c]);
        ae += v * v;
        h[o + c] = coef * v;
    }
    ae = block_sum(ae, scratch);
    if (threadIdx.x == 0) row_ae[r] = ae;
}

// partial[offset + block] = sum of x^2 over this block's grid-stride share, in
// double (global gradient norm; the host adds the partials in a fixed order).
extern "C" __global__ void sum_squares_partial(const float* __restrict__ x, unsigned long long n,
                                               double* __restrict__ partial, int offset) {
    __shared__ double s[256];
    double acc = 0.0;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        double v = x[i];
        acc += v * v;
    }
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) s[threadIdx.x] += s[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[offset + blockIdx.x] = s[0];
}
