#ifndef RV_CORE_POOL_H
#define RV_CORE_POOL_H
typedef int rv_pool_placeholder_t;
#endif
