/* shards/timer.c - being written. */
#include <stddef.h>
