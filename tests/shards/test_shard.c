/* tests/shards/test_shard.c - being written. */
#include <criterion/criterion.h>
