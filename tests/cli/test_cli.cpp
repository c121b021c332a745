// The mechlens command-line tool (examples/cli), run as a program on the reference checkpoints and
// compared with the Hugging Face references (tests/reference/README.md): forward logits and hook
// activations, patched logits, greedy / spliced / prefix decoding, R_V, and the tokenizer
// references. Bad arguments must give one line on stderr naming the argument, and exit status 2.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <mechlens/io/json.hpp>
#include <mechlens/io/safetensors.hpp>

#include "test_util.hpp"

using namespace mechlens;
namespace fs = std::filesystem;

namespace {

std::string model_dir(const std::string& name) { return std::string(MECHLENS_TEST_DATA) + "/models/" + name; }

/// A folder under /tmp for this test process's outputs.
const fs::path& scratch() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("mechlens_cli_test_" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Run {
  int status = -1;
  std::string out, err, command;
};

/// Runs the built mechlens binary with `args`; stdout and stderr are captured separately.
Run mechlens_cli(const std::vector<std::string>& args) {
  const std::string binary = MECHLENS_CLI_PATH;
  if (!fs::exists(binary)) FAIL("the mechlens binary is missing: " << binary);
  static int counter = 0;
  const fs::path out = scratch() / ("out" + std::to_string(counter) + ".txt");
  const fs::path err = scratch() / ("err" + std::to_string(counter++) + ".txt");
  Run r;
  r.command = shell_quote(binary);
  for (const auto& a : args) r.command += " " + shell_quote(a);
  const int raw = std::system((r.command + " >" + shell_quote(out.string()) + " 2>" + shell_quote(err.string())).c_str());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + (WIFSIGNALED(raw) ? WTERMSIG(raw) : 0);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

/// The JSON object a successful run printed (one line).
nlohmann::json json_of(const Run& r) {
  INFO(r.command << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(!r.out.empty());
  REQUIRE(r.out.back() == '\n');
  REQUIRE(r.out.find('\n') == r.out.size() - 1);
  return nlohmann::json::parse(r.out);
}

/// Every line a successful run printed, parsed.
std::vector<nlohmann::json> json_lines(const Run& r) {
  INFO(r.command << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  std::vector<nlohmann::json> out;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

/// A failed run: exit status 2, nothing on stdout, exactly one line on stderr holding every part.
void require_bad_argument(const Run& r, const std::vector<std::string>& parts) {
  INFO(r.command << "\nstdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 2);
  REQUIRE(r.out.empty());
  REQUIRE(!r.err.empty());
  REQUIRE(r.err.back() == '\n');
  REQUIRE(r.err.find('\n') == r.err.size() - 1);
  for (const auto& p : parts) REQUIRE_THAT(r.err, Catch::Contains(p));
}

std::string join_ids(const std::vector<int64_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

std::vector<int64_t> tensor_ids(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous().view({-1});
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::string write_file(const std::string& name, const std::string& text) {
  const fs::path p = scratch() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

using test::comparable;

void require_same_tokens(const nlohmann::json& ours, const nlohmann::json& record) {
  auto got = ours.get<std::vector<int64_t>>();
  auto want = record.at("new_ids").get<std::vector<int64_t>>();
  const size_t n = comparable(record.at("margins"));
  REQUIRE(n > 0);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < n; ++i) {
    INFO("token " << i);
    REQUIRE(got[i] == want[i]);
  }
}

std::string vocabulary_dir(const std::string& name) {
  const char* env = std::getenv("MECHLENS_TOKENIZER_CACHE");
  const fs::path dir = fs::path(env != nullptr ? env : MECHLENS_TOKENIZER_CACHE) / name;
  if (!fs::exists(dir / "tokenizer.json"))
    FAIL("the " << name << " vocabulary is missing from " << dir.string()
                << "; run `ctest -R tokenizer_vocabularies` or tests/tokenizer/fetch_vocabularies.sh");
  return dir.string();
}

/// The text the tiny tokenizer encodes to `ids` (ids >= 3).
std::string tiny_text(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) {
    const char32_t c = char32_t(0x4E00 + id);  // three UTF-8 bytes
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

/// A tokenizer.json of the test's own: ids 3..255 are the CJK characters U+4E00 + id (no merges, so
/// each character is one token), 0..2 the special tokens <pad>, <s>, </s>. It turns the reference
/// prompts' ids into text and back without any other rule.
std::string tiny_tokenizer() {
  static const std::string path = [] {
    nlohmann::json vocab = nlohmann::json::object();
    vocab["<pad>"] = 0;
    vocab["<s>"] = 1;
    vocab["</s>"] = 2;
    nlohmann::json added = nlohmann::json::array();
    for (int id = 0; id < 3; ++id) {
      const char* names[] = {"<pad>", "<s>", "</s>"};
      added.push_back({{"id", id}, {"content", names[id]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", true}});
    }
    for (int64_t id = 3; id < 256; ++id) vocab[tiny_text({id})] = id;
    nlohmann::json tok = {{"version", "1.0"},
                          {"added_tokens", added},
                          {"normalizer", nullptr},
                          {"pre_tokenizer", nullptr},
                          {"post_processor", nullptr},
                          {"decoder", {{"type", "Fuse"}}},
                          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
    fs::create_directories(scratch() / "tiny_tokenizer");
    return write_file("tiny_tokenizer/tokenizer.json", tok.dump());
  }();
  return path;
}

}  // namespace

TEST_CASE("mechlens --help and every command's --help say what each flag does and its default") {
  Run top = mechlens_cli({"--help"});
  REQUIRE(top.status == 0);
  for (const char* cmd : {"info", "tokenize", "decode", "forward", "generate", "rv"})
    REQUIRE_THAT(top.out, Catch::Contains(std::string("  ") + cmd));

  const std::map<std::string, std::vector<std::string>> flags = {
      {"info", {"--model"}},
      {"tokenize",
       {"--tokenizer,--model", "--match-transformers-v5", "--text", "--chat", "--chat-template", "--no-special"}},
      {"decode", {"--tokenizer,--model", "--ids", "--skip-special"}},
      {"forward", {"--model", "--dtype", "--device", "--device-map", "--tokenizer", "--match-transformers-v5", "--ids", "--prompt",
                   "--chat", "--save", "--patch-file", "--out"}},
      {"generate", {"--model", "--dtype", "--device", "--device-map", "--tokenizer", "--match-transformers-v5", "--ids", "--prompt",
                    "--chat", "--max-new-tokens",
                    "--temperature", "--top-k", "--top-p", "--seed", "--stop-ids", "--ignore-eos", "--kv-source-ids",
                    "--kv-source-prompt", "--kv-layers", "--kv-align", "--kv-heads", "--kv-slots", "--patch-file",
                    "--kv-prefix-ids", "--kv-prefix-prompt", "--allow-long-context"}},
      {"rv", {"--model", "--dtype", "--device", "--device-map", "--tokenizer", "--match-transformers-v5", "--ids", "--prompt", "--chat",
              "--early", "--late", "--window", "--centered", "--per-head"}},
  };
  for (const auto& [cmd, names] : flags) {
    Run r = mechlens_cli({cmd, "--help"});
    INFO(cmd << " --help:\n" << r.out);
    REQUIRE(r.status == 0);
    // Each option's block: its line and the wrapped description lines after it.
    std::map<std::string, std::string> blocks;
    std::istringstream in(r.out);
    std::string line, current;
    while (std::getline(in, line)) {
      // An option's line starts near the left margin with its names ("  --model", "  -h,--help");
      // wrapped description lines are indented to the description column (about 30).
      const auto indent = line.find_first_not_of(' ');
      if (indent != std::string::npos && indent < 20 && line[indent] == '-') {
        const auto start = line.find("--", indent);
        current = line.substr(start, line.find_first_of(" \t", start) - start);
      }
      if (!current.empty()) blocks[current] += line + "\n";
    }
    for (const auto& name : names) {
      INFO("flag " << name);
      REQUIRE(blocks.count(name) == 1);
    }
    REQUIRE(blocks.size() == names.size() + 1);  // + --help: no undocumented flags either
    for (const auto& [name, text] : blocks) {
      if (name == "--help") continue;
      INFO("flag " << name << ":\n" << text);
      const bool says = text.find("REQUIRED") != std::string::npos || text.find("required") != std::string::npos ||
                        text.find("default") != std::string::npos;
      REQUIRE(says);
      REQUIRE(text.size() > name.size() + 40);  // a description, not only the flag
    }
  }
}

TEST_CASE("info reports each checkpoint's shape and exactly the hooks the HF reference records") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa"}) {
    INFO(name);
    auto config = io::read_json_file(model_dir(name) + "/config.json");
    auto j = json_of(mechlens_cli({"info", "--model", model_dir(name)}));
    REQUIRE(j.at("family") == config.at("model_type"));
    REQUIRE(j.at("layers") == config.at("num_hidden_layers"));
    REQUIRE(j.at("d_model") == config.at("hidden_size"));
    REQUIRE(j.at("heads") == config.at("num_attention_heads"));
    REQUIRE(j.at("kv_heads") == config.at("num_key_value_heads"));
    REQUIRE(j.at("d_head") == config.at("hidden_size").get<int64_t>() / config.at("num_attention_heads").get<int64_t>());
    REQUIRE(j.at("vocab") == config.at("vocab_size"));
    const std::string stored = config.contains("torch_dtype") ? config.at("torch_dtype") : config.at("dtype");
    REQUIRE(j.at("dtype") == stored);

    std::set<std::string> ref_hooks;
    for (const auto& key : io::SafetensorsFile(model_dir(name) + "/reference.safetensors").keys())
      if (key.rfind("p0.", 0) == 0 && key != "p0.input_ids" && key != "p0.logits") ref_hooks.insert(key.substr(3));
    auto hooks = j.at("hooks").get<std::vector<std::string>>();
    REQUIRE(std::set<std::string>(hooks.begin(), hooks.end()) == ref_hooks);
    REQUIRE(hooks.size() == ref_hooks.size());
    REQUIRE(j.at("hook_shapes").at("blocks.0.attn.hook_v") ==
            nlohmann::json({"batch", "pos", config.at("num_key_value_heads"), j.at("d_head")}));
  }
}

TEST_CASE("forward writes transformers' logits and the saved hooks' activations in float32") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa"}) {
    INFO(name);
    auto ref = io::load_safetensors(model_dir(name) + "/reference.safetensors");
    const auto ids = tensor_ids(ref.at("p1.input_ids"));
    const std::string out = (scratch() / (std::string(name) + "_p1.safetensors")).string();
    auto j = json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", join_ids(ids), "--save",
                                   "blocks.*.attn.hook_v", "--save", "blocks.1.hook_resid_post", "--save",
                                   "blocks.*.attn.hook_pattern", "--save", "ln_final.hook_normalized", "--out", out}));
    REQUIRE(j.at("out") == out);
    REQUIRE(j.at("ids").get<std::vector<int64_t>>() == ids);
    auto got = io::load_safetensors(out);
    std::set<std::string> want{"logits", "blocks.1.hook_resid_post", "ln_final.hook_normalized"};
    const int64_t layers = io::read_json_file(model_dir(name) + "/config.json").at("num_hidden_layers");
    for (int64_t l = 0; l < layers; ++l) {
      want.insert("blocks." + std::to_string(l) + ".attn.hook_v");
      want.insert("blocks." + std::to_string(l) + ".attn.hook_pattern");
    }
    std::set<std::string> keys;
    for (const auto& [k, v] : got) keys.insert(k);
    REQUIRE(keys == want);
    auto saved = j.at("saved").get<std::vector<std::string>>();
    want.erase("logits");
    REQUIRE(std::set<std::string>(saved.begin(), saved.end()) == want);
    for (const auto& [key, tensor] : got) {
      INFO(key);
      const at::Tensor& expected = ref.at("p1." + key);
      REQUIRE(tensor.scalar_type() == at::kFloat);
      REQUIRE(tensor.sizes() == expected.sizes());
      REQUIRE(test::max_rel_diff(tensor, expected) <= 1e-4);
    }
  }
}

TEST_CASE("forward --device-map splits the model and still writes transformers' logits; a bad map names the flag") {
  // On the CPU the split is over "cpu" and "cpu:0" (one memory under two names: every boundary
  // copy and cache block is taken; docs/scale.md). Layers 1:3 on the second device.
  const std::string name = "llama_gqa_llama3";
  auto ref = io::load_safetensors(model_dir(name) + "/reference.safetensors");
  const auto ids = tensor_ids(ref.at("p1.input_ids"));
  const std::string out = (scratch() / "split_p1.safetensors").string();
  auto j = json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", join_ids(ids), "--device-map",
                                 "0:1=cpu,1:3=cpu:0,3:4=cpu", "--save", "blocks.2.attn.hook_v", "--out", out}));
  REQUIRE(j.at("out") == out);
  auto got = io::load_safetensors(out);
  REQUIRE(test::max_rel_diff(got.at("logits"), ref.at("p1.logits")) <= 1e-4);
  REQUIRE(test::max_rel_diff(got.at("blocks.2.attn.hook_v"), ref.at("p1.blocks.2.attn.hook_v")) <= 1e-4);
  require_bad_argument(mechlens_cli({"forward", "--model", model_dir(name), "--ids", "1,2", "--device-map", "0:2=cpu",
                                     "--out", out}),
                       {"--device-map", "layer 2 of 4 is on no device"});
  require_bad_argument(mechlens_cli({"forward", "--model", model_dir(name), "--ids", "1,2", "--device-map", "0-4=cpu",
                                     "--out", out}),
                       {"--device-map", "is not begin:end=device"});
}

TEST_CASE("forward --save '*' writes every hook of a prompt longer than Mistral's sliding window") {
  auto ref = io::load_safetensors(model_dir("mistral_swa") + "/reference.safetensors");
  const std::string out = (scratch() / "mistral_p2_all.safetensors").string();
  json_of(mechlens_cli({"forward", "--model", model_dir("mistral_swa"), "--ids", join_ids(tensor_ids(ref.at("p2.input_ids"))),
                        "--save", "*", "--out", out}));
  auto got = io::load_safetensors(out);
  size_t compared = 0;
  for (const auto& [key, expected] : ref) {
    if (key.rfind("p2.", 0) != 0 || key == "p2.input_ids") continue;
    INFO(key);
    REQUIRE(got.count(key.substr(3)) == 1);
    // hook_attn_scores is -inf where a query may not attend: those places must agree exactly.
    const at::Tensor a = got.at(key.substr(3)), e = expected;
    REQUIRE(at::equal(a.isinf(), e.isinf()));
    REQUIRE(test::max_rel_diff(a.masked_fill(a.isinf(), 0.0), e.masked_fill(e.isinf(), 0.0)) <= 1e-4);
    ++compared;
  }
  REQUIRE(compared == got.size());
}

TEST_CASE("forward --dtype bfloat16 runs in bfloat16 and still writes float32 near transformers' float32 logits") {
  auto ref = io::load_safetensors(model_dir("llama_gqa_llama3") + "/reference.safetensors");
  const std::string out = (scratch() / "bf16.safetensors").string();
  json_of(mechlens_cli({"forward", "--model", model_dir("llama_gqa_llama3"), "--dtype", "bfloat16", "--ids",
                        join_ids(tensor_ids(ref.at("p1.input_ids"))), "--save", "blocks.3.hook_resid_post", "--out", out}));
  auto got = io::load_safetensors(out);
  REQUIRE(got.at("logits").scalar_type() == at::kFloat);
  REQUIRE(got.at("blocks.3.hook_resid_post").scalar_type() == at::kFloat);
  // bfloat16 keeps 8 significant bits (relative step 2^-8 = 0.004); four layers stay within 5e-2
  // of the scale, yet are not the float32 numbers (which would mean --dtype was ignored).
  const double diff = test::max_rel_diff(got.at("logits"), ref.at("p1.logits"));
  REQUIRE(diff <= 5e-2);
  REQUIRE(diff > 1e-5);
}

TEST_CASE("forward --patch-file reproduces transformers' patched logits for every site") {
  for (const char* name : {"llama_gqa_llama3", "mistral_swa"}) {
    auto meta = io::read_json_file(model_dir(name) + "/interventions.json");
    auto ref = io::load_safetensors(model_dir(name) + "/interventions.safetensors");
    const auto target = meta.at("target_ids").get<std::vector<int64_t>>();
    std::set<std::string> sites_done;
    int index = 0;
    for (const auto& c : meta.at("cases")) {
      // One case per site, cycling through the position sets and layers.
      const std::string site = c.at("site");
      if (sites_done.count(site) || index++ % 4 != 0) continue;
      sites_done.insert(site);
      nlohmann::json entry = {{"hook", c.at("hook")}, {"source_ids", meta.at("source_ids")}, {"positions", c.at("positions")}};
      if (!c.at("head").is_null()) entry["head"] = c.at("head");
      const std::string patch = write_file(std::string(name) + "_" + site + ".json", nlohmann::json::array({entry}).dump());
      const std::string out = (scratch() / (std::string(name) + "_" + site + ".safetensors")).string();
      INFO(name << " " << site << " layer " << c.at("layer") << " positions " << c.at("positions_name"));
      json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", join_ids(target), "--patch-file", patch,
                            "--out", out}));
      REQUIRE(test::max_rel_diff(io::load_safetensors(out).at("logits"), ref.at(c.at("key").get<std::string>())) <= 1e-4);
    }
    REQUIRE(sites_done.size() == 5);
  }
}

TEST_CASE("forward --patch-file takes intervention specs: a swap spec gives the patched logits, bad specs name the field") {
  const std::string name = "llama_gqa_llama3";
  auto meta = io::read_json_file(model_dir(name) + "/interventions.json");
  auto ref = io::load_safetensors(model_dir(name) + "/interventions.safetensors");
  const std::string out = (scratch() / "spec.safetensors").string();
  const std::string target = join_ids(meta.at("target_ids"));
  int done = 0;
  for (const auto& c : meta.at("cases")) {
    const std::string site = c.at("site");
    if (site != "v_proj" && site != "head_z") continue;
    nlohmann::json entry = {{"kind", "swap"}, {"site", site == "v_proj" ? "v" : "z"}, {"layers", c.at("layer")},
                            {"positions", c.at("positions")}, {"source", {{"ids", meta.at("source_ids")}}}};
    if (!c.at("head").is_null()) entry["heads"] = {c.at("head")};
    INFO(entry.dump());
    json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", target, "--patch-file",
                          write_file("swap_spec.json", nlohmann::json::array({entry}).dump()), "--out", out}));
    REQUIRE(test::max_rel_diff(io::load_safetensors(out).at("logits"), ref.at(c.at("key").get<std::string>())) <= 1e-4);
    if (++done == 4) break;
  }
  REQUIRE(done == 4);
  // A zero ablation (no source) changes the logits; scaling by 1 does not (beyond the rounding of
  // the readable path, which hooked blocks take, against the fused one).
  const std::string clean = (scratch() / "clean.safetensors").string();
  json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", target, "--out", clean}));
  json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", target, "--patch-file",
                        write_file("ablate.json", R"([{"kind": "ablation", "mode": "zero", "hook": "blocks.1.hook_mlp_out"}])"),
                        "--out", out}));
  REQUIRE(test::max_rel_diff(io::load_safetensors(out).at("logits"), io::load_safetensors(clean).at("logits")) > 1e-3);
  json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", target, "--patch-file",
                        write_file("scale1.json", R"([{"kind": "scale", "hook": "blocks.*.hook_resid_post", "layers": "0:2", "factor": 1}])"),
                        "--out", out}));
  REQUIRE(test::max_rel_diff(io::load_safetensors(out).at("logits"), io::load_safetensors(clean).at("logits")) < 1e-5);

  const std::string tied = model_dir("llama_tied");
  require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--patch-file",
                                     write_file("spec_typo.json", R"([{"kind": "swap", "site": "v", "layer": 1, "source": {"ids": [5, 6]}}])"),
                                     "--out", out}),
                       {"--patch-file", "entry 0", "'layer' is not a field of a 'swap' spec"});
  require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--patch-file",
                                     write_file("spec_kv.json", R"([{"kind": "kv_splice", "layers": "0:1"}])"), "--out", out}),
                       {"--patch-file", "entry 0", "\"kind\"", "generate"});
  require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--patch-file",
                                     write_file("spec_role.json", R"([{"kind": "swap", "site": "v", "layers": 1, "source": {"role": "recursive"}}])"),
                                     "--out", out}),
                       {"--patch-file", "entry 0", "\"source\"", "ids"});
  require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--patch-file",
                                     write_file("spec_site.json", R"([{"kind": "swap", "site": "v", "layers": "7:8", "source": {"ids": [5, 6]}}])"),
                                     "--out", out}),
                       {"--patch-file", "entry 0", "blocks.7.attn.hook_v"});
}

TEST_CASE("Patches in one --patch-file act together: two halves of the positions give the whole patch") {
  const std::string name = "llama_gqa_llama3";
  auto meta = io::read_json_file(model_dir(name) + "/interventions.json");
  auto ref = io::load_safetensors(model_dir(name) + "/interventions.safetensors");
  for (const auto& c : meta.at("cases")) {
    if (c.at("site") != "v_proj" || c.at("positions_name") != "all" || c.at("layer") != 2) continue;
    nlohmann::json patches = nlohmann::json::array(
        {{{"hook", c.at("hook")}, {"source_ids", meta.at("source_ids")}, {"positions", "0:6"}},
         {{"hook", c.at("hook")}, {"source_ids", meta.at("source_ids")}, {"positions", {6, 7, 8, 9, 10, 11}}}});
    const std::string out = (scratch() / "halves.safetensors").string();
    json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", join_ids(meta.at("target_ids")),
                          "--patch-file", write_file("halves.json", patches.dump()), "--out", out}));
    const at::Tensor logits = io::load_safetensors(out).at("logits");
    REQUIRE(test::max_rel_diff(logits, ref.at(c.at("key").get<std::string>())) <= 1e-4);
    // Either half alone is not the whole patch.
    patches.erase(1);
    json_of(mechlens_cli({"forward", "--model", model_dir(name), "--ids", join_ids(meta.at("target_ids")),
                          "--patch-file", write_file("half.json", patches.dump()), "--out", out}));
    REQUIRE(test::max_rel_diff(io::load_safetensors(out).at("logits"), ref.at(c.at("key").get<std::string>())) > 1e-3);
    return;
  }
  FAIL("interventions.json has no v_proj case at layer 2 over all positions");
}

TEST_CASE("generate decodes transformers' greedy tokens, and top-k 1 sampling is greedy too") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa"}) {
    auto ref = io::read_json_file(model_dir(name) + "/generation.json");
    for (const auto& rec : ref.at("greedy")) {
      INFO(name << " " << rec.at("prompt"));
      const std::string n = std::to_string(rec.at("new_ids").size());
      auto j = json_of(mechlens_cli({"generate", "--model", model_dir(name), "--ids", join_ids(rec.at("prompt_ids")),
                                     "--max-new-tokens", n, "--ignore-eos"}));
      require_same_tokens(j.at("new_ids"), rec);
      REQUIRE(j.at("prompt_ids") == rec.at("prompt_ids"));
      REQUIRE(!j.contains("text"));  // the checkpoints have no tokenizer
    }
  }
  auto rec = io::read_json_file(model_dir("llama_tied") + "/generation.json").at("greedy").at(1);
  auto j = json_of(mechlens_cli({"generate", "--model", model_dir("llama_tied"), "--ids", join_ids(rec.at("prompt_ids")),
                                 "--max-new-tokens", std::to_string(rec.at("new_ids").size()), "--ignore-eos",
                                 "--temperature", "1.5", "--top-k", "1", "--seed", "7"}));
  require_same_tokens(j.at("new_ids"), rec);
}

TEST_CASE("generate stops at the model's eos unless told not to") {
  // llama_tied's p1 with eos taken to be its third greedy token (--stop-ids): the reference's
  // first three tokens, then nothing.
  auto rec = io::read_json_file(model_dir("llama_tied") + "/generation.json").at("greedy").at(1);
  REQUIRE(comparable(rec.at("margins")) >= 3);
  const int64_t third = rec.at("new_ids").at(2);
  auto j = json_of(mechlens_cli({"generate", "--model", model_dir("llama_tied"), "--ids", join_ids(rec.at("prompt_ids")),
                                 "--max-new-tokens", "10", "--stop-ids", std::to_string(third)}));
  auto want = rec.at("new_ids").get<std::vector<int64_t>>();
  want.resize(3);
  REQUIRE(j.at("new_ids").get<std::vector<int64_t>>() == want);
  REQUIRE(j.at("stopped") == true);
}

TEST_CASE("generate with a KV splice reproduces transformers for equal and unequal lengths") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied"}) {
    auto ref = io::read_json_file(model_dir(name) + "/generation.json");
    const int64_t layers = io::read_json_file(model_dir(name) + "/config.json").at("num_hidden_layers");
    int checked = 0;
    for (const auto& rec : ref.at("splice")) {
      const auto t = rec.at("target_ids").size(), s = rec.at("source_ids").size();
      const auto range = rec.at("layers").get<std::vector<int64_t>>();
      // Equal lengths over all layers with the defaults (no --kv-layers, no --kv-align); both
      // alignments of both unequal pairs on a half range; the last layer alone, right-aligned.
      const bool all_layers = range[0] == 0 && range[1] == layers;
      const bool pick = (t == s && all_layers && rec.at("align") == "left") ||
                        (t != s && range[0] == layers / 2 && range[1] == layers) ||
                        (t > s && range[0] == layers - 1 && rec.at("align") == "right");
      if (!pick) continue;
      std::vector<std::string> args{"generate", "--model", model_dir(name), "--ids", join_ids(rec.at("target_ids")),
                                    "--kv-source-ids", join_ids(rec.at("source_ids")), "--max-new-tokens",
                                    std::to_string(rec.at("new_ids").size()), "--ignore-eos"};
      if (!(t == s && all_layers)) {
        args.insert(args.end(), {"--kv-layers", std::to_string(range[0]) + ":" + std::to_string(range[1]), "--kv-align",
                                 rec.at("align").get<std::string>()});
      }
      INFO(name << " target " << t << " source " << s << " layers " << range[0] << ":" << range[1] << " "
                << rec.at("align"));
      auto j = json_of(mechlens_cli(args));
      require_same_tokens(j.at("new_ids"), rec);
      // The splice shows: without it the reference tokens differ within the compared ones.
      auto unspliced = rec.at("unspliced_new_ids").get<std::vector<int64_t>>();
      auto spliced = rec.at("new_ids").get<std::vector<int64_t>>();
      const size_t n = comparable(rec.at("margins"));
      REQUIRE(std::vector<int64_t>(unspliced.begin(), unspliced.begin() + n) !=
              std::vector<int64_t>(spliced.begin(), spliced.begin() + n));
      ++checked;
    }
    REQUIRE(checked == 6);
  }
}

TEST_CASE("generate --patch-file runs interventions in each scope as transformers' generate() with hooks does") {
  // scopes.json (tests/reference/make_scope_references.py): the same interventions as PyTorch
  // hooks on transformers' modules during generate().
  for (const char* name : {"llama_tied", "mistral_swa"}) {
    const auto ref = io::read_json_file(model_dir(name) + "/scopes.json");
    int checked = 0;
    for (const auto& rec : ref.at("cases")) {
      const std::string c = rec.at("case");
      nlohmann::json spec;
      const std::string scope = rec.at("scope");
      if (c == "resid_patch_prompt" || c == "resid_patch_both" || c == "resid_patch_right_short") {
        spec = {{"kind", "patch"}, {"hook", rec.at("hook")}, {"align", rec.at("align")},
                {"source", {{"ids", rec.at("source_ids")}}}};
      } else if (c == "steer_generated" || c == "steer_steps_2_4") {
        spec = {{"kind", "steering"}, {"hook", rec.at("hook")}, {"vector", rec.at("vector")}, {"scale", rec.at("scale")}};
      } else if (c == "zero_head_generated") {
        spec = {{"kind", "ablation"}, {"mode", "zero"}, {"hook", rec.at("hook")}, {"heads", {rec.at("head")}}};
      } else {
        continue;
      }
      if (scope == "steps 2:4") spec["steps"] = "2:4";
      else if (scope != "prompt") spec["scope"] = scope;  // the prompt scope is the default
      const std::string file = write_file(std::string(name) + "_" + c + ".json", nlohmann::json::array({spec}).dump());
      INFO(name << " " << c);
      // resid_patch_both's source is its own greedy generation of as many tokens, which the
      // command runs with the same options.
      auto j = json_of(mechlens_cli({"generate", "--model", model_dir(name), "--ids", join_ids(rec.at("target_ids")),
                                     "--max-new-tokens", std::to_string(rec.at("new_ids").size()), "--ignore-eos",
                                     "--patch-file", file}));
      require_same_tokens(j.at("new_ids"), rec);
      REQUIRE(j.at("interventions").size() == 1);
      REQUIRE(j.at("interventions").at(0).get<std::string>().find("[" + scope + "]") != std::string::npos);
      ++checked;
    }
    REQUIRE(checked == 6);
  }
  // forward has no generated tokens: a patch file scoped to them is refused there.
  const std::string gen_only = write_file("gen_only.json", R"([{"kind": "scale", "hook": "blocks.0.hook_resid_post", "factor": 2, "scope": "generated"}])");
  require_bad_argument(mechlens_cli({"forward", "--model", model_dir("llama_tied"), "--ids", "5,6,7", "--patch-file", gen_only,
                                     "--out", (scratch() / "gen_only.safetensors").string()}),
                       {"--patch-file entry 0", "generated tokens", "mechlens generate"});
}

TEST_CASE("generate --kv-heads and --kv-slots reach the splice: all heads or all slots is transformers' whole splice") {
  const auto ref = io::read_json_file(model_dir("llama_gqa_llama3") + "/generation.json");
  for (const auto& rec : ref.at("splice")) {
    const auto t = rec.at("target_ids").size(), s = rec.at("source_ids").size();
    const auto range = rec.at("layers").get<std::vector<int64_t>>();
    if (t != s || range[0] != 2 || range[1] != 4 || rec.at("align") != "left") continue;
    std::vector<std::string> base{"generate", "--model", model_dir("llama_gqa_llama3"), "--ids", join_ids(rec.at("target_ids")),
                                  "--kv-source-ids", join_ids(rec.at("source_ids")), "--kv-layers", "2:4", "--max-new-tokens",
                                  std::to_string(rec.at("new_ids").size()), "--ignore-eos"};
    auto with = [&](std::vector<std::string> more) {
      auto args = base;
      args.insert(args.end(), more.begin(), more.end());
      return json_of(mechlens_cli(args)).at("new_ids");
    };
    // Both KV heads (the model has 2), and every prefilled slot, are transformers' whole splice.
    require_same_tokens(with({"--kv-heads", "0,1"}), rec);
    require_same_tokens(with({"--kv-slots", "0:" + std::to_string(t - 1)}), rec);
    require_same_tokens(with({"--kv-heads", "0,1", "--kv-slots", "0:" + std::to_string(t - 1)}), rec);
    require_bad_argument(mechlens_cli([&] { auto a = base; a.insert(a.end(), {"--kv-heads", "2"}); return a; }()),
                         {"--kv-heads", "head 2 does not exist", "2 KV heads"});
    require_bad_argument(mechlens_cli([&] { auto a = base; a.insert(a.end(), {"--kv-slots", "3:1"}); return a; }()),
                         {"--kv-slots", "3:1"});
    return;
  }
  FAIL("generation.json has no equal-length left-aligned splice of layers 2:4");
}

TEST_CASE("generate with --kv-prefix-ids continues after the source's cache as transformers does") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied"}) {
    INFO(name);
    auto rec = io::read_json_file(model_dir(name) + "/generation.json").at("prefix").at(0);
    auto j = json_of(mechlens_cli({"generate", "--model", model_dir(name), "--ids", join_ids(rec.at("target_ids")),
                                   "--kv-prefix-ids", join_ids(rec.at("source_ids")), "--max-new-tokens",
                                   std::to_string(rec.at("new_ids").size()), "--ignore-eos"}));
    require_same_tokens(j.at("new_ids"), rec);
  }
}

TEST_CASE("rv prints transformers' participation ratios and R_V, centred or not") {
  for (const char* name : {"llama_gqa_llama3", "llama_tied", "mistral_swa"}) {
    INFO(name);
    auto ref = io::read_json_file(model_dir(name) + "/rv.json");
    auto tensors = io::load_safetensors(model_dir(name) + "/reference.safetensors");
    const std::string ids = join_ids(tensor_ids(tensors.at(ref.at("prompt").get<std::string>() + ".input_ids")));
    const std::string early = std::to_string(ref.at("rv").at("early").get<int64_t>());
    const std::string late = std::to_string(ref.at("rv").at("late").get<int64_t>());
    const std::string window = std::to_string(ref.at("window").get<int64_t>());
    auto j = json_of(mechlens_cli({"rv", "--model", model_dir(name), "--ids", ids, "--early", early, "--late", late,
                                   "--window", window}));
    REQUIRE(j.at("pr_early").get<double>() == Approx(ref.at("pr").at(early).get<double>()).epsilon(1e-5));
    REQUIRE(j.at("pr_late").get<double>() == Approx(ref.at("pr").at(late).get<double>()).epsilon(1e-5));
    REQUIRE(j.at("rv").get<double>() == Approx(ref.at("rv").at("value").get<double>()).epsilon(1e-5));
    auto c = json_of(mechlens_cli({"rv", "--model", model_dir(name), "--ids", ids, "--early", early, "--late", late,
                                   "--window", window, "--centered"}));
    REQUIRE(c.at("centered") == true);
    REQUIRE(c.at("pr_early").get<double>() == Approx(ref.at("pr_centered").at(early).get<double>()).epsilon(1e-5));
    REQUIRE(c.at("pr_late").get<double>() == Approx(ref.at("pr_centered").at(late).get<double>()).epsilon(1e-5));
    REQUIRE(c.at("rv").get<double>() == Approx(ref.at("rv").at("value_centered").get<double>()).epsilon(1e-5));
    // For these small models the default layers are rv.json's (n/8 -> 1, 3n/4 -> n-1).
    auto d = json_of(mechlens_cli({"rv", "--model", model_dir(name), "--ids", ids}));
    REQUIRE(d.at("early") == ref.at("rv").at("early"));
    REQUIRE(d.at("late") == ref.at("rv").at("late"));
    REQUIRE(d.at("rv").get<double>() == Approx(ref.at("rv").at("value").get<double>()).epsilon(1e-5));
  }
}

TEST_CASE("tokenize gives HF's ids and tokens, with and without special tokens, for Llama-3 and Llama-2") {
  for (const char* vocab : {"llama3", "llama2"}) {
    auto ref = io::read_json_file(std::string(MECHLENS_TEST_DATA) + "/tokenizer/" + vocab + "_reference.json");
    std::vector<std::string> args{"tokenize", "--tokenizer", vocabulary_dir(vocab)};
    std::vector<const nlohmann::json*> cases;
    for (const auto& s : ref.at("strings")) {
      const std::string text = s.at("text");
      if (text.find('\0') != std::string::npos) continue;  // cannot travel in argv
      // An empty value after "--text=" is not one in CLI11 (it takes the next argument), so the
      // text travels as its own argument unless it starts with '-'.
      if (!text.empty() && text[0] == '-') {
        args.push_back("--text=" + text);
      } else {
        args.push_back("--text");
        args.push_back(text);
      }
      cases.push_back(&s);
    }
    REQUIRE(cases.size() > 200);
    for (bool special : {true, false}) {
      auto run_args = args;
      if (!special) run_args.push_back("--no-special");
      auto lines = json_lines(mechlens_cli(run_args));
      REQUIRE(lines.size() == cases.size());
      for (size_t i = 0; i < cases.size(); ++i) {
        const auto& want = *cases[i];
        INFO(vocab << " string " << i << " " << want.at("text").dump() << (special ? " with" : " without") << " specials");
        REQUIRE(lines[i].at("text") == want.at("text"));
        REQUIRE(lines[i].at("ids") == want.at(special ? "ids_special" : "ids"));
        if (!special) REQUIRE(lines[i].at("tokens") == want.at("tokens"));
      }
    }
  }
}

TEST_CASE("decode gives HF's text, keeping or skipping special tokens, one line per --ids") {
  for (const char* vocab : {"llama3", "llama2"}) {
    auto ref = io::read_json_file(std::string(MECHLENS_TEST_DATA) + "/tokenizer/" + vocab + "_reference.json");
    const auto& cases = ref.at("decode_cases");
    REQUIRE(cases.size() > 50);
    std::vector<std::string> args{"decode", "--tokenizer", vocabulary_dir(vocab)};
    for (const auto& c : cases) {
      args.push_back("--ids");
      args.push_back(join_ids(c.at("ids").get<std::vector<int64_t>>()));
    }
    for (bool skip : {false, true}) {
      auto run_args = args;
      if (skip) run_args.push_back("--skip-special");
      auto lines = json_lines(mechlens_cli(run_args));
      REQUIRE(lines.size() == cases.size());
      for (size_t i = 0; i < cases.size(); ++i) {
        INFO(vocab << " decode case " << i << " " << cases[i].at("ids").dump() << (skip ? " skipping" : " keeping")
                   << " special tokens");
        REQUIRE(lines[i].at("text") == cases[i].at(skip ? "decode_skip" : "decode"));
      }
    }
  }
}

TEST_CASE("tokenize --chat renders a conversation as transformers' apply_chat_template does") {
  auto ref = io::read_json_file(std::string(MECHLENS_TEST_DATA) + "/tokenizer/chat_reference.json");
  size_t checked = 0;
  for (const auto& setup : ref.at("setups")) {
    const std::string setup_name = setup.at("name");
    // The Llama-3 package's own template (from its tokenizer_config.json), and Llama-2's chat
    // template chosen by name on a tokenizer whose files have none.
    std::vector<std::string> extra;
    if (setup_name == "llama2_chat") extra = {"--chat-template", "llama2-chat"};
    else if (setup_name != "llama3_package_template") continue;
    size_t taken = 0;
    for (const auto& c : setup.at("cases")) {
      if (!c.at("add_generation_prompt").get<bool>() || c.contains("error") || taken == 6) continue;
      ++taken;
      INFO(setup_name << " " << c.at("conversation"));
      std::vector<std::string> args{"tokenize", "--tokenizer", vocabulary_dir(setup.at("model")), "--chat",
                                    write_file("chat.json", c.at("messages").dump())};
      args.insert(args.end(), extra.begin(), extra.end());
      auto j = json_of(mechlens_cli(args));
      REQUIRE(j.at("text") == c.at("text"));
      REQUIRE(j.at("ids") == c.at("ids"));
      ++checked;
    }
  }
  REQUIRE(checked == 12);
}

TEST_CASE("--prompt goes through the tokenizer: forward and generate on text give the reference numbers") {
  auto ref = io::load_safetensors(model_dir("llama_tied") + "/reference.safetensors");
  const auto ids = tensor_ids(ref.at("p1.input_ids"));
  const std::string out = (scratch() / "prompt.safetensors").string();
  auto j = json_of(mechlens_cli({"forward", "--model", model_dir("llama_tied"), "--tokenizer", tiny_tokenizer(),
                                 "--prompt", tiny_text(ids), "--out", out}));
  REQUIRE(j.at("ids").get<std::vector<int64_t>>() == ids);
  REQUIRE(test::max_rel_diff(io::load_safetensors(out).at("logits"), ref.at("p1.logits")) <= 1e-4);

  auto rec = io::read_json_file(model_dir("llama_tied") + "/generation.json").at("greedy").at(1);
  auto g = json_of(mechlens_cli({"generate", "--model", model_dir("llama_tied"), "--tokenizer", tiny_tokenizer(),
                                 "--prompt", tiny_text(rec.at("prompt_ids").get<std::vector<int64_t>>()),
                                 "--max-new-tokens", std::to_string(rec.at("new_ids").size()), "--ignore-eos"}));
  require_same_tokens(g.at("new_ids"), rec);
  std::vector<int64_t> shown;  // the special tokens 0..2 are skipped in "text"
  for (int64_t id : g.at("new_ids").get<std::vector<int64_t>>())
    if (id >= 3) shown.push_back(id);
  REQUIRE(g.at("text") == tiny_text(shown));

  auto splice = io::read_json_file(model_dir("llama_tied") + "/generation.json").at("prefix").at(0);
  auto p = json_of(mechlens_cli({"generate", "--model", model_dir("llama_tied"), "--tokenizer", tiny_tokenizer(),
                                 "--prompt", tiny_text(splice.at("target_ids").get<std::vector<int64_t>>()),
                                 "--kv-prefix-prompt", tiny_text(splice.at("source_ids").get<std::vector<int64_t>>()),
                                 "--max-new-tokens", std::to_string(splice.at("new_ids").size()), "--ignore-eos"}));
  require_same_tokens(p.at("new_ids"), splice);
}

TEST_CASE("Bad arguments give one line naming the argument and exit status 2") {
  const std::string llama = model_dir("llama_gqa_llama3"), tied = model_dir("llama_tied");
  const std::string out = (scratch() / "bad.safetensors").string();
  auto gen = io::read_json_file(llama + "/generation.json");
  const auto& unequal = gen.at("splice").at(8);  // target 9 tokens, source 13
  REQUIRE(unequal.at("target_ids").size() == 9);
  REQUIRE(unequal.at("source_ids").size() == 13);

  SECTION("an unknown hook is refused with the nearest names") {
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6,7", "--save", "blocks.0.hook_resid_pr",
                                       "--out", out}),
                         {"--save", "blocks.0.hook_resid_pr", "did you mean", "'blocks.0.hook_resid_pre'"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6,7", "--save", "blocks.*.attn.hook_vv",
                                       "--out", out}),
                         {"--save", "blocks.*.attn.hook_vv", "matches no hook point"});
    const std::string patch = write_file("bad_hook.json", R"([{"hook": "blocks.1.attn.hook_vv", "source_ids": [5, 6, 7]}])");
    require_bad_argument(
        mechlens_cli({"forward", "--model", tied, "--ids", "5,6,7", "--patch-file", patch, "--out", out}),
        {"--patch-file", "entry 0", "blocks.1.attn.hook_vv", "'blocks.1.attn.hook_v'"});
  }
  SECTION("a layer range past the model is refused") {
    require_bad_argument(mechlens_cli({"generate", "--model", llama, "--ids", "5,6,7", "--kv-source-ids", "8,9,10",
                                       "--kv-layers", "2:9", "--max-new-tokens", "2"}),
                         {"--kv-layers", "2:9", "4 layers"});
    require_bad_argument(mechlens_cli({"rv", "--model", llama, "--ids", join_ids(unequal.at("source_ids")), "--late",
                                       "4", "--window", "4"}),
                         {"--late", "layer 4", "4-layer"});
  }
  SECTION("prompts of different lengths need --kv-align") {
    require_bad_argument(mechlens_cli({"generate", "--model", llama, "--ids", join_ids(unequal.at("target_ids")),
                                       "--kv-source-ids", join_ids(unequal.at("source_ids")), "--max-new-tokens", "2"}),
                         {"--kv-align", "9", "13"});
    require_bad_argument(mechlens_cli({"generate", "--model", llama, "--ids", "5,6,7", "--kv-align", "left",
                                       "--max-new-tokens", "2"}),
                         {"--kv-align", "--kv-source-ids"});
    require_bad_argument(mechlens_cli({"generate", "--model", llama, "--ids", "5,6,7", "--kv-source-ids", "5,6,7",
                                       "--kv-align", "middle", "--max-new-tokens", "2"}),
                         {"--kv-align", "middle"});
  }
  SECTION("missing files and folders are named") {
    require_bad_argument(mechlens_cli({"info", "--model", "/nonexistent/model"}), {"--model", "/nonexistent/model"});
    const std::string no_config = std::string(MECHLENS_TEST_DATA) + "/tokenizer";
    require_bad_argument(mechlens_cli({"forward", "--model", no_config, "--ids", "1", "--out", out}),
                         {"--model", "config.json"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--out", "/nonexistent/dir/x.safetensors"}),
                         {"--out", "/nonexistent/dir"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--patch-file", "/nonexistent.json",
                                       "--out", out}),
                         {"--patch-file", "/nonexistent.json"});
    require_bad_argument(mechlens_cli({"tokenize", "--tokenizer", "/nonexistent/tok.json", "--text", "hi"}),
                         {"--tokenizer", "/nonexistent/tok.json"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--prompt", "hello", "--out", out}),
                         {"--prompt", "tokenizer.json", "--tokenizer"});
  }
  SECTION("bad dtypes, devices and ids are named") {
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--dtype", "float8", "--out", out}),
                         {"--dtype", "float8"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--device", "tpu", "--out", out}),
                         {"--device", "tpu"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,x,7", "--out", out}),
                         {"--ids", "5,x,7", "item 2"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,-6", "--out", out}), {"--ids", "-6"});
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", "5,300", "--max-new-tokens", "2"}),
                         {"--ids", "300", "[0, 256)"});
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", "5,6", "--kv-prefix-ids", "5,,6",
                                       "--max-new-tokens", "2"}),
                         {"--kv-prefix-ids", "item 2"});
    require_bad_argument(mechlens_cli({"decode", "--tokenizer", tiny_tokenizer(), "--ids", "1,999"}), {"--ids", "999"});
  }
  SECTION("numbers out of range are named before anything runs") {
    // 2^63 - 1 new tokens overflowed a signed sum; the context is config.json's 512.
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", "5,6", "--max-new-tokens",
                                       "9223372036854775807"}),
                         {"--max-new-tokens", "9223372036854775807", "context of 512", "at most 511"});
    std::string long_ids = "5";
    for (int i = 0; i < 512; ++i) long_ids += ",6";
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", long_ids, "--max-new-tokens", "1"}),
                         {"--ids", "513 tokens", "context of 512", "--allow-long-context"});
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", "5,6", "--max-new-tokens", "2",
                                       "--temperature", "nan"}),
                         {"--temperature", "nan", "not a finite number"});
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", "5,6", "--max-new-tokens", "2",
                                       "--temperature", "1", "--top-p", "0"}),
                         {"--top-p", "0 is outside (0, 1]"});
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", "5,6", "--max-new-tokens", "2",
                                       "--temperature", "1", "--top-p", "nan"}),
                         {"--top-p", "nan"});
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", "5,6", "--max-new-tokens", "2",
                                       "--seed", "-1"}),
                         {"--seed", "-1"});
  }
  SECTION("missing and conflicting flags are named") {
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--ids", "5,6"}), {"--max-new-tokens"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--out", out}), {"--ids", "--prompt"});
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5", "--prompt", "x", "--out", out}),
                         {"--ids", "--prompt"});
    require_bad_argument(mechlens_cli({"frobnicate"}), {"frobnicate"});
    require_bad_argument(mechlens_cli({}), {"subcommand"});
    require_bad_argument(mechlens_cli({"rv", "--model", tied, "--ids", "5,6,7"}), {"--window", "16", "3 tokens"});
  }
  SECTION("malformed patch files and chats are named with the entry and field") {
    const std::string typo = write_file("typo.json", R"([{"hook": "blocks.1.attn.hook_v", "source_ids": [5, 6], "position": [1]}])");
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--patch-file", typo, "--out", out}),
                         {"--patch-file", "entry 0", "\"position\""});
    const std::string longer = write_file("longer.json", R"([{"hook": "blocks.1.attn.hook_v", "source_ids": [5, 6, 7, 8]}])");
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--patch-file", longer, "--out", out}),
                         {"--patch-file", "blocks.1.attn.hook_v", "4 positions", "2"});
    const std::string not_json = write_file("not.json", "[{");
    require_bad_argument(mechlens_cli({"forward", "--model", tied, "--ids", "5,6", "--patch-file", not_json, "--out", out}),
                         {"--patch-file", "not valid JSON"});
    const std::string chat = write_file("bad_chat.json", R"([{"role": "user"}])");
    require_bad_argument(mechlens_cli({"tokenize", "--tokenizer", tiny_tokenizer(), "--chat", chat}),
                         {"--chat", "message 0", "content"});
    const std::string ok_chat = write_file("ok_chat.json", R"([{"role": "user", "content": "hi"}])");
    require_bad_argument(mechlens_cli({"generate", "--model", tied, "--tokenizer", tiny_tokenizer(), "--chat", ok_chat,
                                       "--max-new-tokens", "2"}),
                         {"--chat", "chat template"});
  }
}

TEST_CASE("tokenize --match-transformers-v5 gives transformers 5's ids; --model names the tokenizer's folder too") {
  // The Llama-2 reference stores transformers 5's ids where they differ from HF tokenizers' (20
  // strings, e.g. " Hello world").
  auto ref = io::read_json_file(std::string(MECHLENS_TEST_DATA) + "/tokenizer/llama2_reference.json");
  std::vector<std::string> args{"tokenize", "--model", vocabulary_dir("llama2"), "--match-transformers-v5"};
  std::vector<std::string> plain{"tokenize", "--tokenizer", vocabulary_dir("llama2")};
  std::vector<const nlohmann::json*> differing;
  for (const auto& s : ref.at("strings")) {
    if (!s.contains("transformers") || !s.at("transformers").contains("ids_special")) continue;
    const std::string text = s.at("text");
    if (text.empty() || text[0] == '-' || text.find('\0') != std::string::npos) continue;
    for (auto* a : {&args, &plain}) {
      a->push_back("--text");
      a->push_back(text);
    }
    differing.push_back(&s);
  }
  REQUIRE(differing.size() >= 10);
  const auto v5 = json_lines(mechlens_cli(args)), tokenizers = json_lines(mechlens_cli(plain));
  REQUIRE(v5.size() == differing.size());
  REQUIRE(tokenizers.size() == differing.size());
  for (size_t i = 0; i < differing.size(); ++i) {
    INFO(differing[i]->at("text").dump());
    CHECK(v5[i].at("ids") == differing[i]->at("transformers").at("ids_special"));
    CHECK(tokenizers[i].at("ids") == differing[i]->at("ids_special"));
    CHECK(v5[i].at("ids") != tokenizers[i].at("ids"));
  }
}
