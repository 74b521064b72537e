#ifndef RV_CORE_HIST_H
#define RV_CORE_HIST_H
typedef int rv_hist_placeholder_t;
#endif
