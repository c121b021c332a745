#pragma once
/// \file
/// A run folder: where the programs of a study write, and what lets a later program resume it.
///
///   <out>/.lock               an advisory flock (io/file_lock.hpp) held while the folder is open
///                             for writing, holding the writer's pid: a second writer stops at once
///   <out>/run.json            the settings every record of the folder was made with (those a
///                             resumed run must match), "programs": the programs that ran in it,
///                             and "made_with": the mechlens and LibTorch versions that last wrote it
///   <out>/generations.jsonl   the records (RecordLog, records.hpp), shared by every program run in it
///   <out>/<phase>/            per phase: summary.json, summary.csv, table.txt, figure.svg
///
///   nlohmann::json settings = {{"model", dir}, {"seed", 0}, ...};   // what the records depend on
///   auto folder = experiments::RunFolder::open("runs/demo", settings, "my_program", resume);
///   experiments::Study study(..., folder.log());
///   ...
///   folder.write_phase("phase1", summary, table, "Phase 1", panels);
///
/// open() first takes the folder's lock (or is given it: lock(out), which a program calls before
/// it loads anything): while one RunFolder holds it (the DEC7 programs hold it until they exit),
/// any other open() of the folder — by another process, or a second open in this one — is an
/// IoError naming the folder and the holder's pid. The kernel drops the lock when the holder
/// ends, killed with SIGKILL included. Then, without `resume`, it refuses a folder whose
/// generations.jsonl already holds records. With `resume`, every key of `settings` must equal
/// run.json's (the error lists each difference); a `check_records` callback then sees the records
/// kept from earlier runs (resume_check.hpp names the first record made otherwise). Only after
/// these checks is run.json rewritten (atomically), so a refused resume leaves the folder as it
/// was. One case waits: a
/// resume into a folder that holds records but no run.json (deleted) writes run.json only when
/// save_settings() is called — after the caller has checked every record it keeps, including
/// those checked per condition (Study::check_kept) — or with the first write_phase; a resume
/// refused before then leaves no run.json claiming settings the records were not made with.
///
/// Over several processes (a Shard of size > 1: distributed/world.hpp, run by a launcher such as
/// torchrun), rank K holds `<out>/.lock.rank-K` (rank 0 `<out>/.lock`) and appends its records to
/// `<out>/generations.rank-K.jsonl`; it knows the records of generations.jsonl and of the other
/// shards too (RecordLog::adopt), so a resume skips what any rank did. Only rank 0 writes run.json,
/// generations.jsonl and the phase folders: merge_shards() (after each set of conditions, with
/// every rank's shard text) rewrites generations.jsonl atomically with the records it already held
/// in their order, then the new ones in the order a single process appends them. Without `resume`,
/// any non-empty generations file in the folder is refused. A single process resuming a folder
/// whose shards hold records generations.jsonl lacks (a distributed run stopped before it merged)
/// is refused: resume it over the same launcher.

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mechlens/core/error.hpp"
#include "mechlens/experiments/records.hpp"
#include "mechlens/experiments/summary.hpp"
#include "mechlens/experiments/svg_figure.hpp"
#include "mechlens/io/atomic_file.hpp"
#include "mechlens/io/file_lock.hpp"
#include "mechlens/io/json.hpp"
#include "mechlens/version.hpp"

namespace mechlens::experiments {

/// Which process of a run over several this is (rank of size; size 1: a single process).
struct Shard {
  int64_t rank = 0;
  int64_t size = 1;
  bool writer() const { return rank == 0; }
};

class RunFolder {
 public:
  /// Sees the records a resumed folder keeps; throws to refuse the resume.
  using RecordCheck = std::function<void(const RecordLog&)>;

  /// Opens (creating it when missing) the run folder `out` for writing; `settings` (a JSON
  /// object) is what run.json records and a resume must match; `program` is appended to
  /// run.json's "programs". See the file comment for the checks.
  static RunFolder open(const std::string& out, nlohmann::json settings, const std::string& program, bool resume,
                        const RecordCheck& check_records = {}, Shard shard = {}) {
    return open(out, lock(out, shard), std::move(settings), program, resume, check_records, shard);
  }

  /// Creates the folder `out` when missing and takes its lock, reading nothing else: a program
  /// calls this first, so that a second writer stops before it loads a model, and passes the lock
  /// to open() when it has the settings.
  static io::FileLock lock(const std::string& out, Shard shard = {}) {
    MECHLENS_CHECK(!out.empty(), ArgumentError, "run folder: the folder's path is empty (expected a folder to write "
                                                "run.json and generations.jsonl into)");
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    MECHLENS_CHECK(!ec, IoError, "cannot create the run folder '{}': {}", out, ec.message());
    MECHLENS_CHECK(std::filesystem::is_directory(out, ec), IoError, "the run folder '{}' is not a folder", out);
    return io::FileLock::acquire(out + "/" + lock_name(shard), "run folder '" + out + "'");
  }
  /// The lock file of `shard`: `.lock`, or `.lock.rank-K` for rank K > 0.
  static std::string lock_name(Shard shard) {
    return shard.rank == 0 ? ".lock" : ".lock.rank-" + std::to_string(shard.rank);
  }
  /// The records file of `shard`: generations.jsonl, or generations.rank-K.jsonl over several ranks.
  static std::string log_name(Shard shard) {
    return shard.size == 1 ? "generations.jsonl" : "generations.rank-" + std::to_string(shard.rank) + ".jsonl";
  }

  /// open() with the folder's lock already taken (lock(out)).
  static RunFolder open(const std::string& out, io::FileLock held, nlohmann::json settings, const std::string& program,
                        bool resume, const RecordCheck& check_records = {}, Shard shard = {}) {
    MECHLENS_CHECK(shard.size >= 1 && shard.rank >= 0 && shard.rank < shard.size, ArgumentError,
                   "run folder '{}': rank {} of {} processes", out, shard.rank, shard.size);
    MECHLENS_CHECK(held.held() && held.path() == out + "/" + lock_name(shard), ArgumentError,
                   "run folder '{}': open() needs the folder's own lock (RunFolder::lock('{}')), got {}", out, out,
                   held.held() ? "'" + held.path() + "'" : std::string("none"));
    MECHLENS_CHECK(settings.is_object(), ArgumentError, "run folder '{}': the settings must be a JSON object, not {}",
                   out, settings.type_name());
    std::error_code ec;

    RunFolder f;
    f.lock_ = std::move(held);
    f.path_ = out;
    f.settings_ = std::move(settings);
    const std::string run_path = f.file("run.json");
    nlohmann::json before;
    if (std::filesystem::exists(run_path, ec)) before = io::read_json_file(run_path);
    if (resume && before.is_object()) {
      std::string diff;
      for (auto it = f.settings_.begin(); it != f.settings_.end(); ++it)
        if (!before.contains(it.key()) || before[it.key()] != it.value())
          diff += fmt::format("\n  {}: recorded {}, now {}", it.key(),
                              before.contains(it.key()) ? before[it.key()].dump() : std::string("(absent)"),
                              it.value().dump());
      MECHLENS_CHECK(diff.empty(), ArgumentError,
                     "resuming the run in '{}': it was made with other settings, and resuming would mix them:{}\n"
                     "use the same settings (flags), or another output folder",
                     out, diff);
    }
    f.shard_ = shard;
    const std::string merged = f.file("generations.jsonl");
    const std::vector<std::string> shards = f.shard_files();
    if (shard.size > 1) {
      for (const auto& other : shards) refuse_records_without_resume(other, resume);
      refuse_records_without_resume(merged, resume);
    }
    f.log_.emplace(RecordLog::open(f.file(log_name(shard)), resume));
    if (shard.size > 1) {
      // What generations.jsonl holds comes first in the merged order; then every shard is known.
      if (std::filesystem::exists(merged, ec)) {
        const auto kept = load_records(merged);
        for (const auto& r : kept) f.merged_ids_.push_back(r.id());
        f.log_->adopt(kept, merged);
      }
      for (const auto& other : shards)
        if (other != f.log_->path()) f.log_->adopt(load_records(other), other);
    } else {
      for (const auto& other : shards)
        for (const auto& r : load_records(other))
          MECHLENS_CHECK(f.log_->contains(r.id()), ArgumentError,
                         "run folder '{}': '{}' holds record '{}', which generations.jsonl lacks (a run over several "
                         "processes stopped before it merged them); resume it with the same launcher",
                         out, other, r.id());
    }
    if (check_records) check_records(*f.log_);

    f.stored_ = f.settings_;
    f.stored_["programs"] = before.is_object() && before.contains("programs") && before["programs"].is_array()
                                ? before["programs"]
                                : nlohmann::json::array();
    f.stored_["programs"].push_back(program);
    f.stored_["made_with"] = {{"mechlens", version()}, {"libtorch", libtorch_version()}};
    if (before.is_object() && before.contains("made_with") && before["made_with"] != f.stored_["made_with"])
      f.warnings_.push_back(fmt::format("the run in '{}' was written by {} and is continued by {}; its records say "
                                        "which version made each",
                                        out, before["made_with"].dump(), f.stored_["made_with"].dump()));
    f.unsaved_ = true;
    if (!(resume && before.is_null() && f.log_->resumed() > 0)) f.save_settings();
    return f;
  }

  /// What open() noticed but did not refuse (e.g. another mechlens or LibTorch version wrote the
  /// folder before), for the caller to show.
  const std::vector<std::string>& warnings() const { return warnings_; }
  void warn(std::string message) { warnings_.push_back(std::move(message)); }

  /// Writes run.json (atomically) if open() left it unwritten (see the file comment); rank 0 only.
  void save_settings() {
    if (!unsaved_ || !shard_.writer()) return;
    io::write_file_atomically(file("run.json"), stored_.dump(2) + "\n");
    unsaved_ = false;
  }

  /// The folder as given to open().
  const std::string& path() const { return path_; }
  /// `<folder>/<name>`.
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  /// The settings run.json records (without "programs").
  const nlohmann::json& settings() const { return settings_; }
  RecordLog& log() { return *log_; }
  const RecordLog& log() const { return *log_; }
  /// `<folder>/.lock`, held while this object lives.
  const std::string& lock_path() const { return lock_.path(); }

  /// `<folder>/<phase>`, created when missing.
  std::string phase_dir(const std::string& phase) const {
    MECHLENS_CHECK(!phase.empty() && phase.find('/') == std::string::npos && phase != "." && phase != "..",
                   ArgumentError, "run folder '{}': phase name '{}' must be a plain folder name", path_, phase);
    const std::string d = file(phase);
    std::error_code ec;
    std::filesystem::create_directories(d, ec);
    MECHLENS_CHECK(!ec, IoError, "cannot create the phase folder '{}': {}", d, ec.message());
    return d;
  }

  /// Writes `<folder>/<phase>/`: summary.json (the summary, with `meta` plus "settings" (run.json's),
  /// "phase" and "generations" (the log's file name)), summary.csv, table.txt and figure.svg
  /// (`panels` under `figure_title`). Each file is written atomically.
  void write_phase(const std::string& phase, const Summary& summary, const std::string& table,
                   const std::string& figure_title, const std::vector<BarPanel>& panels,
                   nlohmann::json meta = nlohmann::json::object()) {
    if (!shard_.writer()) return;  // rank 0 writes what belongs to the whole run
    save_settings();
    const std::string dir = phase_dir(phase);
    meta["settings"] = settings_;
    meta["phase"] = phase;
    meta["generations"] = "generations.jsonl";  // (the merged file, over several processes too)
    write_summary_json(dir + "/summary.json", summary, meta);
    io::write_file_atomically(dir + "/summary.csv", summary_csv(summary));
    io::write_file_atomically(dir + "/table.txt", table);
    write_svg_figure(dir + "/figure.svg", figure_title, panels);
  }

  /// Which process of the run this is.
  const Shard& shard() const { return shard_; }

  /// Over several processes, after a set of conditions ran: `shard_texts` is every rank's shard
  /// file (all_gather), `order` the record ids in the order one process appends them. Every rank
  /// learns every record (RecordLog::adopt) and puts them in the merged order; rank 0 rewrites
  /// generations.jsonl atomically: the records it held, in their order, then the new ones in
  /// `order`, then any other (in rank and file order). Lines are kept byte for byte.
  void merge_shards(const std::vector<std::string>& shard_texts, const std::vector<std::string>& order) {
    if (shard_.size == 1) return;
    std::map<std::string, std::string> line_of;
    std::vector<std::string> seen_order;
    for (size_t k = 0; k < shard_texts.size(); ++k) {
      const std::string where = file("generations.rank-" + std::to_string(k) + ".jsonl");
      std::vector<GenerationRecord> records;
      size_t start = 0, n = 0;
      const std::string& text = shard_texts[k];
      while (start < text.size()) {
        const size_t end = text.find('\n', start);
        if (end == std::string::npos) break;  // a cut-off last line is not a record
        const std::string line = text.substr(start, end - start);
        start = end + 1;
        ++n;
        if (line.empty()) continue;
        GenerationRecord r = record_from_json(io::parse_json(line, where + ":" + std::to_string(n)), where);
        if (line_of.emplace(r.id(), line).second) seen_order.push_back(r.id());
        records.push_back(std::move(r));
      }
      log_->adopt(records, where);
    }
    std::set<std::string> merged(merged_ids_.begin(), merged_ids_.end());
    std::vector<std::string> added;
    auto take = [&](const std::string& id) {
      if (line_of.count(id) && merged.insert(id).second) added.push_back(id);
    };
    for (const auto& id : order) take(id);
    for (const auto& id : seen_order) take(id);
    if (shard_.writer() && !added.empty()) {
      const std::string path = file("generations.jsonl");
      std::string text;
      std::error_code ec;
      if (std::filesystem::exists(path, ec)) {
        std::uintmax_t bytes = 0;
        bool cut = false;
        for (const auto& line : detail::read_whole_lines(path, bytes, cut)) text += line + "\n";
      }
      for (const auto& id : added) text += line_of.at(id) + "\n";
      io::write_file_atomically(path, text);
    }
    merged_ids_.insert(merged_ids_.end(), added.begin(), added.end());
    if (merged_ids_.size() == log_->records().size()) log_->reorder(merged_ids_);
  }

 private:
  RunFolder() = default;

  /// The generations.rank-K.jsonl files in the folder, by rank.
  std::vector<std::string> shard_files() const {
    std::vector<std::pair<int64_t, std::string>> found;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(path_, ec)) {
      const std::string name = e.path().filename().string();
      const std::string head = "generations.rank-", tail = ".jsonl";
      if (name.size() <= head.size() + tail.size() || name.compare(0, head.size(), head) != 0 ||
          name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
        continue;
      const std::string k = name.substr(head.size(), name.size() - head.size() - tail.size());
      if (k.empty() || k.find_first_not_of("0123456789") != std::string::npos) continue;
      found.emplace_back(std::stoll(k), e.path().string());
    }
    std::sort(found.begin(), found.end());
    std::vector<std::string> out;
    for (auto& f : found) out.push_back(f.second);
    return out;
  }
  static void refuse_records_without_resume(const std::string& path, bool resume) {
    std::error_code ec;
    const bool held = std::filesystem::exists(path, ec) && std::filesystem::file_size(path, ec) > 0;
    MECHLENS_CHECK(resume || !held, ArgumentError,
                   "'{}' already holds records from an earlier run; pass --resume to continue it (nothing is "
                   "redone) or choose another output folder",
                   path);
  }

  io::FileLock lock_;  ///< first: destroyed last, after the log is closed
  std::string path_;
  nlohmann::json settings_;
  std::optional<RecordLog> log_;
  nlohmann::json stored_;  ///< run.json: the settings and "programs"
  bool unsaved_ = false;
  std::vector<std::string> warnings_;
  Shard shard_;
  std::vector<std::string> merged_ids_;  ///< generations.jsonl's records, in its order (over several processes)
};

}  // namespace mechlens::experiments
