#ifndef RV_CORE_MPSC_H
#define RV_CORE_MPSC_H
typedef int rv_mpsc_placeholder_t;
#endif
