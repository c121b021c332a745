#pragma once
/// \file
/// World: the processes of one run, as a launcher started them — torchrun
/// (`torchrun --nproc-per-node N --no-python ./dec7_study ...`), Slurm's srun, or any launcher that
/// sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT — joined through c10d's TCPStore
/// (the key-value store torch.distributed's env:// rendezvous uses). A process without those
/// variables is a world of one: rank 0, nothing to join, every call below a no-op.
///
///   auto world = mechlens::distributed::World::from_environment();
///   for (int64_t unit : world.units(n)) ...         // this rank's share, the same on every run
///   auto all = world.all_gather("records", my_bytes); // every rank's bytes, in rank order
///   world.barrier("written");
///
/// Under torchrun the launcher's agent already serves the store at MASTER_ADDR:MASTER_PORT
/// (TORCHELASTIC_USE_AGENT_STORE=True) and every rank joins it as a client, under the prefix of
/// the launcher's restart count, as torch.distributed does; otherwise rank 0 serves it. Studies
/// exchange records (bytes), not tensors: no process group or tensor collective is needed.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mechlens/core/error.hpp"

#if __has_include(<torch/csrc/distributed/c10d/TCPStore.hpp>)
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#define MECHLENS_WITH_C10D_STORE 1
#else
#define MECHLENS_WITH_C10D_STORE 0
#endif

namespace mechlens::distributed {

/// The launcher's variables (what torchrun sets), read and checked.
struct Launch {
  int64_t rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr;
  int64_t master_port = 0;
  bool agent_store = false;   ///< TORCHELASTIC_USE_AGENT_STORE: the launcher serves the store
  int64_t restart_count = 0;  ///< TORCHELASTIC_RESTART_COUNT (the store's key prefix)
  bool launched = false;      ///< any launcher variable set

  /// From the environment. None of RANK / WORLD_SIZE set: a world of one. Otherwise every
  /// variable must be there and make sense; an ArgumentError names the first that does not.
  static Launch from_environment() {
    Launch l;
    const char* rank = std::getenv("RANK");
    const char* size = std::getenv("WORLD_SIZE");
    if (!rank && !size) return l;
    l.launched = true;
    auto need = [](const char* name) -> std::string {
      const char* v = std::getenv(name);
      MECHLENS_CHECK(v && *v, ArgumentError,
                     "distributed launch: {} is not set (a launcher such as torchrun sets RANK, WORLD_SIZE, "
                     "LOCAL_RANK, MASTER_ADDR and MASTER_PORT together)",
                     name);
      return v;
    };
    auto integer = [&](const char* name, int64_t lo, int64_t hi) {
      const std::string v = need(name);
      char* end = nullptr;
      const long long x = std::strtoll(v.c_str(), &end, 10);
      MECHLENS_CHECK(end && *end == '\0' && x >= lo && x <= hi, ArgumentError,
                     "distributed launch: {}='{}' is not an integer in [{}, {}]", name, v, lo, hi);
      return static_cast<int64_t>(x);
    };
    l.world_size = integer("WORLD_SIZE", 1, 1 << 20);
    l.rank = integer("RANK", 0, l.world_size - 1);
    l.local_rank = std::getenv("LOCAL_RANK") ? integer("LOCAL_RANK", 0, l.world_size - 1) : 0;
    l.master_addr = need("MASTER_ADDR");
    l.master_port = integer("MASTER_PORT", 1, 65535);
    const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    l.agent_store = agent && std::string(agent) == "True";
    if (std::getenv("TORCHELASTIC_RESTART_COUNT")) l.restart_count = integer("TORCHELASTIC_RESTART_COUNT", 0, 1 << 30);
    return l;
  }
};

class World {
 public:
  /// A world of one (rank 0; no store).
  World() = default;
  World(World&&) noexcept = default;
  World& operator=(World&& o) noexcept {
    if (this != &o) {
      leave(false);
      launch_ = std::move(o.launch_);
      timeout_ = o.timeout_;
#if MECHLENS_WITH_C10D_STORE
      store_ = std::move(o.store_);
#endif
    }
    return *this;
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;
  /// Leaves the world: the rank serving the store waits (up to a minute) until every rank has
  /// left, so that none loses the store while it still reads from it. Left while an exception
  /// unwinds (the program failed), it tells the others, whose next barrier or gather then fails
  /// at once, naming this rank, instead of waiting for it.
  ~World() { leave(std::uncaught_exceptions() > 0); }

  /// The world the launcher's variables describe (a world of one without them). Joining waits
  /// up to `timeout` for every rank.
  /// `timeout` also bounds every later wait (a barrier waits for the slowest rank's phase).
  static World from_environment(std::chrono::milliseconds timeout = std::chrono::hours(24)) {
    return World(Launch::from_environment(), timeout);
  }

  World(const Launch& launch, std::chrono::milliseconds timeout) : launch_(launch), timeout_(timeout) {
    if (launch_.world_size == 1 && !launch_.agent_store) return;  // nothing to join
#if MECHLENS_WITH_C10D_STORE
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(launch_.master_port);
    o.isServer = !launch_.agent_store && launch_.rank == 0;
    o.numWorkers = static_cast<std::size_t>(launch_.world_size);
    o.waitWorkers = false;
    o.timeout = timeout;
    try {
      auto tcp = c10::make_intrusive<c10d::TCPStore>(launch_.master_addr, o);
      store_ = c10::make_intrusive<c10d::PrefixStore>(
          "/worker/attempt_" + std::to_string(launch_.restart_count) + "/mechlens", tcp);
    } catch (const std::exception& e) {
      const std::string what = e.what();
      detail::raise<ArgumentError>("distributed launch: rank {} of {} could not {} the store at {}:{}: {}", launch_.rank,
                                   launch_.world_size, o.isServer ? "serve" : "join", launch_.master_addr,
                                   launch_.master_port, what.substr(0, what.find('\n')));
    }
    barrier("joined");
#else
    detail::raise<ArgumentError>(
        "distributed launch: RANK {} of WORLD_SIZE {} was set, but this LibTorch has no c10d (torch.distributed); "
        "run one process, or build against a LibTorch with distributed support",
        launch_.rank, launch_.world_size);
#endif
  }

  int64_t rank() const { return launch_.rank; }
  int64_t size() const { return launch_.world_size; }
  int64_t local_rank() const { return launch_.local_rank; }
  /// Rank 0: the one that merges and writes what belongs to the whole run.
  bool is_main() const { return launch_.rank == 0; }
  /// More than one process.
  bool distributed() const { return launch_.world_size > 1; }
  const Launch& launch() const { return launch_; }

  /// The units of 0..n-1 this rank does: unit u belongs to rank u % size() (the same split on
  /// every run of the same world size, and every rank's share within one unit of the others').
  std::vector<int64_t> units(int64_t n) const {
    std::vector<int64_t> out;
    for (int64_t u = launch_.rank; u < n; u += launch_.world_size) out.push_back(u);
    return out;
  }

  /// Waits until every rank has reached the barrier of this name (names must be new each time).
  void barrier(const std::string& name) {
#if MECHLENS_WITH_C10D_STORE
    if (!store_) return;
    const std::string key = "barrier/" + name;
    if (store_->add(key, 1) == launch_.world_size) store_->set(key + "/all", std::vector<uint8_t>{1});
    wait_for(key + "/all");
#else
    (void)name;
#endif
  }

  /// Every rank gets every rank's `bytes`, in rank order. Every rank must call it with the same
  /// name, once.
  std::vector<std::string> all_gather(const std::string& name, const std::string& bytes) {
    if (!distributed()) return {bytes};
#if MECHLENS_WITH_C10D_STORE
    const std::string prefix = "all_gather/" + name + "/";
    store_->set(prefix + std::to_string(launch_.rank), std::vector<uint8_t>(bytes.begin(), bytes.end()));
    std::vector<std::string> out;
    for (int64_t r = 0; r < launch_.world_size; ++r) {
      const std::string key = prefix + std::to_string(r);
      wait_for(key);
      const std::vector<uint8_t> v = store_->get(key);
      out.emplace_back(v.begin(), v.end());
    }
    barrier(prefix + "read");  // no rank leaves (and may end the store's server) before all have read
    return out;
#else
    return {bytes};
#endif
  }

 private:
  void leave(bool failed) noexcept {
#if MECHLENS_WITH_C10D_STORE
    if (!store_) return;
    try {
      if (failed) {
        const std::string who = std::to_string(launch_.rank);
        store_->set("failed", std::vector<uint8_t>(who.begin(), who.end()));
      }
      store_->add("left", 1);
      if (!launch_.agent_store && launch_.rank == 0) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(1);
        while (store_->add("left", 0) < launch_.world_size && std::chrono::steady_clock::now() < until)
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    } catch (...) {
      // Leaving never throws: a rank that cannot reach the store has nothing left to tell it.
    }
    store_.reset();
#endif
  }

#if MECHLENS_WITH_C10D_STORE
  /// Waits until `key` is set; an ArgumentError when another rank failed meanwhile (it left
  /// while unwinding), or when the launch's timeout passed.
  void wait_for(const std::string& key) {
    const auto until = std::chrono::steady_clock::now() + timeout_;
    for (;;) {
      try {
        store_->wait({key}, std::chrono::milliseconds(200));
        return;
      } catch (const std::exception&) {
        // A timeout of this slice: see whether a rank failed, or the whole wait is over.
      }
      if (store_->check({"failed"})) {
        const std::vector<uint8_t> who = store_->get("failed");
        detail::raise<ArgumentError>("distributed run: rank {} failed (its own output says why); rank {} stops too",
                                     std::string(who.begin(), who.end()), launch_.rank);
      }
      MECHLENS_CHECK(std::chrono::steady_clock::now() < until, ArgumentError,
                     "distributed run: rank {} waited {} s for the others at '{}'", launch_.rank,
                     std::chrono::duration_cast<std::chrono::seconds>(timeout_).count(), key);
    }
  }
#endif

  Launch launch_;
  std::chrono::milliseconds timeout_ = std::chrono::hours(24);
#if MECHLENS_WITH_C10D_STORE
  c10::intrusive_ptr<c10d::Store> store_;
#endif
};

}  // namespace mechlens::distributed
