/* core/pool.c - being written. */
#include "core/pool.h"
