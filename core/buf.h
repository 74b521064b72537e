#ifndef RV_CORE_BUF_H
#define RV_CORE_BUF_H
typedef int rv_buf_placeholder_t;
#endif
