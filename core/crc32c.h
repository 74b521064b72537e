#ifndef RV_CORE_CRC32C_H
#define RV_CORE_CRC32C_H
typedef int rv_crc32c_placeholder_t;
#endif
