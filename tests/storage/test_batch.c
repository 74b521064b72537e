/* tests/storage/test_batch.c - being written. */
#include <criterion/criterion.h>
