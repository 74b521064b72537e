/* rivven.h - being written. */
