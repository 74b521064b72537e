/* tests/storage/test_codec.c - being written. */
#include <criterion/criterion.h>
