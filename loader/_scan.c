/* The loader's batch scan in one C pass per needle: which lines of a zstd frame's bytes
 * must be decoded in Python. The rules are loader.parse's (scan_batch) and
 * loader.markets' (scan_markets); loader/scan.py holds the Python version of the same
 * rules and tests/loader/test_scan.py holds the two to the same answers on every input.
 *
 * lines(data) -> (records, frames, decode, markets)
 *   records  the newlines in data (whole lines, each ending in "\n")
 *   frames   the lines that start with FRAME_PREFIX
 *   decode   start offsets, ascending, of the lines the trade scan decodes: a line where
 *            TRADE_WORD occurs other than as a key, or that holds "\u" or "b64" in
 *            quotes, and, when some line lacks FRAME_PREFIX, every such line
 *   markets  start offsets, ascending, of the lines holding a MARKET_NEEDLES entry
 *
 * Only reads data; holds no reference past the call; releases the GIL while it looks.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

static const char FRAME_PREFIX[] = "{\"type\":\"frame\",";
static const char TRADE_WORD[] = "last_trade_price";
static const char ESCAPE[] = "\\u";
static const char B64_KEY[] = "\"b64\"";

enum { DECODE = 1, MARKET = 2 };

/* Each needle is found by a pair of its bytes that is rare in the feed (the anchor),
 * then compared whole: one pass over the batch finds the newlines and every needle. */
typedef struct {
    const char *text;
    size_t len;
    size_t anchor;
    unsigned char mark;
    int trade; /* TRADE_WORD: pass over keys */
} Needle;

static const Needle NEEDLES[] = {
    {TRADE_WORD, sizeof(TRADE_WORD) - 1, 0, DECODE, 1},      /* "la" */
    {ESCAPE, sizeof(ESCAPE) - 1, 0, DECODE, 0},          /* "\u" */
    {B64_KEY, sizeof(B64_KEY) - 1, 3, DECODE, 0},         /* "4\"" */
    {"\"type\":\"meta\"", 13, 11, MARKET, 0}, /* "a\"" */
    {"new_market", 10, 2, MARKET, 0},    /* "w_" */
    {"market_resolved", 15, 11, MARKET, 0}, /* "lv" */
};
#define N_NEEDLES (sizeof(NEEDLES) / sizeof(NEEDLES[0]))

typedef struct {
    Py_ssize_t *items;
    Py_ssize_t n, cap;
} Starts;

static int push(Starts *s, Py_ssize_t v) {
    if (s->n == s->cap) {
        Py_ssize_t cap = s->cap ? 2 * s->cap : 64;
        Py_ssize_t *items = PyMem_RawRealloc(s->items, (size_t)cap * sizeof(Py_ssize_t));
        if (items == NULL)
            return -1;
        s->items = items;
        s->cap = cap;
    }
    s->items[s->n++] = v;
    return 0;
}

typedef struct {
    const char *data;
    Py_ssize_t size;
    Py_ssize_t records, frames;
    Py_ssize_t line;    /* where the current line starts */
    unsigned char mark; /* what the current line holds so far */
    Starts decode, markets, bare; /* bare: lines without the frame prefix */
    int failed;
} Scan;

/* After TRADE_WORD at pos: an escaped quote, blanks or escaped blanks, then a colon
 * (scan.KEY_TAIL) make it a key. None of these bytes is a newline. */
static int is_key(const Scan *s, Py_ssize_t pos) {
    const char *p = s->data + pos + sizeof(TRADE_WORD) - 1, *end = s->data + s->size;
    if (end - p < 2 || p[0] != '\\' || p[1] != '"')
        return 0;
    p += 2;
    while (p < end) {
        if (*p == ' ' || *p == '\t' || *p == '\r')
            p += 1;
        else if (*p == '\\' && end - p >= 2 && (p[1] == 'n' || p[1] == 'r' || p[1] == 't'))
            p += 2;
        else
            break;
    }
    return p < end && *p == ':';
}

/* The line from s->line to end (a newline or the end of the data) is complete. */
static void end_line(Scan *s, Py_ssize_t end) {
    const size_t plen = sizeof(FRAME_PREFIX) - 1;
    int framed = (size_t)(end - s->line) >= plen && memcmp(s->data + s->line, FRAME_PREFIX, plen) == 0;
    s->frames += framed;
    if ((s->mark & DECODE && push(&s->decode, s->line) < 0) ||
        (s->mark & MARKET && push(&s->markets, s->line) < 0) ||
        (!framed && push(&s->bare, s->line) < 0))
        s->failed = 1;
    s->line = end + 1;
    s->mark = 0;
}

/* Position q holds a newline or the first byte of an anchor pair. */
static inline void visit(Scan *s, Py_ssize_t q) {
    if (s->data[q] == '\n') {
        s->records++;
        end_line(s, q);
        return;
    }
    for (size_t i = 0; i < N_NEEDLES; i++) {
        const Needle *n = &NEEDLES[i];
        size_t len = n->len;
        Py_ssize_t at = q - (Py_ssize_t)n->anchor;
        if (s->data[q] != n->text[n->anchor] || q + 1 >= s->size ||
            s->data[q + 1] != n->text[n->anchor + 1] || at < 0 ||
            at + (Py_ssize_t)len > s->size || memcmp(s->data + at, n->text, len) != 0)
            continue;
        if (!(n->trade && is_key(s, at)))
            s->mark |= n->mark;
    }
}

static inline int is_anchor(const char *p) {
    for (size_t i = 0; i < N_NEEDLES; i++)
        if (p[0] == NEEDLES[i].text[NEEDLES[i].anchor] &&
            p[1] == NEEDLES[i].text[NEEDLES[i].anchor + 1])
            return 1;
    return 0;
}

static void scan(Scan *s) {
    Py_ssize_t q = 0;
#ifdef __SSE2__
    __m128i nl = _mm_set1_epi8('\n'), first[N_NEEDLES], second[N_NEEDLES];
    for (size_t i = 0; i < N_NEEDLES; i++) {
        first[i] = _mm_set1_epi8(NEEDLES[i].text[NEEDLES[i].anchor]);
        second[i] = _mm_set1_epi8(NEEDLES[i].text[NEEDLES[i].anchor + 1]);
    }
    for (; q + 17 <= s->size; q += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s->data + q));
        __m128i b = _mm_loadu_si128((const __m128i *)(s->data + q + 1));
        __m128i hit = _mm_cmpeq_epi8(a, nl);
        for (size_t i = 0; i < N_NEEDLES; i++)
            hit = _mm_or_si128(hit, _mm_and_si128(_mm_cmpeq_epi8(a, first[i]),
                                                  _mm_cmpeq_epi8(b, second[i])));
        unsigned bits = (unsigned)_mm_movemask_epi8(hit);
        while (bits) {
            visit(s, q + __builtin_ctz(bits));
            bits &= bits - 1;
        }
    }
#endif
    for (; q < s->size; q++)
        if (s->data[q] == '\n' || (q + 1 < s->size && is_anchor(s->data + q)))
            visit(s, q);
    if (s->line < s->size)
        end_line(s, s->size); /* a last line without its newline */
}

/* The sorted union of two ascending lists, as a Python list. */
static PyObject *merged(const Starts *a, const Starts *b) {
    PyObject *out = PyList_New(0);
    Py_ssize_t i = 0, j = 0;
    while (out != NULL && (i < a->n || j < b->n)) {
        Py_ssize_t v;
        if (j >= b->n || (i < a->n && a->items[i] <= b->items[j])) {
            v = a->items[i++];
            if (j < b->n && b->items[j] == v)
                j++;
        } else
            v = b->items[j++];
        PyObject *item = PyLong_FromSsize_t(v);
        if (item == NULL || PyList_Append(out, item) < 0)
            Py_CLEAR(out);
        Py_XDECREF(item);
    }
    return out;
}

static PyObject *lines(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    Scan s;
    memset(&s, 0, sizeof(s));
    s.data = buf.buf;
    s.size = buf.len;
    Py_BEGIN_ALLOW_THREADS
    scan(&s);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (s.failed)
        PyErr_NoMemory();
    else {
        Starts none = {NULL, 0, 0};
        PyObject *decode = merged(&s.decode, s.frames != s.records ? &s.bare : &none);
        PyObject *markets = decode ? merged(&s.markets, &none) : NULL;
        if (markets)
            result = Py_BuildValue("(nnNN)", s.records, s.frames, decode, markets);
        else
            Py_XDECREF(decode);
    }
    PyMem_RawFree(s.decode.items);
    PyMem_RawFree(s.markets.items);
    PyMem_RawFree(s.bare.items);
    PyBuffer_Release(&buf);
    return result;
}

static PyObject *constants(void) {
    PyObject *needles = PyTuple_New(0);
    for (size_t i = 0; needles != NULL && i < N_NEEDLES; i++) {
        if (NEEDLES[i].mark != MARKET)
            continue;
        PyObject *b = PyBytes_FromString(NEEDLES[i].text);
        if (b == NULL || _PyTuple_Resize(&needles, PyTuple_GET_SIZE(needles) + 1) < 0) {
            Py_XDECREF(b);
            Py_XDECREF(needles);
            return NULL;
        }
        PyTuple_SET_ITEM(needles, PyTuple_GET_SIZE(needles) - 1, b);
    }
    if (needles == NULL)
        return NULL;
    return Py_BuildValue("{sysysysysN}", "frame_prefix", FRAME_PREFIX, "trade_word", TRADE_WORD,
                         "escape", ESCAPE, "b64_key", B64_KEY, "market_needles", needles);
}

static PyMethodDef methods[] = {
    {"lines", lines, METH_O,
     "lines(data) -> (records, frames, decode, markets): see loader/scan.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "loader._scan",
                                    "The loader's batch scan in C (loader/scan.py).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__scan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *c = constants();
    if (c == NULL || PyModule_AddObject(m, "CONSTANTS", c) < 0) {
        Py_XDECREF(c);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
