/* fbkmodule.c -- fbk._fbk, the CPython extension over libfbk (docs/python.md).
 *
 * Types: Store (fbk_store), Map (fbk_map + its pool and location; the Python
 * package makes it a collections.abc.MutableMapping), View (one pinned value
 * exported through the buffer protocol).  Every call that may block -- I/O,
 * a sync, waiting for another thread's computation -- runs with the GIL
 * released; libfbk never calls back into Python except for the memoized
 * function, which runs on the caller's own thread and takes the GIL back
 * for the call (memo_compute).
 *
 * A Map counts the calls running on it without the GIL (busy): close()
 * refuses (BusyError) while another thread is inside one, so no fbk_map is
 * freed under a running call.  The error message of a failure is copied on
 * the failing thread before anything else can overwrite it (fbkpy_err_capture).
 *
 * This file: the module (PyInit__fbk, xxh128, version), the exception
 * classes and the error and name helpers; the types are in store.c, map.c,
 * view.c and memoize.c (Map._memo), sharing fbkpy.h.
 */
#include "fbkpy.h"

#include <xxhash.h>

#include <stdio.h>

/* ---------------------------------------------------------------- errors */

#define N_CODES 14 /* -FBK_ETIMEDOUT + 1 */

static PyObject *Error;               /* fbk.Error */
static PyObject *code_errors[N_CODES]; /* indexed by -code */

static const struct {
    int code;
    const char *name; /* the class's name in the module */
    PyObject **builtin; /* a second base, or NULL */
} error_table[] = {
    {FBK_EINVAL, "InvalidArgumentError", &PyExc_ValueError},
    {FBK_ENOMEM, "OutOfMemoryError", &PyExc_MemoryError},
    {FBK_EIO, "BackendIOError", &PyExc_OSError},
    {FBK_ENOSPC, "NoSpaceError", &PyExc_OSError},
    {FBK_ENOTFOUND, "NotFoundError", &PyExc_KeyError},
    {FBK_ECORRUPT, "CorruptError", NULL},
    {FBK_EAGAIN, "WouldBlockError", &PyExc_BlockingIOError},
    {FBK_EBUSY, "BusyError", NULL},
    {FBK_ECODEC, "CodecError", NULL},
    {FBK_ECLOSED, "ClosedError", &PyExc_ValueError},
    {FBK_EREADONLY, "ReadOnlyError", NULL},
    {FBK_ENOTSUP, "NotSupportedError", NULL},
    {FBK_ETIMEDOUT, "TimedOutError", &PyExc_TimeoutError},
};

void fbkpy_err_capture(err_t *e, int rc)
{
    e->rc = rc;
    const char *m = fbk_errmsg();
    snprintf(e->msg, sizeof e->msg, "%s", (m && *m) ? m : fbk_strerror(rc));
}

static PyObject *error_class(int rc)
{
    if (rc < 0 && -rc < N_CODES && code_errors[-rc])
        return code_errors[-rc];
    return Error;
}

/* Raises the fbk.Error subclass of e->rc, with .code and .name set. */
PyObject *fbkpy_raise_err(const err_t *e)
{
    PyObject *cls = error_class(e->rc);
    PyObject *exc = PyObject_CallFunction(cls, "s", e->msg);
    if (!exc)
        return NULL;
    PyObject *code = PyLong_FromLong(e->rc);
    PyObject *name = PyUnicode_FromString(fbk_err_name(e->rc));
    if (!code || !name || PyObject_SetAttrString(exc, "code", code) < 0 ||
        PyObject_SetAttrString(exc, "name", name) < 0) {
        Py_XDECREF(code);
        Py_XDECREF(name);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(code);
    Py_DECREF(name);
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *fbkpy_raise_code(int rc, const char *msg)
{
    err_t e;
    e.rc = rc;
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    return fbkpy_raise_err(&e);
}

static int make_errors(PyObject *module)
{
    PyObject *dict = Py_BuildValue("{s:O,s:O}", "code", Py_None, "name", Py_None);
    if (!dict)
        return -1;
    Error = PyErr_NewExceptionWithDoc("fbk.Error",
                                      "A libfbk failure: .code is the negative FBK_E* value, "
                                      ".name its name (\"FBK_ECORRUPT\").",
                                      NULL, dict);
    Py_DECREF(dict);
    if (!Error || PyModule_AddObjectRef(module, "Error", Error) < 0)
        return -1;
    for (size_t i = 0; i < sizeof error_table / sizeof error_table[0]; i++) {
        int code = error_table[i].code;
        char qual[64];
        snprintf(qual, sizeof qual, "fbk.%s", error_table[i].name);
        PyObject *bases = error_table[i].builtin
                              ? PyTuple_Pack(2, Error, *error_table[i].builtin)
                              : PyTuple_Pack(1, Error);
        PyObject *attrs =
            Py_BuildValue("{s:i,s:s}", "code", code, "name", fbk_err_name(code));
        PyObject *cls = NULL;
        if (bases && attrs)
            cls = PyErr_NewExceptionWithDoc(qual, fbk_strerror(code), bases, attrs);
        Py_XDECREF(bases);
        Py_XDECREF(attrs);
        if (!cls)
            return -1;
        code_errors[-code] = cls;
        if (PyModule_AddObjectRef(module, error_table[i].name, cls) < 0)
            return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- names */

int fbkpy_name_get(PyObject *o, name_t *nm)
{
    nm->hold = NULL;
    if (PyBytes_Check(o)) {
        nm->p = PyBytes_AS_STRING(o);
        nm->n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        nm->p = PyUnicode_AsUTF8AndSize(o, &nm->n);
        return nm->p ? 0 : -1;
    }
    if (PyObject_CheckBuffer(o)) {
        nm->hold = PyBytes_FromObject(o);
        if (!nm->hold)
            return -1;
        nm->p = PyBytes_AS_STRING(nm->hold);
        nm->n = PyBytes_GET_SIZE(nm->hold);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "fbk: a name is bytes or str, not %.100s",
                 Py_TYPE(o)->tp_name);
    return -1;
}

/* ---------------------------------------------------------------- module */

static PyObject *mod_xxh128(PyObject *mod, PyObject *arg)
{
    (void)mod;
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    XXH128_hash_t hv;
    if (b.len > 65536) {
        Py_BEGIN_ALLOW_THREADS
        hv = XXH3_128bits(b.buf, (size_t)b.len);
        Py_END_ALLOW_THREADS
    } else {
        hv = XXH3_128bits(b.buf, (size_t)b.len);
    }
    PyBuffer_Release(&b);
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, hv);
    return PyBytes_FromStringAndSize((const char *)canon.digest, sizeof canon.digest);
}

static PyObject *mod_version(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyUnicode_FromString(fbk_version());
}

static PyMethodDef module_methods[] = {
    {"xxh128", mod_xxh128, METH_O, "xxh128(data) -> 16 bytes: XXH3-128 (canonical, big-endian)."},
    {"version", mod_version, METH_NOARGS, "libfbk's version string."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fbk_module = {
    PyModuleDef_HEAD_INIT, "fbk._fbk", "CPython binding of libfbk (see the fbk package).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fbk(void)
{
    PyObject *m = PyModule_Create(&fbk_module);
    if (!m)
        return NULL;
    if (PyType_Ready(&fbkpy_Store_Type) < 0 || PyType_Ready(&fbkpy_Map_Type) < 0 ||
        PyType_Ready(&fbkpy_View_Type) < 0 || make_errors(m) < 0 ||
        PyModule_AddObjectRef(m, "Store", (PyObject *)&fbkpy_Store_Type) < 0 ||
        PyModule_AddObjectRef(m, "Map", (PyObject *)&fbkpy_Map_Type) < 0 ||
        PyModule_AddObjectRef(m, "View", (PyObject *)&fbkpy_View_Type) < 0 ||
        PyModule_AddIntConstant(m, "NAME_MAX", FBK_NAME_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
