// The fused CUDA kernels (include/mechlens/kernels/: norms.hpp, activations.hpp,
// rotary_write_kv.hpp, matvec.hpp; their CUDA source in kernels/source/) against the ATen computation
// they replace, written here the way Hugging Face's Llama writes it, and the whole model with the
// kernels on against transformers' reference outputs and against itself with them off.
//
// Tolerances: silu_mul, rotary_write_kv and the sum of add_rms_norm round exactly where the
// reference rounds, so they must be bit-identical. RMSNorm sums squares in a different order than
// ATen's reduction, so its float32 statistic may differ in the last bits: in bfloat16 / float16
// outputs at most two units in the last place (one in the normalised value, which the weight
// multiply can make two), on at most 1 % of the elements; in float32 at most 4 units. The
// matrix-vector kernels sum in float32 in another order than cuBLAS (and their RMSNorm's sum of
// squares in another order than ATen): within 1e-5 of the reference's scale in float32, 1e-2 in
// bfloat16 and 2e-3 in float16 (about two units in the last place). The model: the parity rule of
// test_hf_parity.cpp (1e-4 of the reference's scale).
//
// The tests tagged [cuda] exist as the ctest `models_cuda`, registered only in CUDA builds; a CPU
// build does not report them as passed. On the CPU only "unavailable" is checked.
#include <cmath>
#include <limits>

#include <mechlens/generation/generate.hpp>
#include <mechlens/io/safetensors.hpp>
#include <mechlens/kernels/fused_ops.hpp>
#include <mechlens/models/load.hpp>
#include <mechlens/models/rotary.hpp>

#include "test_util.hpp"

using namespace mechlens;

namespace {

bool cuda_run() { return test::device().is_cuda(); }
/// [cuda] tests run only as the `models_cuda` ctest of a CUDA build (MECHLENS_TEST_DEVICE=cuda);
/// run any other way they fail, rather than pass without having tested anything.
void require_cuda() {
  if (!cuda_run()) FAIL("a [cuda] test: run it with MECHLENS_TEST_DEVICE=cuda (ctest -R models_cuda in a CUDA build)");
}

at::Tensor hf_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor var = x32.pow(2).mean(-1, true);
  return w * (x32 * at::rsqrt(var + eps)).to(x.scalar_type());
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

/// The fraction of elements of a and b that are not bit-identical, and the largest distance
/// between them in units in the last place (the difference of their bit patterns as integers).
std::pair<double, int64_t> mismatch(const at::Tensor& a, const at::Tensor& b) {
  const auto bits = a.element_size() == 2 ? at::kShort : at::kInt;
  at::Tensor x = a.contiguous().view(bits).to(at::kLong).cpu(), y = b.contiguous().view(bits).to(at::kLong).cpu();
  double frac = x.ne(y).to(at::kDouble).mean().item<double>();
  return {frac, (x - y).abs().max().item<int64_t>()};
}

const at::ScalarType kDtypes[] = {at::kFloat, at::kBFloat16, at::kHalf};

}  // namespace

TEST_CASE("Fused kernels are reported unavailable where they cannot run") {
  at::NoGradGuard no_grad;
  REQUIRE_FALSE(kernels::fused_available(at::zeros({2, 8})));  // CPU tensor
  if (!cuda_run()) return;
  at::Tensor x = at::zeros({2, 8}, at::TensorOptions().device(test::device()));
  REQUIRE_FALSE(kernels::fused_available(x.to(at::kDouble)));
  kernels::set_fused_enabled(false);
  REQUIRE_FALSE(kernels::fused_available(x));
  kernels::set_fused_enabled(true);
  REQUIRE(kernels::fused_available(x));
  {
    at::AutoGradMode grad(true);
    REQUIRE_FALSE(kernels::fused_available(x));  // no backward
  }
}

TEST_CASE("Fused RMSNorm and add + RMSNorm match the float32 computation transformers does", "[cuda]") {
  require_cuda();
  at::NoGradGuard no_grad;
  at::manual_seed(3);
  for (auto dtype : kDtypes) {
    for (int64_t d : {64, 4096, 5120, 9000}) {
      auto opts = at::TensorOptions().dtype(dtype).device(test::device());
      at::Tensor x = at::randn({3, 5, d}, opts) * 3, delta = at::randn({3, 5, d}, opts);
      at::Tensor w = at::randn({d}, opts);
      INFO("dtype " << c10::toString(dtype) << ", d " << d);
      const bool f32 = dtype == at::kFloat;
      auto [frac, worst] = mismatch(kernels::rms_norm(x, w, 1e-5), hf_rms_norm(x, w, 1e-5));
      CHECK((f32 || frac <= 0.01));
      CHECK(worst <= (f32 ? 4 : 2));
      auto [sum, normed] = kernels::add_rms_norm(x, delta, w, 1e-6);
      REQUIRE(at::equal(sum, x + delta));
      std::tie(frac, worst) = mismatch(normed, hf_rms_norm(x + delta, w, 1e-6));
      CHECK((f32 || frac <= 0.01));
      CHECK(worst <= (f32 ? 4 : 2));
    }
  }
}

TEST_CASE("Fused silu(gate) * up is bit-identical to ATen's two kernels", "[cuda]") {
  require_cuda();
  at::NoGradGuard no_grad;
  at::manual_seed(4);
  for (auto dtype : kDtypes) {
    at::Tensor gu = at::randn({4, 3, 2 * 700}, at::TensorOptions().dtype(dtype).device(test::device())) * 4;
    at::Tensor expected = at::silu(gu.narrow(-1, 0, 700)) * gu.narrow(-1, 700, 700);
    INFO("dtype " << c10::toString(dtype));
    REQUIRE(at::equal(kernels::silu_mul(gu), expected));
  }
}

TEST_CASE("Fused rotary + KV write equals rotate-half rotary and writes only the given slot", "[cuda]") {
  require_cuda();
  at::NoGradGuard no_grad;
  at::manual_seed(5);
  RopeConfig rope{"llama3", 500000.0, 8.0, 1.0, 4.0, 8192};
  const int64_t b = 3, hq = 8, hkv = 2, d = 64, cap = 10;
  for (auto dtype : kDtypes) {
    auto opts = at::TensorOptions().dtype(dtype).device(test::device());
    auto longs = at::TensorOptions().dtype(at::kLong).device(test::device());
    at::Tensor inv_freq = rope_inverse_frequencies(rope, d, test::device());
    at::Tensor qkv = at::randn({b, 1, (hq + 2 * hkv) * d}, opts);
    at::Tensor positions = at::tensor(std::vector<int64_t>{7, 130, 4000}, longs).view({b, 1});
    at::Tensor slot = at::full({1}, 4, longs);
    at::Tensor keys = at::zeros({b, hkv, cap, d}, opts), values = at::zeros({b, hkv, cap, d}, opts);
    at::Tensor q = kernels::rotary_write_kv(qkv, hq, hkv, positions, inv_freq, slot, keys, values);

    // transformers: cos/sin from float32 angles cast to the dtype; q * cos + rotate_half(q) * sin.
    RotaryAngles a = rotary_angles(inv_freq, positions, dtype);
    auto rope_ref = [&](const at::Tensor& x) { return x * a.cos + rotate_half(x) * a.sin; };
    at::Tensor heads = qkv.view({b, 1, hq + 2 * hkv, d});
    INFO("dtype " << c10::toString(dtype));
    REQUIRE(at::equal(q, rope_ref(heads.narrow(2, 0, hq))));
    REQUIRE(at::equal(keys.select(2, 4), rope_ref(heads.narrow(2, hq, hkv)).squeeze(1)));
    REQUIRE(at::equal(values.select(2, 4), heads.narrow(2, hq + hkv, hkv).squeeze(1)));
    REQUIRE(keys.narrow(2, 0, 4).abs().sum().item<double>() == 0.0);
    REQUIRE(values.narrow(2, 5, cap - 5).abs().sum().item<double>() == 0.0);
  }
}

TEST_CASE("With the fused kernels on, the model still matches transformers and decodes the same tokens", "[cuda]") {
  require_cuda();
  at::NoGradGuard no_grad;  // the kernels run only without autograd
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa"}) {
    const std::string dir = std::string(MECHLENS_TEST_DATA) + "/models/" + name;
    Model model = load_model(dir, {at::kFloat, test::device()});
    auto ref = io::load_safetensors(dir + "/reference.safetensors");
    for (int i = 0; i < 3; ++i) {
      const std::string p = "p" + std::to_string(i) + ".";
      INFO(name << " prompt " << i);
      REQUIRE(kernels::fused_available(at::zeros({1}, at::TensorOptions().device(test::device()))));
      REQUIRE(test::max_rel_diff(model->forward(ref.at(p + "input_ids")), ref.at(p + "logits")) <= 1e-4);
    }
  }
}

namespace {
double tolerance(at::ScalarType t) { return t == at::kFloat ? 1e-5 : t == at::kBFloat16 ? 1e-2 : 2e-3; }
}  // namespace

TEST_CASE("The matrix-vector kernel matches at::linear for one row", "[cuda]") {
  require_cuda();
  at::NoGradGuard no_grad;
  at::manual_seed(6);
  for (auto dtype : kDtypes) {
    auto opts = at::TensorOptions().dtype(dtype).device(test::device());
    for (auto [n, k] : {std::pair<int64_t, int64_t>{6144, 4096}, {4096, 14336}, {1001, 64}, {3, 8}}) {
      at::Tensor x = at::randn({1, 1, k}, opts), w = at::randn({n, k}, opts) * 0.05;
      INFO("dtype " << c10::toString(dtype) << ", " << n << " x " << k);
      REQUIRE(kernels::matvec_applies(x, w));
      at::Tensor y = kernels::matvec(x, w);
      REQUIRE(y.sizes() == at::IntArrayRef({1, 1, n}));
      REQUIRE(test::max_rel_diff(y, at::linear(x.to(at::kFloat), w.to(at::kFloat))) <= tolerance(dtype));
    }
    // Two rows or a row length that is no multiple of 16 bytes take at::linear; so does a bias.
    at::Tensor w = at::randn({8, 16}, opts), x1 = at::randn({1, 16}, opts), bias = at::randn({8}, opts);
    REQUIRE_FALSE(kernels::matvec_applies(at::randn({2, 16}, opts), w));
    REQUIRE_FALSE(kernels::matvec_applies(at::randn({1, 15}, opts), at::randn({8, 15}, opts)));
    REQUIRE(at::equal(kernels::linear(x1, w, bias), at::linear(x1, w, bias)));
  }
}

TEST_CASE("The matrix-vector kernels with RMSNorm, SwiGLU and the residual add inside match ATen's ops", "[cuda]") {
  require_cuda();
  at::NoGradGuard no_grad;
  at::manual_seed(7);
  const double eps = 1e-5;
  for (auto dtype : kDtypes) {
    auto opts = at::TensorOptions().dtype(dtype).device(test::device());
    const int64_t d = 512, f = 1408, n = 768;
    at::Tensor x = at::randn({1, 1, d}, opts), gamma = 1 + 0.1 * at::randn({d}, opts);
    at::Tensor w = at::randn({n, d}, opts) * 0.05, down = at::randn({d, f}, opts) * 0.05;
    at::Tensor gate_up = at::randn({1, 1, 2 * f}, opts), resid = at::randn({1, 1, d}, opts);
    INFO("dtype " << c10::toString(dtype));
    // RMSNorm(x) W^T: transformers' norm, then the projection (in float32, from the rounded norm).
    REQUIRE(kernels::rms_norm_matvec_applies(x, gamma, w));
    at::Tensor y = kernels::rms_norm_matvec(x, gamma, eps, w);
    REQUIRE(y.sizes() == at::IntArrayRef({1, 1, n}));
    REQUIRE(test::max_rel_diff(y, at::linear(hf_rms_norm(x, gamma, eps).to(at::kFloat), w.to(at::kFloat))) <=
            tolerance(dtype));
    // resid + (silu(gate) * up) W^T: SwiGLU rounded as ATen rounds it, the sum rounded after.
    REQUIRE(kernels::silu_mul_matvec_applies(gate_up, down));
    at::Tensor act = at::silu(gate_up.narrow(-1, 0, f)) * gate_up.narrow(-1, f, f);
    at::Tensor expected = resid.to(at::kFloat) + at::linear(act.to(at::kFloat), down.to(at::kFloat));
    REQUIRE(test::max_rel_diff(kernels::silu_mul_matvec(gate_up, down, resid), expected) <= tolerance(dtype));
    REQUIRE(test::max_rel_diff(kernels::silu_mul_matvec(gate_up, down), expected - resid.to(at::kFloat)) <=
            tolerance(dtype));
    // resid + x W^T.
    at::Tensor r2 = at::randn({1, 1, n}, opts);
    REQUIRE(test::max_rel_diff(kernels::matvec(x, w, r2), r2.to(at::kFloat) + at::linear(x.to(at::kFloat), w.to(at::kFloat))) <=
            tolerance(dtype));
    // What does not fit is refused by name, not read out of bounds.
    REQUIRE_FALSE(kernels::rms_norm_matvec_applies(x, at::randn({d + 1}, opts), w));
    REQUIRE_FALSE(kernels::silu_mul_matvec_applies(gate_up.narrow(-1, 0, f), down));
    REQUIRE_THROWS_AS(kernels::matvec(x, w, at::randn({1, 1, n + 1}, opts)), ArgumentError);
  }
  // float32 at Llama-3-8B's d_mlp (K = 14336, few rows: the block-per-rows layout, SwiGLU made
  // chunk by chunk, not staged).
  auto opts = at::TensorOptions().dtype(at::kFloat).device(test::device());
  const int64_t f = 14336;
  at::Tensor gate_up = at::randn({1, 1, 2 * f}, opts), down = at::randn({64, f}, opts) * 0.02;
  REQUIRE(kernels::silu_mul_matvec_applies(gate_up, down));
  at::Tensor act = at::silu(gate_up.narrow(-1, 0, f)) * gate_up.narrow(-1, f, f);
  REQUIRE(test::max_rel_diff(kernels::silu_mul_matvec(gate_up, down), at::linear(act, down)) <= tolerance(at::kFloat));
}

TEST_CASE("Greedy decoding gives the same tokens with the fused kernels on and off", "[cuda]") {
  require_cuda();
  at::NoGradGuard no_grad;
  for (const char* name : {"llama_gqa_llama3", "mistral_swa"}) {
    const std::string dir = std::string(MECHLENS_TEST_DATA) + "/models/" + name;
    Model model = load_model(dir, {at::kFloat, test::device()});
    auto ref = io::load_safetensors(dir + "/reference.safetensors");
    at::Tensor ids = ref.at("p1.input_ids").cpu().contiguous();
    std::vector<int64_t> prompt(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    GenerationOptions g;
    g.max_new_tokens = 12;
    g.use_model_eos = false;
    g.record_margins = true;
    std::vector<GenerationResult> runs;
    for (bool fused : {true, false}) {
      kernels::set_fused_enabled(fused);
      runs.push_back(generate(*model, {prompt}, g));
    }
    kernels::set_fused_enabled(true);
    INFO(name);
    REQUIRE(runs[0].tokens == runs[1].tokens);
    for (size_t t = 0; t < runs[0].margins[0].size(); ++t)
      REQUIRE(std::abs(runs[0].margins[0][t] - runs[1].margins[0][t]) <= 1e-3 * (1 + std::abs(runs[1].margins[0][t])));
  }
}

TEST_CASE("The fused Gumbel-max sampler draws the ATen ops' tokens, step after step", "[cuda]") {
  require_cuda();
  at::NoGradGuard no_grad;
  at::manual_seed(9);
  for (auto dtype : kDtypes) {
    for (double top_p : {1.0, 0.9}) {
      // 64 rows over a 128,256-token vocabulary (Llama-3's), logits of a realistic spread, and
      // a few exact ties (equal logits: the lowest index must win, as at::argmax picks it).
      at::Tensor logits = (at::randn({64, 128256}, at::TensorOptions().device(test::device())) * 3).to(dtype);
      logits.narrow(1, 1000, 8).fill_(2.0);
      SamplingOptions o;
      o.temperature = 0.7;
      o.top_p = top_p;
      o.seed = 5;
      Sampler fused(o, test::device()), aten(o, test::device());
      for (int step = 0; step < 4; ++step) {
        kernels::set_fused_enabled(true);
        at::Tensor a = fused(logits);
        kernels::set_fused_enabled(false);
        at::Tensor b = aten(logits);
        kernels::set_fused_enabled(true);
        INFO("dtype " << c10::toString(dtype) << " top_p " << top_p << " step " << step);
        REQUIRE(at::equal(a, b));
      }
    }
  }
  // The kernel alone against the noise it replaces, on scores with every value tied.
  Sampler s(SamplingOptions{1.0, 0, 1.0, 3, {}}, test::device());
  at::Tensor scores = at::zeros({8, 5000}, at::TensorOptions().device(test::device()));
  at::Tensor expected = (scores + s.gumbel(8, 5000)).argmax(-1);
  kernels::set_fused_enabled(true);
  REQUIRE(at::equal(s(scores), expected));
}
