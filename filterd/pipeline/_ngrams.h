/* What the two source files of the _ngrams extension share (setup.py builds them into one). */

#ifndef FILTERD_NGRAMS_H
#define FILTERD_NGRAMS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BITS 20
#define BUCKETS (1 << BITS)

/* _ngrams_weights.c: featurize after the sort, and the scorer's sparse dot product */
PyObject *ngrams_weights(PyObject *module, PyObject *args);
PyObject *ngrams_dot(PyObject *module, PyObject *args);

#endif
