#pragma once
/// \file
/// SVG figures that open in any browser: panels of bar charts with confidence-interval whiskers
/// (e.g. % transfer by layer range, R_V by condition, mean score by condition), stacked
/// vertically in one file. Plain SVG 1.1, no scripts, no external fonts.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mechlens/io/atomic_file.hpp"

namespace mechlens::experiments {

struct Bar {
  std::string label;
  double value = NAN;
  double low = NAN, high = NAN;  ///< CI (NaN: no whisker)
  std::string note;              ///< printed above the bar (e.g. "*" or "p=0.002")
};

struct BarPanel {
  std::string title;
  std::string y_label;
  std::vector<Bar> bars;
  std::vector<double> reference_lines;  ///< horizontal lines (e.g. 0 and 100 %)
};

namespace detail {
inline std::string svg_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

/// A "nice" tick step for a range.
inline double tick_step(double span) {
  if (!(span > 0)) return 1.0;
  const double raw = span / 5.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / mag;
  return (r < 1.5 ? 1.0 : r < 3.5 ? 2.0 : r < 7.5 ? 5.0 : 10.0) * mag;
}
}  // namespace detail

/// The figure as SVG text.
inline std::string svg_figure(const std::string& title, const std::vector<BarPanel>& panels) {
  const double width = 800, panel_h = 330, top = 50;
  const double left = 80, right = 70, plot_h = 190;
  std::string body;
  double y0 = top;
  for (const auto& panel : panels) {
    double lo = 0, hi = 0;
    for (const auto& b : panel.bars)
      for (double v : {b.value, b.low, b.high})
        if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    for (double v : panel.reference_lines) lo = std::min(lo, v), hi = std::max(hi, v);
    if (hi - lo <= 0) hi = lo + 1;
    const double pad = 0.08 * (hi - lo);
    hi += pad;
    if (lo < 0) lo -= pad;
    const double step = detail::tick_step(hi - lo);
    lo = std::floor(lo / step) * step;
    hi = std::ceil(hi / step) * step;
    const double plot_top = y0 + 30, plot_w = width - left - right;
    auto ymap = [&](double v) { return plot_top + plot_h * (hi - v) / (hi - lo); };
    body += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n", left, y0 + 14,
                        detail::svg_escape(panel.title));
    for (double t = lo; t <= hi + 1e-9 * step; t += step) {
      const double y = ymap(t);
      body += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#e4e4e4\"/>\n", left, y,
                          left + plot_w, y);
      body += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n", left - 6, y + 4,
                          fmt::format("{:g}", std::abs(t) < 1e-12 ? 0.0 : t));
    }
    for (double r : panel.reference_lines)
      body += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n",
                          left, ymap(r), left + plot_w, ymap(r));
    body += fmt::format(
        "<text transform=\"translate({},{:.1f}) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\">{}</text>\n",
        left - 52, plot_top + plot_h / 2, detail::svg_escape(panel.y_label));
    const size_t n = panel.bars.size();
    const double slot = n ? plot_w / static_cast<double>(n) : plot_w;
    const double bw = std::min(60.0, slot * 0.6);
    for (size_t i = 0; i < n; ++i) {
      const Bar& b = panel.bars[i];
      const double cx = left + slot * (static_cast<double>(i) + 0.5);
      if (std::isfinite(b.value)) {
        const double ya = ymap(std::max(0.0, b.value)), yb = ymap(std::min(0.0, b.value));
        body += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{}: {:.4g}</title></rect>\n",
                            cx - bw / 2, ya, bw, std::max(0.5, yb - ya), b.value >= 0 ? "#4878a8" : "#c0504d",
                            detail::svg_escape(b.label), b.value);
      }
      if (std::isfinite(b.low) && std::isfinite(b.high)) {
        const double yl = ymap(b.low), yh = ymap(b.high);
        body += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#222\"/>\n", cx, yl, cx, yh);
        for (double y : {yl, yh})
          body += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#222\"/>\n", cx - 6, y,
                              cx + 6, y);
      }
      if (!b.note.empty()) {
        const double top_v = std::isfinite(b.high) ? std::max(b.high, b.value) : b.value;
        body += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", cx,
                            ymap(std::isfinite(top_v) ? top_v : 0) - 5, detail::svg_escape(b.note));
      }
      body += fmt::format(
          "<text transform=\"translate({:.1f},{:.1f}) rotate(35)\" font-size=\"11\">{}</text>\n", cx - 4,
          plot_top + plot_h + 14, detail::svg_escape(b.label));
    }
    body += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#333\"/>\n", left, ymap(0),
                        left + plot_w, ymap(0));
    y0 += panel_h;
  }
  const double height = y0 + 20;
  return fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"Helvetica, Arial, sans-serif\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"28\" font-size=\"16\" font-weight=\"bold\">{3}</text>\n{4}</svg>\n",
      width, height, left, detail::svg_escape(title), body);
}

inline void write_svg_figure(const std::string& path, const std::string& title, const std::vector<BarPanel>& panels) {
  io::write_file_atomically(path, svg_figure(title, panels));
}

}  // namespace mechlens::experiments
