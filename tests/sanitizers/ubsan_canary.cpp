// Overflows a signed int on purpose: UBSan must report it and, built with
// -fno-sanitize-recover, stop the program before it prints "survived".
#include <climits>
#include <cstdio>

volatile int g_value = INT_MAX;

int main() {
  int v = g_value;
  v += 1;
  g_value = v;
  std::puts("survived");
  return 0;
}
