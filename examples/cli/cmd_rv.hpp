#pragma once
// mechlens rv: R_V of one prompt (docs/design.md): PR of the last W rows of hook_v at a late layer over
// the same at an early layer, from one forward pass.

#include <mechlens/experiments/rv.hpp>

#include "cli_support.hpp"

namespace mechlens::cli {

struct RvCommand {
  ModelArgs model;
  PromptArgs prompt;
  int64_t early = 0, late = 0, window = 16;
  bool centered = false, per_head = false;
  CLI::Option *early_opt = nullptr, *late_opt = nullptr;

  void add(CLI::App& app) {
    model.add(app);
    prompt.add(app, "the prompt (at least --window tokens)", "(one of --ids, --prompt, --chat is required)");
    early_opt = app.add_option("--early", early,
                               "early layer (default: 4 for 32-layer Llama and Mistral models, else n_layers/8, at "
                               "least 1)");
    late_opt = app.add_option("--late", late,
                              "late layer (default: 24 for 32-layer Llama, 22 for 32-layer Mistral, else "
                              "3*n_layers/4, at most n_layers-1)");
    app.add_option("--window", window, "W: how many of the prompt's last tokens form the rows (default: 16)");
    app.add_flag("--centered", centered, "subtract the mean row before the SVD (default: not centred, as the study)");
    app.add_flag("--per-head", per_head, "also report PR and R_V per KV head (default: off)");
  }

  int run() {
    const ModelConfig cfg = model.config();
    const auto ids = prompt.resolve(model, cfg);
    RvOptions opt = default_rv_options(cfg);
    if (early_opt->count() > 0) opt.early = early;
    if (late_opt->count() > 0) opt.late = late;
    opt.window = window;
    opt.centered = centered;
    opt.per_head = per_head;
    auto check_layer = [&](const char* arg, int64_t layer) {
      if (layer < 0 || layer >= cfg.n_layers())
        throw ArgError(arg, fmt::format("layer {} does not exist in this {}-layer model (expected 0..{})", layer,
                                        cfg.n_layers(), cfg.n_layers() - 1));
    };
    check_layer("--early", opt.early);
    check_layer("--late", opt.late);
    if (window < 2) throw ArgError("--window", fmt::format("{} is too small (R_V needs at least 2 rows)", window));
    if (static_cast<int64_t>(ids.size()) < window)
      throw ArgError("--window", fmt::format("{} is longer than the prompt's {} tokens (R_V needs the last W tokens)",
                                             window, ids.size()));

    Model m = model.load();
    RvResult r = blame(prompt.used, [&] { return measure_rv(*m, {ids}, opt); });
    nlohmann::ordered_json out = {{"pr_early", r.pr_early[0].item<double>()},
                          {"pr_late", r.pr_late[0].item<double>()},
                          {"rv", r.rv[0].item<double>()},
                          {"early", opt.early},
                          {"late", opt.late},
                          {"window", opt.window},
                          {"centered", opt.centered}};
    if (per_head) {
      auto row = [](const at::Tensor& t) {
        at::Tensor c = t[0].contiguous();
        return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
      };
      out["pr_early_heads"] = row(r.pr_early_heads);
      out["pr_late_heads"] = row(r.pr_late_heads);
      out["rv_heads"] = row(r.rv_heads);
    }
    print_json(out);
    return 0;
  }
};

}  // namespace mechlens::cli
