/*
 * EventCount: a counter two threads hand work over with, waiting for it
 * *without the GIL*.
 *
 * Why it exists: a loop -> worker thread -> loop round trip through
 * queue.SimpleQueue and call_soon_threadsafe costs 60-80 us on a VM whose idle
 * vCPUs halt at once, three times a whole echo call into WASM. Two things make
 * it slow: each side sleeps in the kernel (a futex or epoll wake is an IPI to
 * a halted vCPU), and a thread woken while the other still holds the GIL goes
 * straight back to sleep inside take_gil. Here the waiter spins for a bounded
 * time with the GIL released, and "bump, then wait" is one call, so the
 * bumping thread has already let go of the GIL when the other side runs.
 * After the spin the waiter parks on a futex (Linux; a short sleep loop
 * elsewhere), so an idle thread costs nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sched.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define CACHE_LINE 64
/* A spinning thread yields this often, in case the thread it waits for
 * shares its CPU. Not much more often: each yield also lets Extism's timer
 * thread in, and a short call (about 20 us) should finish before the first. */
#define YIELD_EVERY_NS 40000

/* The counter lives on a cache line of its own, so the line a thread spins
 * on is written by bumps only, not by refcount changes of this object or of
 * a neighbour in pymalloc's pool. */
typedef struct {
    _Atomic uint32_t seq;
    _Atomic uint32_t parked;
    char pad[CACHE_LINE - 2 * sizeof(uint32_t)];
} Counter;

typedef struct {
    PyObject_HEAD
    Counter *c;
} EventCount;

static PyTypeObject EventCountType;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void bump(EventCount *ec) {
    atomic_fetch_add(&ec->c->seq, 1);
#ifdef __linux__
    if (atomic_load(&ec->c->parked)) {
        syscall(SYS_futex, &ec->c->seq, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    }
#endif
}

/* Wait while ec->seq == seen: spin up to spin_ns, then park up to park_ns.
 * Called without the GIL. Returns 1 when the count moved. */
static int wait_moved(EventCount *ec, uint32_t seen, int64_t spin_ns, int64_t park_ns) {
    int64_t start = now_ns(), next_yield = start + YIELD_EVERY_NS;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            /* No PAUSE here: under a hypervisor with pause-loop exiting it
             * traps to the host and slowed the guest call on the other vCPU
             * by a third; a plain load loop did not. */
            if (atomic_load_explicit(&ec->c->seq, memory_order_acquire) != seen) return 1;
        }
        int64_t now = now_ns();
        if (now - start >= spin_ns) break;
        if (now >= next_yield) {
            /* If the thread we wait for shares this CPU, let it run. */
            sched_yield();
            next_yield = now + YIELD_EVERY_NS;
        }
    }
    if (park_ns <= 0) return atomic_load(&ec->c->seq) != seen;
    int64_t end = now_ns() + park_ns;
    atomic_fetch_add(&ec->c->parked, 1);
    int moved;
    for (;;) {
        if ((moved = atomic_load(&ec->c->seq) != seen)) break;
        int64_t left = end - now_ns();
        if (left <= 0) break;
#ifdef __linux__
        struct timespec ts = {left / 1000000000, left % 1000000000};
        syscall(SYS_futex, &ec->c->seq, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
#else
        struct timespec ts = {0, left < 50000 ? left : 50000};
        nanosleep(&ts, NULL);
#endif
    }
    atomic_fetch_sub(&ec->c->parked, 1);
    return moved;
}

static PyObject *EventCount_value(EventCount *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromUnsignedLong(atomic_load(&self->c->seq));
}

static PyObject *EventCount_bump(EventCount *self, PyObject *Py_UNUSED(ignored)) {
    bump(self);
    Py_RETURN_NONE;
}

static int parse_wait(PyObject *args, PyObject *kwargs, EventCount **other, unsigned long *seen,
                      long long *spin_ns, long long *park_ns, PyTypeObject *type, int with_other) {
    static char *kw_other[] = {"other", "seen", "spin_ns", "park_ns", NULL};
    static char *kw_self[] = {"seen", "spin_ns", "park_ns", NULL};
    *park_ns = 0;
    if (with_other) {
        return PyArg_ParseTupleAndKeywords(args, kwargs, "O!kL|L", kw_other, type, other, seen, spin_ns, park_ns);
    }
    return PyArg_ParseTupleAndKeywords(args, kwargs, "kL|L", kw_self, seen, spin_ns, park_ns);
}

static PyObject *EventCount_wait(EventCount *self, PyObject *args, PyObject *kwargs) {
    unsigned long seen;
    long long spin_ns, park_ns;
    if (!parse_wait(args, kwargs, NULL, &seen, &spin_ns, &park_ns, Py_TYPE(self), 0)) return NULL;
    int moved;
    Py_BEGIN_ALLOW_THREADS
    moved = wait_moved(self, (uint32_t)seen, spin_ns, park_ns);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(moved);
}

static PyObject *EventCount_bump_and_wait(EventCount *self, PyObject *args, PyObject *kwargs) {
    EventCount *other;
    unsigned long seen;
    long long spin_ns, park_ns;
    if (!parse_wait(args, kwargs, &other, &seen, &spin_ns, &park_ns, Py_TYPE(self), 1)) return NULL;
    int moved;
    Py_INCREF(other);
    Py_BEGIN_ALLOW_THREADS
    bump(self);  /* after the GIL is released: the woken thread can take it at once */
    moved = wait_moved(other, (uint32_t)seen, spin_ns, park_ns);
    Py_END_ALLOW_THREADS
    Py_DECREF(other);
    return PyBool_FromLong(moved);
}

static PyMethodDef EventCount_methods[] = {
    {"value", (PyCFunction)EventCount_value, METH_NOARGS, "The current count."},
    {"bump", (PyCFunction)EventCount_bump, METH_NOARGS, "Advance the count and wake parked waiters."},
    {"wait", (PyCFunction)EventCount_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(seen, spin_ns, park_ns=0) -> bool: without the GIL, wait until the count is no longer seen."},
    {"bump_and_wait", (PyCFunction)EventCount_bump_and_wait, METH_VARARGS | METH_KEYWORDS,
     "bump_and_wait(other, seen, spin_ns, park_ns=0) -> bool: release the GIL, bump this count, "
     "then wait until other's count is no longer seen."},
    {NULL, NULL, 0, NULL},
};

static PyObject *EventCount_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (!PyArg_ParseTuple(args, ":EventCount")) return NULL;
    EventCount *self = (EventCount *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->c = aligned_alloc(CACHE_LINE, sizeof(Counter));
    if (self->c == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    atomic_init(&self->c->seq, 0);
    atomic_init(&self->c->parked, 0);
    return (PyObject *)self;
}

static void EventCount_dealloc(EventCount *self) {
    free(self->c);  /* no thread waits on it: a wait holds a reference */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject EventCountType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aspen.handoff._eventcount.EventCount",
    .tp_basicsize = sizeof(EventCount),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A counter threads wait on without the GIL: spin briefly, then park.",
    .tp_new = EventCount_new,
    .tp_dealloc = (destructor)EventCount_dealloc,
    .tp_methods = EventCount_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_eventcount", "GIL-free hand-off between threads.", -1, NULL,
};

PyMODINIT_FUNC PyInit__eventcount(void) {
    if (PyType_Ready(&EventCountType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&EventCountType);
    if (PyModule_AddObject(m, "EventCount", (PyObject *)&EventCountType) < 0) {
        Py_DECREF(&EventCountType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
