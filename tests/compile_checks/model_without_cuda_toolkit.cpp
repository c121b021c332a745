// The model headers include no CUDA toolkit header, in a CUDA build too: the fused kernels reach
// NVRTC and the CUDA driver through mechlens' own declarations (include/mechlens/kernels/
// cuda_driver_api.hpp, nvrtc_api.hpp) and LibTorch's streams through c10's device-generic
// interface. This translation unit compiles the model and the kernels as a CUDA build does
// (MECHLENS_WITH_CUDA and MECHLENS_WITH_NVRTC defined, on any LibTorch) and fails to compile if
// a toolkit header came in. It is compiled apart from the test programs (its macros differ from
// theirs in a CPU build) and has no main: that it compiles is the test.
#ifndef MECHLENS_WITH_CUDA
#define MECHLENS_WITH_CUDA 1
#endif
#ifndef MECHLENS_WITH_NVRTC
#define MECHLENS_WITH_NVRTC 1
#endif

#include <mechlens/kernels/fused_ops.hpp>
#include <mechlens/models/fast_engine.hpp>
#include <mechlens/models/load.hpp>
#include <mechlens/models/model.hpp>

#if defined(__cuda_cuda_h__) || defined(CUDA_VERSION)
#error "a model or kernel header included the CUDA driver API's cuda.h"
#endif
#if defined(__NVRTC_H__)
#error "a model or kernel header included nvrtc.h"
#endif
#if defined(__CUDA_RUNTIME_API_H__) || defined(__CUDA_RUNTIME_H__) || defined(CUDART_VERSION)
#error "a model or kernel header included the CUDA runtime API (cuda_runtime_api.h: ATen/cuda or c10/cuda headers)"
#endif
#if defined(__DRIVER_TYPES_H__) || defined(__VECTOR_TYPES_H__)
#error "a model or kernel header included the CUDA toolkit's driver_types.h / vector_types.h"
#endif
