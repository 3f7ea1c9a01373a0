#include "util/memory.h"

#include <stdio.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

size_t memory_resident(void)
{
    unsigned long pages_total, pages_resident;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        return 0;
    int n = fscanf(f, "%lu %lu", &pages_total, &pages_resident);
    fclose(f);
    if (n != 2)
        return 0;
    long page = sysconf(_SC_PAGESIZE);
    return (size_t)pages_resident * (size_t)(page > 0 ? page : 4096);
}

void memory_keep_freed(size_t bytes, size_t direct_above)
{
#ifdef __GLIBC__
    /* Either setting turns glibc's own adjustment of both off: set both. */
    mallopt(M_TRIM_THRESHOLD, (int)bytes);
    mallopt(M_MMAP_THRESHOLD, (int)direct_above);
#else
    (void)bytes;
    (void)direct_above;
#endif
}

void memory_release_unused(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}
