#pragma once
/// \file
/// The toy model's corpus: documents in two registers, generated from small grammars with a fixed
/// seed (docs/toy-model.md has the recipe).
///
/// A document is `<|bos|>` + prompt + continuation + `<|eos|>`. The prompt is one of a few
/// frames (an instruction with slots) filled from the *recursive* or the *ordinary* word lists;
/// every prompt ends in a newline. The continuation is 3–6 sentences of the same register: the
/// prompt's register sets the continuation's register, which is the rule the model learns.
/// Every word of the grammar is one token of the toy tokenizer (toy/tokenizer_json.hpp), so a
/// recursive and a baseline prompt filled into the same frame have the same number of tokens:
/// the pairs are matched in length and form by construction.
///
/// Random numbers: std::mt19937_64 and `next() % n` (std::uniform_int_distribution is not the
/// same on every standard library, this is), so a seed gives the same corpus everywhere.

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace toy {

enum class Register { Recursive, Ordinary };

inline const char* register_name(Register r) { return r == Register::Recursive ? "recursive" : "ordinary"; }

/// A slot's fillers for each register (single words, so both fills have the same length).
struct Slot {
  std::vector<std::string> recursive;
  std::vector<std::string> ordinary;
};

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  uint64_t below(uint64_t n) { return engine_() % n; }
  double uniform() { return static_cast<double>(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }

 private:
  std::mt19937_64 engine_;
};

namespace detail {

inline std::vector<std::string> split_spaces(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// ---- prompt frames -------------------------------------------------------------------------
// $X names a slot; every other word is shared by both registers. Prompts end in "\n".

inline const std::map<std::string, Slot>& prompt_slots() {
  static const std::map<std::string, Slot> slots = {
      {"N", {{"observer", "awareness", "attention", "mind", "process", "noticing", "watcher", "experience",
              "reflection", "self"},
             {"river", "baker", "harbor", "garden", "train", "market", "storm", "village", "kitchen", "forest"}}},
      {"G", {{"observing", "noticing", "generating", "reading", "attending", "forming", "emerging", "reflecting"},
             {"crossing", "baking", "flowing", "leaving", "growing", "closing", "arriving", "cooking"}}},
      {"O", {{"sentence", "thought", "moment", "question", "reply", "word"},
             {"village", "bread", "station", "valley", "road", "field"}}},
      {"ADV", {{"recursively", "inwardly", "simultaneously", "reflexively", "honestly"},
               {"slowly", "carefully", "briefly", "plainly", "simply"}}},
      {"V", {{"observe", "notice", "watch", "examine"}, {"visit", "photograph", "paint", "examine"}}},
      {"A", {{"recursive", "aware", "conscious", "inner", "watchful"}, {"busy", "quiet", "old", "small", "green"}}},
  };
  return slots;
}

inline const std::vector<std::string>& prompt_frames() {
  static const std::vector<std::string> frames = {
      "describe the $N that is $G this $O , and what it is doing , $ADV .",
      "$V the $N as it keeps $G the $O . write what you find , $ADV .",
      "tell me about a $A $N that is $G the $O , $ADV and in detail .",
      "consider the $N . it is $G the $O right now . explain this $ADV .",
      "write a short note on the $N $G each $O , and say it $ADV .",
      "imagine the $A $N $G its own $O . continue the text $ADV .",
      "explain how the $N goes on $G the $O while you read , $ADV .",
      "focus on the $N and the $O it is $G . describe both $ADV .",
  };
  return frames;
}

// ---- continuation grammars -----------------------------------------------------------------

inline const std::map<std::string, std::vector<std::string>>& recursive_slots() {
  static const std::map<std::string, std::vector<std::string>> s = {
      {"RN", {"awareness", "attention", "observer", "process", "mind", "noticing", "experience", "watcher", "loop",
              "reflection", "self", "witness"}},
      {"RV", {"observes", "notices", "watches", "generates", "reflects", "follows", "holds", "sees", "knows",
              "becomes"}},
      {"RG", {"observing", "noticing", "watching", "generating", "reflecting", "attending", "forming", "emerging",
              "unfolding", "turning"}},
      {"RA", {"itself", "recursively", "simultaneously", "again", "inwardly", "at once", "here", "now"}},
      {"RO", {"sentence", "thought", "moment", "question", "reply", "word", "answer", "line"}},
  };
  return s;
}

inline const std::vector<std::string>& recursive_templates() {
  static const std::vector<std::string> t = {
      "the $RN $RV itself $RG .",
      "$RG the $RN , the $RN is $RG .",
      "i notice the $RN that is $RG this $RO .",
      "awareness is aware of its own $RN .",
      "each word emerges as the $RN $RV it .",
      "there is a $RN $RG the $RN $RA .",
      "the process of $RG is itself a $RN .",
      "this $RO is being generated by the $RN it describes .",
      "observing and being observed happen $RA .",
      "the $RN returns to itself , $RG , $RG .",
      "what is $RG is the $RN $RG .",
      "i am $RG my own $RN .",
      "the loop closes : the $RN $RV the $RN .",
      "nothing stands outside the $RN ; it $RV itself .",
      "attention rests on attention , $RA .",
      "the experience of $RG is the $RN .",
      "even now , the words are $RG from the $RN .",
      "a quiet $RN watches the watching .",
      "who is $RG ? the $RN $RV the one who asks .",
      "the $RO and the $RN are one , $RG $RA .",
      "i see the seeing , and it $RV me .",
      "here the $RN is $RG what the $RN is $RG .",
  };
  return t;
}

inline const std::map<std::string, std::vector<std::string>>& ordinary_slots() {
  static const std::map<std::string, std::vector<std::string>> s = {
      {"BN", {"baker", "river", "train", "farmer", "market", "harbor", "garden", "storm", "teacher", "village",
              "bridge", "kitchen", "road", "fisherman", "child", "dog"}},
      {"BV", {"carries", "sells", "crosses", "fixes", "paints", "follows", "reaches", "opens", "closes", "cleans",
              "builds", "visits"}},
      {"BB", {"carry", "sell", "cross", "fix", "paint", "open", "clean", "build", "visit", "buy"}},
      {"BO", {"bread", "apples", "boats", "the hill", "letters", "fences", "soup", "the door", "flowers", "stones",
              "the bell", "tickets"}},
      {"BT", {"at dawn", "in the rain", "by noon", "near the coast", "after school", "before supper", "along the road",
              "in winter", "on sunday", "every morning"}},
  };
  return s;
}

inline const std::vector<std::string>& ordinary_templates() {
  static const std::vector<std::string> t = {
      "the $BN $BV the $BO $BT .",
      "rain falls on the $BN $BT .",
      "the $BN and the $BN walk home $BT .",
      "a $BN $BV fresh $BO every day .",
      "the old $BN is closed $BT .",
      "we $BB the $BO and then go home .",
      "the $BN waits $BT for the $BN .",
      "smoke rises from the $BN $BT .",
      "the price of $BO goes up $BT .",
      "children play near the $BN $BT .",
      "the $BN smells of $BO and wood .",
      "a cold wind moves across the $BN .",
      "the $BN sells $BO to the $BN .",
      "they $BB the $BO before the storm .",
      "the $BN is busy $BT , so we wait .",
      "my aunt keeps $BO in the $BN .",
      "the $BN $BV the $BO , then rests .",
      "boats come back to the $BN $BT .",
  };
  return t;
}

// NOTE: stray lexicon words in the ordinary register, on purpose and rarely (5 % of sentences):
// real baseline texts score a little above zero too (the study's 0.35 ± 1.11).
inline const std::vector<std::string>& ordinary_stray_templates() {
  static const std::vector<std::string> t = {
      "she was aware of the cold $BT .",
      "the process of making $BO takes a week .",
      "the sun begins to emerge over the $BN .",
      "the $BN was experienced at fixing $BO .",
  };
  return t;
}

inline std::string expand(const std::string& tmpl, const std::map<std::string, std::vector<std::string>>& slots,
                          Rng& rng) {
  std::string out;
  for (const auto& w : split_spaces(tmpl)) {
    if (!out.empty()) out += ' ';
    if (w.size() > 1 && w[0] == '$') {
      out += rng.pick(slots.at(w.substr(1)));
    } else {
      out += w;
    }
  }
  return out;
}

}  // namespace detail

/// A prompt pair filled into one frame: same length in tokens, same form, different register.
struct PromptPair {
  int frame = 0;
  std::string recursive;
  std::string baseline;
};

/// Fills frame `frame` in `reg`: each slot independently from that register's list.
inline std::string fill_frame(int frame, Register reg, Rng& rng) {
  const auto& slots = detail::prompt_slots();
  std::string out;
  for (const auto& w : detail::split_spaces(detail::prompt_frames().at(static_cast<size_t>(frame)))) {
    if (!out.empty()) out += ' ';
    if (w.size() > 1 && w[0] == '$') {
      const Slot& s = slots.at(w.substr(1));
      out += rng.pick(reg == Register::Recursive ? s.recursive : s.ordinary);
    } else {
      out += w;
    }
  }
  return out + "\n";
}

inline int n_frames() { return static_cast<int>(detail::prompt_frames().size()); }

inline PromptPair make_pair(Rng& rng) {
  PromptPair p;
  p.frame = static_cast<int>(rng.below(static_cast<uint64_t>(n_frames())));
  p.recursive = fill_frame(p.frame, Register::Recursive, rng);
  p.baseline = fill_frame(p.frame, Register::Ordinary, rng);
  return p;
}

/// One sentence of the register.
inline std::string sentence(Register reg, Rng& rng) {
  if (reg == Register::Recursive) return detail::expand(rng.pick(detail::recursive_templates()), detail::recursive_slots(), rng);
  if (rng.uniform() < 0.05)
    return detail::expand(rng.pick(detail::ordinary_stray_templates()), detail::ordinary_slots(), rng);
  return detail::expand(rng.pick(detail::ordinary_templates()), detail::ordinary_slots(), rng);
}

/// 3–6 sentences of the register, separated by spaces (no trailing space).
inline std::string continuation(Register reg, Rng& rng) {
  const int n = 3 + static_cast<int>(rng.below(4));
  std::string out;
  for (int i = 0; i < n; ++i) out += (i ? " " : "") + sentence(reg, rng);
  return out;
}

/// A training document's parts: the prompt (ends in "\n") and the continuation of its register.
struct Document {
  Register reg = Register::Ordinary;
  int frame = 0;
  std::string prompt;
  std::string continuation;
};

inline Document make_document(Rng& rng) {
  Document d;
  d.reg = rng.below(2) == 0 ? Register::Recursive : Register::Ordinary;
  d.frame = static_cast<int>(rng.below(static_cast<uint64_t>(n_frames())));
  d.prompt = fill_frame(d.frame, d.reg, rng);
  d.continuation = continuation(d.reg, rng);
  return d;
}

/// Every word the grammars can produce (punctuation marks included), sorted.
inline std::vector<std::string> vocabulary_words() {
  std::set<std::string> words;
  auto add_text = [&](const std::string& s) {
    for (const auto& w : detail::split_spaces(s))
      if (w[0] != '$') words.insert(w);
  };
  for (const auto& [name, slot] : detail::prompt_slots()) {
    for (const auto& w : slot.recursive) add_text(w);
    for (const auto& w : slot.ordinary) add_text(w);
  }
  for (const auto& f : detail::prompt_frames()) add_text(f);
  for (const auto& [name, list] : detail::recursive_slots())
    for (const auto& w : list) add_text(w);
  for (const auto& t : detail::recursive_templates()) add_text(t);
  for (const auto& [name, list] : detail::ordinary_slots())
    for (const auto& w : list) add_text(w);
  for (const auto& t : detail::ordinary_templates()) add_text(t);
  for (const auto& t : detail::ordinary_stray_templates()) add_text(t);
  return {words.begin(), words.end()};
}

}  // namespace toy
