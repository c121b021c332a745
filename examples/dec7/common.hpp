#pragma once
// What every DEC7 program shares: the flags, loading the model / tokenizer / pairs / scorer, and
// the settings that go into the run folder's run.json. The run folder itself (run.json and its
// resume check, generations.jsonl shared by the phases run into it, the phase folders and their
// outputs) is the library's experiments::RunFolder (experiments/run_folder.hpp).

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "../cli_checks.hpp"
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/dtype.hpp"
#include "mechlens/distributed/world.hpp"
#include "mechlens/experiments/conditions.hpp"
#include "mechlens/experiments/progress.hpp"
#include "mechlens/experiments/prompt_encoding.hpp"
#include "mechlens/experiments/prompt_pairs.hpp"
#include "mechlens/experiments/records.hpp"
#include "mechlens/experiments/run_folder.hpp"
#include "mechlens/experiments/study.hpp"
#include "mechlens/experiments/summary.hpp"
#include "mechlens/experiments/svg_figure.hpp"
#include "mechlens/experiments/table.hpp"
#include "mechlens/io/atomic_file.hpp"
#include "mechlens/metrics/behaviour.hpp"
#include "mechlens/models/load.hpp"
#include "mechlens/tokenizer/tokenizer.hpp"

namespace dec7 {

namespace fs = std::filesystem;
namespace ex = mechlens::experiments;
using mechlens::LayerRange;
using ex::Role;

/// The embedded toy model and the pairs shipped for it and for real Instruct models.
inline std::string embedded_model() { return std::string(MECHLENS_EXAMPLES_DIR) + "/models/dec7-toy"; }
inline std::string toy_pairs() { return std::string(MECHLENS_EXAMPLES_DIR) + "/prompts/toy_pairs.jsonl"; }
inline std::string instruct_pairs() { return std::string(MECHLENS_EXAMPLES_DIR) + "/prompts/instruct_pairs.jsonl"; }

struct Flags {
  std::string model;
  std::string tokenizer;
  std::string pairs;
  int64_t n = 0;
  /// sampling (seed, temperature, top_k, top_p), max_new_tokens, batch_size (the programs decode
  /// 128 pairs together; each row samples from its own stream, so this is speed and memory only)
  ex::StudySettings study = [] {
    ex::StudySettings d;
    d.batch_size = 128;
    return d;
  }();
  std::string layers;
  std::string device = "cpu";
  std::string device_map;
  std::string dtype = "float32";
  std::string out;
  bool resume = false;
  std::string format = "auto";
  std::string system;
  std::string lexicon;
  std::string align = "right";
  bool rerotate = false;
  int threads = 0;
  std::string progress = "auto";
  bool match_transformers_v5 = false;  ///< TokenizerOptions::match_transformers_v5
};

inline void add_shared_flags(CLI::App& app, Flags& f, const std::string& default_out) {
  f.model = embedded_model();
  f.out = default_out;
  app.add_option("--model", f.model, "Hugging Face checkpoint directory (config.json + safetensors); default: the "
                                     "embedded toy model")->capture_default_str();
  app.add_option("--tokenizer", f.tokenizer, "tokenizer.json or its folder; default: the model directory");
  app.add_option("--pairs", f.pairs, "prompt pairs, JSONL {\"id\",\"recursive\",\"baseline\"} (or *_ids); default: "
                                     "examples/prompts/toy_pairs.jsonl for the embedded model, else "
                                     "examples/prompts/instruct_pairs.jsonl");
  app.add_option("--n,--n-pairs", f.n, "use the first n pairs (0: all); --n-pairs is the same flag, for torchrun, which takes a bare --n for an abbreviation of its own options")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--seed", f.study.sampling.seed, "seed of the sampling (pair i samples with its own stream in every condition) and of the shuffled controls")->capture_default_str()
      ->check(CLI::NonNegativeNumber);  // "-1" would wrap to 2^64 - 1
  app.add_option("--max-new-tokens", f.study.max_new_tokens, "tokens generated per prompt")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", f.study.sampling.temperature, "sampling temperature (0: greedy)")->capture_default_str()
      ->check(mechlens::cli::finite_number(0.0, /*low_open=*/false, std::numeric_limits<double>::infinity()));
  app.add_option("--top-k", f.study.sampling.top_k, "top-k sampling (0: off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", f.study.sampling.top_p, "nucleus sampling (1: off)")->capture_default_str()
      ->check(mechlens::cli::finite_number(0.0, /*low_open=*/true, 1.0));
  app.add_option("--layers", f.layers, "layer range(s) lo:hi, comma-separated (half-open, 0-based); what they "
                                       "select is said in each program's --help");
  app.add_option("--device", f.device, "cpu, cuda or cuda:N; under a launcher, plain cuda gives each process the GPU "
                                       "LOCAL_RANK names (modulo the GPUs it sees), cuda:N puts every process on GPU N")
      ->capture_default_str();
  app.add_option("--device-map", f.device_map, "the model's layers over devices: begin:end=device ranges "
                                               "(0:16=cuda:0,16:32=cpu) or auto (by free memory); the embedding and "
                                               "head go with layer 0 (docs/scale.md)");
  app.add_option("--dtype", f.dtype, "float32, bfloat16 or float16")->capture_default_str();
  app.add_option("--out", f.out, "run folder: generations.jsonl, run.json, and one sub-folder per phase")->capture_default_str();
  app.add_flag("--resume", f.resume, "continue the run in --out: what is recorded is kept and not redone");
  app.add_option("--batch-size", f.study.batch_size, "pairs decoded (and R_V prompts run) together: speed and memory only, since each pair samples from its own stream; "
                                                "another size may be used when resuming")->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--format", f.format, "prompt format: raw, chat (user turn of the chat template) or auto (chat when "
                                       "the tokenizer has a template)")->capture_default_str();
  app.add_option("--system", f.system, "system message for the chat format (default: none)");
  app.add_option("--lexicon", f.lexicon, "keyword lexicon JSON for the behaviour score; default: the study's "
                                         "(examples/lexicons/recursive_default.json)");
  app.add_option("--align", f.align, "how prompts of different lengths line up in a splice or patch: right or left")->capture_default_str()
      ->check(CLI::IsMember({"right", "left"}));
  app.add_flag("--rerotate", f.rerotate, "re-rotate spliced keys to the target's positions (default: keep the "
                                         "source's rotation, docs/design.md)");
  app.add_option("--threads", f.threads, "CPU threads (0: LibTorch's default)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_flag("--match-transformers-v5", f.match_transformers_v5,
               "tokenize the prompts as transformers 5 does (it rebuilds Llama-2 / Mistral tokenizers; docs/tokenizer.md); "
               "default: as the tokenizer.json file says, like HF tokenizers");
  app.add_option("--progress", f.progress, "progress bar on stderr: auto (when a terminal), on, off")->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
}

/// What a phase gives back: its summary and its table (also written to <out>/<phase>/table.txt).
struct PhaseResult {
  ex::Summary summary;
  std::string table;
};

/// Everything a phase needs, loaded from the flags.
struct Setup {
  Flags flags;
  std::string model_dir, pairs_path, tokenizer_path;
  mechlens::Model model{nullptr};
  std::optional<mechlens::Tokenizer> tok;
  std::vector<ex::PromptPair> pairs;
  std::vector<ex::EncodedPair> encoded;
  std::unique_ptr<mechlens::metrics::Scorer> scorer;
  ex::StudySettings settings;
  std::optional<ex::RunFolder> folder;  ///< --out: run.json, generations.jsonl, the phase folders
  std::unique_ptr<ex::Progress> progress;
  std::vector<std::string> warnings;  ///< printed by setup (e.g. a resumed run made by another version)
  /// The processes of the run (a launcher such as torchrun sets RANK, WORLD_SIZE, ...; without
  /// them, this process alone): each runs its share of the (condition, batch) units, rank 0
  /// merges the records and writes the summaries (docs/scale.md).
  mechlens::distributed::World world;
  int64_t merges = 0;  ///< run_conditions calls so far (names each merge)

  const mechlens::ModelConfig& config() const { return model->config(); }
  ex::RecordLog& log() { return folder->log(); }
  ex::Study study() {
    ex::Study st(*model, *tok, *scorer, pairs, encoded, settings, log(), progress.get());
    st.set_shard(world.rank(), world.size());
    return st;
  }
  /// Whether this process prints what belongs to the whole run (rank 0).
  bool prints() const { return world.is_main(); }
};

inline std::string canonical(const std::string& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(p, ec);
  return ec ? p : c.string();
}

/// Loads model, tokenizer, pairs and scorer; opens the run folder. `program` names the caller
/// in run.json.
inline Setup setup(const Flags& flags, const std::string& program) {
  // The launcher's world, then the run folder's lock: a second program on this --out stops
  // before loading a model.
  auto world = mechlens::distributed::World::from_environment();
  const ex::Shard shard{world.rank(), world.size()};
  mechlens::io::FileLock lock = ex::RunFolder::lock(flags.out, shard);
  Setup s;
  s.world = std::move(world);
  s.flags = flags;
  if (flags.threads > 0) at::set_num_threads(flags.threads);
  s.model_dir = canonical(flags.model);
  const bool embedded = s.model_dir == canonical(embedded_model());
  s.pairs_path = canonical(flags.pairs.empty() ? (embedded ? toy_pairs() : instruct_pairs()) : flags.pairs);
  s.tokenizer_path = canonical(flags.tokenizer.empty() ? flags.model : flags.tokenizer);

  mechlens::LoadOptions lo;
  lo.dtype = mechlens::parse_dtype(flags.dtype);
  lo.device = mechlens::parse_device(flags.device);
  // One process per GPU under a launcher: plain "cuda" is this process's GPU (LOCAL_RANK).
  if (lo.device.is_cuda() && !lo.device.has_index() && s.world.size() > 1) {
    const int64_t gpus = mechlens::detail::cuda_device_count();
    lo.device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(s.world.local_rank() % std::max<int64_t>(gpus, 1)));
  }
  lo.device_map = mechlens::DeviceMap::parse(flags.device_map);
  s.model = mechlens::load_model(flags.model, lo);
  try {
    mechlens::TokenizerOptions tokenizer_options;
    tokenizer_options.match_transformers_v5 = flags.match_transformers_v5;
    s.tok = mechlens::Tokenizer::from_file(s.tokenizer_path, tokenizer_options);
  } catch (const mechlens::IoError& e) {
    throw mechlens::IoError(fmt::format("{}\n(the programs decode and score text, so they need a tokenizer: put "
                                        "tokenizer.json in the model folder or pass --tokenizer)", e.what()));
  }
  s.pairs = ex::first_pairs(ex::load_prompt_pairs(s.pairs_path), flags.n);
  const auto format = ex::parse_prompt_format(flags.format);
  s.encoded = ex::encode_pairs(s.pairs, &*s.tok, format, flags.system);
  for (size_t i = 0; i < s.encoded.size(); ++i)
    for (Role r : {Role::Recursive, Role::Baseline})
      for (int64_t id : s.encoded[i].ids(r))
        MECHLENS_CHECK(id >= 0 && id < s.model->config().vocab_size, mechlens::ArgumentError,
                       "pair '{}': the {} prompt holds token id {}, outside the model's vocabulary [0, {}) (tokenizer "
                       "and model do not match?)",
                       s.pairs[i].id, ex::role_name(r), id, s.model->config().vocab_size);
  auto lexicon = flags.lexicon.empty() ? mechlens::metrics::Lexicon::recursive_default()
                                       : mechlens::metrics::Lexicon::from_file(flags.lexicon);
  // An immediate stop token gives a text without words: scored 0 (hits per 100 words of nothing).
  s.scorer = std::make_unique<mechlens::metrics::KeywordScorer>(lexicon, mechlens::metrics::EmptyTextPolicy::Zero);

  s.settings = flags.study;

  // run.json: the settings every record of this folder was made with.
  nlohmann::json run = {{"model", s.model_dir},
                        {"tokenizer", s.tokenizer_path},
                        {"match_transformers_v5", flags.match_transformers_v5},
                        {"pairs", s.pairs_path},
                        {"n_pairs", s.pairs.size()},
                        {"seed", flags.study.sampling.seed},
                        {"max_new_tokens", flags.study.max_new_tokens},
                        {"temperature", flags.study.sampling.temperature},
                        {"top_k", flags.study.sampling.top_k},
                        {"top_p", flags.study.sampling.top_p},
                        {"dtype", flags.dtype},
                        {"device", flags.device},
                        {"format", ex::prompt_format_name(ex::resolve_prompt_format(format, *s.tok))},
                        {"system", flags.system},
                        {"scorer", s.scorer->name()},
                        {"lexicon", flags.lexicon.empty() ? "built-in recursive_default" : canonical(flags.lexicon)},
                        {"align", flags.align},
                        {"rerotate", flags.rerotate}};
  // Every record kept on --resume is checked against these settings and pairs before run.json is
  // rewritten (without run.json, that check is what stops a resume with other settings).
  s.folder.emplace(ex::RunFolder::open(flags.out, std::move(lock), std::move(run), program, flags.resume, [&s](const ex::RecordLog& log) {
    ex::check_kept_records(log, s.settings, s.pairs, s.encoded);
    for (auto& w : ex::check_kept_made_with(log, ex::made_with(*s.model))) s.warnings.push_back(std::move(w));
  }, shard));
  // Every rank checks the folder (resume or not, settings, records) before any writes to it.
  s.world.barrier("opened");
  for (const auto& w : s.folder->warnings()) s.warnings.push_back(w);
  for (const auto& w : s.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const auto& log = s.log();
  if (log.resumed() > 0)
    std::fprintf(stderr, "resuming %s: %zu generations already recorded%s\n", log.path().c_str(), log.resumed(),
                 log.dropped_cut_line() ? " (a cut-off last line was dropped)" : "");
  const auto mode = flags.progress == "off" || !s.world.is_main() ? ex::Progress::Mode::Off
                    : flags.progress == "on"                        ? ex::Progress::Mode::On
                                                                    : ex::Progress::Mode::Auto;
  s.progress = std::make_unique<ex::Progress>(0, "generations", mode);
  return s;
}

/// "lo:hi,lo:hi" -> ranges; empty text -> `fallback`.
inline std::vector<LayerRange> parse_layer_list(const std::string& text, int64_t n_layers,
                                                std::vector<LayerRange> fallback) {
  if (text.empty()) return fallback;
  std::vector<LayerRange> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(LayerRange::parse(item, n_layers));
  MECHLENS_CHECK(!out.empty(), mechlens::ArgumentError, "--layers '{}' names no layer range", text);
  return out;
}

/// The study's phase-2 ranges scaled to the model's depth: quarters, halves and all (for 32
/// layers: 0:8, 8:16, 16:24, 24:32, 0:16, 16:32, 0:32). Empty or repeated ranges of shallow
/// models are dropped.
inline std::vector<LayerRange> study_ranges(int64_t n) {
  auto at = [n](int q) { return (n * q + 2) / 4; };
  std::vector<LayerRange> candidates = {{at(0), at(1)}, {at(1), at(2)}, {at(2), at(3)}, {at(3), at(4)},
                                        {at(0), at(2)}, {at(2), at(4)}, {0, n}};
  std::vector<LayerRange> out;
  for (const auto& r : candidates) {
    if (r.begin >= r.end) continue;
    bool seen = false;
    for (const auto& o : out) seen = seen || (o.begin == r.begin && o.end == r.end);
    if (!seen) out.push_back(r);
  }
  return out;
}

/// Runs conditions with the progress bar labelled `phase`.
inline void run_conditions(Setup& s, ex::Study& study, const std::vector<ex::Condition>& conditions,
                           const std::string& phase) {
  s.progress->add_total(study.size() * static_cast<int64_t>(conditions.size()));
  s.progress->set_label(phase);
  for (const auto& c : conditions) study.check_kept(c);  // every condition's kept records, before any runs
  s.folder->save_settings();                            // then run.json may say what they were made with
  for (const auto& c : conditions) study.run(c);
  if (!s.world.distributed()) return;
  // Every rank's shard to every rank; rank 0 writes generations.jsonl in one process's order.
  std::ifstream in(s.log().path(), std::ios::binary);
  const std::string mine((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto texts = s.world.all_gather("records-" + std::to_string(s.merges++), mine);
  std::vector<std::string> order;
  for (const auto& c : conditions)
    for (const auto& p : s.pairs) order.push_back(ex::GenerationRecord::record_id(c.name, p.id));
  s.folder->merge_shards(texts, order);
  s.world.barrier("merged-" + std::to_string(s.merges));
}

/// Writes <out>/<phase>/summary.json, summary.csv, table.txt and figure.svg.
inline void write_phase(Setup& s, const std::string& phase, const ex::Summary& summary, const std::string& table,
                        const std::string& figure_title, const std::vector<ex::BarPanel>& panels,
                        nlohmann::json meta = nlohmann::json::object()) {
  s.folder->write_phase(phase, summary, table, figure_title, panels, std::move(meta));
}

/// Bars of mean score by condition with their bootstrap CIs.
inline ex::BarPanel condition_panel(const ex::Summary& s, const std::string& title,
                                    const std::map<std::string, std::string>& labels = {}) {
  ex::BarPanel p;
  p.title = title;
  p.y_label = "score (mean, 95% CI)";
  for (const auto& c : s.conditions) {
    auto it = labels.find(c.name);
    p.bars.push_back({it == labels.end() ? c.name : it->second, c.mean, c.mean_ci.low, c.mean_ci.high, ""});
  }
  return p;
}

/// Bars of % transfer for the contrasts of `family` ("" = every contrast with one), each marked
/// with its test: stars against the baseline, "... vs <condition>" for a contrast tested against
/// another condition (e.g. necessity, against the recursive prompt), "=" when the two conditions
/// scored alike on every pair; a legend says so under the plot.
inline ex::BarPanel transfer_panel(const ex::Summary& s, const std::string& family, const std::string& title) {
  ex::BarPanel p;
  p.title = title;
  p.y_label = "% transfer (95% CI)";
  p.reference_lines = {0.0, 100.0};
  std::string correction;
  for (const auto& c : s.contrasts) {
    if (!c.te || (!family.empty() && c.spec.family != family)) continue;
    const double q = std::isfinite(c.p_adjusted) ? c.p_adjusted : c.t_test.p_value;
    if (std::isfinite(c.p_adjusted)) correction = c.correction;
    std::string note = c.identical ? "=" : std::isfinite(q) ? (q < 0.001 ? "***" : q < 0.01 ? "**" : q < 0.05 ? "*" : "ns") : "";
    if (!note.empty() && c.spec.b != c.spec.te_baseline) note += " vs " + c.spec.b;
    if (c.te->no_natural_gap) note = "n/a: no natural gap";  // no bar: a share of nothing
    p.bars.push_back({c.spec.name, 100.0 * c.te->value.value, 100.0 * c.te->ci.low, 100.0 * c.te->ci.high, note});
  }
  p.legend = fmt::format("*** p < 0.001, ** p < 0.01, * p < 0.05, ns: not significant ({})\n"
                         "each against the baseline prompt unless marked \"vs\" another condition; = the two conditions "
                         "scored alike on every pair (no test)\n"
                         "whiskers: 95% bootstrap CI (none where every resample gives the same value)",
                         correction.empty() ? "paired t-test" : "paired t-test, " + correction + "-adjusted across the family");
  return p;
}

/// Runs `body`, turning mechlens errors into a message and exit code 1.
template <class F>
int guarded(F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

}  // namespace dec7
