// Shared device helpers, included by every kernel file (NVRTC gets this file as
// a named header). Kernels use no CUDA toolkit headers: a machine with only the
// driver and libnvrtc (e.g. pip's nvidia-cuda-nvrtc) can compile them.

#pragma once

#define SAEPIPE_WARP 32

// Monotonic map from float to unsigned: a > b  <=>  float_key(a) > float_key(b).
__device__ __forceinline__ unsigned int float_key(float f) {
    unsigned int u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = SAEPIPE_WARP / 2; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = SAEPIPE_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum; every thread gets the result. `scratch` holds >= 33 floats.
__device__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x % SAEPIPE_WARP, warp = threadIdx.x / SAEPIPE_WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nwarps = (blockDim.x + SAEPIPE_WARP - 1) / SAEPIPE_WARP;
    if (warp == 0) {
        float t = lane < nwarps ? scratch[lane] : 0.0f;
        t = warp_sum(t);
        if (lane == 0) scratch[32] = t;
    }
    __syncthreads();
    return scratch[32];
}

__device__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x % SAEPIPE_WARP, warp = threadIdx.x / SAEPIPE_WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nwarps = (blockDim.x + SAEPIPE_WARP - 1) / SAEPIPE_WARP;
    if (warp == 0) {
        float t = lane < nwarps ? scratch[lane] : -3.402823466e38f;
        t = warp_max(t);
        if (lane == 0) scratch[32] = t;
    }
    __syncthreads();
    return scratch[32];
}

// Block-wide exclusive prefix sum of one int per thread, in thread order.
// `scratch` holds >= 33 ints; `total` receives the block total.
__device__ int block_exclusive_scan(int v, int* scratch, int* total) {
    int lane = threadIdx.x % SAEPIPE_WARP, warp = threadIdx.x / SAEPIPE_WARP;
    int x = v;
    for (int o = 1; o < SAEPIPE_WARP; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == SAEPIPE_WARP - 1) scratch[warp] = x;
    __syncthreads();
    int nwarps = (blockDim.x + SAEPIPE_WARP - 1) / SAEPIPE_WARP;
    if (warp == 0) {
        int t = lane < nwarps ? scratch[lane] : 0;
        for (int o = 1; o < SAEPIPE_WARP; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, t, o);
            if (lane >= o) t += y;
        }
        if (lane < nwarps) scratch[lane] = t;  // inclusive scan of warp totals
        if (lane == nwarps - 1) scratch[32] = t;
    }
    __syncthreads();
    int warp_offset = warp > 0 ? scratch[warp - 1] : 0;
    *total = scratch[32];
    int result = warp_offset + x - v;
    __syncthreads();
    return result;
}
