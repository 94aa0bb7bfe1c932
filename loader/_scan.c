/* The loader's batch scan in C: which lines of a zstd frame's bytes must be decoded,
 * found in one vector pass, and the trade lines of the feed's usual shape read without
 * decoding them (trade(), below). The rules are those of loader/scan.py (the Python
 * twin) and loader.parse._fast_trade; tests/loader/test_scan.py holds them together.
 *
 * lines(data) -> (records, frames, decode, markets)
 *   records  the newlines in data (whole lines, each ending in "\n")
 *   frames   the lines that start with FRAME_PREFIX
 *   decode   start offsets, ascending, of the lines the trade scan decodes: a line where
 *            TRADE_WORD occurs other than as a key, or that holds "\u" or "b64" in
 *            quotes, and, when some line lacks FRAME_PREFIX, every such line
 *   markets  start offsets, ascending, of the lines holding a MARKET needle below
 *
 * lines() only reads data, holds no reference past the call and releases the GIL while
 * it looks; the readers of single lines and book_copy() hold the GIL throughout.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <float.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
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

/* The vector loop, for 16 bytes (SSE2) or 32 (AVX2) at a time: returns where the
 * byte-by-byte tail starts. V: the vector type; P: the intrinsics' prefix. */
#define VECTOR_SCAN(V, W, P, SI)                                                              \
    Py_ssize_t q = 0;                                                                         \
    V nl = P##_set1_epi8('\n'), first[N_NEEDLES], second[N_NEEDLES];                          \
    for (size_t i = 0; i < N_NEEDLES; i++) {                                                  \
        first[i] = P##_set1_epi8(NEEDLES[i].text[NEEDLES[i].anchor]);                         \
        second[i] = P##_set1_epi8(NEEDLES[i].text[NEEDLES[i].anchor + 1]);                    \
    }                                                                                         \
    for (; q + W + 1 <= s->size; q += W) {                                                    \
        V a = P##_loadu_##SI((const V *)(s->data + q));                                       \
        V b = P##_loadu_##SI((const V *)(s->data + q + 1));                                   \
        V hit = P##_cmpeq_epi8(a, nl);                                                        \
        for (size_t i = 0; i < N_NEEDLES; i++)                                                \
            hit = P##_or_##SI(hit, P##_and_##SI(P##_cmpeq_epi8(a, first[i]),                  \
                                                P##_cmpeq_epi8(b, second[i])));               \
        unsigned bits = (unsigned)P##_movemask_epi8(hit);                                     \
        while (bits) {                                                                        \
            visit(s, q + __builtin_ctz(bits));                                                \
            bits &= bits - 1;                                                                 \
        }                                                                                     \
    }                                                                                         \
    return q;

#ifdef __SSE2__
static Py_ssize_t scan_sse2(Scan *s) { VECTOR_SCAN(__m128i, 16, _mm, si128) }
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_AVX2 1
__attribute__((target("avx2"))) static Py_ssize_t scan_avx2(Scan *s) {
    VECTOR_SCAN(__m256i, 32, _mm256, si256)
}
#endif

static void scan(Scan *s) {
    Py_ssize_t q = 0;
#ifdef HAVE_AVX2
    if (__builtin_cpu_supports("avx2"))
        q = scan_avx2(s);
    else
#endif
#ifdef __SSE2__
        q = scan_sse2(s);
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

/* ---- trade(data, start, end): one trade frame line of the feed's usual shape ----
 *
 * The line data[start:end] as the writer writes a text frame,
 *   {"type":"frame","ts_ns":D,"conn":D,"n":D,"text":"..."}
 * whose text is one JSON object of string values with no escape but \" (printable
 * ASCII), a last_trade_price event that loader.parse._fast_trade would take. Gives
 *   (conn, ts_ns, ms, asset_id, side, price, size, market, fee_rate_bps, tx_hash)
 * with fee_rate_bps and tx_hash None when absent or empty, or None for anything else,
 * which then takes the Python path. The checks are _fast_trade's: a plain decimal
 * price of at most 1 and size, a timestamp of at most 16 digits within the accepted
 * range, a record time within it, ids of 1 to 256 characters.
 */

#define MAX_NUMBER_CHARS 64
#define MAX_TEXT_CHARS 256
#define MAX_STAMP_DIGITS 16
static const long long MIN_TIME_MS = 1577836800000LL;
static const long long MAX_TIME_MS = 4102444800000LL;

typedef struct {
    const char *p;
    Py_ssize_t len;
    int seen;
} Field;

/* A key looked for, with its length. */
typedef struct {
    const char *text;
    size_t len;
} Name;
#define NAME(s) {s, sizeof(s) - 1}

enum { F_EVENT, F_ASSET, F_MARKET, F_PRICE, F_SIZE, F_SIDE, F_STAMP, F_FEE, F_TX, N_FIELDS };
static const Name FIELD_NAMES[N_FIELDS] = {
    NAME("event_type"), NAME("asset_id"),  NAME("market"),       NAME("price"),
    NAME("size"),       NAME("side"),      NAME("timestamp"),    NAME("fee_rate_bps"),
    NAME("transaction_hash"),
};

static int literal(const char **p, const char *end, const char *text) {
    size_t n = strlen(text);
    if ((size_t)(end - *p) < n || memcmp(*p, text, n) != 0)
        return 0;
    *p += n;
    return 1;
}

/* A JSON integer that fits in 63 bits: no sign, no leading zero. */
static int integer(const char **p, const char *end, long long *out) {
    const char *q = *p;
    long long v = 0;
    for (; q < end && *q >= '0' && *q <= '9'; q++) {
        if (v > (LLONG_MAX - (*q - '0')) / 10)
            return 0;
        v = v * 10 + (*q - '0');
    }
    if (q == *p || (q - *p > 1 && **p == '0'))
        return 0;
    *p = q;
    *out = v;
    return 1;
}

static int equals(const Field *f, const char *text) {
    return f->seen && (size_t)f->len == strlen(text) && memcmp(f->p, text, (size_t)f->len) == 0;
}

/* values.plain_decimal: digits with at most one point, at most MAX_NUMBER_CHARS. */
static int plain_decimal(const Field *f, double *out) {
    if (!f->seen || f->len == 0 || f->len > MAX_NUMBER_CHARS)
        return 0;
    int points = 0, digits = 0;
    for (Py_ssize_t i = 0; i < f->len; i++) {
        char c = f->p[i];
        if (c == '.' && !points)
            points = 1;
        else if (c >= '0' && c <= '9')
            digits++;
        else
            return 0;
    }
    if (!digits)
        return 0;
    /* Exactly float(text) when the digits make an integer below 2**53 and at most 22 of
     * them follow the point: both m and 10**k are doubles exactly, and IEEE division
     * rounds m / 10**k correctly (Clinger's fast path), where doubles are computed as
     * doubles (not on x87, whose extended precision would round twice). */
#if FLT_EVAL_METHOD == 0
    static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    unsigned long long m = 0;
    int fraction = 0, point = 0, fast = 1;
    for (Py_ssize_t i = 0; fast && i < f->len; i++) {
        char c = f->p[i];
        if (c == '.') {
            point = 1;
            continue;
        }
        m = m * 10 + (unsigned long long)(c - '0');
        fraction += point;
        fast = m < (1ULL << 53) && fraction <= 22;
    }
    if (fast) {
        *out = (double)m / POW10[fraction];
        return 1;
    }
#endif
    char text[MAX_NUMBER_CHARS + 1];
    memcpy(text, f->p, (size_t)f->len);
    text[f->len] = 0;
    char *rest;
    double v = PyOS_string_to_double(text, &rest, NULL); /* float(text), exactly */
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (*rest)
        return 0;
    *out = v;
    return 1;
}

static int plain_id(const Field *f) { return f->seen && f->len > 0 && f->len <= MAX_TEXT_CHARS; }

/* An array's objects, each with its fields (price_changes' entries). */
#define MAX_ENTRIES 128
enum { E_ASSET, E_SIDE, E_PRICE, E_SIZE, E_BID, E_ASK, E_HASH, N_ENTRY_FIELDS };
static const Name ENTRY_NAMES[N_ENTRY_FIELDS] = {
    NAME("asset_id"), NAME("side"),     NAME("price"), NAME("size"),
    NAME("best_bid"), NAME("best_ask"), NAME("hash"),
};
typedef struct {
    Field fields[MAX_ENTRIES][N_ENTRY_FIELDS];
    int n, seen;
} Entries;

#define SKIP(p, end)                                                                          \
    while ((p) < (end) && *(p) == ' ')                                                        \
    (p)++

/* A quoted string with no escape (the unescaped text holds no backslash at all). */
static int string(const char **pp, const char *end, const char **start, Py_ssize_t *len) {
    const char *p = *pp;
    if (p == end || *p++ != '"')
        return 0;
    *start = p;
    while (p < end && *p != '"')
        p++;
    if (p == end)
        return 0;
    *len = p - *start;
    *pp = p + 1;
    return 1;
}

static int object_fields(const char **pp, const char *end, const Name *names, int count,
                         Field *fields, const Name *array_key, Entries *entries);

/* The value of array_key: objects of ENTRY_NAMES' fields, at most MAX_ENTRIES. */
static int entry_array(const char **pp, const char *end, Entries *entries) {
    const char *p = *pp;
    if (entries->seen || p == end || *p++ != '[')
        return 0;
    entries->seen = 1;
    SKIP(p, end);
    if (p < end && *p == ']') {
        *pp = p + 1;
        return 1;
    }
    for (;;) {
        if (entries->n == MAX_ENTRIES)
            return 0;
        Field *f = entries->fields[entries->n++];
        memset(f, 0, sizeof(Field) * N_ENTRY_FIELDS);
        if (!object_fields(&p, end, ENTRY_NAMES, N_ENTRY_FIELDS, f, NULL, NULL))
            return 0;
        SKIP(p, end);
        if (p < end && *p == ',') {
            p++;
            SKIP(p, end);
            continue;
        }
        if (p == end || *p++ != ']')
            return 0;
        *pp = p;
        return 1;
    }
}

/* An object of string values at *pp; fields[i] gets the value named names[i]. The key
 * array_key (if any) holds an array of objects instead (entry_array). 0 for any other
 * shape, or a repeated name (left to the JSON decoder's rule). */
static int object_fields(const char **pp, const char *end, const Name *names, int count,
                         Field *fields, const Name *array_key, Entries *entries) {
    const char *p = *pp;
    SKIP(p, end);
    if (p == end || *p++ != '{')
        return 0;
    SKIP(p, end);
    if (p < end && *p == '}') {
        *pp = p + 1;
        return 1;
    }
    for (;;) {
        const char *key, *value;
        Py_ssize_t key_len, value_len;
        SKIP(p, end);
        if (!string(&p, end, &key, &key_len))
            return 0;
        SKIP(p, end);
        if (p == end || *p++ != ':')
            return 0;
        SKIP(p, end);
        if (array_key && (size_t)key_len == array_key->len &&
            memcmp(key, array_key->text, (size_t)key_len) == 0) {
            if (!entry_array(&p, end, entries))
                return 0;
        } else {
            if (!string(&p, end, &value, &value_len))
                return 0;
            for (int i = 0; i < count; i++) {
                if ((size_t)key_len == names[i].len &&
                    memcmp(key, names[i].text, (size_t)key_len) == 0) {
                    if (fields[i].seen)
                        return 0;
                    fields[i] = (Field){value, value_len, 1};
                }
            }
        }
        SKIP(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p == end || *p++ != '}')
            return 0;
        *pp = p;
        return 1;
    }
}

/* The whole unescaped text is one such object (blanks around it allowed). */
static int whole_object(const char *p, const char *end, const Name *names, int count,
                        Field *fields, const Name *array_key, Entries *entries) {
    if (!object_fields(&p, end, names, count, fields, array_key, entries))
        return 0;
    SKIP(p, end);
    return p == end;
}

static PyObject *text_or_none(const Field *f) {
    if (!f->seen || f->len == 0)
        Py_RETURN_NONE;
    return PyUnicode_DecodeASCII(f->p, f->len, NULL);
}

/* A frame line as the writer writes a text frame, its text unescaped: \" is the one
 * escape taken, and every byte must be printable ASCII. */
typedef struct {
    long long ts_ns, conn;
    char small[2048];
    char *text, *end;
} FrameText;

static int frame_text(const char *p, const char *end, FrameText *ft) {
    long long n;
    ft->text = ft->end = ft->small;
    if (!literal(&p, end, "{\"type\":\"frame\",\"ts_ns\":") || !integer(&p, end, &ft->ts_ns) ||
        !literal(&p, end, ",\"conn\":") || !integer(&p, end, &ft->conn) ||
        !literal(&p, end, ",\"n\":") || !integer(&p, end, &n) ||
        !literal(&p, end, ",\"text\":\"") || end - p < 2 || end[-1] != '}' || end[-2] != '"')
        return 0;
    const char *body_end = end - 2;
    if (body_end - p > (Py_ssize_t)sizeof(ft->small)) {
        ft->text = PyMem_Malloc((size_t)(body_end - p));
        if (ft->text == NULL) {
            ft->text = ft->small;
            return 0;
        }
    }
    char *t = ft->text;
    const char *q = p;
    for (;;) { /* undo the one escape allowed */
#ifdef __SSE2__
        /* 16 bytes at a time up to the next byte that is no plain printable character */
        const __m128i space = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
        const __m128i slash = _mm_set1_epi8('\\'), quote = _mm_set1_epi8('"');
        while (body_end - q >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)q);
            __m128i odd = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(v, space), _mm_cmpeq_epi8(v, del)),
                                       _mm_or_si128(_mm_cmpeq_epi8(v, slash), _mm_cmpeq_epi8(v, quote)));
            _mm_storeu_si128((__m128i *)t, v); /* the text buffer has room for the body */
            int mask = _mm_movemask_epi8(odd); /* bytes >= 0x80 are below 0x20 as signed */
            if (mask) {
                int n = __builtin_ctz((unsigned)mask);
                q += n;
                t += n;
                break;
            }
            q += 16;
            t += 16;
        }
#endif
        if (q >= body_end)
            break;
        unsigned char c = (unsigned char)*q;
        if (c == '\\' && q + 1 < body_end && q[1] == '"') {
            *t++ = '"';
            q += 2;
        } else if (c < 0x20 || c >= 0x7f || c == '\\' || c == '"')
            return 0;
        else
            *t++ = (char)*q++;
    }
    ft->end = t;
    return ft->ts_ns >= MIN_TIME_MS * 1000000LL && ft->ts_ns <= MAX_TIME_MS * 1000000LL;
}

static void frame_text_free(FrameText *ft) {
    if (ft->text != ft->small)
        PyMem_Free(ft->text);
}

/* A Python call's (data, start, end), checked. */
static int line_args(PyObject *args, Py_buffer *buf, const char **p, const char **end) {
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "y*nn", buf, &start, &stop))
        return 0;
    if (start < 0 || stop > buf->len || start > stop) {
        PyBuffer_Release(buf);
        PyErr_SetString(PyExc_ValueError, "start and end must lie within the data");
        return 0;
    }
    *p = (const char *)buf->buf + start;
    *end = (const char *)buf->buf + stop;
    return 1;
}

/* values.timestamp for text: 1 to 16 digits, a plausible time. */
static int stamp(const Field *f, long long *ms) {
    if (!f->seen || f->len == 0 || f->len > MAX_STAMP_DIGITS)
        return 0;
    long long v = 0;
    for (Py_ssize_t i = 0; i < f->len; i++) {
        char c = f->p[i];
        if (c < '0' || c > '9')
            return 0;
        v = v * 10 + (c - '0');
    }
    *ms = v;
    return v >= MIN_TIME_MS && v <= MAX_TIME_MS;
}

static PyObject *trade(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    const char *p, *end;
    if (!line_args(args, &buf, &p, &end))
        return NULL;
    FrameText ft;
    Field f[N_FIELDS];
    memset(f, 0, sizeof(f));
    double price, size;
    long long ms;
    PyObject *result;
    if (!frame_text(p, end, &ft) || !whole_object(ft.text, ft.end, FIELD_NAMES, N_FIELDS, f, NULL, NULL) ||
        !equals(&f[F_EVENT], "last_trade_price") ||
        !(equals(&f[F_SIDE], "BUY") || equals(&f[F_SIDE], "SELL")) ||
        !plain_decimal(&f[F_PRICE], &price) || price > 1.0 || !plain_decimal(&f[F_SIZE], &size) ||
        !stamp(&f[F_STAMP], &ms) || !plain_id(&f[F_ASSET]) || !plain_id(&f[F_MARKET]) ||
        (f[F_TX].len > 0 && !plain_id(&f[F_TX])))
        result = Py_NewRef(Py_None);
    else
        result = Py_BuildValue("(LLLNsddNNN)", ft.conn, ft.ts_ns, ms,
                               PyUnicode_DecodeASCII(f[F_ASSET].p, f[F_ASSET].len, NULL),
                               f[F_SIDE].len == 3 ? "BUY" : "SELL", price, size,
                               PyUnicode_DecodeASCII(f[F_MARKET].p, f[F_MARKET].len, NULL),
                               text_or_none(&f[F_FEE]), text_or_none(&f[F_TX]));
    frame_text_free(&ft);
    PyBuffer_Release(&buf);
    return result;
}

/* ---- price_changes(data, start, end): one price_change frame line of the feed's shape
 *
 * The frame's text is one price_change event of the current format: string values, and
 * price_changes an array of objects of string values, as loader.bookscan's fast path
 * takes it, or an array of such events. Called as price_changes(data, start, end,
 * ChangeRow, event_time, received_time), it gives (conn, rows): the rows of every event
 * as the fast path builds them, ts from event_time(ms), received_at from
 * received_time(ts_ns); or None for anything else. The
 * checks are the fast path's: prices in [0, 1], plain decimals, ids of 1 to 256
 * characters, a timestamp of at most 16 digits within the accepted range.
 */
enum { P_EVENT, P_MARKET, P_STAMP, N_CHANGE_FIELDS };
static const Name CHANGE_NAMES[N_CHANGE_FIELDS] = {
    NAME("event_type"), NAME("market"), NAME("timestamp"),
};
static const Name CHANGES_KEY = NAME("price_changes");

/* A price: a plain decimal in [0, 1]; or, when blank_ok, "" for None (*none set). */
static int price_of(const Field *f, int blank_ok, double *v, int *none) {
    *none = 0;
    if (blank_ok && f->seen && f->len == 0) {
        *none = 1;
        return 1;
    }
    return plain_decimal(f, v) && *v >= 0.0 && *v <= 1.0;
}

static PyObject *number_or_none(double v, int none) {
    if (none)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(v);
}

typedef struct {
    PyTypeObject *row_type; /* loader.books.ChangeRow */
    PyObject *event_time;   /* ms -> the event's datetime */
    PyObject *received;     /* the record's receive datetime */
    PyObject *rows;         /* the list the rows go to */
    PyObject *last_ts;      /* the datetime of last_ms, kept for the next event */
    long long last_ms;
} Out;

static PyObject *SIDES[2]; /* "BUY", "SELL" */

/* Ten items into a new ChangeRow (a tuple subclass), each reference stolen. */
static PyObject *change_row(PyTypeObject *type, PyObject **items) {
    PyObject *row = type->tp_alloc(type, 10);
    for (int i = 0; i < 10; i++) {
        if (row == NULL || items[i] == NULL) {
            Py_XDECREF(items[i]);
            continue;
        }
        PyTuple_SET_ITEM(row, i, items[i]);
    }
    for (int i = 0; row != NULL && i < 10; i++)
        if (items[i] == NULL)
            Py_CLEAR(row);
    return row;
}

/* One price_change event, checked: its time, market and each entry's numbers. */
typedef struct {
    long long ms;
    Field market;
    double num[MAX_ENTRIES][4]; /* price, size, best bid, best ask */
    int none[MAX_ENTRIES][2];   /* best bid, best ask given as "" */
} Event;

/* The price_change event at *pp (an object) into ev and entries: 1 when it is of the
 * shape, else 0. */
static int read_event(const char **pp, const char *end, Entries *entries, Event *ev) {
    Field f[N_CHANGE_FIELDS];
    memset(f, 0, sizeof(f));
    entries->n = entries->seen = 0;
    if (!object_fields(pp, end, CHANGE_NAMES, N_CHANGE_FIELDS, f, &CHANGES_KEY, entries) ||
        !entries->seen || !equals(&f[P_EVENT], "price_change") || !plain_id(&f[P_MARKET]) ||
        !stamp(&f[P_STAMP], &ev->ms))
        return 0;
    for (int i = 0; i < entries->n; i++) {
        const Field *e = entries->fields[i];
        int ignored;
        if (!plain_id(&e[E_ASSET]) || !(equals(&e[E_SIDE], "BUY") || equals(&e[E_SIDE], "SELL")) ||
            !price_of(&e[E_PRICE], 0, &ev->num[i][0], &ignored) ||
            !plain_decimal(&e[E_SIZE], &ev->num[i][1]) || !e[E_BID].seen ||
            !price_of(&e[E_BID], 1, &ev->num[i][2], &ev->none[i][0]) || !e[E_ASK].seen ||
            !price_of(&e[E_ASK], 1, &ev->num[i][3], &ev->none[i][1]) ||
            e[E_HASH].len > MAX_TEXT_CHARS)
            return 0;
    }
    ev->market = f[P_MARKET];
    return 1;
}

/* One price_change event at *pp (an object): its rows appended to out->rows. 0 when it
 * is not of the shape (nothing appended), -1 on an error (set). */
static int change_event(const char **pp, const char *end, Entries *entries, Out *out) {
    Event ev;
    if (!read_event(pp, end, entries, &ev))
        return 0;
    if (out->last_ts == NULL || out->last_ms != ev.ms) {
        Py_XDECREF(out->last_ts);
        out->last_ts = PyObject_CallFunction(out->event_time, "L", ev.ms);
        out->last_ms = ev.ms;
        if (out->last_ts == NULL)
            return -1;
    }
    PyObject *market = PyUnicode_DecodeASCII(ev.market.p, ev.market.len, NULL);
    if (market == NULL)
        return -1;
    for (int i = 0; i < entries->n; i++) {
        const Field *e = entries->fields[i];
        PyObject *items[10] = {
            Py_NewRef(out->last_ts),
            PyUnicode_DecodeASCII(e[E_ASSET].p, e[E_ASSET].len, NULL),
            Py_NewRef(market),
            Py_NewRef(SIDES[e[E_SIDE].len != 3]),
            PyFloat_FromDouble(ev.num[i][0]),
            PyFloat_FromDouble(ev.num[i][1]),
            number_or_none(ev.num[i][2], ev.none[i][0]),
            number_or_none(ev.num[i][3], ev.none[i][1]),
            text_or_none(&e[E_HASH]),
            Py_NewRef(out->received),
        };
        PyObject *row = change_row(out->row_type, items);
        if (row == NULL || PyList_Append(out->rows, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(market);
            return -1;
        }
        Py_DECREF(row);
    }
    Py_DECREF(market);
    return 1;
}

/* The events of a frame's text, one object or an array of them, each handed in turn to
 * event(pp, end, context): 1 when it took every one and nothing else follows, 0 when it
 * declined one or the text is no such list, -1 on an error (set). */
typedef int (*EachEvent)(const char **pp, const char *end, void *context);

static int each_event(const char *q, const char *end, EachEvent event, void *context) {
    SKIP(q, end);
    int array = q < end && *q == '[';
    if (array)
        q++;
    for (;;) {
        int taken = event(&q, end, context);
        if (taken != 1)
            return taken;
        SKIP(q, end);
        if (!array)
            break;
        if (q < end && *q == ',') {
            q++;
            continue;
        }
        if (q == end || *q++ != ']')
            return 0;
        break;
    }
    SKIP(q, end);
    return q == end;
}

typedef struct {
    Entries *entries;
    Out *out;
} RowsContext;

static int rows_event(const char **pp, const char *end, void *context) {
    RowsContext *r = context;
    return change_event(pp, end, r->entries, r->out);
}

static PyObject *price_changes(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    Py_ssize_t start, stop;
    Out out = {NULL, NULL, NULL, NULL, NULL, 0};
    PyObject *received_time;
    if (!PyArg_ParseTuple(args, "y*nnO!OO", &buf, &start, &stop, &PyType_Type, &out.row_type,
                          &out.event_time, &received_time))
        return NULL;
    if (start < 0 || stop > buf.len || start > stop || !PyType_IsSubtype(out.row_type, &PyTuple_Type)) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "bad bounds, or a row type that is no tuple");
        return NULL;
    }
    const char *p = (const char *)buf.buf + start, *end = (const char *)buf.buf + stop;
    FrameText ft;
    ft.text = ft.small;
    Entries *entries = NULL;
    PyObject *result = NULL;
    /* Most lines that are not price changes are passed over by the escaped key alone. */
    if (memmem(p, (size_t)(end - p), "price_changes\\\"", 15) == NULL || !frame_text(p, end, &ft))
        goto decline;
    entries = PyMem_Malloc(sizeof(Entries)); /* change_event resets what it uses */
    out.rows = PyList_New(0);
    if (entries == NULL || out.rows == NULL) {
        if (entries == NULL)
            PyErr_NoMemory();
        goto done;
    }
    out.received = PyObject_CallFunction(received_time, "L", ft.ts_ns);
    if (out.received == NULL)
        goto done;
    RowsContext context = {entries, &out};
    int taken = each_event(ft.text, ft.end, rows_event, &context);
    if (taken < 0)
        goto done;
    if (taken == 0)
        goto decline;
    result = Py_BuildValue("(LO)", ft.conn, out.rows);
    goto done;
decline:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(out.rows);
    Py_XDECREF(out.received);
    Py_XDECREF(out.last_ts);
    PyMem_Free(entries);
    frame_text_free(&ft);
    PyBuffer_Release(&buf);
    return result;
}

/* ---- book_copy(data, changes, quotes, segment_id, keys, token_key): price_changes()
 * for a whole batch, and best_bid_ask events, straight into COPY rows
 *
 * Every line of data (whole lines) that price_changes() takes is encoded as rows of
 * price_change_rows' binary COPY (the columns of loader.bookcopy.CHANGE_COLUMNS, in
 * order), appended to the bytearray changes, with the values loader.bookstore gives the
 * same rows: the token's key, hash as bytes when it is lower-case hex, else as text.
 * Every line of best_bid_ask events of the shape loader.bookscan.fast_quote takes (one,
 * or an array of them) becomes rows of best_bid_ask_rows (QUOTE_COLUMNS) in quotes. keys
 * maps a token id to (market, key); a token it lacks gets token_key(token_id, market),
 * added to it; a token it holds with another market declines the line. A declined line
 * adds nothing to the bytearrays or to keys. Gives (taken, change_rows, quote_rows,
 * first_ms, last_ms, rest): the lines taken, the rows written to each, the least and
 * greatest event time of those rows (None without rows), and the start offsets,
 * ascending, of every other line.
 */
#define PG_EPOCH_US 946684800000000LL /* 2000-01-01 in Unix microseconds */
/* An upper bound: at most one of the two hash fields holds bytes. */
#define MAX_ROW_BYTES (2 + 8 * 12 + 5 + 4 + MAX_TEXT_CHARS / 2 + 4 + MAX_TEXT_CHARS)

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int reserve(Buf *b, size_t more) {
    if (b->cap - b->n >= more)
        return 1;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap - b->n < more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

static void put32(Buf *b, uint32_t v) {
    unsigned char *q = (unsigned char *)b->p + b->n;
    q[0] = (unsigned char)(v >> 24);
    q[1] = (unsigned char)(v >> 16);
    q[2] = (unsigned char)(v >> 8);
    q[3] = (unsigned char)v;
    b->n += 4;
}

static void put_int8(Buf *b, long long v) { /* a field of 8 bytes, big-endian */
    put32(b, 8);
    put32(b, (uint32_t)((unsigned long long)v >> 32));
    put32(b, (uint32_t)v);
}

static void put_float8(Buf *b, double v, int none) {
    if (none) {
        put32(b, 0xffffffffu);
        return;
    }
    long long bits;
    memcpy(&bits, &v, sizeof(bits));
    put_int8(b, bits);
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* hash and hash_text: the bytes of a lower-case hex text of even length, else the text;
 * NULL both for an absent or empty hash. */
static void put_hash(Buf *b, const Field *f) {
    int hex = f->seen && f->len > 0 && f->len % 2 == 0;
    for (Py_ssize_t i = 0; hex && i < f->len; i++)
        hex = hex_digit(f->p[i]) >= 0;
    if (!f->seen || f->len == 0) {
        put32(b, 0xffffffffu);
        put32(b, 0xffffffffu);
    } else if (hex) {
        put32(b, (uint32_t)(f->len / 2));
        for (Py_ssize_t i = 0; i < f->len; i += 2)
            b->p[b->n++] = (char)(hex_digit(f->p[i]) << 4 | hex_digit(f->p[i + 1]));
        put32(b, 0xffffffffu);
    } else {
        put32(b, 0xffffffffu);
        put32(b, (uint32_t)f->len);
        memcpy(b->p + b->n, f->p, (size_t)f->len);
        b->n += (size_t)f->len;
    }
}

typedef struct {
    PyObject *keys, *token_key;
    PyObject *added; /* the tokens added to keys by this call, in order */
    long long segment_id, received_us;
    long long first_ms, last_ms;
    Py_ssize_t rows, quote_rows;
} Copy;

/* The key of (token, market): from keys, else from token_key (and added to keys). 0
 * when keys holds the token with another market, -1 on an error (set). */
static int key_of(Copy *c, const Field *token, const Field *market, PyObject **market_text,
                  long long *key) {
    PyObject *t = PyUnicode_DecodeASCII(token->p, token->len, NULL);
    if (t == NULL)
        return -1;
    PyObject *held = PyDict_GetItemWithError(c->keys, t); /* borrowed */
    int found = -1;
    if (held != NULL) {
        PyObject *m = PyTuple_Check(held) && PyTuple_GET_SIZE(held) == 2 ? PyTuple_GET_ITEM(held, 0) : NULL;
        if (m == NULL || !PyUnicode_Check(m) || !PyLong_Check(PyTuple_GET_ITEM(held, 1)))
            PyErr_SetString(PyExc_TypeError, "keys holds (market, key) pairs");
        else if (!PyUnicode_IS_COMPACT_ASCII(m) || PyUnicode_GET_LENGTH(m) != market->len ||
                 memcmp(PyUnicode_1BYTE_DATA(m), market->p, (size_t)market->len) != 0)
            found = 0;
        else if ((*key = PyLong_AsLongLong(PyTuple_GET_ITEM(held, 1))) != -1 || !PyErr_Occurred())
            found = 1;
        Py_DECREF(t);
        return found;
    }
    if (!PyErr_Occurred()) {
        if (*market_text == NULL)
            *market_text = PyUnicode_DecodeASCII(market->p, market->len, NULL);
        PyObject *k = *market_text ? PyObject_CallFunctionObjArgs(c->token_key, t, *market_text, NULL) : NULL;
        PyObject *pair = k ? PyTuple_Pack(2, *market_text, k) : NULL;
        if (pair != NULL && ((*key = PyLong_AsLongLong(k)) != -1 || !PyErr_Occurred()) &&
            PyDict_SetItem(c->keys, t, pair) == 0 && PyList_Append(c->added, t) == 0)
            found = 1;
        Py_XDECREF(pair);
        Py_XDECREF(k);
    }
    Py_DECREF(t);
    return found;
}

static void bound(Copy *c, long long ms) {
    if (c->first_ms < 0 || ms < c->first_ms)
        c->first_ms = ms;
    if (ms > c->last_ms)
        c->last_ms = ms;
}

/* One price_change event at *pp: its rows onto b. 0 when it is not of the shape, -1 on
 * an error (set). */
static int copy_event(const char **pp, const char *end, Entries *entries, Copy *c, Buf *b) {
    Event ev;
    if (!read_event(pp, end, entries, &ev))
        return 0;
    PyObject *market = NULL;
    long long ts_us = ev.ms * 1000 - PG_EPOCH_US;
    int taken = 1;
    for (int i = 0; i < entries->n && taken == 1; i++) {
        const Field *e = entries->fields[i];
        long long key;
        taken = key_of(c, &e[E_ASSET], &ev.market, &market, &key);
        if (taken != 1 || !reserve(b, MAX_ROW_BYTES)) {
            taken = taken == 1 ? -1 : taken;
            break;
        }
        b->p[b->n++] = 0; /* 11 fields */
        b->p[b->n++] = 11;
        put_int8(b, ts_us);
        put_int8(b, key);
        put_float8(b, ev.num[i][0], 0);
        put_float8(b, ev.num[i][1], 0);
        put_float8(b, ev.num[i][2], ev.none[i][0]);
        put_float8(b, ev.num[i][3], ev.none[i][1]);
        put_int8(b, c->received_us);
        put_int8(b, c->segment_id);
        put32(b, 1);
        b->p[b->n++] = e[E_SIDE].len == 3; /* BUY */
        put_hash(b, &e[E_HASH]);
    }
    Py_XDECREF(market);
    if (taken == 1 && entries->n > 0) {
        c->rows += entries->n;
        bound(c, ev.ms);
    }
    return taken;
}

/* ---- best_bid_ask events, as loader.bookscan.fast_quote takes them: ids, a timestamp,
 * best bid and ask as prices or "", spread a plain decimal or "" (NULL) ---- */
enum { Q_EVENT, Q_ASSET, Q_MARKET, Q_BID, Q_ASK, Q_SPREAD, Q_STAMP, N_QUOTE_FIELDS };
static const Name QUOTE_NAMES[N_QUOTE_FIELDS] = {
    NAME("event_type"), NAME("asset_id"), NAME("market"),    NAME("best_bid"),
    NAME("best_ask"),   NAME("spread"),   NAME("timestamp"),
};

/* One best_bid_ask event at *pp: its best_bid_ask_rows row onto b (ts, token,
 * best_bid, best_ask, spread, received_at, segment_id). 0 when it is not of the shape,
 * -1 on an error (set). */
static int quote_event(const char **pp, const char *end, Entries *entries, Copy *c, Buf *b) {
    (void)entries;
    Field f[N_QUOTE_FIELDS];
    memset(f, 0, sizeof(f));
    long long ms, key;
    double bid, ask, spread = 0.0;
    int no_bid, no_ask, no_spread;
    if (!object_fields(pp, end, QUOTE_NAMES, N_QUOTE_FIELDS, f, NULL, NULL) ||
        !equals(&f[Q_EVENT], "best_bid_ask") || !plain_id(&f[Q_ASSET]) ||
        !plain_id(&f[Q_MARKET]) || !stamp(&f[Q_STAMP], &ms) || !f[Q_BID].seen ||
        !price_of(&f[Q_BID], 1, &bid, &no_bid) || !f[Q_ASK].seen ||
        !price_of(&f[Q_ASK], 1, &ask, &no_ask) || !f[Q_SPREAD].seen)
        return 0;
    no_spread = f[Q_SPREAD].len == 0;
    if (!no_spread && !plain_decimal(&f[Q_SPREAD], &spread))
        return 0;
    PyObject *market = NULL;
    int taken = key_of(c, &f[Q_ASSET], &f[Q_MARKET], &market, &key);
    Py_XDECREF(market);
    if (taken != 1)
        return taken;
    if (!reserve(b, 2 + 12 * 7))
        return -1;
    b->p[b->n++] = 0; /* 7 fields */
    b->p[b->n++] = 7;
    put_int8(b, ms * 1000 - PG_EPOCH_US);
    put_int8(b, key);
    put_float8(b, bid, no_bid);
    put_float8(b, ask, no_ask);
    put_float8(b, spread, no_spread);
    put_int8(b, c->received_us);
    put_int8(b, c->segment_id);
    c->quote_rows++;
    bound(c, ms);
    return 1;
}

typedef int (*EventCopy)(const char **pp, const char *end, Entries *entries, Copy *c, Buf *b);

typedef struct {
    EventCopy event;
    Entries *entries;
    Copy *c;
    Buf *b;
} CopyContext;

static int copy_event_of(const char **pp, const char *end, void *context) {
    CopyContext *k = context;
    return k->event(pp, end, k->entries, k->c, k->b);
}

/* The line [p, end): its rows onto changes (price_change events, as price_changes()
 * would take them) or quotes (best_bid_ask events). 1 taken, 0 declined (all as it was),
 * -1 on an error (set). */
static int copy_line(const char *p, const char *end, Entries *entries, Copy *c, Buf *changes,
                     Buf *quotes) {
    FrameText ft;
    ft.text = ft.small;
    int taken = 0;
    size_t marks[2] = {changes->n, quotes->n};
    Py_ssize_t rows[2] = {c->rows, c->quote_rows}, added = PyList_GET_SIZE(c->added);
    long long first = c->first_ms, last = c->last_ms;
    EventCopy event;
    Buf *b;
    if (memmem(p, (size_t)(end - p), "price_changes\\\"", 15) != NULL) {
        event = copy_event;
        b = changes;
    } else if (memmem(p, (size_t)(end - p), "best_bid_ask\\\"", 14) != NULL) {
        event = quote_event;
        b = quotes;
    } else
        goto done;
    if (!frame_text(p, end, &ft))
        goto done;
    c->received_us = ft.ts_ns / 1000 - PG_EPOCH_US;
    CopyContext context = {event, entries, c, b};
    taken = each_event(ft.text, ft.end, copy_event_of, &context);
done:
    if (taken != 1) { /* nothing of a declined line */
        for (Py_ssize_t i = PyList_GET_SIZE(c->added); taken == 0 && i > added; i--)
            if (PyDict_DelItem(c->keys, PyList_GET_ITEM(c->added, i - 1)) < 0)
                taken = -1;
        if (taken == 0 && PyList_SetSlice(c->added, added, PyList_GET_SIZE(c->added), NULL) < 0)
            taken = -1;
        changes->n = marks[0];
        quotes->n = marks[1];
        c->rows = rows[0];
        c->quote_rows = rows[1];
        c->first_ms = first;
        c->last_ms = last;
    }
    frame_text_free(&ft);
    return taken;
}

/* b appended to the bytearray out. */
static int append(PyObject *out, const Buf *b) {
    Py_ssize_t had = PyByteArray_GET_SIZE(out);
    if (b->n == 0)
        return 0;
    if (PyByteArray_Resize(out, had + (Py_ssize_t)b->n) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(out) + had, b->p, b->n);
    return 0;
}

static PyObject *ms_or_none(long long ms) {
    if (ms < 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(ms);
}

static PyObject *book_copy(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    PyObject *changes_out, *quotes_out;
    Copy c = {NULL, NULL, NULL, 0, 0, -1, -1, 0, 0};
    if (!PyArg_ParseTuple(args, "y*O!O!LO!O", &buf, &PyByteArray_Type, &changes_out,
                          &PyByteArray_Type, &quotes_out, &c.segment_id, &PyDict_Type, &c.keys,
                          &c.token_key))
        return NULL;
    const char *data = buf.buf, *end = data + buf.len;
    Buf changes = {NULL, 0, 0}, quotes = {NULL, 0, 0};
    Entries *entries = PyMem_Malloc(sizeof(Entries));
    PyObject *rest = PyList_New(0), *result = NULL;
    Py_ssize_t taken = 0;
    c.added = PyList_New(0);
    if (entries == NULL || rest == NULL || c.added == NULL) {
        if (entries == NULL)
            PyErr_NoMemory();
        goto done;
    }
    for (const char *p = data; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        int t = copy_line(p, line_end, entries, &c, &changes, &quotes);
        if (t < 0)
            goto done;
        if (t == 1)
            taken++;
        else {
            PyObject *start = PyLong_FromSsize_t(p - data);
            if (start == NULL || PyList_Append(rest, start) < 0) {
                Py_XDECREF(start);
                goto done;
            }
            Py_DECREF(start);
        }
        p = nl ? nl + 1 : end;
    }
    Py_ssize_t had = PyByteArray_GET_SIZE(changes_out);
    if (append(changes_out, &changes) < 0)
        goto done;
    if (append(quotes_out, &quotes) < 0) { /* neither, then */
        PyObject *type, *value, *trace;
        PyErr_Fetch(&type, &value, &trace);
        PyByteArray_Resize(changes_out, had);
        PyErr_Restore(type, value, trace);
        goto done;
    }
    result = Py_BuildValue("(nnnNNO)", taken, c.rows, c.quote_rows, ms_or_none(c.first_ms),
                           ms_or_none(c.last_ms), rest);
done:
    Py_XDECREF(rest);
    Py_XDECREF(c.added);
    PyMem_Free(entries);
    PyMem_Free(changes.p);
    PyMem_Free(quotes.p);
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
    {"trade", trade, METH_VARARGS,
     "trade(data, start, end) -> the fields of a feed-shaped trade line, or None."},
    {"price_changes", price_changes, METH_VARARGS,
     "price_changes(data, start, end, row_type, event_time, received_time) -> (conn, rows)"
     " of a feed-shaped price_change line, or None."},
    {"book_copy", book_copy, METH_VARARGS,
     "book_copy(data, changes, quotes, segment_id, keys, token_key) -> (taken, change_rows,"
     " quote_rows, first_ms, last_ms, rest): the batch's price_change and best_bid_ask"
     " lines as COPY rows appended to the bytearrays changes and quotes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "loader._scan",
                                    "The loader's batch scan in C (loader/scan.py).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__scan(void) {
    SIDES[0] = PyUnicode_InternFromString("BUY");
    SIDES[1] = PyUnicode_InternFromString("SELL");
    if (SIDES[0] == NULL || SIDES[1] == NULL)
        return NULL;
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
