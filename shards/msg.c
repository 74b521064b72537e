/* shards/msg.c - being written. */
#include <stddef.h>
