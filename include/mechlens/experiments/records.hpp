#pragma once
/// \file
/// Result records: one JSON line per generation in `generations.jsonl`, appended and flushed as
/// each generation finishes, so a killed run keeps everything it finished. RecordLog::open with
/// `resume` reads what is there (dropping a last line cut off mid-write, and truncating the file
/// back to the last whole line) and tells which record ids exist, so a rerun redoes nothing.
///
/// A record's id is "<condition>|<pair id>": one generation per condition and pair. A record
/// carries what made it — the seed, its sampling stream's seed, the sampling, its prompt's and its source's
/// token ids, its condition's intervention spec — so that a resumed run can check every record it
/// keeps (resume_check.hpp).

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/io/json.hpp"

namespace mechlens::experiments {

/// One generation and everything needed to recompute or rate its score.
struct GenerationRecord {
  std::string condition;
  std::string pair_id;
  std::string prompt_role;       ///< "recursive" or "baseline": the prompt that was decoded
  std::string prompt;            ///< its text (empty for pre-tokenized pairs without text)
  std::vector<int64_t> prompt_ids;
  /// Where a patch or cache came from: {"pair_id", "role", "prompt_ids"}, null when natural.
  nlohmann::json source;
  std::string intervention;      ///< what was done, in words ("" when natural)
  std::string layers;            ///< "lo:hi" of the patch, "" when none
  /// What was done, as data: the condition's intervention spec (intervention_spec.hpp), null
  /// when natural.
  nlohmann::json spec;
  nlohmann::json probe;          ///< what a probe read besides the text (e.g. {"rv": options}), null when none
  uint64_t seed = 0;             ///< the run's --seed
  uint64_t sampler_seed = 0;     ///< the seed of this row's sampling stream: pair_seed(seed, pair index)
  int64_t batch = 0;             ///< batch index (speed only: rows sample independently)
  int64_t batch_size = 0;        ///< pairs per batch (0: a record older than this field)
  nlohmann::json sampling;       ///< {"temperature", "top_k", "top_p", "max_new_tokens", "stop_tokens"}
  std::string text;              ///< generated text (special tokens skipped)
  std::vector<int64_t> ids;      ///< generated ids (a stop token included when it ended the row)
  bool stopped = false;          ///< ended on a stop token
  double score = 0.0;
  std::string scorer;            ///< e.g. "keywords:recursive_default"
  nlohmann::json extra = nlohmann::json::object();  ///< program-specific values (R_V readings, ...)
  /// What computed it: {"mechlens", "libtorch" (versions), "device" (its kind: "cpu", "cuda",
  /// "cuda+cpu" for a model split over devices), "dtype", "fused_model",
  /// "fused_kernels", "cuda_graph"} (study.hpp's made_with); null in records older than the field.
  nlohmann::json made_with;

  std::string id() const { return record_id(condition, pair_id); }
  /// The id splits at its first '|': a condition name never holds one (record_id refuses it), a
  /// pair id may, so no two (condition, pair) give the same id.
  static std::string record_id(const std::string& condition, const std::string& pair_id) {
    MECHLENS_CHECK(condition.find('|') == std::string::npos, ArgumentError,
                   "condition name '{}' holds a '|', which separates the condition from the pair id in record ids; "
                   "rename the condition",
                   condition.substr(0, 200));
    return condition + "|" + pair_id;
  }
};

inline nlohmann::json to_json(const GenerationRecord& r) {
  return {{"id", r.id()},         {"condition", r.condition},
          {"pair_id", r.pair_id}, {"prompt_role", r.prompt_role},
          {"prompt", r.prompt},   {"prompt_ids", r.prompt_ids},
          {"source", r.source},   {"intervention", r.intervention},
          {"layers", r.layers},   {"spec", r.spec},
          {"probe", r.probe},     {"seed", r.seed},
          {"sampler_seed", r.sampler_seed}, {"batch", r.batch},
          {"batch_size", r.batch_size},
          {"sampling", r.sampling}, {"text", r.text},
          {"ids", r.ids},         {"stopped", r.stopped},
          {"score", r.score},     {"scorer", r.scorer},
          {"extra", r.extra},     {"made_with", r.made_with}};
}

/// Parses a record; `where` names file and line in errors.
inline GenerationRecord record_from_json(const nlohmann::json& j, const std::string& where) {
  MECHLENS_CHECK(j.is_object(), FormatError, "{}: a record must be a JSON object", where);
  auto req = [&](const char* key) -> const nlohmann::json& {
    MECHLENS_CHECK(j.contains(key), FormatError, "{}: record lacks '{}'", where, key);
    return j.at(key);
  };
  GenerationRecord r;
  try {
    r.condition = req("condition").get<std::string>();
    r.pair_id = req("pair_id").get<std::string>();
    r.prompt_role = req("prompt_role").get<std::string>();
    r.prompt = j.value("prompt", "");
    r.prompt_ids = j.value("prompt_ids", std::vector<int64_t>{});
    r.source = j.value("source", nlohmann::json());
    r.intervention = j.value("intervention", "");
    r.layers = j.value("layers", "");
    r.spec = j.value("spec", nlohmann::json());
    r.probe = j.value("probe", nlohmann::json());
    r.seed = j.value("seed", uint64_t{0});
    r.sampler_seed = j.value("sampler_seed", uint64_t{0});
    r.batch = j.value("batch", int64_t{0});
    r.batch_size = j.value("batch_size", int64_t{0});
    r.sampling = j.value("sampling", nlohmann::json());
    r.text = req("text").get<std::string>();
    r.ids = j.value("ids", std::vector<int64_t>{});
    r.stopped = j.value("stopped", false);
    MECHLENS_CHECK(req("score").is_number(), FormatError, "{}: 'score' must be a number", where);
    r.score = j.at("score").get<double>();
    r.scorer = j.value("scorer", "");
    r.extra = j.value("extra", nlohmann::json::object());
    r.made_with = j.value("made_with", nlohmann::json());
  } catch (const nlohmann::json::exception& e) {
    ::mechlens::detail::raise<FormatError>("{}: malformed record ({})", where, e.what());
  }
  if (j.contains("id"))
    MECHLENS_CHECK(j["id"] == r.id(), FormatError, "{}: record id '{}' does not match condition|pair_id '{}'", where,
                   j["id"].dump(), r.id());
  return r;
}

namespace detail {
/// Reads whole lines; returns the byte length of the whole-line prefix (a final line without a
/// newline is a write cut off by a kill and is not returned).
inline std::vector<std::string> read_whole_lines(const std::string& path, std::uintmax_t& whole_bytes,
                                                 bool& cut_line) {
  std::ifstream in(path, std::ios::binary);
  MECHLENS_CHECK(in.good(), IoError, "cannot open '{}'", path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  size_t start = 0;
  while (true) {
    const size_t nl = all.find('\n', start);
    if (nl == std::string::npos) break;
    lines.push_back(all.substr(start, nl - start));
    start = nl + 1;
  }
  whole_bytes = start;
  cut_line = start < all.size();
  return lines;
}
}  // namespace detail

/// Every record of a generations.jsonl (a final cut-off line is ignored; a malformed whole
/// line or a repeated id is a FormatError naming the line).
inline std::vector<GenerationRecord> load_records(const std::string& path) {
  std::uintmax_t bytes = 0;
  bool cut = false;
  auto lines = detail::read_whole_lines(path, bytes, cut);
  std::vector<GenerationRecord> out;
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    const std::string where = path + ":" + std::to_string(i + 1);
    const nlohmann::json j = io::parse_json(lines[i], where);
    GenerationRecord r = record_from_json(j, where);
    auto [it, fresh] = seen.emplace(r.id(), i + 1);
    MECHLENS_CHECK(fresh, FormatError, "{}: record '{}' repeats line {}", where, r.id(), it->second);
    out.push_back(std::move(r));
  }
  return out;
}

/// The append-only log of a run (see the file comment).
class RecordLog {
 public:
  /// Opens `path` for appending. Without `resume` the file must not exist or be empty (a
  /// FormatError otherwise says to pass --resume or choose another output folder). With
  /// `resume` the records in it are loaded; a last line cut off mid-write is dropped and the
  /// file truncated to the whole lines before it.
  static RecordLog open(const std::string& path, bool resume) {
    RecordLog log;
    log.path_ = path;
    std::ifstream probe(path, std::ios::binary | std::ios::ate);
    const bool exists = probe.good() && probe.tellg() > 0;
    probe.close();
    if (exists) {
      MECHLENS_CHECK(resume, ArgumentError,
                     "'{}' already holds records from an earlier run; pass --resume to continue it (nothing is "
                     "redone) or choose another output folder",
                     path);
      std::uintmax_t bytes = 0;
      bool cut = false;
      detail::read_whole_lines(path, bytes, cut);
      if (cut) {
        MECHLENS_CHECK(::truncate(path.c_str(), static_cast<off_t>(bytes)) == 0, IoError,
                       "cannot truncate the cut-off last line of '{}'", path);
        log.dropped_cut_line_ = true;
      }
      log.records_ = load_records(path);
      for (size_t i = 0; i < log.records_.size(); ++i) log.index_[log.records_[i].id()] = i;
      log.resumed_ = log.records_.size();
    }
    log.file_ = std::shared_ptr<std::FILE>(std::fopen(path.c_str(), "ab"), [](std::FILE* f) {
      if (f) std::fclose(f);
    });
    MECHLENS_CHECK(log.file_ != nullptr, IoError, "cannot open '{}' for appending", path);
    return log;
  }

  bool contains(const std::string& id) const { return index_.count(id) != 0; }
  /// A copy of the record with this id (a copy: a later append may move the stored records).
  std::optional<GenerationRecord> find(const std::string& id) const {
    auto it = index_.find(id);
    if (it == index_.end()) return std::nullopt;
    return records_[it->second];
  }
  const std::vector<GenerationRecord>& records() const { return records_; }
  /// Records found on disk when opened (0 for a fresh run).
  size_t resumed() const { return resumed_; }
  bool dropped_cut_line() const { return dropped_cut_line_; }
  const std::string& path() const { return path_; }

  /// Appends one record as a line and flushes it to the OS (it survives a kill of the process).
  /// A record whose id is already logged is an ArgumentError.
  void append(const GenerationRecord& r) {
    MECHLENS_CHECK(!contains(r.id()), ArgumentError, "record '{}' is already in '{}'", r.id(), path_);
    const std::string line = to_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    MECHLENS_CHECK(std::fwrite(line.data(), 1, line.size(), file_.get()) == line.size() && std::fflush(file_.get()) == 0,
                   IoError, "cannot write to '{}'", path_);
    index_[r.id()] = records_.size();
    records_.push_back(r);
  }
  /// fsync: what was appended survives a power cut too (called once per batch).
  void sync() { (void)::fsync(::fileno(file_.get())); }

  /// Makes records kept elsewhere (another rank's shard, the merged generations.jsonl) known to
  /// this log without writing them to its file: contains, find and records see them, and
  /// append refuses their ids. A record already known must be the same record (its JSON);
  /// `where` names their file in that error.
  void adopt(const std::vector<GenerationRecord>& records, const std::string& where) {
    for (const auto& r : records) {
      auto it = index_.find(r.id());
      if (it != index_.end()) {
        MECHLENS_CHECK(to_json(records_[it->second]) == to_json(r), FormatError,
                       "record '{}' in '{}' differs from the one in '{}' (two runs wrote into one folder?)", r.id(),
                       where, path_);
        continue;
      }
      index_[r.id()] = records_.size();
      records_.push_back(r);
    }
  }
  /// Puts the records in the order of `ids` (every record's id once: the merged file's order).
  void reorder(const std::vector<std::string>& ids) {
    MECHLENS_CHECK(ids.size() == records_.size(), ArgumentError, "RecordLog::reorder: {} ids for {} records",
                   ids.size(), records_.size());
    std::vector<GenerationRecord> out;
    out.reserve(ids.size());
    for (const auto& id : ids) {
      auto it = index_.find(id);
      MECHLENS_CHECK(it != index_.end(), ArgumentError, "RecordLog::reorder: no record '{}'", id);
      out.push_back(std::move(records_[it->second]));
    }
    records_ = std::move(out);
    index_.clear();
    for (size_t i = 0; i < records_.size(); ++i) index_[records_[i].id()] = i;
    MECHLENS_CHECK(index_.size() == records_.size(), ArgumentError, "RecordLog::reorder: an id is repeated");
  }

 private:
  std::string path_;
  std::shared_ptr<std::FILE> file_;
  std::vector<GenerationRecord> records_;
  std::map<std::string, size_t> index_;
  size_t resumed_ = 0;
  bool dropped_cut_line_ = false;
};

}  // namespace mechlens::experiments
