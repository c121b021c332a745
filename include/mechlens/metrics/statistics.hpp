#pragma once
/// \file
/// All of mechlens' statistics in one include (no LibTorch): descriptive statistics, effect
/// sizes, t-tests, Wilcoxon signed-rank, Mann–Whitney U, Pearson and Spearman correlation,
/// bootstrap confidence intervals, the paired permutation test, Holm and Benjamini–Hochberg
/// corrections and transfer efficiency. Each lives in its own header; include only the one you
/// need to build faster. docs/metrics.md states every formula and the scipy function it matches.

#include "mechlens/metrics/bootstrap.hpp"
#include "mechlens/metrics/correlation.hpp"
#include "mechlens/metrics/corrections.hpp"
#include "mechlens/metrics/descriptive.hpp"
#include "mechlens/metrics/effect_size.hpp"
#include "mechlens/metrics/mann_whitney.hpp"
#include "mechlens/metrics/permutation.hpp"
#include "mechlens/metrics/t_test.hpp"
#include "mechlens/metrics/test_result.hpp"
#include "mechlens/metrics/transfer_efficiency.hpp"
#include "mechlens/metrics/wilcoxon.hpp"
