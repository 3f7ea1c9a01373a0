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

#endif
