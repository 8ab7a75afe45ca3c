/* memd/export.h — MEMD_API marks what libmemd.so exports.
 *
 * The library's own sources are compiled with hidden visibility, so that the
 * internals they instantiate (MemoryService's inline members, standard
 * library templates over internal types) stay inside it; what the public
 * headers declare for users carries MEMD_API. The public value types
 * (memd_base) are exported whole by the link (src/CMakeLists.txt).
 *
 * Thread safety: not applicable (a macro). */
#ifndef MEMD_EXPORT_H
#define MEMD_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define MEMD_API __attribute__((visibility("default")))
#else
#define MEMD_API
#endif

#endif /* MEMD_EXPORT_H */
