/* shards/runtime.c - being written. */
#include <stddef.h>
