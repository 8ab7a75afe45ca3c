// Short multi-threaded stress (label unit, ~2 s in Debug): 6 threads of random
// sizes and frees on one DevicePool (plain, stream-ordered and mixed, blocks
// handed across threads) and on one MemoryManager (writes, racing reads,
// frees, limits), bytes checked, validate() during and after.
// long_stress_test.cpp runs the same workloads for longer (label stress).
#include "stress_workload.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;

TEST(AllocStress, PoolManyThreadsShort) {
  alloc_test::run_pool_stress({.duration = alloc_test::stress_duration(900ms), .threads = 6, .seed = 1});
}

TEST(AllocStress, ManagerManyThreadsShort) {
  alloc_test::run_manager_stress({.duration = alloc_test::stress_duration(900ms), .threads = 6, .seed = 2});
}

}  // namespace
}  // namespace memd
