/* shards/io.c - being written. */
#include <stddef.h>
