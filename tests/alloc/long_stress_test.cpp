// Long multi-threaded stress (label stress, ~60 s; `ctest -L stress`): the
// workloads of stress_test.cpp with more threads, several seeds and longer
// runs. MEMD_STRESS_SECONDS sets each run's length instead.
#include "stress_workload.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;

class LongPoolStress : public ::testing::TestWithParam<std::uint64_t> {};
class LongManagerStress : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(LongPoolStress, EightThreads) {
  alloc_test::run_pool_stress({.duration = alloc_test::stress_duration(14s), .threads = 8, .seed = GetParam()});
}

TEST_P(LongManagerStress, EightThreads) {
  alloc_test::run_manager_stress({.duration = alloc_test::stress_duration(14s), .threads = 8, .seed = GetParam()});
}

INSTANTIATE_TEST_SUITE_P(Seeds, LongPoolStress, ::testing::Values(11u, 12u));
INSTANTIATE_TEST_SUITE_P(Seeds, LongManagerStress, ::testing::Values(21u, 22u));

}  // namespace
}  // namespace memd
