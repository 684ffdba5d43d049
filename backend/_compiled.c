/* The compiled kernels of the serving path, each giving exactly what the numpy code beside it gives
 * (tests/test_hashing.py and tests/test_estimator.py compare them):
 *
 * hashing.py: `counts(lowered_texts, words, chars)` gives the count
 * matrix of hashed word 1-2-grams and character 2-5-grams of lower-cased texts as CSR arrays,
 * entry for entry what hashing.py's numpy code gives (tests/test_hashing.py compares them).
 *
 * Words are the matches of TOKEN_PATTERN = (?u)\b\w+\b|[!?]+|[:;=]-?[()dDpP/\\] in re.findall's
 * order, hashed with MurmurHash3 x86_32 (seed 0) of their UTF-8 bytes into 2**WORD_BITS columns, as
 * scikit-learn's HashingVectorizer does. Character n-grams are those of " word " for every word of
 * str.split(), a polynomial rolling hash over code points (a NUL ends n-grams), in 2**CHAR_BITS
 * columns after the word columns. Each row's columns are sorted and repeated columns counted.
 *
 * estimator.py: `linear_scores(...)` gives a `SparseLinear`'s decision values before the intercept:
 * sublinear TF-IDF with each block scaled to unit length, times the weights, in the float32 and
 * float64 steps and the summation order of numpy, `np.bincount` and scipy's CSR product.
 *
 * Built by `python -m backend.native` (bin/setup, the Dockerfile); without it numpy does the work.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define WORD_BITS 18
#define CHAR_BITS 18
#define CHAR_LOW 2
#define CHAR_HIGH 5
#define RADIX_BITS 8
#define RADIX_PASSES 3
#define SHORT_ROW 32
#define RADIX (1u << RADIX_BITS)

static const uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL;
static const uint64_t BASE = 1000003ULL;

typedef struct {
    char *data;
    size_t used, size;
} Buffer;

/* -1 when memory runs out: the caller raises MemoryError once it holds the GIL again. */
static int reserve(Buffer *b, size_t more) {
    if (b->used + more <= b->size) return 0;
    size_t size = b->size ? b->size : 4096;
    while (size < b->used + more) size *= 2;
    char *data = realloc(b->data, size);
    if (!data) return -1;
    b->data = data;
    b->size = size;
    return 0;
}

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static uint32_t murmurhash3(const uint8_t *data, size_t len) {
    const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
    uint32_t h = 0, k;
    size_t blocks = len / 4;
    for (size_t i = 0; i < blocks; i++) {
        memcpy(&k, data + 4 * i, 4);  /* little-endian hosts only, as numpy's view("<u4") */
        k *= c1; k = rotl32(k, 15); k *= c2;
        h ^= k; h = rotl32(h, 13); h = h * 5 + 0xe6546b64;
    }
    const uint8_t *tail = data + 4 * blocks;
    k = 0;
    switch (len & 3) {
        case 3: k ^= (uint32_t)tail[2] << 16; /* fall through */
        case 2: k ^= (uint32_t)tail[1] << 8; /* fall through */
        case 1: k ^= tail[0]; k *= c1; k = rotl32(k, 15); k *= c2; h ^= k;
    }
    h ^= (uint32_t)len;
    h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16;
    return h;
}

static uint32_t word_column(const uint8_t *data, size_t len) {
    int64_t hashed = (int32_t)murmurhash3(data, len);  /* scikit-learn: abs(int32 hash) % width */
    return (uint32_t)((hashed < 0 ? -hashed : hashed) & ((1 << WORD_BITS) - 1));
}

static inline int is_word(Py_UCS4 c) { return Py_UNICODE_ISALNUM(c) || c == '_'; }
static inline int is_mouth(Py_UCS4 c) { return c > 0 && c < 128 && strchr("()dDpP/\\", (int)c) != NULL; }
static inline int is_eyes(Py_UCS4 c) { return c == ':' || c == ';' || c == '='; }

static size_t put_utf8(uint8_t *out, Py_UCS4 c) {  /* "surrogatepass": lone surrogates as 3 bytes */
    if (c < 0x80) { out[0] = (uint8_t)c; return 1; }
    if (c < 0x800) { out[0] = 0xC0 | (c >> 6); out[1] = 0x80 | (c & 0x3F); return 2; }
    if (c < 0x10000) { out[0] = 0xE0 | (c >> 12); out[1] = 0x80 | ((c >> 6) & 0x3F); out[2] = 0x80 | (c & 0x3F); return 3; }
    out[0] = 0xF0 | (c >> 18); out[1] = 0x80 | ((c >> 12) & 0x3F); out[2] = 0x80 | ((c >> 6) & 0x3F); out[3] = 0x80 | (c & 0x3F);
    return 4;
}

/* Appends the word 1-2-gram columns of one text to `row`. `bytes` holds the UTF-8 tokens. */
static int word_grams(int kind, const void *text, Py_ssize_t n, Buffer *row, Buffer *bytes, Buffer *spans) {
    bytes->used = spans->used = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        Py_UCS4 c = PyUnicode_READ(kind, text, i);
        Py_ssize_t end = i;
        int eaten = 0;
        if (is_word(c)) {
            while (end < n && is_word(PyUnicode_READ(kind, text, end))) end++;
        } else if (c == '!' || c == '?') {
            while (end < n && (PyUnicode_READ(kind, text, end) == '!' || PyUnicode_READ(kind, text, end) == '?')) end++;
        } else if (is_eyes(c)) {
            Py_UCS4 next = i + 1 < n ? PyUnicode_READ(kind, text, i + 1) : 0;
            Py_UCS4 after = i + 2 < n ? PyUnicode_READ(kind, text, i + 2) : 0;
            if (next == '-' && is_mouth(after)) end = i + 3;
            else if (is_mouth(next)) end = i + 2;
            else { i++; continue; }
            eaten = is_word(PyUnicode_READ(kind, text, end - 1));  /* "d"/"p": the word it starts never matches */
        } else {
            i++;
            continue;
        }
        if (reserve(bytes, 4 * (size_t)(end - i)) || reserve(spans, 2 * sizeof(size_t))) return -1;
        size_t start = bytes->used;
        for (Py_ssize_t j = i; j < end; j++) bytes->used += put_utf8((uint8_t *)bytes->data + bytes->used, PyUnicode_READ(kind, text, j));
        size_t *span = (size_t *)(spans->data + spans->used);
        span[0] = start;
        span[1] = bytes->used - start;
        spans->used += 2 * sizeof(size_t);
        i = end;
        if (eaten)
            while (i < n && is_word(PyUnicode_READ(kind, text, i))) i++;
    }
    size_t tokens = spans->used / (2 * sizeof(size_t));
    const size_t *span = (const size_t *)spans->data;
    if (reserve(row, 2 * tokens * sizeof(uint32_t))) return -1;
    uint32_t *out = (uint32_t *)(row->data + row->used);
    for (size_t t = 0; t < tokens; t++) *out++ = word_column((const uint8_t *)bytes->data + span[2 * t], span[2 * t + 1]);
    for (size_t t = 0; t + 1 < tokens; t++) {
        size_t first = span[2 * t + 1], second = span[2 * t + 3];
        if (reserve(bytes, first + second + 1)) return -1;
        uint8_t *gram = (uint8_t *)bytes->data + bytes->used;  /* scratch after the tokens */
        memcpy(gram, bytes->data + span[2 * t], first);
        gram[first] = ' ';
        memcpy(gram + first + 1, bytes->data + span[2 * t + 2], second);
        *out++ = word_column(gram, first + second + 1);
    }
    row->used = (char *)out - row->data;
    return 0;
}

/* Appends the character n-gram columns (plus `offset`) of one text to `row`. */
static int char_grams(int kind, const void *text, Py_ssize_t n, uint32_t offset, Buffer *row) {
    Py_ssize_t i = 0;
    while (i < n) {
        while (i < n && Py_UNICODE_ISSPACE(PyUnicode_READ(kind, text, i))) i++;
        if (i >= n) break;
        Py_ssize_t end = i;
        while (end < n && !Py_UNICODE_ISSPACE(PyUnicode_READ(kind, text, end))) end++;
        Py_ssize_t length = end - i + 2;  /* " word " */
        if (reserve(row, (size_t)length * (CHAR_HIGH - CHAR_LOW + 1) * sizeof(uint32_t))) return -1;
        uint32_t *out = (uint32_t *)(row->data + row->used);
        for (Py_ssize_t s = 0; s < length; s++) {
            uint64_t rolling = 0;
            for (Py_ssize_t k = 0; k < CHAR_HIGH && s + k < length; k++) {
                Py_ssize_t at = s + k;
                uint64_t code = (at == 0 || at == length - 1) ? ' ' : PyUnicode_READ(kind, text, i + at - 1);
                if (code == 0) break;
                rolling = rolling * BASE + code;
                if (k + 1 >= CHAR_LOW)
                    *out++ = ((uint32_t)(((rolling + (uint64_t)(k + 1)) * GOLDEN) >> (64 - CHAR_BITS))) + offset;
            }
        }
        row->used = (char *)out - row->data;
        i = end;
    }
    return 0;
}

/* Sorts a row's columns (below 2**24): insertion sort when short, else three radix passes that
 * leave the sorted keys in `scratch`. Returns where they are. */
static uint32_t *sort_columns(uint32_t *keys, uint32_t *scratch, size_t n) {
    if (n <= SHORT_ROW) {
        for (size_t i = 1; i < n; i++) {
            uint32_t key = keys[i];
            size_t j = i;
            for (; j > 0 && keys[j - 1] > key; j--) keys[j] = keys[j - 1];
            keys[j] = key;
        }
        return keys;
    }
    size_t counts[RADIX];
    uint32_t *from = keys, *to = scratch;
    for (int pass = 0; pass < RADIX_PASSES; pass++) {
        int shift = pass * RADIX_BITS;
        memset(counts, 0, sizeof counts);
        for (size_t i = 0; i < n; i++) counts[(from[i] >> shift) & (RADIX - 1)]++;
        size_t total = 0;
        for (size_t b = 0; b < RADIX; b++) { size_t c = counts[b]; counts[b] = total; total += c; }
        for (size_t i = 0; i < n; i++) to[counts[(from[i] >> shift) & (RADIX - 1)]++] = from[i];
        uint32_t *swap = from; from = to; to = swap;
    }
    return from;
}

static PyObject *counts(PyObject *self, PyObject *args) {
    PyObject *texts;
    int words, chars;
    if (!PyArg_ParseTuple(args, "O!pp", &PyList_Type, &texts, &words, &chars)) return NULL;
    Py_ssize_t n_texts = PyList_GET_SIZE(texts);
    PyObject *indptr = PyByteArray_FromStringAndSize(NULL, (n_texts + 1) * (Py_ssize_t)sizeof(int64_t));
    if (!indptr) return NULL;
    int64_t *ptr = (int64_t *)PyByteArray_AS_STRING(indptr);
    Buffer row = {0}, scratch = {0}, bytes = {0}, spans = {0}, indices = {0}, values = {0};
    ptr[0] = 0;
    for (Py_ssize_t t = 0; t < n_texts; t++) {
        if (!PyUnicode_Check(PyList_GET_ITEM(texts, t))) { PyErr_SetString(PyExc_TypeError, "texts must be str"); goto fail; }
    }
    int failed = 0;
    /* Plain memory only from here: the list is the caller's own (`_counts` builds it), so no other
     * thread changes it, and web threads hash their requests' texts side by side. */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t t = 0; t < n_texts && !failed; t++) {
        PyObject *text = PyList_GET_ITEM(texts, t);
        int kind = PyUnicode_KIND(text);
        const void *data = PyUnicode_DATA(text);
        Py_ssize_t n = PyUnicode_GET_LENGTH(text);
        row.used = 0;
        if ((words && word_grams(kind, data, n, &row, &bytes, &spans)) || (chars && char_grams(kind, data, n, words ? 1u << WORD_BITS : 0, &row))) {
            failed = 1;
            break;
        }
        size_t m = row.used / sizeof(uint32_t);
        if (reserve(&scratch, row.used) || reserve(&indices, row.used) || reserve(&values, m * sizeof(float))) { failed = 1; break; }
        const uint32_t *keys = sort_columns((uint32_t *)row.data, (uint32_t *)scratch.data, m);
        int32_t *column = (int32_t *)(indices.data + indices.used);
        float *count = (float *)(values.data + values.used);
        size_t unique = 0;
        for (size_t i = 0; i < m; i++) {
            if (unique && (uint32_t)column[unique - 1] == keys[i]) count[unique - 1] += 1.0f;
            else { column[unique] = (int32_t)keys[i]; count[unique] = 1.0f; unique++; }
        }
        indices.used += unique * sizeof(int32_t);
        values.used += unique * sizeof(float);
        ptr[t + 1] = ptr[t] + (int64_t)unique;
    }
    Py_END_ALLOW_THREADS
    if (failed) { PyErr_NoMemory(); goto fail; }
    PyObject *result = Py_BuildValue("(NNN)", indptr, PyByteArray_FromStringAndSize(indices.data, (Py_ssize_t)indices.used),
                                     PyByteArray_FromStringAndSize(values.data, (Py_ssize_t)values.used));
    free(row.data); free(scratch.data); free(bytes.data); free(spans.data); free(indices.data); free(values.data);
    return result;
fail:
    Py_DECREF(indptr);
    free(row.data); free(scratch.data); free(bytes.data); free(spans.data); free(indices.data); free(values.data);
    return NULL;
}

/* Decision values (rows x outputs, float32) of sublinear TF-IDF rows times extended weights:
 * column c is at position ranks[c / 64] + popcount of the lower bits of bits[c / 64] when its bit
 * is set, else at the unseen row of its block (n_seen + block). */
static PyObject *linear_scores(PyObject *self, PyObject *args) {
    Py_buffer indptr, indices, counts, bits, ranks, idf, coef, logs;
    Py_ssize_t n_rows, n_seen, outputs, block_start;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*nnnn", &indptr, &indices, &counts, &bits, &ranks, &idf, &coef, &logs,
                          &n_rows, &n_seen, &outputs, &block_start))
        return NULL;
    PyObject *result = NULL;
    const int64_t *ptr = indptr.buf;
    const int32_t *column = indices.buf;
    const float *count = counts.buf, *idf_of = idf.buf, *weights = coef.buf, *log_of = logs.buf;
    const uint64_t *bit_words = bits.buf;
    const int64_t *rank = ranks.buf;
    Py_ssize_t n_logs = logs.len / (Py_ssize_t)sizeof(float), n_entries = indices.len / (Py_ssize_t)sizeof(int32_t);
    if (indptr.len != (n_rows + 1) * (Py_ssize_t)sizeof(int64_t) || counts.len != n_entries * (Py_ssize_t)sizeof(float)
        || ptr[0] != 0 || ptr[n_rows] != n_entries || coef.len != (n_seen + 2) * outputs * (Py_ssize_t)sizeof(float)
        || idf.len != (n_seen + 2) * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "linear_scores: arrays do not fit together");
        goto done;
    }
    result = PyByteArray_FromStringAndSize(NULL, n_rows * outputs * (Py_ssize_t)sizeof(float));
    if (!result) goto done;
    float *scores = (float *)PyByteArray_AS_STRING(result);
    memset(scores, 0, (size_t)(n_rows * outputs) * sizeof(float));
    int64_t widest = 0;
    for (Py_ssize_t r = 0; r < n_rows; r++) {
        if (ptr[r + 1] < ptr[r]) { PyErr_SetString(PyExc_ValueError, "linear_scores: bad indptr"); Py_CLEAR(result); goto done; }
        if (ptr[r + 1] - ptr[r] > widest) widest = ptr[r + 1] - ptr[r];
    }
    Buffer scratch = {0};
    if (reserve(&scratch, (size_t)widest * (sizeof(float) + sizeof(int64_t)) + 1)) { PyErr_NoMemory(); Py_CLEAR(result); goto done; }
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS  /* plain arrays only from here: the pool scores chunks on several threads */
    for (Py_ssize_t r = 0; r < n_rows && !bad; r++) {
        int64_t first = ptr[r], end = ptr[r + 1];
        float *value = (float *)scratch.data;
        int64_t *position = (int64_t *)(scratch.data + (size_t)widest * sizeof(float));
        double norm[2] = {0.0, 0.0};
        for (int64_t e = first; e < end; e++) {
            int32_t c = column[e];
            int64_t n = (int64_t)count[e];
            if (c < 0 || (Py_ssize_t)(c >> 6) >= bits.len / (Py_ssize_t)sizeof(uint64_t) || n < 1 || n > n_logs
                || (float)n != count[e]) { bad = 1; break; }
            uint64_t word = bit_words[c >> 6], bit = (uint64_t)(c & 63);
            int block = c >= block_start;
            int64_t at = (word >> bit) & 1 ? rank[c >> 6] + __builtin_popcountll(word & ((1ULL << bit) - 1)) : n_seen + block;
            float v = log_of[n - 1];
            v += 1.0f;
            v *= idf_of[at];
            value[e - first] = v;
            position[e - first] = at;
            float square = v * v;
            norm[block] += (double)square;
        }
        if (bad) break;
        norm[0] = sqrt(norm[0]);
        norm[1] = sqrt(norm[1]);
        float *y = scores + r * outputs;
        for (int64_t e = first; e < end; e++) {
            float a = (float)((double)value[e - first] / norm[column[e] >= block_start]);
            const float *x = weights + position[e - first] * outputs;
            for (Py_ssize_t k = 0; k < outputs; k++) {
                float product = a * x[k];
                y[k] += product;
            }
        }
    }
    Py_END_ALLOW_THREADS
    free(scratch.data);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "linear_scores: a column out of range or a count that is not a whole number in the log table");
        Py_CLEAR(result);
    }
done:
    PyBuffer_Release(&indptr); PyBuffer_Release(&indices); PyBuffer_Release(&counts); PyBuffer_Release(&bits);
    PyBuffer_Release(&ranks); PyBuffer_Release(&idf); PyBuffer_Release(&coef); PyBuffer_Release(&logs);
    return result;
}

static PyMethodDef methods[] = {
    {"counts", counts, METH_VARARGS,
     "counts(lowered_texts, words, chars) -> (indptr int64, indices int32, counts float32) as bytearrays: "
     "the CSR arrays of the hashed word and/or character n-gram counts (characters after words), columns sorted"},
    {"linear_scores", linear_scores, METH_VARARGS,
     "linear_scores(indptr int64, indices int32, counts float32, bits uint64, ranks int64, idf float32, coef float32, "
     "logs float32, rows, seen, outputs, second_block_start) -> float32 decision values before the intercept, as a bytearray"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_compiled", "The compiled kernels of backend/hashing.py and backend/estimator.py.", -1, methods};

PyMODINIT_FUNC PyInit__compiled(void) { return PyModule_Create(&module); }
