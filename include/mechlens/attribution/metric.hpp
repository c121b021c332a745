#pragma once
/// \file
/// Metrics for gradients and attribution: a function from a forward's logits
/// [batch, pos, vocab] to one scalar that backward() differentiates. Rows are summed, never
/// averaged, so each row's gradients are those of its own metric (rows do not interact).
///
///   mechlens::Metric m = mechlens::logit_difference(/*good=*/42, /*bad=*/17);   // last position
///   mechlens::Metric c = mechlens::continuation_logprob(continuation);          // teacher-forced
///
/// Any callable of that signature is a metric; one that reads activations can capture them with a
/// forward hook (they carry gradients in a forward with ForwardOptions::activation_gradients).

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/ATen.h>

#include "mechlens/core/error.hpp"
#include "mechlens/core/shape.hpp"

namespace mechlens {

/// logits [batch, pos, vocab] -> a scalar tensor that carries the gradient.
using Metric = std::function<at::Tensor(const at::Tensor& logits)>;

namespace detail {
inline void check_logits(const at::Tensor& logits, const char* who) {
  MECHLENS_CHECK(logits.defined() && logits.dim() == 3, ShapeError, "{}: logits have shape {}, expected [batch, pos, vocab]",
                 who, logits.defined() ? shape_str(logits.sizes()) : std::string("undefined"));
}
inline int64_t check_token(int64_t token, const at::Tensor& logits, const char* who, const char* what) {
  MECHLENS_CHECK(token >= 0 && token < logits.size(2), ArgumentError, "{}: {} token {} is outside the vocabulary [0, {})",
                 who, what, token, logits.size(2));
  return token;
}
}  // namespace detail

/// logit[good] − logit[bad] at the last position, summed over rows (in float32).
inline Metric logit_difference(int64_t good, int64_t bad) {
  return [good, bad](const at::Tensor& logits) {
    detail::check_logits(logits, "logit_difference");
    detail::check_token(good, logits, "logit_difference", "good");
    detail::check_token(bad, logits, "logit_difference", "bad");
    at::Tensor last = logits.select(1, logits.size(1) - 1).to(at::kFloat);  // [batch, vocab]
    return (last.select(1, good) - last.select(1, bad)).sum();
  };
}

/// log p(token) at the last position, summed over rows (in float32).
inline Metric token_logprob(int64_t token) {
  return [token](const at::Tensor& logits) {
    detail::check_logits(logits, "token_logprob");
    detail::check_token(token, logits, "token_logprob", "the");
    return at::log_softmax(logits.select(1, logits.size(1) - 1).to(at::kFloat), -1).select(1, token).sum();
  };
}

/// The log-probability of a continuation, teacher-forced: the forward ran over some tokens
/// followed by the continuation's c tokens, and the logits at the position before each
/// continuation token predict it (position n − c − 1 + i predicts token i of n positions). The
/// sum over rows and tokens of log p(token). `continuation` is [batch, c] int64, or [c] for every
/// row alike.
inline Metric continuation_logprob(at::Tensor continuation) {
  MECHLENS_CHECK(continuation.defined() && (continuation.dim() == 1 || continuation.dim() == 2) &&
                     continuation.size(-1) > 0,
                 ShapeError, "continuation_logprob: the continuation has shape {}, expected [batch, c] or [c] with c > 0",
                 continuation.defined() ? shape_str(continuation.sizes()) : std::string("undefined"));
  at::Tensor cont = continuation.to(at::kLong);
  return [cont](const at::Tensor& logits) {
    detail::check_logits(logits, "continuation_logprob");
    const int64_t b = logits.size(0), n = logits.size(1), c = cont.size(-1);
    MECHLENS_CHECK(c < n, ShapeError,
                   "continuation_logprob: {} continuation tokens need logits over at least {} positions (a token "
                   "before them), got {}",
                   c, c + 1, n);
    at::Tensor tokens = (cont.dim() == 1 ? cont.unsqueeze(0).expand({b, c}) : cont).to(logits.device());
    MECHLENS_CHECK(tokens.size(0) == b, ShapeError, "continuation_logprob: the continuation has {} rows, the logits {}",
                   tokens.size(0), b);
    const int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    MECHLENS_CHECK(lo >= 0 && hi < logits.size(2), ArgumentError,
                   "continuation_logprob: token {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi, logits.size(2));
    at::Tensor lp = at::log_softmax(logits.narrow(1, n - c - 1, c).to(at::kFloat), -1);  // [b, c, vocab]
    return lp.gather(2, tokens.unsqueeze(2)).sum();
  };
}

}  // namespace mechlens
