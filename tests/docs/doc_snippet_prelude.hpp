#pragma once
// What every code block of the docs may take for granted: the whole library and the namespace
// aliases the docs use (docs/metrics.md: mm, docs/experiments.md: ex). Anything else a block
// uses is a parameter of its function (tests/docs/extract_snippets.sh).
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <mechlens/mechlens.hpp>

namespace mm = mechlens::metrics;
namespace ex = mechlens::experiments;
