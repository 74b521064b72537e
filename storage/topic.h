/*
 * storage/topic.h - topic names, configuration checks and the catalog files
 * (DATA/meta/topics/<name>.topic). Blocking control-path code.
 */
#ifndef RV_STORAGE_TOPIC_H
#define RV_STORAGE_TOPIC_H

#include <stdbool.h>
#include <stdint.h>

#include "core/assert.h"
#include "rivven.h"
#include "storage/codec.h"

#define RV_TOPIC_PARTITIONS_MAX 100000
#define RV_TOPIC_BATCH_MIN      64
#define RV_TOPIC_BATCH_MAX      ((1 << 20) - 64) /* one pool buffer */

/* Kafka's rules: 1..249 of [a-zA-Z0-9._-], not "." or "..". */
bool rv_topic_name_is_valid(const char *name);
/* Cross-field checks: -EINVAL with a message. */
RV_MUST_CHECK int rv_topic_config_check(const struct rv_topic_config *cfg);
/* The codec batches built by rv_produce use (none for "producer"). */
enum rv_codec rv_topic_codec(const struct rv_topic_config *cfg);

RV_MUST_CHECK int rv_topic_meta_save(const char *data_dir, const char *name, uint32_t id,
                                     const struct rv_topic_config *cfg);
RV_MUST_CHECK int rv_topic_meta_load(const char *data_dir, const char *name, uint32_t *id,
                                     struct rv_topic_config *cfg);
RV_MUST_CHECK int rv_topic_meta_remove(const char *data_dir, const char *name);
/* Names of every topic described in data_dir (malloc'd array of malloc'd names). */
RV_MUST_CHECK int rv_topic_meta_list(const char *data_dir, char ***out, uint32_t *count);

#endif /* RV_STORAGE_TOPIC_H */
