/* zcrm_batch.c - duplicate removal and batch arithmetic (see zcrm_batch.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "zcrm_batch.h"
#include "zcrm_url.h"

static uint64_t fnv1a(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    size_t i;
    for (i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

zcrm_code zcrm_dedupe(const char *const *ids, const size_t *lens, size_t n,
                      size_t *unique, size_t *nunique, zcrm_err *err)
{
    /* Open addressing, load factor <= 1/2; a slot holds an index + 1, 0 is empty. */
    size_t cap = 16, i, count = 0;
    size_t *slots;

    if (n > SIZE_MAX / 4) return zcrm_fail(err, ZCRM_ENOMEM, "too many ids");
    while (cap < 2 * n) cap *= 2;
    slots = calloc(cap, sizeof *slots);
    if (slots == NULL) return zcrm_fail(err, ZCRM_ENOMEM, "out of memory removing duplicate ids");

    for (i = 0; i < n; i++) {
        size_t pos = (size_t)fnv1a(ids[i], lens[i]) & (cap - 1);
        for (;;) {
            size_t j = slots[pos];
            if (j == 0) {
                slots[pos] = i + 1;
                unique[count++] = i;
                break;
            }
            if (lens[j - 1] == lens[i] && memcmp(ids[j - 1], ids[i], lens[i]) == 0) break;
            pos = (pos + 1) & (cap - 1);
        }
    }
    free(slots);
    *nunique = count;
    return ZCRM_OK;
}

size_t zcrm_batch_count(size_t n)
{
    /* Not (n + 99) / 100, which wraps to 0 for n near SIZE_MAX (found by fuzz/batch_fuzz.c). */
    return n / ZCRM_MAX_IDS_PER_CALL + (n % ZCRM_MAX_IDS_PER_CALL != 0);
}
