/* tests/shards/test_timer.c - being written. */
#include <criterion/criterion.h>
