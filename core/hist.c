/* core/hist.c - being written. */
#include "core/hist.h"
