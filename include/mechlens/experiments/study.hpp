#pragma once
/// \file
/// Study: runs conditions over every pair in batches, samples the generations, scores them and
/// appends one record per generation to the run's RecordLog as each batch finishes.
///
///   experiments::Study study(*model, tokenizer, scorer, pairs, encoded, settings, log);
///   study.run(experiments::natural(Role::Baseline));
///   study.run(experiments::kv_transfer("baseline+recursive_kv", Role::Baseline, {...}, cfg));
///
/// Batches are fixed chunks of the pair list. Each row samples from its own stream, seeded with
/// pair_seed(--seed, i) for pair i (generation/sampler.hpp), so every condition draws the same
/// random numbers for the same pair (common random numbers: paired contrasts compare conditions,
/// not sampler luck), the batch size is a speed setting only, and a batch rerun after a kill
/// reproduces what it would have written. With a resumed log, a batch whose records all
/// exist is skipped; a batch with some missing is decoded again and only the missing rows are
/// written. Every record kept from an earlier run must have been made as this one would make it
/// (resume_check.hpp): the constructor checks the settings and prompts of every record in the log,
/// run() (or check_kept) the spec of the condition's records; the first difference is an error.

#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/dtype.hpp"
#include "mechlens/core/error.hpp"
#include "mechlens/experiments/conditions.hpp"
#include "mechlens/experiments/progress.hpp"
#include "mechlens/experiments/prompt_encoding.hpp"
#include "mechlens/experiments/prompt_pairs.hpp"
#include "mechlens/experiments/records.hpp"
#include "mechlens/experiments/resume_check.hpp"
#include "mechlens/experiments/study_settings.hpp"
#include "mechlens/generation/generate.hpp"
#include "mechlens/kernels/fused_ops.hpp"
#include "mechlens/metrics/behaviour.hpp"
#include "mechlens/models/model.hpp"
#include "mechlens/tokenizer/tokenizer.hpp"
#include "mechlens/version.hpp"

namespace mechlens::experiments {

/// The kind of device a model computes on, as records name it: "cpu" or "cuda" (no index: ranks
/// on different GPUs of a distributed run make the same records), and for a model split over
/// devices the kinds in layer order joined by "+" ("cuda+cpu": offloaded layers compute there).
inline std::string device_kind(const ModelImpl& model) {
  std::string out = c10::DeviceTypeName(model.device().type(), /*lower_case=*/true);
  for (const at::Device& d : model.layer_devices()) {
    const std::string kind = c10::DeviceTypeName(d.type(), /*lower_case=*/true);
    if (("+" + out + "+").find("+" + kind + "+") == std::string::npos) out += "+" + kind;
  }
  return out;
}

/// What computes `model`'s records: the mechlens and LibTorch versions, the device kind
/// (device_kind) and dtype, whether the model is fused (the fast engine, models/fast_engine.hpp, runs every block without
/// an active hook), whether mechlens' CUDA kernels run for its activations
/// (kernels::fused_available), and `cuda_graph` (GenerationResult::used_cuda_graph).
inline nlohmann::json made_with(const ModelImpl& model, bool cuda_graph = false) {
  at::NoGradGuard no_grad;  // as in decoding: the kernels run only without autograd
  const bool kernels = model.fused() && kernels::fused_available(at::empty({0}, model.options()));
  return {{"mechlens", version()},
          {"libtorch", libtorch_version()},
          {"device", device_kind(model)},
          {"dtype", dtype_name(model.dtype())},
          {"fused_model", model.fused()},
          {"fused_kernels", kernels},
          {"cuda_graph", cuda_graph}};
}

class Study {
 public:
  Study(ModelImpl& model, const Tokenizer& tokenizer, const metrics::Scorer& scorer, std::vector<PromptPair> pairs,
        std::vector<EncodedPair> encoded, StudySettings settings, RecordLog& log, Progress* progress = nullptr)
      : model_(model), tok_(tokenizer), scorer_(scorer), pairs_(std::move(pairs)), encoded_(std::move(encoded)),
        settings_(std::move(settings)), log_(log), progress_(progress) {
    MECHLENS_CHECK(pairs_.size() == encoded_.size(), ArgumentError, "Study: {} pairs but {} encoded pairs",
                   pairs_.size(), encoded_.size());
    MECHLENS_CHECK(settings_.batch_size >= 1, ArgumentError, "Study: batch size {} must be >= 1", settings_.batch_size);
    MECHLENS_CHECK(settings_.max_new_tokens >= 0, ArgumentError, "Study: max_new_tokens {} is negative",
                   settings_.max_new_tokens);
    settings_.sampling.check();
    check_kept_records(log_, settings_, pairs_, encoded_);
    (void)check_kept_made_with(log_, made_with(model_));  // another device or dtype is an error here too
  }

  const std::vector<PromptPair>& pairs() const { return pairs_; }
  const std::vector<EncodedPair>& encoded() const { return encoded_; }
  const StudySettings& settings() const { return settings_; }
  RecordLog& log() { return log_; }
  size_t n_batches() const { return (pairs_.size() + static_cast<size_t>(settings_.batch_size) - 1) / static_cast<size_t>(settings_.batch_size); }

  /// Over several processes: this process runs the (condition, batch) units u with
  /// u % size == rank, u counting every batch of every run() of this Study in order (done or
  /// not, so the split is the same on a resume). The batches are the same fixed chunks of the pair
  /// list as in one process, so every record is the one a single process writes.
  void set_shard(int64_t rank, int64_t size) {
    MECHLENS_CHECK(size >= 1 && rank >= 0 && rank < size, ArgumentError, "Study: rank {} of {}", rank, size);
    rank_ = rank;
    size_ = size;
  }

  /// Generations one run of `c` makes (one per pair).
  int64_t size() const { return static_cast<int64_t>(pairs_.size()); }

  /// Checks the records `c` already has in the log (its spec, probe and sources; resume_check.hpp).
  void check_kept(const Condition& c) const { check_kept_records(log_, c, pairs_); }

  /// Runs `c` for every pair not yet recorded under it (after check_kept).
  void run(const Condition& c) {
    MECHLENS_CHECK(static_cast<bool>(c.prepare), ArgumentError, "condition '{}' has no prepare function", c.name);
    MECHLENS_CHECK(c.source_of.empty() || c.source_of.size() == pairs_.size(), ArgumentError,
                   "condition '{}': source_of has {} entries for {} pairs", c.name, c.source_of.size(), pairs_.size());
    check_kept(c);
    for (size_t b = 0; b < n_batches(); ++b) {
      const size_t lo = b * static_cast<size_t>(settings_.batch_size);
      const size_t hi = std::min(pairs_.size(), lo + static_cast<size_t>(settings_.batch_size));
      if (unit_++ % size_ != rank_) {  // another rank's unit
        if (progress_) progress_->skip(static_cast<int64_t>(hi - lo));
        continue;
      }
      BatchContext ctx;
      ctx.model = &model_;
      ctx.pairs = &pairs_;
      ctx.encoded = &encoded_;
      ctx.batch_index = static_cast<int64_t>(b);
      ctx.max_new_tokens = settings_.max_new_tokens;
      bool missing = false;
      for (size_t i = lo; i < hi; ++i) {
        ctx.rows.push_back(i);
        missing = missing || !log_.contains(GenerationRecord::record_id(c.name, pairs_[i].id));
      }
      if (!missing) {
        if (progress_) progress_->skip(static_cast<int64_t>(hi - lo));
        continue;
      }
      run_batch(c, ctx);
      if (progress_) progress_->advance(static_cast<int64_t>(hi - lo));
    }
  }

  /// The recorded scores of condition `name`, in pair order; NotFoundError when one is missing.
  std::vector<double> scores(const std::string& name) const {
    std::vector<double> out;
    for (const auto& p : pairs_) {
      const auto r = log_.find(GenerationRecord::record_id(name, p.id));
      MECHLENS_CHECK(r.has_value(), NotFoundError, "no record of condition '{}' for pair '{}'", name, p.id);
      out.push_back(r->score);
    }
    return out;
  }

 private:
  void run_batch(const Condition& c, const BatchContext& ctx) {
    PreparedBatch prepared = c.prepare(ctx);
    GenerationOptions go;
    go.max_new_tokens = settings_.max_new_tokens;
    go.sampling = settings_.sampling;
    go.sampling.row_seeds.clear();
    for (size_t row : ctx.rows) go.sampling.row_seeds.push_back(pair_seed(settings_.sampling.seed, static_cast<int64_t>(row)));
    go.stop_tokens = settings_.stop_tokens;
    GenerationResult result = decode(model_, prepared.state, go);
    prepared.decoding_scope.reset();
    std::vector<nlohmann::json> extra(ctx.rows.size(), nlohmann::json::object());
    if (prepared.finish) prepared.finish(result, prepared.state, extra);
    const nlohmann::json computed = made_with(model_, result.used_cuda_graph);
    for (size_t i = 0; i < ctx.rows.size(); ++i) {
      const PromptPair& pair = pairs_[ctx.rows[i]];
      GenerationRecord r;
      r.condition = c.name;
      r.pair_id = pair.id;
      if (log_.contains(r.id())) continue;
      r.prompt_role = role_name(c.target);
      r.prompt = pair.text(c.target);
      r.prompt_ids = encoded_[ctx.rows[i]].ids(c.target);
      r.source = i < prepared.sources.size() ? prepared.sources[i] : nlohmann::json();
      r.intervention = c.intervention;
      r.layers = c.layers;
      r.spec = c.spec;
      r.probe = c.probe;
      r.seed = settings_.sampling.seed;
      r.sampler_seed = go.sampling.row_seeds[i];
      r.batch = ctx.batch_index;
      r.batch_size = settings_.batch_size;
      r.sampling = settings_.sampling_json();
      r.ids = result.tokens[i];
      r.stopped = result.stopped[i];
      std::vector<int64_t> text_ids = r.ids;
      if (r.stopped && !text_ids.empty()) text_ids.pop_back();  // the stop token is not text
      r.text = tok_.decode(text_ids, /*skip_special_tokens=*/true);
      r.score = scorer_.score_item({r.id(), r.text});
      r.scorer = scorer_.name();
      r.extra = extra[i];
      r.made_with = computed;
      if (i < prepared.notes.size() && !prepared.notes[i].is_null())
        for (auto it = prepared.notes[i].begin(); it != prepared.notes[i].end(); ++it) r.extra[it.key()] = it.value();
      log_.append(r);
    }
    log_.sync();
  }

  ModelImpl& model_;
  const Tokenizer& tok_;
  const metrics::Scorer& scorer_;
  std::vector<PromptPair> pairs_;
  std::vector<EncodedPair> encoded_;
  StudySettings settings_;
  RecordLog& log_;
  Progress* progress_;
  int64_t rank_ = 0, size_ = 1, unit_ = 0;
};

}  // namespace mechlens::experiments
