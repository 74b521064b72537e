/* core/spsc.c - being written. */
#include "core/spsc.h"
