#include "util/account.h"

#include <stdlib.h>

struct account *account_new(struct account *parent)
{
    struct account *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->refs = 1;
    a->parent = account_ref(parent);
    return a;
}

void account_free(struct account *a)
{
    struct account *parent = a->parent;

    free(a);
    if (parent && --parent->refs == 0)
        account_free(parent);
}
