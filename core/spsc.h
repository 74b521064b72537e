#ifndef RV_CORE_SPSC_H
#define RV_CORE_SPSC_H
typedef int rv_spsc_placeholder_t;
#endif
