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
 * once numpy has sorted them, and dot(ids, weights, table), the scorer's sparse dot product:
 * both in _ngrams_weights.c.
 */

#include "_ngrams.h"
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
