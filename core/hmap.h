#ifndef RV_CORE_HMAP_H
#define RV_CORE_HMAP_H
typedef int rv_hmap_placeholder_t;
#endif
