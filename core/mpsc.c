/* core/mpsc.c - being written. */
#include "core/mpsc.h"
