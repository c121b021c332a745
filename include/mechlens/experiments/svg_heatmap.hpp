#pragma once
/// \file
/// An SVG heat map that opens in any browser: a grid of cells (rows × columns, e.g. layers ×
/// positions from the end of the prompt) coloured on a diverging scale — blue below zero, white
/// at zero, red above, symmetric around zero so that equal magnitudes look alike — with row and
/// column labels, a colour bar and a caption. Plain SVG 1.1, no scripts, no external fonts.
/// NaN cells (no data) are drawn grey.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "mechlens/core/error.hpp"
#include "mechlens/experiments/svg_figure.hpp"
#include "mechlens/io/atomic_file.hpp"

namespace mechlens::experiments {

struct HeatMap {
  std::string title;
  std::string row_label, column_label;  ///< axis titles
  std::vector<std::string> rows;        ///< drawn top to bottom
  std::vector<std::string> columns;     ///< drawn left to right
  std::vector<std::vector<double>> values;  ///< [row][column]
  std::string value_label;              ///< what the colour means (under the colour bar)
  std::string caption;                  ///< lines ('\n'-separated) under the figure
};

namespace detail {
/// White at 0, to red (positive) or blue (negative) at |v| = scale.
inline std::string diverging_colour(double v, double scale) {
  if (!std::isfinite(v)) return "#bdbdbd";
  const double t = std::clamp(scale > 0 ? v / scale : 0.0, -1.0, 1.0);
  // red #b2182b, blue #2166ac, white in between
  const double r0 = t >= 0 ? 0xb2 : 0x21, g0 = t >= 0 ? 0x18 : 0x66, b0 = t >= 0 ? 0x2b : 0xac;
  const double a = std::abs(t);
  auto mix = [&](double c) { return static_cast<int>(std::lround(255.0 + (c - 255.0) * a)); };
  return fmt::format("#{:02x}{:02x}{:02x}", mix(r0), mix(g0), mix(b0));
}
}  // namespace detail

inline std::string svg_heatmap(const HeatMap& m) {
  const size_t nr = m.rows.size(), nc = m.columns.size();
  MECHLENS_CHECK(nr > 0 && nc > 0 && m.values.size() == nr, ArgumentError,
                 "svg_heatmap '{}': {} row labels, {} column labels, {} rows of values", m.title, nr, nc, m.values.size());
  double scale = 0;
  for (const auto& row : m.values) {
    MECHLENS_CHECK(row.size() == nc, ArgumentError, "svg_heatmap '{}': a row of {} values for {} columns", m.title,
                   row.size(), nc);
    for (double v : row)
      if (std::isfinite(v)) scale = std::max(scale, std::abs(v));
  }
  const double cell = std::clamp(560.0 / static_cast<double>(nc), 10.0, 36.0);
  const double ch = std::clamp(360.0 / static_cast<double>(nr), 10.0, 28.0);
  const double left = 90, top = 56, gw = cell * static_cast<double>(nc), gh = ch * static_cast<double>(nr);
  const double bar_x = left + gw + 24, width = bar_x + 110;
  std::vector<std::string> caption_lines;
  for (size_t a = 0, b; a <= m.caption.size(); a = b + 1) {
    b = m.caption.find('\n', a);
    if (b == std::string::npos) b = m.caption.size();
    if (b > a) caption_lines.push_back(m.caption.substr(a, b - a));
  }
  const double height = top + gh + 56 + 16.0 * static_cast<double>(caption_lines.size());
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0f}\" height=\"{:.0f}\" viewBox=\"0 0 {:.0f} {:.0f}\" "
      "font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      width, height, width, height);
  s += fmt::format("<text x=\"{:.1f}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n", left,
                   detail::svg_escape(m.title));
  // Only every k-th column label when they would collide.
  const size_t every = std::max<size_t>(1, static_cast<size_t>(std::ceil(18.0 / cell)));
  for (size_t c = 0; c < nc; ++c)
    if (c % every == 0)
      s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" text-anchor=\"middle\">{}</text>\n",
                       left + (static_cast<double>(c) + 0.5) * cell, top - 6, detail::svg_escape(m.columns[c]));
  for (size_t r = 0; r < nr; ++r) {
    const double y = top + static_cast<double>(r) * ch;
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>\n",
                     left - 6, y + ch / 2, detail::svg_escape(m.rows[r]));
    for (size_t c = 0; c < nc; ++c) {
      const double v = m.values[r][c];
      s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\" stroke=\"white\" "
                       "stroke-width=\"0.5\"><title>{} {}, {} {}: {}</title></rect>\n",
                       left + static_cast<double>(c) * cell, y, cell, ch, detail::diverging_colour(v, scale),
                       detail::svg_escape(m.row_label), detail::svg_escape(m.rows[r]), detail::svg_escape(m.column_label),
                       detail::svg_escape(m.columns[c]), std::isfinite(v) ? fmt::format("{:.4g}", v) : "no data");
    }
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n", left + gw / 2,
                   top + gh + 18, detail::svg_escape(m.column_label));
  s += fmt::format("<text x=\"14\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1f})\">{}</text>\n",
                   top + gh / 2, top + gh / 2, detail::svg_escape(m.row_label));
  // Colour bar: +scale at the top, 0 in the middle, −scale at the bottom.
  const int steps = 40;
  for (int i = 0; i < steps; ++i) {
    const double v = scale * (1.0 - 2.0 * (i + 0.5) / steps);
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"14\" height=\"{:.2f}\" fill=\"{}\"/>\n", bar_x,
                     top + gh * i / steps, gh / steps + 0.3, detail::diverging_colour(v, scale));
  }
  for (double f : {1.0, 0.0, -1.0})
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" dominant-baseline=\"middle\">{:.3g}</text>\n",
                     bar_x + 18, top + gh * (1.0 - f) / 2, f * scale);
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n", bar_x, top + gh + 18,
                   detail::svg_escape(m.value_label));
  for (size_t i = 0; i < caption_lines.size(); ++i)
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" fill=\"#444\">{}</text>\n", left,
                     top + gh + 40 + 16.0 * static_cast<double>(i), detail::svg_escape(caption_lines[i]));
  s += "</svg>\n";
  return s;
}

inline void write_svg_heatmap(const std::string& path, const HeatMap& m) { io::write_file_atomically(path, svg_heatmap(m)); }

}  // namespace mechlens::experiments
