#pragma once
/// \file
/// All the fused CUDA kernels, for the small steps between the GEMMs of a Llama layer, each
/// replacing several ATen kernels with one (what batch-1 decoding is short of; docs/performance.md).
/// This header only includes the headers of each family:
///
///   kernels/norms.hpp            rms_norm         RMSNorm                              (8 ATen kernels -> 1)
///                                add_rms_norm     residual add, then RMSNorm of the sum (9 -> 1)
///   kernels/activations.hpp      silu_mul         SwiGLU's silu(gate) * up              (2 -> 1)
///   kernels/rotary_write_kv.hpp  rotary_write_kv  rotary on q and k of one decoding step, k and v
///                                                 written into the KV cache at a device-side
///                                                 slot                                  (6 -> 1)
///   kernels/matvec.hpp           matvec           y = x W^T (+ residual) for one row: batch-1
///                                                 decoding's projections, W streamed in 16-byte
///                                                 loads, the residual add folded in
///                                rms_norm_matvec  RMSNorm(x) W^T, the norm inside      (norm + GEMM -> 1)
///                                silu_mul_matvec  (silu(gate) * up) W^T (+ residual)   (activation + GEMM + add -> 1)
///                                linear           matvec where it applies, else at::linear
///   kernels/sampling.hpp         gumbel_argmax    the sampler's Gumbel noise + add + argmax over
///                                                 the vocabulary                      (~25 -> 1)
///
/// Beside them: kernels/switch.hpp (set_fused_enabled), kernels/fused_module.hpp (the NVRTC program
/// of all the kernels, fused_available), kernels/source/ (their CUDA C++, one file per family),
/// kernels/runtime_compiler.hpp (NVRTC and the driver API, opened at run time:
/// kernels/nvrtc_api.hpp, kernels/cuda_driver_api.hpp).
///
/// Each computes what Hugging Face's Llama computes, rounding where it rounds: RMSNorm in float32
/// cast back to the activation dtype before the weight multiply; rotary as
/// x * cos + rotate_half(x) * sin with each product and the sum rounded to the activation dtype,
/// cos/sin from float32 angles; silu rounded before the multiply. The only differences are the
/// order of float32 sums (RMSNorm's sum of squares; the projections' dot products, which cuBLAS
/// also sums in float32 in an order of its own): last-bit effects, with the tolerances stated in
/// tests/models/test_fused_kernels.cpp.
///
/// They run where `fused_available(x)` says so: CUDA tensors of float32 / bfloat16 / float16, a
/// CUDA LibTorch (MECHLENS_WITH_CUDA and MECHLENS_WITH_NVRTC, which mechlens' CMake defines
/// together), NVRTC and the CUDA driver found at run time, no autograd needed, and not switched
/// off (`set_fused_enabled(false)`, or the environment variable MECHLENS_FUSED_KERNELS=0).
/// Elsewhere the model keeps its ATen path, which is also the reference the kernels are tested
/// against.

#include "mechlens/kernels/activations.hpp"
#include "mechlens/kernels/fused_module.hpp"
#include "mechlens/kernels/matvec.hpp"
#include "mechlens/kernels/norms.hpp"
#include "mechlens/kernels/rotary_write_kv.hpp"
#include "mechlens/kernels/sampling.hpp"
#include "mechlens/kernels/switch.hpp"
