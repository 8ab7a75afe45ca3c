// Two threads write one plain int without synchronisation on purpose:
// ThreadSanitizer must report a data race.
#include <cstdio>
#include <thread>

int g_counter = 0;

int main() {
  std::thread other([] { ++g_counter; });
  ++g_counter;
  other.join();
  std::printf("%d\n", g_counter);
  return 0;
}
