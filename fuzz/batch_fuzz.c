/* batch_fuzz.c - libFuzzer harness for csrc/zcrm_batch.[ch]: duplicate removal and
 * the split into calls of at most ZCRM_MAX_IDS_PER_CALL ids.
 *
 * Input: byte 0 chooses how the rest becomes ids. Even: the rest split on ',' (any
 * bytes, empty ids too). Odd: every two bytes one decimal id 0..65535 (up to about
 * 2,000 ids from 4 KiB, with duplicates). Each id is copied into a buffer of its own
 * exact size. The input's last 8 bytes are also read as a size_t for
 * zcrm_batch_count over its whole range.
 *
 * Invariants (a failure aborts, which libFuzzer reports as a crash):
 *   - zcrm_dedupe keeps exactly the first occurrence of each distinct id, in input
 *     order (checked against a reference that sorts);
 *   - slicing its result the way zcrm_lua.c's plan does gives zcrm_batch_count
 *     batches of 1..100 ids, all full but the last, and every input id is in exactly
 *     one batch, once;
 *   - zcrm_batch_count(n) is the ceiling of n / 100 for every n. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zcrm_batch.h"
#include "zcrm_url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "batch_fuzz: invariant failed at line %d: %s\n", __LINE__, #cond); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

typedef struct {
    char **s;
    size_t *len;
    size_t n;
} id_list;

/* For the reference: ids sorted by bytes, then by position. */
static const id_list *sort_list;

static int compare_ids(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t m = alen < blen ? alen : blen;
    int c = m ? memcmp(a, b, m) : 0;
    if (c != 0) return c;
    return (alen > blen) - (alen < blen);
}

static int by_value_then_position(const void *pa, const void *pb)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    int c = compare_ids(sort_list->s[a], sort_list->len[a], sort_list->s[b], sort_list->len[b]);
    if (c != 0) return c;
    return (a > b) - (a < b);
}

static int by_position(const void *pa, const void *pb)
{
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    return (a > b) - (a < b);
}

static void add(id_list *l, const char *s, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) abort();
    if (len) memcpy(copy, s, len);
    l->s[l->n] = copy;
    l->len[l->n] = len;
    l->n++;
}

static void check_batch_count(size_t n)
{
    size_t c = zcrm_batch_count(n);
    CHECK(c == n / ZCRM_MAX_IDS_PER_CALL + (n % ZCRM_MAX_IDS_PER_CALL != 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    id_list l;
    size_t cap = size + 1, i, k, b, nunique = 0, nfirst = 0, nbatches, placed = 0;
    size_t *unique, *order, *firsts, *batched;
    zcrm_err err;

    if (size >= 8) {
        size_t n = 0;
        for (i = size - 8; i < size; i++) n = (n << 8) | data[i];
        check_batch_count(n);
    }
    check_batch_count((size_t)size);

    l.s = malloc(cap * sizeof *l.s);
    l.len = malloc(cap * sizeof *l.len);
    unique = malloc(cap * sizeof *unique);
    order = malloc(cap * sizeof *order);
    firsts = malloc(cap * sizeof *firsts);
    batched = malloc(cap * sizeof *batched);
    if (!l.s || !l.len || !unique || !order || !firsts || !batched) abort();
    l.n = 0;

    if (size > 0 && (data[0] & 1) == 0) {
        const char *s = (const char *)data + 1, *end = (const char *)data + size;
        for (;;) {
            const char *comma = memchr(s, ',', (size_t)(end - s));
            add(&l, s, (size_t)((comma ? comma : end) - s));
            if (!comma) break;
            s = comma + 1;
        }
    } else if (size > 0) {
        for (i = 1; i + 1 < size; i += 2) {
            char buf[8];
            int len = snprintf(buf, sizeof buf, "%u", (unsigned)(data[i] << 8 | data[i + 1]));
            add(&l, buf, (size_t)len);
        }
    }

    memset(&err, 0, sizeof err);
    CHECK(zcrm_dedupe((const char *const *)l.s, l.len, l.n, unique, &nunique, &err) == ZCRM_OK);
    CHECK(nunique <= l.n && (l.n == 0 || nunique >= 1));
    for (i = 0; i < nunique; i++) CHECK(unique[i] < l.n && (i == 0 || unique[i] > unique[i - 1]));

    /* Reference: sort positions by value; each run's first position is a first occurrence. */
    for (i = 0; i < l.n; i++) order[i] = i;
    sort_list = &l;
    qsort(order, l.n, sizeof *order, by_value_then_position);
    for (i = 0; i < l.n; i++)
        if (i == 0 || compare_ids(l.s[order[i]], l.len[order[i]], l.s[order[i - 1]], l.len[order[i - 1]]) != 0)
            firsts[nfirst++] = order[i];
    qsort(firsts, nfirst, sizeof *firsts, by_position);
    CHECK(nfirst == nunique);
    CHECK(nunique == 0 || memcmp(firsts, unique, nunique * sizeof *unique) == 0);

    /* Batches as zcrm_lua.c slices them. */
    nbatches = zcrm_batch_count(nunique);
    for (b = 0; b < nbatches; b++) {
        size_t first = b * ZCRM_MAX_IDS_PER_CALL;
        size_t count = nunique - first < ZCRM_MAX_IDS_PER_CALL ? nunique - first : ZCRM_MAX_IDS_PER_CALL;
        CHECK(first < nunique);
        CHECK(count >= 1 && count <= ZCRM_MAX_IDS_PER_CALL);
        CHECK(b + 1 == nbatches || count == ZCRM_MAX_IDS_PER_CALL);
        for (k = 0; k < count; k++) batched[placed++] = unique[first + k];
    }
    CHECK(placed == nunique);
    /* Every input id in exactly one batch, once: the batched values are pairwise
     * distinct and as many as the input's distinct values. */
    qsort(batched, placed, sizeof *batched, by_value_then_position);
    for (i = 1; i < placed; i++)
        CHECK(compare_ids(l.s[batched[i]], l.len[batched[i]], l.s[batched[i - 1]], l.len[batched[i - 1]]) != 0);

    for (i = 0; i < l.n; i++) free(l.s[i]);
    free(l.s);
    free(l.len);
    free(unique);
    free(order);
    free(firsts);
    free(batched);
    return 0;
}
