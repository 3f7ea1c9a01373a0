#include "broker/propbuf.h"

#include <stdlib.h>
#include <string.h>

void propbuf_init(struct propbuf *pb)
{
    pb->data = pb->small;
    pb->len = 0;
    pb->cap = sizeof(pb->small);
    pb->failed = false;
}

void propbuf_free(struct propbuf *pb)
{
    if (pb->data != pb->small)
        free(pb->data);
    propbuf_init(pb);
}

/* Room for `more` bytes, or false (and failed) when it cannot be had. */
static bool propbuf_reserve(struct propbuf *pb, size_t more)
{
    if (pb->failed)
        return false;
    if (pb->len + more <= pb->cap)
        return true;
    size_t cap = pb->cap * 2 > pb->len + more ? pb->cap * 2 : pb->len + more;
    uint8_t *grown = malloc(cap);
    if (!grown) {
        pb->failed = true;
        return false;
    }
    memcpy(grown, pb->data, pb->len);
    if (pb->data != pb->small)
        free(pb->data);
    pb->data = grown;
    pb->cap = cap;
    return true;
}

void propbuf_add(struct propbuf *pb, const struct mqtt_prop *prop)
{
    size_t at = pb->len, need = codec_put_prop(NULL, 0, &at, prop);

    if (need == 0) { /* not representable: a bug in the caller, never input */
        pb->failed = true;
        return;
    }
    if (!propbuf_reserve(pb, need))
        return;
    codec_put_prop(pb->data, pb->cap, &pb->len, prop);
}

void propbuf_int(struct propbuf *pb, uint8_t id, uint32_t value)
{
    struct mqtt_prop p = {.id = id, .u32 = value};
    propbuf_add(pb, &p);
}

void propbuf_str(struct propbuf *pb, uint8_t id, const void *s, size_t len)
{
    struct mqtt_prop p = {.id = id, .str = {s, len}};
    propbuf_add(pb, &p);
}

void propbuf_raw(struct propbuf *pb, const uint8_t *data, size_t len)
{
    if (len && propbuf_reserve(pb, len)) {
        memcpy(pb->data + pb->len, data, len);
        pb->len += len;
    }
}

struct mqtt_props propbuf_props(const struct propbuf *pb)
{
    struct mqtt_props p = {pb->len ? pb->data : NULL, pb->len};
    return p;
}
