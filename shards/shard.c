/* shards/shard.c - being written. */
#include <stddef.h>
