/* The second half of the _ngrams extension (optional; numpy is the fallback): what featurize
 * does once numpy has sorted the keys, and the scorer's sparse dot product, both bit for bit
 * as the numpy code (filterd/pipeline/features.py; tests/test_text_native.py holds them to it).
 * The module itself and the keys are in _ngrams.c.
 */

#include "_ngrams.h"

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

PyObject *
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

PyObject *
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

