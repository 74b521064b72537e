/* tests/shards/test_io.c - being written. */
#include <criterion/criterion.h>
