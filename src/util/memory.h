/*
 * memory — how much memory this process holds, for the max-memory ceiling.
 *
 * Measures the resident set (what the kernel would weigh before killing the
 * process), from /proc/self/statm. Any thread may call it; it keeps no state.
 */
#ifndef AVIARY_MEMORY_H
#define AVIARY_MEMORY_H

#include <stddef.h>

/* Bytes of the process resident in memory now, or 0 when that cannot be read. */
size_t memory_resident(void);

/*
 * Hand memory the allocator holds but no longer uses back to the system, so
 * that the next memory_resident() sees what is really in use.
 */
void memory_release_unused(void);

/*
 * Let the allocator keep up to `bytes` of freed memory at the top of its
 * heap rather than hand it back at each free, and serve blocks up to
 * `direct_above` from the heap rather than mapping each one. A fan-out
 * makes and frees megabytes of output every turn of the loop; given back
 * and taken again each time, it cost a brk call for every two writes.
 * memory_release_unused() still hands everything back.
 */
void memory_keep_freed(size_t bytes, size_t direct_above);

#endif
