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
  std::string legend;                   ///< lines ('\n'-separated) under the plot: what the notes mean
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

/// The figure as SVG text. Each panel's height follows its labels: short labels (up to 9
/// characters) sit level under their bars, longer ones slant up to end under their bar's centre.
/// The value axis spans the bars, whiskers and reference lines: it reaches below 0 only as far as
/// a value or whisker does (no empty band of negative ticks).
inline std::string svg_figure(const std::string& title, const std::vector<BarPanel>& panels) {
  const double width = 800, top = 50;
  const double left = 80, right = 40, plot_h = 190;
  std::string body;
  double y0 = top;
  for (const auto& panel : panels) {
    double lo = 0, hi = 0;
    for (const auto& b : panel.bars)
      for (double v : {b.value, b.low, b.high})
        if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    for (double v : panel.reference_lines) lo = std::min(lo, v), hi = std::max(hi, v);
    if (hi - lo <= 0) hi = lo + 1;
    const double span = hi - lo;
    const double step = detail::tick_step(span);
    hi = std::ceil((hi + 0.12 * span) / step) * step;  // room for the notes above the bars
    if (lo < 0) lo -= 0.04 * span;
    const double plot_top = y0 + 30, plot_w = width - left - right;
    auto ymap = [&](double v) { return plot_top + plot_h * (hi - v) / (hi - lo); };
    body += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n", left, y0 + 14,
                        detail::svg_escape(panel.title));
    for (double t = std::ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) {
      const double y = ymap(t);
      body += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#e4e4e4\"/>\n", left, y,
                          left + plot_w, y);
      body += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n", left - 6, y + 4,
                          fmt::format("{:g}", std::abs(t) < 1e-9 * step ? 0.0 : t));
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
    size_t longest = 0;
    for (const auto& b : panel.bars) longest = std::max(longest, b.label.size());
    const bool slanted = longest > 9 && static_cast<double>(longest) * 6.2 > slot;
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
        double top_v = 0;  // above the bar, its whisker and the zero line
        for (double v : {b.value, b.high})
          if (std::isfinite(v)) top_v = std::max(top_v, v);
        body += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", cx,
                            ymap(top_v) - 5, detail::svg_escape(b.note));
      }
      if (slanted)
        body += fmt::format(
            "<text transform=\"translate({:.1f},{:.1f}) rotate(-35)\" font-size=\"11\" text-anchor=\"end\">{}</text>\n", cx + 4,
            plot_top + plot_h + 12, detail::svg_escape(b.label));
      else
        body += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", cx,
                            plot_top + plot_h + 16, detail::svg_escape(b.label));
    }
    body += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#333\"/>\n", left, ymap(0),
                        left + plot_w, ymap(0));
    // Below the plot: the labels (slanted ones reach ~0.57 of their length down), then the legend.
    double below = slanted ? 18 + 0.6 * 6.2 * static_cast<double>(longest) : 26;
    for (size_t at = 0; at < panel.legend.size();) {  // one text line per '\n'-separated line
      size_t end = panel.legend.find('\n', at);
      if (end == std::string::npos) end = panel.legend.size();
      body += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"10.5\" fill=\"#444\">{}</text>\n", left,
                          plot_top + plot_h + below + 8, detail::svg_escape(panel.legend.substr(at, end - at)));
      below += 15;
      at = end + 1;
    }
    y0 = plot_top + plot_h + below + 24;
  }
  const double height = y0;
  return fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1:.0f}\" viewBox=\"0 0 {0} {1:.0f}\" "
      "font-family=\"Helvetica, Arial, sans-serif\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"28\" font-size=\"16\" font-weight=\"bold\">{3}</text>\n{4}</svg>\n",
      width, height, left, detail::svg_escape(title), body);
}

inline void write_svg_figure(const std::string& path, const std::string& title, const std::vector<BarPanel>& panels) {
  io::write_file_atomically(path, svg_figure(title, panels));
}

}  // namespace mechlens::experiments
