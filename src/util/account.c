#include "util/account.h"

#include <stdlib.h>

struct account *account_new(struct account *parent)
{
    struct account *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->refs = 1;
    a->parent = parent;
    return a;
}

void account_free(struct account *a)
{
    free(a);
}
