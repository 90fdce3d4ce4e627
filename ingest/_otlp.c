/* A compiled fast path for `decode.decode_protobuf`: an OTLP ExportTraceServiceRequest (protobuf)
 * into the same `Span` objects, with the same attribute values, in the same order.
 *
 *     spans = _otlp.decode_spans(raw, Span, memo, key_value, memo_limit)   # list, or None
 *
 * It is a *conservative* parser of untrusted input: it accepts only what it can prove protobuf's
 * own parser (upb, through the decoding schema in decode.py) accepts with the same meaning, and
 * answers None for anything else (a malformed export, an unusual encoding, an id of the wrong
 * length, an error of any kind). decode.py then runs the Python decoder on the same bytes, which
 * gives the authoritative answer: the spans, or the 400. So this file never decides a refusal.
 *
 * What it checks, as upb would: every field's wire format (varints of at most 10 bytes, lengths
 * within their message, no groups, no field number 0), UTF-8 of every proto3 `string` field in
 * every message the schema declares (events, links, scope attributes and entity refs included,
 * though their values are not kept), a known field with the wrong wire type (answered None, not
 * treated as unknown), and nesting depth. Every read is bounds-checked against the end of the
 * enclosing message.
 *
 * Attribute KeyValues are looked up in decode.py's memo by their bytes (they repeat across spans);
 * on a miss the common encodings (a key and one string, int, double or bool value) are converted
 * here, anything else by decode.py's own `_key_value`, and the result is memoised as it would be.
 *
 * Also `read_attributes`: the normalizers' many `text`/`token_count` reads of one span in one call
 * (normalize/base.py `read`), which likewise hands every unusual value to the Python functions.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define OK 0
#define BAIL (-1) /* answer None: the Python decoder decides */

#define MAX_DEPTH 48 /* upb's own limit is 100 */

/* --- wire format ------------------------------------------------------------------------------ */

static int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end) return BAIL;
        uint8_t b = *p++;
        if (i == 9 && b > 1) return BAIL; /* past 64 bits */
        value |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *pp = p;
            *out = value;
            return OK;
        }
    }
    return BAIL;
}

/* A tag: canonical encodings only (at most 5 bytes, no trailing zero byte), field number > 0. */
static int read_tag(const uint8_t **pp, const uint8_t *end, uint32_t *field, uint32_t *wire) {
    const uint8_t *start = *pp;
    uint64_t tag;
    if (read_varint(pp, end, &tag) != OK) return BAIL;
    size_t n = (size_t)(*pp - start);
    if (n > 5 || (n > 1 && start[n - 1] == 0) || tag > 0xFFFFFFFFu) return BAIL;
    *field = (uint32_t)(tag >> 3);
    *wire = (uint32_t)(tag & 7);
    if (*field == 0) return BAIL;
    return OK;
}

/* A length-delimited field's payload: [*start, *stop). */
static int read_len(const uint8_t **pp, const uint8_t *end, const uint8_t **start, const uint8_t **stop) {
    uint64_t n;
    if (read_varint(pp, end, &n) != OK) return BAIL;
    if (n > 0x7FFFFFFFu || n > (uint64_t)(end - *pp)) return BAIL;
    *start = *pp;
    *stop = *pp + n;
    *pp = *stop;
    return OK;
}

/* Skip one field's value by its wire type (groups and the reserved types are answered None). */
static int skip_value(const uint8_t **pp, const uint8_t *end, uint32_t wire) {
    uint64_t v;
    const uint8_t *a = NULL, *b = NULL;
    switch (wire) {
    case 0: return read_varint(pp, end, &v);
    case 1: if ((size_t)(end - *pp) < 8) return BAIL; *pp += 8; return OK;
    case 5: if ((size_t)(end - *pp) < 4) return BAIL; *pp += 4; return OK;
    case 2: return read_len(pp, end, &a, &b);
    default: return BAIL;
    }
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF), as upb and Python. */
static int utf8_ok(const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) { p++; continue; }
        size_t left = (size_t)(end - p);
        if (c >= 0xC2 && c <= 0xDF) {
            if (left < 2 || (p[1] & 0xC0) != 0x80) return 0;
            p += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
            if (c == 0xED && p[1] > 0x9F) return 0; /* surrogate */
            p += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
            if (c == 0xF4 && p[1] > 0x8F) return 0; /* past U+10FFFF */
            p += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* --- the schema of the messages only validated (opentelemetry-proto 1.x) ------------------------ */

enum { M_RESOURCE, M_ENTITY_REF, M_SCOPE, M_KEY_VALUE, M_ANY_VALUE, M_ARRAY, M_KV_LIST, M_EVENT, M_LINK, M_STATUS };
enum { F_UNKNOWN, F_VARINT, F_FIXED64, F_FIXED32, F_BYTES, F_STRING, F_MESSAGE };

static const uint32_t WIRE_OF[] = {0, 0, 1, 5, 2, 2, 2};

/* The kind of field `number` in message `m` (and for a message field, which message). */
static int field_kind(int m, uint32_t number, int *sub) {
    switch (m) {
    case M_RESOURCE: /* attributes (KeyValue bytes in the decoding schema), dropped count, entity refs */
        if (number == 1) return F_BYTES;
        if (number == 2) return F_VARINT;
        if (number == 3) { *sub = M_ENTITY_REF; return F_MESSAGE; }
        return F_UNKNOWN;
    case M_ENTITY_REF: /* schema_url, type, id_keys, description_keys */
        return number >= 1 && number <= 4 ? F_STRING : F_UNKNOWN;
    case M_SCOPE: /* name, version, attributes, dropped count */
        if (number == 1 || number == 2) return F_STRING;
        if (number == 3) { *sub = M_KEY_VALUE; return F_MESSAGE; }
        if (number == 4) return F_VARINT;
        return F_UNKNOWN;
    case M_KEY_VALUE: /* key, value, key_strindex */
        if (number == 1) return F_STRING;
        if (number == 2) { *sub = M_ANY_VALUE; return F_MESSAGE; }
        if (number == 3) return F_VARINT;
        return F_UNKNOWN;
    case M_ANY_VALUE: /* string, bool, int, double, array, kvlist, bytes, string_value_strindex */
        switch (number) {
        case 1: return F_STRING;
        case 2: case 3: case 8: return F_VARINT;
        case 4: return F_FIXED64;
        case 5: *sub = M_ARRAY; return F_MESSAGE;
        case 6: *sub = M_KV_LIST; return F_MESSAGE;
        case 7: return F_BYTES;
        default: return F_UNKNOWN;
        }
    case M_ARRAY:
        if (number == 1) { *sub = M_ANY_VALUE; return F_MESSAGE; }
        return F_UNKNOWN;
    case M_KV_LIST:
        if (number == 1) { *sub = M_KEY_VALUE; return F_MESSAGE; }
        return F_UNKNOWN;
    case M_EVENT: /* time, name, attributes, dropped count */
        if (number == 1) return F_FIXED64;
        if (number == 2) return F_STRING;
        if (number == 3) { *sub = M_KEY_VALUE; return F_MESSAGE; }
        if (number == 4) return F_VARINT;
        return F_UNKNOWN;
    case M_LINK: /* trace_id, span_id, trace_state, attributes, dropped count, flags */
        if (number == 1 || number == 2) return F_BYTES;
        if (number == 3) return F_STRING;
        if (number == 4) { *sub = M_KEY_VALUE; return F_MESSAGE; }
        if (number == 5) return F_VARINT;
        if (number == 6) return F_FIXED32;
        return F_UNKNOWN;
    case M_STATUS: /* message, code */
        if (number == 2) return F_STRING;
        if (number == 3) return F_VARINT;
        return F_UNKNOWN;
    }
    return F_UNKNOWN;
}

/* One known field's value, checked by its kind; an unknown field's, skipped by its wire type. */
static int validate(int m, const uint8_t *p, const uint8_t *end, int depth);

static int check_field(int m, uint32_t number, uint32_t wire, const uint8_t **pp, const uint8_t *end, int depth) {
    int sub = 0;
    int kind = field_kind(m, number, &sub);
    if (kind == F_UNKNOWN) return skip_value(pp, end, wire);
    if (wire != WIRE_OF[kind]) return BAIL; /* upb would keep it as an unknown field: rare, let it decide */
    if (kind == F_STRING || kind == F_MESSAGE) {
        const uint8_t *a = NULL, *b = NULL;
        if (read_len(pp, end, &a, &b) != OK) return BAIL;
        if (kind == F_STRING) return utf8_ok(a, b) ? OK : BAIL;
        return validate(sub, a, b, depth + 1);
    }
    return skip_value(pp, end, wire);
}

static int validate(int m, const uint8_t *p, const uint8_t *end, int depth) {
    if (depth > MAX_DEPTH) return BAIL;
    while (p < end) {
        uint32_t number = 0, wire = 0;
        if (read_tag(&p, end, &number, &wire) != OK) return BAIL;
        if (check_field(m, number, wire, &p, end, depth) != OK) return BAIL;
    }
    return OK;
}

/* --- attributes ------------------------------------------------------------------------------- */

typedef struct {
    PyObject *span_type;
    PyObject *memo;       /* dict: KeyValue bytes -> (key, value) */
    PyObject *key_value;  /* decode._key_value, for encodings not converted here */
    Py_ssize_t memo_limit;
} Ctx;

/* (key, value) for the common encodings: field 1 the key, field 2 an AnyValue holding exactly one
 * string, int, double or bool (1-byte varint); both fields once, in that order, nothing else.
 * Returns a new reference, or NULL without an exception when the encoding is not one of these. */
static PyObject *convert_common(const uint8_t *p, const uint8_t *end) {
    const uint8_t *k0, *k1, *v0, *v1;
    if (p >= end || *p++ != 0x0A) return NULL;
    if (read_len(&p, end, &k0, &k1) != OK) return NULL;
    if (p >= end || *p++ != 0x12) return NULL;
    if (read_len(&p, end, &v0, &v1) != OK || v1 != end) return NULL;
    if (v0 >= v1 || !utf8_ok(k0, k1)) return NULL;
    uint8_t tag = *v0++;
    PyObject *value = NULL;
    if (tag == 0x0A) { /* string_value */
        const uint8_t *s0, *s1;
        if (read_len(&v0, v1, &s0, &s1) != OK || s1 != v1 || !utf8_ok(s0, s1)) return NULL;
        value = PyUnicode_DecodeUTF8((const char *)s0, s1 - s0, "strict");
    } else if (tag == 0x18) { /* int_value: int64, two's complement */
        uint64_t v;
        if (read_varint(&v0, v1, &v) != OK || v0 != v1) return NULL;
        value = PyLong_FromLongLong((long long)(int64_t)v);
    } else if (tag == 0x21) { /* double_value */
        if (v1 - v0 != 8) return NULL;
        uint64_t bits = le64(v0);
        double d;
        memcpy(&d, &bits, 8);
        value = PyFloat_FromDouble(d);
    } else if (tag == 0x10) { /* bool_value */
        if (v1 - v0 != 1 || *v0 >= 0x80) return NULL;
        value = PyBool_FromLong(*v0 != 0);
    } else {
        return NULL;
    }
    if (value == NULL) { PyErr_Clear(); return NULL; }
    PyObject *key = PyUnicode_DecodeUTF8((const char *)k0, k1 - k0, "strict");
    if (key == NULL) { PyErr_Clear(); Py_DECREF(value); return NULL; }
    PyObject *kv = PyTuple_New(2);
    if (kv == NULL) { PyErr_Clear(); Py_DECREF(key); Py_DECREF(value); return NULL; }
    PyTuple_SET_ITEM(kv, 0, key);
    PyTuple_SET_ITEM(kv, 1, value);
    return kv;
}

/* Add one KeyValue (its bytes) to `out` as decode._pb_attributes does: a value metering cannot
 * read (None) is skipped, and a later duplicate key replaces an earlier value. */
static int add_attribute(Ctx *ctx, PyObject *out, const uint8_t *p, const uint8_t *end) {
    PyObject *raw = PyBytes_FromStringAndSize((const char *)p, end - p);
    if (raw == NULL) return BAIL;
    PyObject *kv = PyDict_GetItemWithError(ctx->memo, raw); /* borrowed */
    if (kv != NULL) {
        Py_INCREF(kv);
    } else {
        if (PyErr_Occurred()) { Py_DECREF(raw); return BAIL; }
        kv = convert_common(p, end);
        if (kv == NULL) {
            kv = PyObject_CallOneArg(ctx->key_value, raw);
            if (kv == NULL) { Py_DECREF(raw); return BAIL; }
        }
        if (PyDict_GET_SIZE(ctx->memo) >= ctx->memo_limit) PyDict_Clear(ctx->memo);
        if (PyDict_SetItem(ctx->memo, raw, kv) < 0) { Py_DECREF(raw); Py_DECREF(kv); return BAIL; }
    }
    Py_DECREF(raw);
    int rc = OK;
    if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) {
        rc = BAIL;
    } else {
        PyObject *value = PyTuple_GET_ITEM(kv, 1);
        if (value != Py_None && PyDict_SetItem(out, PyTuple_GET_ITEM(kv, 0), value) < 0) rc = BAIL;
    }
    Py_DECREF(kv);
    return rc;
}

/* --- spans ------------------------------------------------------------------------------------ */

static int decode_span(Ctx *ctx, const uint8_t *p, const uint8_t *end, PyObject *resource, PyObject *scope_name,
                       PyObject *spans) {
    const uint8_t *start = p;
    const uint8_t *trace = NULL, *span = NULL, *parent = NULL, *name = NULL;
    size_t trace_n = 0, span_n = 0, parent_n = 0, name_n = 0;
    uint64_t kind = 0, code = 0, start_ns = 0, end_ns = 0;
    int attributes = 0;
    /* First pass: the scalars (the last occurrence wins, as in protobuf), everything validated. */
    while (p < end) {
        uint32_t number = 0, wire = 0;
        if (read_tag(&p, end, &number, &wire) != OK) return BAIL;
        const uint8_t *a = NULL, *b = NULL;
        switch (number) {
        case 1: case 2: case 4: case 5: case 3: case 9: case 11: case 13: case 15:
            if (wire != 2 || read_len(&p, end, &a, &b) != OK) return BAIL;
            if (number == 1) { trace = a; trace_n = (size_t)(b - a); }
            else if (number == 2) { span = a; span_n = (size_t)(b - a); }
            else if (number == 4) { parent = a; parent_n = (size_t)(b - a); }
            else if (number == 5) { if (!utf8_ok(a, b)) return BAIL; name = a; name_n = (size_t)(b - a); }
            else if (number == 3) { if (!utf8_ok(a, b)) return BAIL; }
            else if (number == 9) attributes++;
            else if (number == 11) { if (validate(M_EVENT, a, b, 5) != OK) return BAIL; }
            else if (number == 13) { if (validate(M_LINK, a, b, 5) != OK) return BAIL; }
            else { /* status: merged over occurrences, so the last code on the wire wins */
                const uint8_t *q = a;
                while (q < b) {
                    uint32_t n2 = 0, w2 = 0;
                    if (read_tag(&q, b, &n2, &w2) != OK) return BAIL;
                    if (n2 == 3) {
                        if (w2 != 0 || read_varint(&q, b, &code) != OK) return BAIL;
                        if (code > 0x7FFFFFFF) return BAIL;
                    } else if (check_field(M_STATUS, n2, w2, &q, b, 5) != OK) {
                        return BAIL;
                    }
                }
            }
            break;
        case 6:
            if (wire != 0 || read_varint(&p, end, &kind) != OK || kind > 0x7FFFFFFF) return BAIL;
            break;
        case 7: case 8:
            if (wire != 1 || (size_t)(end - p) < 8) return BAIL;
            if (number == 7) start_ns = le64(p); else end_ns = le64(p);
            p += 8;
            break;
        case 10: case 12: case 14:
            if (wire != 0 || skip_value(&p, end, 0) != OK) return BAIL;
            break;
        case 16:
            if (wire != 5 || skip_value(&p, end, 5) != OK) return BAIL;
            break;
        default:
            if (skip_value(&p, end, wire) != OK) return BAIL;
        }
    }
    /* decode.py refuses these (400): let it. */
    if (trace_n != 16 || span_n != 8 || (parent_n != 0 && parent_n != 8)) return BAIL;

    PyObject *attrs = PyDict_New();
    if (attrs == NULL) return BAIL;
    if (attributes) { /* second pass: the KeyValues, in order */
        p = start;
        while (p < end) {
            uint32_t number = 0, wire = 0;
            const uint8_t *a = NULL, *b = NULL;
            /* validated above; checked again all the same */
            if (read_tag(&p, end, &number, &wire) != OK) { Py_DECREF(attrs); return BAIL; }
            if (number == 9) {
                if (read_len(&p, end, &a, &b) != OK || add_attribute(ctx, attrs, a, b) != OK) {
                    Py_DECREF(attrs);
                    return BAIL;
                }
            } else if (skip_value(&p, end, wire) != OK) {
                Py_DECREF(attrs);
                return BAIL;
            }
        }
    }
    PyObject *args[11];
    args[0] = PyBytes_FromStringAndSize((const char *)trace, 16);
    args[1] = PyBytes_FromStringAndSize((const char *)span, 8);
    args[2] = PyBytes_FromStringAndSize(parent_n ? (const char *)parent : "", parent_n);
    args[3] = PyUnicode_DecodeUTF8(name_n ? (const char *)name : "", name_n, "strict");
    args[4] = PyLong_FromUnsignedLongLong(start_ns);
    args[5] = PyLong_FromUnsignedLongLong(end_ns);
    args[6] = attrs;
    Py_INCREF(resource);
    args[7] = resource;
    Py_INCREF(scope_name);
    args[8] = scope_name;
    args[9] = PyLong_FromUnsignedLongLong(kind);
    args[10] = PyLong_FromUnsignedLongLong(code);
    int rc = OK;
    for (int i = 0; i < 11; i++) if (args[i] == NULL) rc = BAIL;
    if (rc == OK) {
        PyObject *obj = PyObject_Vectorcall(ctx->span_type, args, 11, NULL);
        if (obj == NULL || PyList_Append(spans, obj) < 0) rc = BAIL;
        Py_XDECREF(obj);
    }
    for (int i = 0; i < 11; i++) Py_XDECREF(args[i]);
    return rc;
}

static int decode_scope_spans(Ctx *ctx, const uint8_t *p, const uint8_t *end, PyObject *resource, PyObject *spans) {
    const uint8_t *start = p;
    const uint8_t *name = NULL;
    size_t name_n = 0;
    int n_spans = 0;
    /* First pass: the scope (merged over occurrences: the last name on the wire wins), and
     * everything but the spans validated. */
    while (p < end) {
        uint32_t number = 0, wire = 0;
        const uint8_t *a = NULL, *b = NULL;
        if (read_tag(&p, end, &number, &wire) != OK) return BAIL;
        if (number == 1 || number == 2 || number == 3) {
            if (wire != 2 || read_len(&p, end, &a, &b) != OK) return BAIL;
            if (number == 2) { n_spans++; continue; }
            if (number == 3) { if (!utf8_ok(a, b)) return BAIL; continue; }
            const uint8_t *q = a;
            while (q < b) {
                uint32_t n2 = 0, w2 = 0;
                const uint8_t *c, *d;
                if (read_tag(&q, b, &n2, &w2) != OK) return BAIL;
                if (n2 == 1) {
                    if (w2 != 2 || read_len(&q, b, &c, &d) != OK || !utf8_ok(c, d)) return BAIL;
                    name = c;
                    name_n = (size_t)(d - c);
                } else if (check_field(M_SCOPE, n2, w2, &q, b, 4) != OK) {
                    return BAIL;
                }
            }
        } else if (skip_value(&p, end, wire) != OK) {
            return BAIL;
        }
    }
    if (!n_spans) return OK;
    PyObject *scope_name = PyUnicode_DecodeUTF8(name_n ? (const char *)name : "", name_n, "strict");
    if (scope_name == NULL) return BAIL;
    p = start;
    int rc = OK;
    while (p < end && rc == OK) {
        uint32_t number = 0, wire = 0;
        const uint8_t *a = NULL, *b = NULL;
        if (read_tag(&p, end, &number, &wire) != OK) rc = BAIL;
        else if (number == 2) rc = read_len(&p, end, &a, &b) == OK ? decode_span(ctx, a, b, resource, scope_name, spans) : BAIL;
        else rc = skip_value(&p, end, wire);
    }
    Py_DECREF(scope_name);
    return rc;
}

static int decode_resource_spans(Ctx *ctx, const uint8_t *p, const uint8_t *end, PyObject *spans) {
    const uint8_t *start = p;
    /* First pass: validate everything but the scope spans. */
    while (p < end) {
        uint32_t number = 0, wire = 0;
        const uint8_t *a = NULL, *b = NULL;
        if (read_tag(&p, end, &number, &wire) != OK) return BAIL;
        if (number == 1 || number == 2 || number == 3) {
            if (wire != 2 || read_len(&p, end, &a, &b) != OK) return BAIL;
            if (number == 3 && !utf8_ok(a, b)) return BAIL;
            if (number == 1 && validate(M_RESOURCE, a, b, 3) != OK) return BAIL;
        } else if (skip_value(&p, end, wire) != OK) {
            return BAIL;
        }
    }
    /* The resource's attributes, over every occurrence of the field (protobuf merges them), in
     * order: one dict shared by every span of this ResourceSpans. */
    PyObject *resource = PyDict_New();
    if (resource == NULL) return BAIL;
    int rc = OK;
    p = start;
    while (p < end && rc == OK) {
        uint32_t number = 0, wire = 0;
        const uint8_t *a = NULL, *b = NULL;
        if (read_tag(&p, end, &number, &wire) != OK) rc = BAIL;
        else if (number != 1) rc = skip_value(&p, end, wire);
        else if (read_len(&p, end, &a, &b) != OK) rc = BAIL;
        while (number == 1 && a < b && rc == OK) {
            uint32_t n2 = 0, w2 = 0;
            const uint8_t *c = NULL, *d = NULL;
            if (read_tag(&a, b, &n2, &w2) != OK) rc = BAIL;
            else if (n2 != 1) rc = skip_value(&a, b, w2);
            else rc = read_len(&a, b, &c, &d) == OK ? add_attribute(ctx, resource, c, d) : BAIL;
        }
    }
    p = start;
    while (p < end && rc == OK) {
        uint32_t number = 0, wire = 0;
        const uint8_t *a = NULL, *b = NULL;
        if (read_tag(&p, end, &number, &wire) != OK) rc = BAIL;
        else if (number == 2) rc = read_len(&p, end, &a, &b) == OK ? decode_scope_spans(ctx, a, b, resource, spans) : BAIL;
        else rc = skip_value(&p, end, wire);
    }
    Py_DECREF(resource);
    return rc;
}

static PyObject *decode_spans(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "decode_spans(raw, span_type, memo, key_value, memo_limit)");
        return NULL;
    }
    if (!PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "memo must be a dict");
        return NULL;
    }
    Ctx ctx = {args[1], args[2], args[3], PyLong_AsSsize_t(args[4])};
    if (ctx.memo_limit == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *p = view.buf;
    const uint8_t *end = p + view.len;
    PyObject *spans = PyList_New(0);
    int rc = spans == NULL ? BAIL : OK;
    while (p < end && rc == OK) {
        uint32_t number = 0, wire = 0;
        const uint8_t *a = NULL, *b = NULL;
        if (read_tag(&p, end, &number, &wire) != OK) { rc = BAIL; break; }
        if (number == 1) {
            if (wire != 2 || read_len(&p, end, &a, &b) != OK) { rc = BAIL; break; }
            rc = decode_resource_spans(&ctx, a, b, spans);
        } else if (skip_value(&p, end, wire) != OK) {
            rc = BAIL;
        }
    }
    PyBuffer_Release(&view);
    if (rc != OK) {
        PyErr_Clear(); /* whatever went wrong, the Python decoder says what it is */
        Py_XDECREF(spans);
        Py_RETURN_NONE;
    }
    return spans;
}


/* --- attribute reads for the normalizers -------------------------------------------------------- */

/* read_attributes(attrs, spec, text, token_count) -> tuple: for each (is_count, keys) of `spec`,
 * what normalize.base.token_count(attrs, keys) or text(attrs, keys) returns. The usual values (a
 * non-empty str for text, a non-negative int for a count, keys absent or None) are read here; any
 * other value hands that one field to the Python function itself, so every answer is its answer. */
static PyObject *read_attributes(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "read_attributes(attrs, spec, text, token_count)");
        return NULL;
    }
    PyObject *attrs = args[0], *spec = args[1], *text = args[2], *count = args[3];
    int plain = PyDict_CheckExact(attrs); /* anything else: every field through Python */
    Py_ssize_t n = PyTuple_GET_SIZE(spec);
    PyObject *out = PyTuple_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(spec, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(item, 1))) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "spec: a tuple of (is_count, keys) pairs");
            return NULL;
        }
        int is_count = PyTuple_GET_ITEM(item, 0) == Py_True;
        PyObject *keys = PyTuple_GET_ITEM(item, 1);
        PyObject *result = NULL;
        int in_python = !plain;
        for (Py_ssize_t k = 0; !in_python && k < PyTuple_GET_SIZE(keys); k++) {
            PyObject *value = PyDict_GetItemWithError(attrs, PyTuple_GET_ITEM(keys, k)); /* borrowed */
            if (value == NULL) {
                if (PyErr_Occurred()) { Py_DECREF(out); return NULL; }
                continue;
            }
            if (value == Py_None) continue;
            if (!is_count && PyUnicode_CheckExact(value)) {
                result = PyUnicode_GET_LENGTH(value) ? value : Py_None;
                Py_INCREF(result);
            } else if (is_count && PyLong_CheckExact(value)) {
                int overflow = 0;
                long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
                if (v == -1 && !overflow && PyErr_Occurred()) { Py_DECREF(out); return NULL; }
                result = (overflow < 0 || (!overflow && v < 0)) ? Py_None : value; /* negative: unknown */
                Py_INCREF(result);
            } else {
                in_python = 1;
            }
            break;
        }
        if (in_python) {
            PyObject *call[2] = {attrs, keys};
            result = PyObject_Vectorcall(is_count ? count : text, call, 2, NULL);
            if (result == NULL) { Py_DECREF(out); return NULL; }
        } else if (result == NULL) {
            result = Py_None;
            Py_INCREF(result);
        }
        PyTuple_SET_ITEM(out, i, result);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"decode_spans", (PyCFunction)(void (*)(void))decode_spans, METH_FASTCALL,
     "decode_spans(raw, span_type, memo, key_value, memo_limit) -> list of spans, or None to let "
     "the Python decoder decide"},
    {"read_attributes", (PyCFunction)(void (*)(void))read_attributes, METH_FASTCALL,
     "read_attributes(attrs, spec, text, token_count) -> tuple of what text/token_count give for "
     "each (is_count, keys) of spec"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlp", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__otlp(void) { return PyModule_Create(&module); }
