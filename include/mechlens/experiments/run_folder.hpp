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

#include <filesystem>
#include <functional>
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

class RunFolder {
 public:
  /// Sees the records a resumed folder keeps; throws to refuse the resume.
  using RecordCheck = std::function<void(const RecordLog&)>;

  /// Opens (creating it when missing) the run folder `out` for writing; `settings` (a JSON
  /// object) is what run.json records and a resume must match; `program` is appended to
  /// run.json's "programs". See the file comment for the checks.
  static RunFolder open(const std::string& out, nlohmann::json settings, const std::string& program, bool resume,
                        const RecordCheck& check_records = {}) {
    return open(out, lock(out), std::move(settings), program, resume, check_records);
  }

  /// Creates the folder `out` when missing and takes its lock, reading nothing else: a program
  /// calls this first, so that a second writer stops before it loads a model, and passes the lock
  /// to open() when it has the settings.
  static io::FileLock lock(const std::string& out) {
    MECHLENS_CHECK(!out.empty(), ArgumentError, "run folder: the folder's path is empty (expected a folder to write "
                                                "run.json and generations.jsonl into)");
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    MECHLENS_CHECK(!ec, IoError, "cannot create the run folder '{}': {}", out, ec.message());
    MECHLENS_CHECK(std::filesystem::is_directory(out, ec), IoError, "the run folder '{}' is not a folder", out);
    return io::FileLock::acquire(out + "/.lock", "run folder '" + out + "'");
  }

  /// open() with the folder's lock already taken (lock(out)).
  static RunFolder open(const std::string& out, io::FileLock held, nlohmann::json settings, const std::string& program,
                        bool resume, const RecordCheck& check_records = {}) {
    MECHLENS_CHECK(held.held() && held.path() == out + "/.lock", ArgumentError,
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
    f.log_.emplace(RecordLog::open(f.file("generations.jsonl"), resume));
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

  /// Writes run.json (atomically) if open() left it unwritten (see the file comment).
  void save_settings() {
    if (!unsaved_) return;
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
    save_settings();
    const std::string dir = phase_dir(phase);
    meta["settings"] = settings_;
    meta["phase"] = phase;
    meta["generations"] = std::filesystem::path(log_->path()).filename().string();
    write_summary_json(dir + "/summary.json", summary, meta);
    io::write_file_atomically(dir + "/summary.csv", summary_csv(summary));
    io::write_file_atomically(dir + "/table.txt", table);
    write_svg_figure(dir + "/figure.svg", figure_title, panels);
  }

 private:
  RunFolder() = default;

  io::FileLock lock_;  ///< first: destroyed last, after the log is closed
  std::string path_;
  nlohmann::json settings_;
  std::optional<RecordLog> log_;
  nlohmann::json stored_;  ///< run.json: the settings and "programs"
  bool unsaved_ = false;
  std::vector<std::string> warnings_;
};

}  // namespace mechlens::experiments
