#ifndef RV_CORE_VARINT_H
#define RV_CORE_VARINT_H
typedef int rv_varint_placeholder_t;
#endif
