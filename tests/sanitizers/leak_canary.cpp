// Leaks one block on purpose: LeakSanitizer must report it at exit.
#include <cstdio>
#include <cstdlib>

void* volatile g_block = nullptr;

int main() {
  g_block = std::malloc(77);
  g_block = nullptr;  // the only pointer is gone: a direct leak
  std::puts("leaked 77 bytes");
  return 0;
}
