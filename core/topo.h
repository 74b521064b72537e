#ifndef RV_CORE_TOPO_H
#define RV_CORE_TOPO_H
typedef int rv_topo_placeholder_t;
#endif
