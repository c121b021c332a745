// Tokenizer speed: Llama-3 tokenizer.json load time and encode throughput on English prose,
// medians of repeated runs, one thread. benchmarks/bench_tokenizer_hf.py measures the same for
// HF `tokenizers`; run both on the same machine and compare.
//
//   bench_tokenizer --tokenizer DIR_OR_TOKENIZER_JSON --text prose.txt [--repeats N] [--json out.json]
//
// Measured, never asserted. Prints one JSON object with the same keys as the Python script.

#include <algorithm>
#include <chrono>
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
  if (tokenizer_path.empty() || text_path.empty()) {
    std::fprintf(stderr,
                 "usage: %s --tokenizer DIR_OR_TOKENIZER_JSON --text PROSE.txt [--repeats N (7)] [--json OUT]\n"
                 "  Llama-3 tokenizer load time and single-thread encode MB/s, medians of N runs.\n",
                 argv[0]);
    return 2;
  }
  std::ifstream in(text_path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", text_path.c_str());
    return 1;
  }
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto paragraphs = paragraphs_of(text);
  const double mb = static_cast<double>(text.size()) / 1e6;

  const double load_s = median_seconds([&] { mechlens::Tokenizer::from_file(tokenizer_path); }, repeats);

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
      "{{\n \"implementation\": \"mechlens\",\n \"cpu_count\": {},\n \"text_bytes\": {},\n \"paragraphs\": {},\n"
      " \"tokens\": {},\n \"repeats\": {},\n \"load_ms_median\": {:.1f},\n \"encode_whole_MBps\": {:.3f},\n"
      " \"encode_whole_cold_cache_MBps\": {:.3f},\n \"encode_per_paragraph_MBps\": {:.3f}\n}}\n",
      std::thread::hardware_concurrency(), text.size(), paragraphs.size(), n_tokens, repeats, load_s * 1e3,
      mb / whole_s, mb / cold_s, mb / para_s);
  std::fputs(result.c_str(), stdout);
  if (!json_path.empty()) std::ofstream(json_path) << result;
  return 0;
}
