// Tokenizer speed: Llama-3 tokenizer.json load time and encode throughput on English prose,
// medians of repeated runs, one thread. benchmarks/bench_tokenizer_hf.py measures the same for
// HF `tokenizers`; run both on the same machine and compare.
//
//   bench_tokenizer --tokenizer DIR_OR_TOKENIZER_JSON [--text prose.txt] [--repeats N] [--json out.json]
//
// Without --text only loading is measured. Besides the whole load (Tokenizer::from_file: the
// first one in the process, then the median), "load_breakdown_ms" times its steps one by one
// (medians), and "load_via_dom_ms" the same load through nlohmann's DOM (Tokenizer::from_json on
// io::read_json_file: what from_file did before from_json_text), split into its steps.
//
// Measured, never asserted. Prints one JSON object with the same keys as the Python script.

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <type_traits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <mechlens/tokenizer/tokenizer.hpp>

namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double median_seconds(F&& f, int repeats) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Medians (ms) of named steps, each timed in every repetition of a sequence of them.
class Steps {
 public:
  template <class F>
  auto time(const std::string& name, F&& f) {
    const auto t0 = Clock::now();
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      add(name, t0);
    } else {
      auto r = f();
      add(name, t0);
      return r;
    }
  }
  std::string json() const {
    std::string out = "{";
    for (const auto& name : order_) {
      auto t = times_.at(name);
      std::sort(t.begin(), t.end());
      out += fmt::format("{}\n   \"{}\": {:.1f}", out.size() > 1 ? "," : "", name, t[t.size() / 2]);
    }
    return out + "\n }";
  }

 private:
  void add(const std::string& name, Clock::time_point t0) {
    if (!times_.count(name)) order_.push_back(name);
    times_[name].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::vector<std::string> order_;
  std::map<std::string, std::vector<double>> times_;
};

// One load through from_json_text's steps, each timed (the fast path must take the file).
void load_by_steps(const std::string& file, const std::string& config_file, Steps& steps) {
  namespace scan = mechlens::tokenizer::detail::json_scan;
  using Buffer = std::vector<char, mechlens::tokenizer::detail::HugePageAllocator<char>>;
  const auto config = steps.time("read and parse tokenizer_config.json", [&] {
    return config_file.empty() ? nlohmann::json::object() : mechlens::io::read_json_file(config_file);
  });
  const Buffer buffer =
      steps.time("read tokenizer.json", [&] { return mechlens::io::read_file_as<Buffer>(file, "JSON file"); });
  const std::string_view text(buffer.data(), buffer.size());
  scan::Span vocab_span, merges_span;
  steps.time("scan the text (JSON structure only)", [&] {
    const bool ok = scan::walk_tokenizer_json(
        text, mechlens::io::kMaxJsonDepth,
        [](scan::Reader& r) { return scan::read_vocab(r, [](std::string_view, uint32_t) { return true; }); },
        [](scan::Reader& r) {
          return scan::read_merges(r, [](std::string_view, std::string_view, bool) { return true; });
        },
        vocab_span, merges_span);
    if (!ok) throw std::runtime_error("the fast path does not take " + file);
  });
  mechlens::tokenizer::BpeTables tables;
  steps.time("vocab: scan + arena + hash index", [&] {
    mechlens::tokenizer::detail::json_scan::Reader r(text, vocab_span.begin);
    if (!tables.read_vocab(r)) throw std::runtime_error("vocab");
  });
  steps.time("merges: scan + look up both tokens", [&] {
    mechlens::tokenizer::detail::json_scan::Reader r(text, merges_span.begin);
    if (!tables.read_merges(r)) throw std::runtime_error("merges");
  });
  const auto rest = steps.time("the rest of the file through nlohmann", [&] {
    std::string s(text.substr(0, vocab_span.begin));
    s.append("{}").append(text.substr(vocab_span.end, merges_span.begin - vocab_span.end)).append("[]");
    s.append(text.substr(merges_span.end));
    return mechlens::io::parse_json(s, file);
  });
  steps.time("model: id table, merge results, merge table", [&] {
    if (!mechlens::tokenizer::BpeModel::from_tables(rest.at("model"), std::move(tables), file)) {
      throw std::runtime_error("model");
    }
  });
  steps.time("pre-tokenizer (PCRE2 compile + JIT)", [&] {
    return mechlens::tokenizer::make_pre_tokenizer(rest.value("pre_tokenizer", nlohmann::json()), file);
  });
  steps.time("added tokens", [&] {
    return mechlens::tokenizer::AddedVocabulary(rest.value("added_tokens", nlohmann::json()), nullptr, file);
  });
  steps.time("total: Tokenizer::from_file", [&] { return mechlens::Tokenizer::from_file(file); });
}

// The same load through nlohmann's DOM (Tokenizer::from_json), step by step.
void load_via_dom(const std::string& file, Steps& steps) {
  const std::string text = steps.time("read tokenizer.json", [&] { return mechlens::io::read_file(file, "JSON file"); });
  auto j = steps.time("nlohmann::json::parse (DOM of the whole file)", [&] { return mechlens::io::parse_json(text, file); });
  steps.time("model from the DOM", [&] { return mechlens::tokenizer::BpeModel::from_json(j.at("model"), file); });
  steps.time("free the DOM", [&] { nlohmann::json().swap(j); });
  steps.time("total: Tokenizer::from_json(io::read_json_file)", [&] {
    return mechlens::Tokenizer::from_json(mechlens::io::read_json_file(file), nlohmann::json::object(), file);
  });
}

std::vector<std::string> paragraphs_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    std::string p = text.substr(pos, end - pos);
    if (p.find_first_not_of(" \t\r\n") != std::string::npos) out.push_back(std::move(p));
    pos = end + 2;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokenizer_path, text_path, json_path;
  int repeats = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokenizer")) tokenizer_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--text")) text_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--repeats")) repeats = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  if (tokenizer_path.empty()) {
    std::fprintf(stderr,
                 "usage: %s --tokenizer DIR_OR_TOKENIZER_JSON [--text PROSE.txt] [--repeats N (7)] [--json OUT]\n"
                 "  Llama-3 tokenizer load time (and its steps), and with --text single-thread encode MB/s,\n"
                 "  medians of N runs.\n",
                 argv[0]);
    return 2;
  }
  std::string text;
  if (!text_path.empty()) {
    std::ifstream in(text_path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", text_path.c_str());
      return 1;
    }
    text.assign(std::istreambuf_iterator<char>(in), {});
  }

  const auto first_t0 = Clock::now();
  mechlens::Tokenizer::from_file(tokenizer_path);
  const double first_load_s = std::chrono::duration<double>(Clock::now() - first_t0).count();
  const double load_s = median_seconds([&] { mechlens::Tokenizer::from_file(tokenizer_path); }, repeats);

  std::string file = tokenizer_path, config_file;
  if (std::filesystem::is_directory(tokenizer_path)) {
    file = (std::filesystem::path(tokenizer_path) / "tokenizer.json").string();
  }
  const auto config_path = std::filesystem::path(file).parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) config_file = config_path.string();
  Steps fast_steps, dom_steps;
  for (int i = 0; i < repeats; ++i) load_by_steps(file, config_file, fast_steps);
  for (int i = 0; i < std::max(3, repeats / 2); ++i) load_via_dom(file, dom_steps);
  const std::string load_json = fmt::format(
      " \"cpu_count\": {},\n \"repeats\": {},\n \"load_ms_first\": {:.1f},\n \"load_ms_median\": {:.1f},\n"
      " \"load_breakdown_ms\": {},\n \"load_via_dom_ms\": {}",
      std::thread::hardware_concurrency(), repeats, first_load_s * 1e3, load_s * 1e3, fast_steps.json(),
      dom_steps.json());
  if (text_path.empty()) {
    const std::string result = "{\n \"implementation\": \"mechlens\",\n" + load_json + "\n}\n";
    std::fputs(result.c_str(), stdout);
    if (!json_path.empty()) std::ofstream(json_path) << result;
    return 0;
  }
  const auto paragraphs = paragraphs_of(text);
  const double mb = static_cast<double>(text.size()) / 1e6;

  double cold_s;
  {
    std::vector<double> t;
    for (int i = 0; i < std::max(3, repeats / 2); ++i) {
      const auto fresh = mechlens::Tokenizer::from_file(tokenizer_path);  // empty word cache
      const auto t0 = Clock::now();
      fresh.encode(text, false);
      t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    cold_s = t[t.size() / 2];
  }
  const auto tok = mechlens::Tokenizer::from_file(tokenizer_path);
  const std::size_t n_tokens = tok.encode(text, false).size();  // also warms the word cache
  const double whole_s = median_seconds([&] { tok.encode(text, false); }, repeats);
  const double para_s = median_seconds(
      [&] {
        for (const auto& p : paragraphs) tok.encode(p, false);
      },
      repeats);

  const std::string result = fmt::format(
      "{{\n \"implementation\": \"mechlens\",\n{},\n \"text_bytes\": {},\n \"paragraphs\": {},\n"
      " \"tokens\": {},\n \"encode_whole_MBps\": {:.3f},\n"
      " \"encode_whole_cold_cache_MBps\": {:.3f},\n \"encode_per_paragraph_MBps\": {:.3f}\n}}\n",
      load_json, text.size(), paragraphs.size(), n_tokens, mb / whole_s, mb / cold_s, mb / para_s);
  std::fputs(result.c_str(), stdout);
  if (!json_path.empty()) std::ofstream(json_path) << result;
  return 0;
}
