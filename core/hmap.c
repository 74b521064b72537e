/* core/hmap.c - being written. */
#include "core/hmap.h"
