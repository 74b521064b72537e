/* tests/shards/test_msg.c - being written. */
#include <criterion/criterion.h>
