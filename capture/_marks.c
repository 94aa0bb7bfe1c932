/* The receive loop's one look inside each frame, in C: does the text hold a mark
 * (capture.protocol.NEW_MARKET_MARK or RESOLVED_MARK) worth parsing it for?
 *
 * marked(text) -> bool. One memchr() pass over the text's UTF-8 bytes (CPython keeps
 * them for an ASCII string; the writer's encoder, wal/_encode.c, asks for them anyway
 * otherwise) for the "_" each mark holds, and a compare around each. capture.connection falls back
 * to those when this is not built; tests/capture/test_marks.py holds the two equal.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <string.h>

static const char *const MARKS[] = {"\"new_market\"", "\"market_resolved\""};
#define N_MARKS (sizeof(MARKS) / sizeof(MARKS[0]))

static PyObject *marked(PyObject *self, PyObject *text) {
    (void)self;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "marked() takes a str");
        return NULL;
    }
    Py_ssize_t len;
    const char *p = PyUnicode_AsUTF8AndSize(text, &len);
    if (p == NULL) { /* a lone surrogate: look the slow way, it is no feed frame */
        PyErr_Clear();
        for (size_t i = 0; i < N_MARKS; i++) {
            PyObject *mark = PyUnicode_FromString(MARKS[i]);
            int found = mark ? PyUnicode_Contains(text, mark) : -1;
            Py_XDECREF(mark);
            if (found != 0)
                return found < 0 ? NULL : Py_NewRef(Py_True);
        }
        Py_RETURN_FALSE;
    }
    /* Both marks hold one "_": find each "_" (a few a frame) and compare around it. */
    const char *end = p + len;
    for (const char *u = p; (u = memchr(u, '_', (size_t)(end - u))) != NULL; u++)
        for (size_t i = 0; i < N_MARKS; i++) {
            size_t before = (size_t)(strchr(MARKS[i], '_') - MARKS[i]), n = strlen(MARKS[i]);
            if ((size_t)(u - p) >= before && (size_t)(end - (u - before)) >= n &&
                memcmp(u - before, MARKS[i], n) == 0)
                Py_RETURN_TRUE;
        }
    Py_RETURN_FALSE;
}

static PyMethodDef methods[] = {
    {"marked", marked, METH_O, "marked(text) -> whether text holds one of MARKS."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture._marks",
                                    "The receive loop's mark test in C.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__marks(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *marks = Py_BuildValue("(ss)", MARKS[0], MARKS[1]);
    if (marks == NULL || PyModule_AddObject(m, "MARKS", marks) < 0) {
        Py_XDECREF(marks);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
