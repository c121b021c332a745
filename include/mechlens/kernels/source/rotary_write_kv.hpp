#pragma once
/// \file
/// CUDA C++ source of the `rotary_write_kv` kernel (rotary on one decoding step's q and k, k and v
/// written into the KV cache at a device-side slot), one part of the fused kernels' NVRTC
/// program; kernels/rotary_write_kv.hpp launches it. Needs source/common.hpp's T, ld, st and rnd.

namespace mechlens::kernels::source {

inline const char* rotary_write_kv() {
  return R"CUDA(
// One block per (head of q, k and v, row). qkv rows hold [hq + 2 hkv] heads of d; q goes to
// q_out [rows, hq, d], rotated k and v to the cache layer [rows, hkv, capacity, d] at slot[0].
extern "C" __global__ void rotary_write_kv(const T* qkv, long long qkv_row_stride, const long long* positions,
                                           const float* inv_freq, const long long* slot, T* q_out, T* keys,
                                           T* values, int hq, int hkv, int d, long long cache_row_stride,
                                           long long cache_head_stride) {
  const int head = blockIdx.x;
  const long long b = blockIdx.y;
  const T* src = qkv + b * qkv_row_stride + (long long)head * d;
  const long long s = slot[0];
  if (head >= hq + hkv) {
    T* dst = values + b * cache_row_stride + (head - hq - hkv) * cache_head_stride + s * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = src[i];
    return;
  }
  T* dst = head < hq ? q_out + (b * hq + head) * d : keys + b * cache_row_stride + (head - hq) * cache_head_stride + s * d;
  const float pos = (float)positions[b];
  const int half = d / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = pos * inv_freq[i];
    const float c = rnd(cosf(angle)), sn = rnd(sinf(angle));
    const float x1 = ld(src[i]), x2 = ld(src[i + half]);
    dst[i] = st(rnd(x1 * c) + rnd(-x2 * sn));
    dst[i + half] = st(rnd(x2 * c) + rnd(x1 * sn));
  }
}
)CUDA";
}

}  // namespace mechlens::kernels::source
