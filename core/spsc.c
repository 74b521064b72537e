/* core/spsc.c - ring set-up; the hot paths are inline in spsc.h. */
#include "core/spsc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int rv_spsc_init(struct rv_spsc *r, uint32_t capacity, uint32_t elem_size)
{
    RV_ASSERT(r != NULL);
    if (capacity < 2 || capacity > RV_SPSC_CAPACITY_MAX || (capacity & (capacity - 1)) != 0)
        return -EINVAL;
    if (elem_size == 0 || elem_size % 8 != 0 || elem_size > 4096)
        return -EINVAL;
    void *slots = NULL;
    if (posix_memalign(&slots, RV_CACHELINE, (size_t)capacity * elem_size) != 0)
        return -ENOMEM;
    memset(slots, 0, (size_t)capacity * elem_size);
    memset(r, 0, sizeof(*r));
    atomic_init(&r->tail, 0);
    atomic_init(&r->head, 0);
    r->mask = capacity - 1;
    r->elem_size = elem_size;
    r->slots = slots;
    return 0;
}

void rv_spsc_fini(struct rv_spsc *r)
{
    if (r == NULL)
        return;
    free(r->slots);
    r->slots = NULL;
}
