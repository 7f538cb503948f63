/* zcrm_batch.h - turning a caller's id list into delink calls: duplicates removed
 * (first occurrence keeps its place), then slices of at most ZCRM_MAX_IDS_PER_CALL.
 * Pure C: no Lua, no libcurl. */
#ifndef ZCRM_BATCH_H
#define ZCRM_BATCH_H

#include <stddef.h>
#include "zcrm_error.h"

/* For ids[0..n), writes to unique[] the index of each distinct id's first occurrence,
 * in order, and sets *nunique. unique must hold n entries. The only allocation is a
 * hash table freed before returning. */
zcrm_code zcrm_dedupe(const char *const *ids, const size_t *lens, size_t n,
                      size_t *unique, size_t *nunique, zcrm_err *err);

/* Number of calls needed for n distinct ids. */
size_t zcrm_batch_count(size_t n);

#endif
