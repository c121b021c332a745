// The study's text inputs, chosen by the first byte: 0 a prompt-pair JSONL file, 1 a
// generations.jsonl record log (read whole, then opened for --resume), 2 an intervention spec
// (the CLI's --patch-file entries and the conditions records store), which must round-trip.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include <mechlens/experiments/intervention_spec.hpp>
#include <mechlens/experiments/prompt_pairs.hpp>
#include <mechlens/experiments/records.hpp>
#include <mechlens/io/json.hpp>

#include "fuzz_support.hpp"

namespace ex = mechlens::experiments;

namespace {
std::string write_input(const char* name, std::string_view text) {
  static const std::string dir = [] {
    std::string d = "/tmp/mechlens-fuzz-study-" + std::to_string(::getpid());
    ::mkdir(d.c_str(), 0700);
    return d;
  }();
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(text.data(), static_cast<std::streamsize>(text.size()));
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text = mechlens_fuzz::as_text(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      mechlens_fuzz::refuse_or_run([&] { ex::load_prompt_pairs(write_input("pairs.jsonl", text)); });
      break;
    case 1: {
      const std::string path = write_input("generations.jsonl", text);
      mechlens_fuzz::refuse_or_run([&] { ex::load_records(path); });
      mechlens_fuzz::refuse_or_run([&] { ex::RecordLog::open(path, /*resume=*/true); });
      break;
    }
    default:
      mechlens_fuzz::refuse_or_run([&] {
        const auto spec = ex::parse_intervention_spec(mechlens::io::parse_json(text, "fuzz spec"), "fuzz spec");
        const auto again = ex::parse_intervention_spec(ex::to_json(spec), "round trip");
        if (ex::to_json(again) != ex::to_json(spec)) __builtin_trap();
      });
  }
  return 0;
}
