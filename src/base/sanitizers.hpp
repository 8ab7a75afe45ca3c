// base/sanitizers.hpp — which sanitizers this translation unit is built with,
// as constants. GCC defines __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__;
// clang (the asan preset) defines neither and answers __has_feature, which
// only the preprocessor understands.
#pragma once

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEMD_HAS_ASAN_FEATURE 1
#endif
#if __has_feature(thread_sanitizer)
#define MEMD_HAS_TSAN_FEATURE 1
#endif
#endif

namespace memd {

#if defined(__SANITIZE_ADDRESS__) || defined(MEMD_HAS_ASAN_FEATURE)
inline constexpr bool kAddressSanitizer = true;
#else
inline constexpr bool kAddressSanitizer = false;
#endif

#if defined(__SANITIZE_THREAD__) || defined(MEMD_HAS_TSAN_FEATURE)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif

}  // namespace memd

#undef MEMD_HAS_ASAN_FEATURE
#undef MEMD_HAS_TSAN_FEATURE
