#include "broker/core.h"

#include <time.h>

#include "tenancy/catalog.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/memory.h"

/*
 * max-memory is measured every 100 ms, or every 64 questions if sooner: a
 * flood of CONNECTs costs a read of /proc now and then, and between two
 * measurements at most 64 retained messages (4 MB of them by default) can
 * slip past the ceiling.
 */
#define CORE_MEMORY_CHECK_MS 100
#define CORE_MEMORY_CHECK_CALLS 64
/* At most one line this often while the process stays over max-memory. */
#define CORE_MEMORY_LOG_INTERVAL_SEC 10

bool core_memory_measure(struct broker *b)
{
    uint64_t now = clock_ms();

    if (b->memory_measured_ms == 0 || now - b->memory_measured_ms >= CORE_MEMORY_CHECK_MS ||
        ++b->memory_questions >= CORE_MEMORY_CHECK_CALLS) {
        b->memory_measured_ms = now;
        b->memory_questions = 0;
        b->memory_resident = memory_resident();
        if (b->memory_resident > b->max_memory) {
            memory_release_unused();
            b->memory_resident = memory_resident();
        }
        /* Beside the kernel's figure, what the tenants' accounts hold: the gap is the rest. */
        if (b->memory_resident > b->max_memory &&
            log_every_due(&b->memory_log, time(NULL), CORE_MEMORY_LOG_INTERVAL_SEC))
            log_warning("over max-memory: %zu MB resident (max %zu MB), %zu MB of it held for "
                        "instances (%llu times over so far)",
                        b->memory_resident >> 20, b->max_memory >> 20, b->held->bytes >> 20,
                        (unsigned long long)b->memory_log.count);
    }
    return b->memory_resident > b->max_memory;
}

bool core_token_live(const struct broker *b, const struct catalog_token *t)
{
    if (t->expires && t->expires <= time(NULL))
        return false;
    return b->catalog && catalog_token_by_id(b->catalog, t->id) != NULL;
}
