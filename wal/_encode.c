/* The capture writer's batch encoding in C: wal.records.encode_frames, byte for byte,
 * with the GIL released while the lines are sized and written, so the receive loop
 * runs on while a batch is encoded. tests/wal/test_encode.py holds it to the Python
 * encoder on every input.
 *
 * frames(items) -> bytes | None
 *   items: a list of (ts_ns, conn, n, message) tuples. The lines of every item as
 *   '{"type":"frame","ts_ns":%d,"conn":%d,"n":%d,"text":"<escaped>"}\n', the message
 *   escaped as json.dumps(ensure_ascii=False) escapes a string. None when an item is
 *   anything else (binary, a lone surrogate, an int beyond 64 bits): the caller then
 *   takes the Python way, which knows those.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

static const char HEAD[] = "{\"type\":\"frame\",\"ts_ns\":";
static const char CONN[] = ",\"conn\":";
static const char NUM[] = ",\"n\":";
static const char TEXT[] = ",\"text\":\"";
static const char TAIL[] = "\"}\n";
#define LIT(s) (sizeof(s) - 1)
#define FIXED (LIT(HEAD) + LIT(CONN) + LIT(NUM) + LIT(TEXT) + LIT(TAIL))

/* Bytes each input byte adds when escaped: \" \\ \b \f \n \r \t add 1, other control
 * bytes become \u00xx (5 more). UTF-8 bytes >= 0x80 pass as they are. */
static unsigned char EXTRA[256];

static void init_extra(void) {
    for (int c = 0; c < 0x20; c++)
        EXTRA[c] = 5;
    EXTRA['"'] = EXTRA['\\'] = EXTRA['\b'] = EXTRA['\f'] = 1;
    EXTRA['\n'] = EXTRA['\r'] = EXTRA['\t'] = 1;
}

typedef struct {
    long long ts, conn, n;
    const unsigned char *text;
    Py_ssize_t len;
} Item;

static Py_ssize_t digits(long long v) {
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    Py_ssize_t n = v < 0 ? 2 : 1;
    while (u >= 10) {
        u /= 10;
        n++;
    }
    return n;
}

static char *put_int(char *out, long long v) {
    char tmp[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *out++ = '-';
    while (n)
        *out++ = tmp[--n];
    return out;
}

static char *put(char *out, const char *s, size_t n) {
    memcpy(out, s, n);
    return out + n;
}

/* The offset of the first byte at or after i that needs an escape, or len. */
static Py_ssize_t next_special(const unsigned char *p, Py_ssize_t i, Py_ssize_t len) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i below = _mm_set1_epi8(0x20), bias = _mm_set1_epi8((char)0x80);
    for (; i + 16 <= len; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
        /* unsigned v < 0x20, as a signed compare of both shifted by 0x80 */
        __m128i ctl = _mm_cmplt_epi8(_mm_xor_si128(v, bias), _mm_xor_si128(below, bias));
        __m128i hit = _mm_or_si128(ctl, _mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                     _mm_cmpeq_epi8(v, backslash)));
        unsigned bits = (unsigned)_mm_movemask_epi8(hit);
        if (bits)
            return i + __builtin_ctz(bits);
    }
#endif
    while (i < len && !EXTRA[p[i]])
        i++;
    return i;
}

static Py_ssize_t escaped_len(const unsigned char *p, Py_ssize_t len) {
    Py_ssize_t size = len;
    for (Py_ssize_t i = next_special(p, 0, len); i < len; i = next_special(p, i + 1, len))
        size += EXTRA[p[i]];
    return size;
}

static char *put_text(char *out, const unsigned char *p, Py_ssize_t len) {
    static const char HEX[] = "0123456789abcdef";
    Py_ssize_t i = 0;
    while (i < len) {
        Py_ssize_t stop = next_special(p, i, len);
        out = put(out, (const char *)p + i, (size_t)(stop - i));
        if (stop == len)
            break;
        unsigned char c = p[stop];
        i = stop + 1;
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        default:
            out = put(out, "u00", 3);
            *out++ = HEX[c >> 4];
            *out++ = HEX[c & 15];
        }
    }
    return out;
}

/* The items' fields, with a reference to each message; 0 when one is not for here. */
static int collect(PyObject *list, Item *items, PyObject **held, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *t = PyList_GET_ITEM(list, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 4)
            return 0;
        PyObject *msg = PyTuple_GET_ITEM(t, 3);
        long long f[3];
        for (int k = 0; k < 3; k++) {
            PyObject *v = PyTuple_GET_ITEM(t, k);
            int overflow;
            if (!PyLong_CheckExact(v))
                return 0;
            f[k] = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow || (f[k] == -1 && PyErr_Occurred()))
                return 0;
        }
        if (!PyUnicode_CheckExact(msg))
            return 0;
        Py_ssize_t len;
        const char *text = PyUnicode_AsUTF8AndSize(msg, &len); /* fails on a surrogate */
        if (text == NULL)
            return 0;
        Py_INCREF(msg);
        held[i] = msg;
        items[i] = (Item){f[0], f[1], f[2], (const unsigned char *)text, len};
    }
    return 1;
}

static PyObject *frames(PyObject *self, PyObject *list) {
    (void)self;
    if (!PyList_CheckExact(list)) {
        PyErr_SetString(PyExc_TypeError, "frames() takes a list of (ts_ns, conn, n, text)");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(list);
    Item *items = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(Item));
    PyObject **held = PyMem_Calloc((size_t)(count ? count : 1), sizeof(PyObject *));
    PyObject *out = NULL;
    if (items == NULL || held == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (!collect(list, items, held, count)) {
        PyErr_Clear(); /* not for here: the Python way */
        out = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t size = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        const Item *it = &items[i];
        size += (Py_ssize_t)FIXED + digits(it->ts) + digits(it->conn) + digits(it->n);
        size += escaped_len(it->text, it->len);
    }
    Py_END_ALLOW_THREADS
    out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        goto done;
    char *w = PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        const Item *it = &items[i];
        w = put(w, HEAD, LIT(HEAD));
        w = put_int(w, it->ts);
        w = put(w, CONN, LIT(CONN));
        w = put_int(w, it->conn);
        w = put(w, NUM, LIT(NUM));
        w = put_int(w, it->n);
        w = put(w, TEXT, LIT(TEXT));
        w = put_text(w, it->text, it->len);
        w = put(w, TAIL, LIT(TAIL));
    }
    Py_END_ALLOW_THREADS
done:
    if (held != NULL)
        for (Py_ssize_t i = 0; i < count; i++)
            Py_XDECREF(held[i]);
    PyMem_Free(held);
    PyMem_Free(items);
    return out;
}

static PyMethodDef methods[] = {
    {"frames", frames, METH_O,
     "frames(items) -> the frame lines of (ts_ns, conn, n, text) items, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "wal._encode",
                                    "The writer's batch encoding in C (wal.records).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__encode(void) {
    init_extra();
    return PyModule_Create(&module);
}
