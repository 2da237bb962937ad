/* The hashed n-gram features of features.py in plain C (optional; numpy is the fallback).
 *
 * keys(data, wb) -> (bytearray, nwords): the int32 sort keys that featurize counts, the
 * bucket ids of the words in order, then of the kept character 3-grams by start position,
 * then the 4-grams, then the 5-grams, each char bucket offset by BUCKETS; and how many
 * words lead. wb is true for the "char_wb" scheme, false for "alnum".
 *
 * The hash is features.py's, bit for bit: the hash of the span [s, e) is
 * sum over j of (c[j] + 1) * Q**(j - s) modulo 2**64 (uint64_t wraps, which is that modulus),
 * plus a salt (SALT_WORD for words, the n-gram size for char n-grams), then the
 * multiplicative mix and the top BITS bits. The numpy code gets the same sums from prefix
 * sums; here each span is summed directly, from a per-byte table of (c + 1) * Q**j for the
 * n-grams (no multiply but the mix's two per key: that is what the time goes on).
 * The constants must match features.py; tests/test_text_native.py checks that both agree.
 *
 * weights(sorted keys, idf, table) -> (ids, weights, nwords): what featurize makes of the keys
 * once numpy has sorted them, bit for bit as its numpy code does (see below).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BITS 20
#define BUCKETS (1 << BITS)
#define P UINT64_C(0x100000001B3)
#define Q UINT64_C(0xCE965057AFF6957B)   /* pow(P, -1, 2**64); checked at import */
#define MIX UINT64_C(0x9E3779B97F4A7C15)
#define SALT_WORD UINT64_C(0x51ED270B27B5A3C9)
#define MIN_GRAM 3
#define MAX_GRAM 5

static inline int32_t
bucket(uint64_t h, uint64_t salt)
{
    h += salt;
    h *= MIX;
    h ^= h >> 29;
    h *= MIX;
    return (int32_t)(h >> (64 - BITS));
}

/* What a scheme needs per byte, filled once at import: whether it is a word byte, and
 * (code + 1) * Q**j, where the code is the byte as hashed: for char_wb every whitespace byte
 * (" \t\r\n\x0b\x0c") is a space, so "a\tb" and "a b" share n-grams. */
struct scheme {
    unsigned char word[256];
    uint64_t term[MAX_GRAM][256];
};
static struct scheme char_wb, alnum;

static void
fill_tables(void)
{
    for (int b = 0; b < 256; b++) {
        int space = b == ' ' || (b >= '\t' && b <= '\r');   /* \t \n \x0b \x0c \r */
        char_wb.word[b] = !space;
        alnum.word[b] = (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || b >= 0x80;
        uint64_t wb = space ? ' ' + 1 : (uint64_t)b + 1, plain = (uint64_t)b + 1;
        for (int j = 0; j < MAX_GRAM; j++, wb *= Q, plain *= Q) {
            char_wb.term[j][b] = wb;
            alnum.term[j][b] = plain;
        }
    }
}

/* The words of c[0 .. n) (runs of word bytes) into out; returns how many.
 * Branch-free (a word boundary every few bytes would mispredict a branch): the hash of the
 * current word is grown a byte at a time, h += (c + 1) * Q**(i - start), and every byte writes
 * the bucket of the word so far to out[count], kept (count + 1) only where the word ended.
 * Word bytes are hashed as they are (no word byte is whitespace). */
static Py_ssize_t
words(const struct scheme *s, const unsigned char *c, Py_ssize_t n, int32_t *out)
{
    Py_ssize_t count = 0;
    uint64_t h = 0, q = 1;          /* hash of the word so far; Q**(its length) */
    unsigned inside = 0;            /* whether the byte before was a word byte */
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned w = s->word[c[i]];
        out[count] = bucket(h, SALT_WORD);
        count += inside & !w;
        uint64_t keep = (uint64_t)0 - w;    /* all ones in a word, else 0: start again */
        h = (h + ((uint64_t)c[i] + 1) * q) & keep;
        q = ((q * Q) & keep) | (1 & ~keep);
        inside = w;
    }
    if (inside)
        out[count++] = bucket(h, SALT_WORD);
    return count;
}

/* The kept n-grams of one size that start in c[0 .. n) into out, by start position; returns
 * how many. char_wb (wb): the bytes strictly inside an n-gram are word bytes and either end
 * may be a gap; alnum: every byte is a word byte. Branch-free as words() is. */
static Py_ssize_t
grams(const struct scheme *s, int wb, const unsigned char *c, Py_ssize_t n, int size,
      int32_t *out)
{
    Py_ssize_t count = 0;
    int first = wb ? 1 : 0, last = wb ? size - 2 : size - 1;  /* bytes that must be word bytes */
    for (Py_ssize_t i = 0; i + size <= n; i++) {
        uint64_t h = 0;
        unsigned keep = 1;
        for (int j = 0; j < size; j++)
            h += s->term[j][c[i + j]];
        for (int j = first; j <= last; j++)
            keep &= s->word[c[i + j]];
        out[count] = bucket(h, (uint64_t)size) + BUCKETS;
        count += keep;
    }
    return count;
}

/* The kept 3-, 4- and 5-grams into out, all 3-grams first, then the 4-grams, then the 5-grams;
 * returns how many. One pass for the three sizes (a 4-gram's sum is its 3-gram's plus one
 * term), each written to its own stretch of out, which are then moved together. */
static Py_ssize_t
all_grams(const struct scheme *s, int wb, const unsigned char *c, Py_ssize_t n, int32_t *out)
{
    if (n < 3)
        return 0;
    int32_t *out4 = out + (n - 2), *out5 = out4 + (n > 3 ? n - 3 : 0);
    Py_ssize_t n3 = 0, n4 = 0, n5 = 0, i;
    for (i = 0; i + 5 <= n; i++) {
        const unsigned char *g = c + i;
        uint64_t h3 = s->term[0][g[0]] + s->term[1][g[1]] + s->term[2][g[2]];
        uint64_t h4 = h3 + s->term[3][g[3]], h5 = h4 + s->term[4][g[4]];
        unsigned keep3, keep4, keep5;
        if (wb) {       /* the inside bytes: 1; 1, 2; 1, 2, 3 */
            keep3 = s->word[g[1]];
            keep4 = keep3 & s->word[g[2]];
            keep5 = keep4 & s->word[g[3]];
        } else {        /* every byte */
            keep3 = s->word[g[0]] & s->word[g[1]] & s->word[g[2]];
            keep4 = keep3 & s->word[g[3]];
            keep5 = keep4 & s->word[g[4]];
        }
        out[n3] = bucket(h3, 3) + BUCKETS;
        n3 += keep3;
        out4[n4] = bucket(h4, 4) + BUCKETS;
        n4 += keep4;
        out5[n5] = bucket(h5, 5) + BUCKETS;
        n5 += keep5;
    }
    /* the last starts, too near the end for a 5-gram (or a 4-gram) */
    n3 += grams(s, wb, c + i, n - i, 3, out + n3);
    n4 += grams(s, wb, c + i, n - i, 4, out4 + n4);
    memmove(out + n3, out4, (size_t)n4 * sizeof(int32_t));
    memmove(out + n3 + n4, out5, (size_t)n5 * sizeof(int32_t));
    return n3 + n4 + n5;
}

/* Fill out (room for at least n / 2 + 1 + 3 * n keys) from c[0 .. n); returns the key count
 * and sets *nwords. Touches no Python object (it runs without the GIL). */
static Py_ssize_t
fill(const unsigned char *c, Py_ssize_t n, int wb, int32_t *out, Py_ssize_t *nwords)
{
    const struct scheme *s = wb ? &char_wb : &alnum;
    *nwords = words(s, c, n, out);
    return *nwords + all_grams(s, wb, c, n, out + *nwords);
}

static PyObject *
ngrams_keys(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer data;
    int wb;
    if (!PyArg_ParseTuple(args, "y*p:keys", &data, &wb))
        return NULL;
    PyObject *keys = NULL, *result = NULL;
    Py_ssize_t n = data.len, count = 0, nwords = 0;
    /* at most (n + 1) / 2 words and n - size + 1 n-grams of each of the 3 sizes */
    if (n > PY_SSIZE_T_MAX / 16) {
        PyErr_SetString(PyExc_OverflowError, "keys: data too long");
        goto done;
    }
    keys = PyByteArray_FromStringAndSize(NULL, (n / 2 + 1 + 3 * n) * (Py_ssize_t)sizeof(int32_t));
    if (keys == NULL)
        goto done;
    int32_t *out = (int32_t *)PyByteArray_AS_STRING(keys);
    /* `data` stays exported (a bytearray cannot be resized meanwhile) and `keys` is ours alone */
    Py_BEGIN_ALLOW_THREADS
    count = fill((const unsigned char *)data.buf, n, wb, out, &nwords);
    Py_END_ALLOW_THREADS
    if (PyByteArray_Resize(keys, count * (Py_ssize_t)sizeof(int32_t)) == 0)
        result = Py_BuildValue("(On)", keys, nwords);
done:
    Py_XDECREF(keys);
    PyBuffer_Release(&data);
    return result;
}

/* weights(keys, idf, table) -> (ids, weights, nwords): featurize's distinct keys, counted.
 * keys are its int32 keys, sorted (numpy's SIMD sort is as fast as a radix sort was here);
 * ids are the distinct keys' buckets (int64), weights float32 table[count] * idf[bucket], and
 * nwords how many of them are words (keys below BUCKETS). table (float32, more entries than
 * there are keys) holds numpy's 1 + log count, since C's logf may differ from numpy's log in
 * the last bit; what is left is one float32 multiplication, so the weights are numpy's
 * (1 + log(count, float32)) * idf to the bit. The norms stay in numpy (BLAS's summing order). */

/* How many distinct keys sorted[0 .. n) (n > 0) holds, or -1 if they are not sorted or one is
 * outside 0 .. 2 * BUCKETS - 1. A pass the compiler vectorises, so that the outputs can be
 * allocated at their size. */
static Py_ssize_t
distinct(const int32_t *sorted, Py_ssize_t n)
{
    Py_ssize_t m = 1;
    unsigned unsorted = 0;
    for (Py_ssize_t i = 1; i < n; i++) {
        m += sorted[i] != sorted[i - 1];
        unsorted |= sorted[i] < sorted[i - 1];
    }
    return unsorted || sorted[0] < 0 || sorted[n - 1] >= 2 * BUCKETS ? -1 : m;
}

/* Where each run of equal keys in sorted[0 .. n) ends (its last index) into last[0 .. room);
 * returns how many runs (room, if the keys changed since distinct() counted them: another
 * thread's doing, which must not make us write past the end).
 * Branch-free (a run ends every key or two, which a branch would mispredict): every index is
 * written to the current run's slot, and the slot moves on where the next key differs. */
static Py_ssize_t
run_ends(const int32_t *sorted, Py_ssize_t n, int64_t *last, Py_ssize_t room)
{
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i + 1 < n && m < room; i++) {
        last[m] = i;
        m += sorted[i + 1] != sorted[i];
    }
    if (m < room)
        last[m++] = n - 1;
    return m;
}

/* A float16's value as a float32, exactly (every float16 is a float32), NaN payloads kept,
 * as numpy converts. */
static float
half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f)                        /* inf, NaN */
        bits = sign | 0x7f800000 | (man << 13);
    else if (exp != 0)                      /* normal: rebias the exponent, 15 -> 127 */
        bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0)                      /* +-0 */
        bits = sign;
    else {                                  /* subnormal, man * 2**-24: normalise it */
        exp = 113;
        while (!(man & 0x400))
            man <<= 1, exp--;
        bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Each bucket's idf value is a cache miss (a 4 KB message reads some 4,500 of them, spread over
 * the table's megabytes), and a loop iteration is a few nanoseconds: so weigh() asks for the
 * line AHEAD buckets on. Featurize 86 -> 60 us a 4 KB message; 16 ahead gave 73, 64 gave 64. */
#define AHEAD 128
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* From the run ends in ids[0 .. m): each run's bucket into ids, its weight
 * table[count] * idf[bucket] into out; returns how many runs are words. idf is float16 (half)
 * or float32, `stride` bytes apart (the scorer's is a column of a two-column table). */
static Py_ssize_t
weigh(const int32_t *sorted, int64_t *ids, Py_ssize_t m, const char *idf, Py_ssize_t stride,
      int half, const float *table, float *out)
{
    Py_ssize_t words = 0;
    int64_t before = -1;                /* where the run before ended */
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t end = ids[i];
        if (i + AHEAD < m)
            PREFETCH(idf + (int64_t)(sorted[ids[i + AHEAD]] & (BUCKETS - 1)) * stride);
        int32_t key = sorted[end], count = (int32_t)(end - before), id = key & (BUCKETS - 1);
        const char *value = idf + id * stride;
        before = end;
        ids[i] = id;
        words += key < BUCKETS;
        out[i] = table[count] * (half ? half_to_float(*(const uint16_t *)value) : *(const float *)value);
    }
    return words;
}

/* idf as a one-dimensional float16 or float32 buffer of at least BUCKETS values; sets *half. */
static int
get_idf(PyObject *obj, Py_buffer *idf, int *half)
{
    if (PyObject_GetBuffer(obj, idf, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return 0;
    *half = strcmp(idf->format, "e") == 0;
    if (idf->ndim == 1 && (*half || strcmp(idf->format, "f") == 0) && idf->shape[0] >= BUCKETS)
        return 1;
    PyErr_SetString(PyExc_TypeError, "weights: idf must be float16 or float32, one per bucket");
    PyBuffer_Release(idf);
    return 0;
}

static PyObject *
ngrams_weights(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer keys, table, idf;
    PyObject *idf_obj, *ids = NULL, *weights = NULL, *result = NULL;
    int half;
    if (!PyArg_ParseTuple(args, "y*Oy*:weights", &keys, &idf_obj, &table))
        return NULL;
    if (!get_idf(idf_obj, &idf, &half)) {
        PyBuffer_Release(&keys);
        PyBuffer_Release(&table);
        return NULL;
    }
    Py_ssize_t n = keys.len / (Py_ssize_t)sizeof(int32_t), m = 0, nwords = 0;
    if (keys.len % (Py_ssize_t)sizeof(int32_t) != 0 || n == 0
            || n >= table.len / (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "weights: expected int32 keys, fewer than table's counts");
        goto done;
    }
    const int32_t *sorted = (const int32_t *)keys.buf;
    Py_BEGIN_ALLOW_THREADS
    m = distinct(sorted, n);
    Py_END_ALLOW_THREADS
    if (m < 0) {
        PyErr_SetString(PyExc_ValueError, "weights: keys not sorted, or one outside 0 .. 2 * BUCKETS - 1");
        goto done;
    }
    ids = PyByteArray_FromStringAndSize(NULL, m * (Py_ssize_t)sizeof(int64_t));
    weights = PyByteArray_FromStringAndSize(NULL, m * (Py_ssize_t)sizeof(float));
    if (ids == NULL || weights == NULL)
        goto done;
    int64_t *out_ids = (int64_t *)PyByteArray_AS_STRING(ids);
    Py_ssize_t runs;
    Py_BEGIN_ALLOW_THREADS
    runs = run_ends(sorted, n, out_ids, m);
    /* every count is at most n, below table's size; every bucket is in idf */
    nwords = weigh(sorted, out_ids, runs, (const char *)idf.buf, idf.strides[0], half,
                   (const float *)table.buf, (float *)PyByteArray_AS_STRING(weights));
    Py_END_ALLOW_THREADS
    if (runs == m)
        result = Py_BuildValue("(OOn)", ids, weights, nwords);
    else
        PyErr_SetString(PyExc_RuntimeError, "weights: the keys changed while they were counted");
done:
    Py_XDECREF(ids);
    Py_XDECREF(weights);
    PyBuffer_Release(&idf);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&table);
    return result;
}

/* dot(ids, weights, table) -> float: the sum of table[ids] * weights in float64, to the bit as
 * numpy's (table[ids].astype(float64) * weights).sum() (the scorer's wide_sums): each product
 * of two float32s is exact in float64, so only the order of the additions matters, and it is
 * numpy's pairwise summation, started from add's identity 0. table is float32, any stride. */

#define PW_BLOCKSIZE 128

/* numpy's pairwise_sum (numpy/_core/src/umath/loops_utils.h.src) of a[0 .. n), line for line. */
static double
pairwise_sum(const double *a, Py_ssize_t n)
{
    if (n < 8) {
        double res = -0.0;
        for (Py_ssize_t i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    if (n <= PW_BLOCKSIZE) {
        double r[8];
        Py_ssize_t i;
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    Py_ssize_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

/* out[i] = table[ids[i]] * weights[i] in float64; returns false if an id is outside
 * 0 .. size - 1 (that product is then made with table[0]). The table is read AHEAD ids on,
 * as in weigh(): every id is a cache miss. */
static int
products(const int64_t *ids, const float *weights, Py_ssize_t n, const char *table,
         Py_ssize_t stride, Py_ssize_t size, double *out)
{
    int ok = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + AHEAD < n)
            PREFETCH(table + ids[i + AHEAD] * stride);
        int inside = (uint64_t)ids[i] < (uint64_t)size;
        ok &= inside;
        out[i] = (double)*(const float *)(table + (inside ? ids[i] : 0) * stride) * (double)weights[i];
    }
    return ok;
}

static PyObject *
ngrams_dot(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer ids, weights, table = {0};
    PyObject *table_obj, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*O:dot", &ids, &weights, &table_obj))
        return NULL;
    Py_ssize_t n = ids.len / (Py_ssize_t)sizeof(int64_t);
    double *work = NULL, sum = 0.0;
    int ok = 0;
    if (PyObject_GetBuffer(table_obj, &table, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        goto done;
    if (table.ndim != 1 || strcmp(table.format, "f") != 0) {
        PyErr_SetString(PyExc_TypeError, "dot: table must be one-dimensional float32");
        goto done;
    }
    if (ids.len % (Py_ssize_t)sizeof(int64_t) != 0 || weights.len != n * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "dot: expected as many int64 ids as float32 weights");
        goto done;
    }
    work = PyMem_RawMalloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    ok = products((const int64_t *)ids.buf, (const float *)weights.buf, n, (const char *)table.buf,
                  table.strides[0], table.shape[0], work);
    sum = 0.0 + pairwise_sum(work, n);      /* numpy's reduction starts from the identity */
    Py_END_ALLOW_THREADS
    if (ok)
        result = PyFloat_FromDouble(sum);
    else
        PyErr_SetString(PyExc_IndexError, "dot: an id outside the table");
done:
    PyMem_RawFree(work);
    if (table.obj != NULL)
        PyBuffer_Release(&table);
    PyBuffer_Release(&ids);
    PyBuffer_Release(&weights);
    return result;
}

static PyMethodDef ngrams_methods[] = {
    {"keys", ngrams_keys, METH_VARARGS,
     "keys(data, wb) -> (bytearray of int32 keys, word count): see filterd/pipeline/features.py."},
    {"weights", ngrams_weights, METH_VARARGS,
     "weights(sorted keys, idf, table) -> (bytearray of int64 ids, bytearray of float32 weights, "
     "distinct words): see filterd/pipeline/features.py."},
    {"dot", ngrams_dot, METH_VARARGS,
     "dot(ids, weights, table) -> float64 sum of table[ids] * weights, summed as numpy sums."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ngrams_module = {
    PyModuleDef_HEAD_INIT, "filterd.pipeline._ngrams",
    "The hashed n-gram features of features.py in plain C (optional; numpy is the fallback).",
    -1, ngrams_methods,
};

PyMODINIT_FUNC
PyInit__ngrams(void)
{
    if ((uint64_t)(P * Q) != 1) {
        PyErr_SetString(PyExc_ImportError, "_ngrams: Q is not the inverse of P");
        return NULL;
    }
    fill_tables();
    PyObject *m = PyModule_Create(&ngrams_module);
    if (m != NULL && (PyModule_AddIntConstant(m, "BITS", BITS) < 0
                      || PyModule_AddIntConstant(m, "MAX_GRAM", MAX_GRAM) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
