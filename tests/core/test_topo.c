/* tests/core/test_topo.c - being written. */
#include <criterion/criterion.h>
