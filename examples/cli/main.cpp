// mechlens: a command-line tool for quick looks at a checkpoint without writing C++ (docs/cli.md).
//
//   mechlens info     --model DIR
//   mechlens tokenize --tokenizer PATH (--text T)... | --chat FILE.json
//   mechlens decode   --tokenizer PATH --ids 1,2,3
//   mechlens forward  --model DIR --ids 1,2,3 [--save GLOB]... [--patch-file F.json] --out F.safetensors
//   mechlens generate --model DIR --ids ... --max-new-tokens N [--kv-source-ids ... --kv-layers LO:HI]
//   mechlens rv       --model DIR --ids ... [--early 4] [--late 24] [--window 16]
//
// Output is JSON on stdout. A bad argument is one line on stderr naming it, and exit status 2;
// anything else that goes wrong (e.g. out of memory) is one line and exit status 1.

#include <algorithm>
#include <exception>
#include <iostream>
#include <string>

#include <c10/util/Exception.h>

#include "cli_support.hpp"
#include "cmd_forward.hpp"
#include "cmd_generate.hpp"
#include "cmd_info.hpp"
#include "cmd_rv.hpp"
#include "cmd_tokenize.hpp"

namespace {

constexpr int kBadArgument = 2;
constexpr int kFailure = 1;

std::string command_name(const CLI::App& app) {
  for (const auto* sub : app.get_subcommands()) return sub->get_name();
  return {};
}

int report(const CLI::App& app, const std::string& message, int status) {
  const std::string name = command_name(app);
  std::cerr << "mechlens" << (name.empty() ? "" : " " + name) << ": " << mechlens::cli::one_line(message) << '\n';
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mechlens::cli;
  CLI::App app{
      "mechlens: quick looks at a Llama-family checkpoint from the shell. Output is JSON on stdout; errors are one "
      "line on stderr (exit status 2 for a bad argument). Run 'mechlens COMMAND --help' for a command's flags.",
      "mechlens"};
  app.require_subcommand(1);
  app.fallthrough(false);

  InfoCommand info;
  TokenizeCommand tokenize;
  DecodeCommand decode;
  ForwardCommand forward;
  GenerateCommand generate;
  RvCommand rv;
  auto* info_cmd = app.add_subcommand(
      "info", "the model's family and shape, and every hook point with its shape: {\"family\", \"layers\", ..., "
              "\"hooks\"}");
  auto* tokenize_cmd = app.add_subcommand(
      "tokenize", "encode texts (one JSON line each: {\"text\", \"ids\", \"tokens\"}) or a chat conversation");
  auto* decode_cmd = app.add_subcommand("decode", "decode token ids: {\"text\", \"tokens\"}");
  auto* forward_cmd = app.add_subcommand(
      "forward", "one forward pass, optionally under activation patches; writes logits and saved activations "
                 "(float32) to a safetensors file: {\"out\", \"saved\"}");
  auto* generate_cmd = app.add_subcommand(
      "generate", "decode from the prompt (greedy by default), optionally after a KV splice or over a KV prefix "
                  "memory: {\"new_ids\", \"text\"}");
  auto* rv_cmd = app.add_subcommand(
      "rv", "R_V = PR(late) / PR(early) of the last W rows of hook_v: {\"pr_early\", \"pr_late\", \"rv\"}");
  info.add(*info_cmd);
  tokenize.add(*tokenize_cmd);
  decode.add(*decode_cmd);
  forward.add(*forward_cmd);
  generate.add(*generate_cmd);
  rv.add(*rv_cmd);

  // CLI11 would call an unknown command "no subcommand"; name it instead.
  const std::vector<std::string> commands{"info", "tokenize", "decode", "forward", "generate", "rv"};
  if (argc > 1 && argv[1][0] != '-' && std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
    return report(app, fmt::format("unknown command '{}' (expected info, tokenize, decode, forward, generate or rv; see "
                                   "'mechlens --help')",
                                   argv[1]),
                  kBadArgument);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);  // help of the command named, on stdout, exit status 0
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    const std::string name = command_name(app);
    return report(app, std::string(e.what()) + " (see 'mechlens " + (name.empty() ? "" : name + " ") + "--help')",
                  kBadArgument);
  }

  try {
    if (*info_cmd) return info.run();
    if (*tokenize_cmd) return tokenize.run();
    if (*decode_cmd) return decode.run();
    if (*forward_cmd) return forward.run();
    if (*generate_cmd) return generate.run();
    if (*rv_cmd) return rv.run();
    return report(app, "no command given", kBadArgument);
  } catch (const ArgError& e) {
    return report(app, e.what(), kBadArgument);
  } catch (const mechlens::Error& e) {  // not traced to one argument, but still about the inputs
    return report(app, e.what(), kBadArgument);
  } catch (const c10::Error& e) {
    return report(app, std::string("LibTorch error: ") + e.what_without_backtrace(), kFailure);
  } catch (const std::exception& e) {
    return report(app, std::string("error: ") + e.what(), kFailure);
  } catch (...) {
    return report(app, "unknown error", kFailure);
  }
}
