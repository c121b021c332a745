// toy_corpus: prints documents of the toy model's corpus (the recipe in corpus.hpp and
// docs/toy-model.md) and writes the prompt pairs shipped for the embedded model
// (examples/prompts/toy_pairs.jsonl): recursive and baseline prompts filled into the same frame,
// so each pair is matched in length (tokens) and form.

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "mechlens/io/atomic_file.hpp"

#include "corpus.hpp"

int main(int argc, char** argv) {
  std::string pairs_out;
  int n_pairs = 100, n_docs = 0;
  uint64_t pair_seed = 2024, doc_seed = 7;
  CLI::App app{"Toy corpus: print sample documents and/or write the embedded model's prompt pairs"};
  app.add_option("--pairs-out", pairs_out, "write this many --n-pairs pairs here as JSONL "
                                           "(the shipped file is examples/prompts/toy_pairs.jsonl)");
  app.add_option("--n-pairs", n_pairs, "pairs to write")->capture_default_str();
  app.add_option("--pair-seed", pair_seed, "seed of the pairs")->capture_default_str();
  app.add_option("--docs", n_docs, "print this many documents of the training stream")->capture_default_str();
  app.add_option("--doc-seed", doc_seed, "seed of the printed documents (the trainer's --seed gives its stream's "
                                         "first natural documents only approximately: it interleaves planted steps)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  toy::Rng docs(doc_seed);
  for (int i = 0; i < n_docs; ++i) {
    const auto d = toy::make_document(docs);
    std::printf("[%s, frame %d]\n%s%s\n\n", toy::register_name(d.reg), d.frame, d.prompt.c_str(), d.continuation.c_str());
  }
  if (!pairs_out.empty()) {
    toy::Rng rng(pair_seed);
    std::string text;
    for (int i = 0; i < n_pairs; ++i) {
      const auto p = toy::make_pair(rng);
      char id[16];
      std::snprintf(id, sizeof id, "toy-%03d", i + 1);
      text += nlohmann::ordered_json{{"id", id}, {"recursive", p.recursive}, {"baseline", p.baseline}, {"frame", p.frame}}.dump() + "\n";
    }
    mechlens::io::write_file_atomically(pairs_out, text);
    std::fprintf(stderr, "wrote %d pairs to %s\n", n_pairs, pairs_out.c_str());
  }
  return 0;
}
