/* core/clock.c - the replaceable clock source (see clock.h). */
#include "core/clock.h"

#include <stddef.h>

rv_clock_source_fn *rv_clock_source = NULL;

void rv_clock_set_source(rv_clock_source_fn *fn)
{
    rv_clock_source = fn;
}
