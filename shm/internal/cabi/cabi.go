// Package cabi reports what the C compiler makes of libvgpu/include/vgpu_shm.h:
// the offset and size of every field of every struct, every struct's size and
// every constant. shm's abi_test compares them with the Go mirror. It exists
// because cgo cannot be used in _test.go files.
//
// The field table lists the fields by hand, but the test also checks that the
// listed fields of each struct tile it exactly (no gap, no overlap, ending at
// sizeof), so a field added to the header without being listed here shows up as
// a gap (or as a resized reserved field) and fails the test.
package cabi

/*
#cgo CFLAGS: -I${SRCDIR}/../../../libvgpu/include -std=gnu11 -Wall
#include <stddef.h>
#include <stdint.h>
#include "vgpu_shm.h"

struct cabi_field {
	const char *strct;
	const char *name;
	size_t off;
	size_t size;
	int is_signed; // scalar member of a signed integer type
};

// Arrays decay to pointers and structs match no association: both count as
// not signed, like their Go mirrors (arrays, structs).
#define CABI_SIGNED(x) _Generic((x), int8_t: 1, int16_t: 1, int32_t: 1, int64_t: 1, default: 0)
#define CABI_F(S, f) { #S, #f, offsetof(struct S, f), sizeof(((struct S *)0)->f), \
	CABI_SIGNED(((struct S *)0)->f) }

static const struct cabi_field cabi_fields[] = {
	CABI_F(vgpu_header, magic),
	CABI_F(vgpu_header, abi_major),
	CABI_F(vgpu_header, abi_minor),
	CABI_F(vgpu_header, header_size),
	CABI_F(vgpu_header, total_size),
	CABI_F(vgpu_header, device_count),
	CABI_F(vgpu_header, slot_count),
	CABI_F(vgpu_header, max_devices),
	CABI_F(vgpu_header, reserved0),
	CABI_F(vgpu_header, reserved),

	CABI_F(vgpu_budget_device, uuid),
	CABI_F(vgpu_budget_device, index),
	CABI_F(vgpu_budget_device, flags),
	CABI_F(vgpu_budget_device, memory_limit),
	CABI_F(vgpu_budget_device, memory_guaranteed),
	CABI_F(vgpu_budget_device, context_overhead),
	CABI_F(vgpu_budget_device, compute_share_bp),
	CABI_F(vgpu_budget_device, compute_floor_bp),
	CABI_F(vgpu_budget_device, token_rate),
	CABI_F(vgpu_budget_device, token_burst),
	CABI_F(vgpu_budget_device, elastic_grant_seq),
	CABI_F(vgpu_budget_device, memory_max),
	CABI_F(vgpu_budget_device, reserved),

	CABI_F(vgpu_budget, hdr),
	CABI_F(vgpu_budget, generation),
	CABI_F(vgpu_budget, slice_id),
	CABI_F(vgpu_budget, priority),
	CABI_F(vgpu_budget, qos),
	CABI_F(vgpu_budget, policy),
	CABI_F(vgpu_budget, flags),
	CABI_F(vgpu_budget, created_unix_ns),
	CABI_F(vgpu_budget, reserved),
	CABI_F(vgpu_budget, dev),

	CABI_F(vgpu_usage_device, used_bytes),
	CABI_F(vgpu_usage_device, peak_bytes),
	CABI_F(vgpu_usage_device, refused_allocs),
	CABI_F(vgpu_usage_device, elastic_request_bytes),
	CABI_F(vgpu_usage_device, elastic_request_seq),
	CABI_F(vgpu_usage_device, tokens),
	CABI_F(vgpu_usage_device, last_refill_ns),
	CABI_F(vgpu_usage_device, launches),
	CABI_F(vgpu_usage_device, throttled_ns),
	CABI_F(vgpu_usage_device, token_spent),
	CABI_F(vgpu_usage_device, token_refilled),
	CABI_F(vgpu_usage_device, token_done),
	CABI_F(vgpu_usage_device, sampled_tokens),
	CABI_F(vgpu_usage_device, sampled_ns),
	CABI_F(vgpu_usage_device, inflight_waited_ns),
	CABI_F(vgpu_usage_device, reserved),

	CABI_F(vgpu_slot, owner),
	CABI_F(vgpu_slot, pid),
	CABI_F(vgpu_slot, pidns_ino),
	CABI_F(vgpu_slot, start_time),
	CABI_F(vgpu_slot, host_pid),
	CABI_F(vgpu_slot, contexts),
	CABI_F(vgpu_slot, reserved0),
	CABI_F(vgpu_slot, used_bytes),
	CABI_F(vgpu_slot, reserved),

	CABI_F(vgpu_usage, hdr),
	CABI_F(vgpu_usage, attach_count),
	CABI_F(vgpu_usage, reserved),
	CABI_F(vgpu_usage, dev),
	// slots is a flexible array member: sizeof does not apply; size 0.
	{ "vgpu_usage", "slots", offsetof(struct vgpu_usage, slots), 0, 0 },
};

static size_t cabi_nfields(void) { return sizeof(cabi_fields) / sizeof(cabi_fields[0]); }
static const struct cabi_field *cabi_field_at(size_t i) { return &cabi_fields[i]; }

struct cabi_size {
	const char *name;
	size_t size;
	size_t align;
};

#define CABI_S(S) { #S, sizeof(struct S), _Alignof(struct S) }

static const struct cabi_size cabi_sizes[] = {
	CABI_S(vgpu_header),
	CABI_S(vgpu_budget_device),
	CABI_S(vgpu_budget),
	CABI_S(vgpu_usage_device),
	CABI_S(vgpu_slot),
	CABI_S(vgpu_usage),
};

static size_t cabi_nsizes(void) { return sizeof(cabi_sizes) / sizeof(cabi_sizes[0]); }
static const struct cabi_size *cabi_size_at(size_t i) { return &cabi_sizes[i]; }

struct cabi_const {
	const char *name;
	uint64_t value;
};

#define CABI_C(N) { #N, (uint64_t)(N) }

static const struct cabi_const cabi_consts[] = {
	CABI_C(VGPU_BUDGET_MAGIC),
	CABI_C(VGPU_USAGE_MAGIC),
	CABI_C(VGPU_ABI_MAJOR),
	CABI_C(VGPU_ABI_MINOR),
	CABI_C(VGPU_MAX_DEVICES),
	CABI_C(VGPU_DEFAULT_SLOTS),
	CABI_C(VGPU_MAX_SLOTS),
	CABI_C(VGPU_UUID_LEN),
	CABI_C(VGPU_SLICE_ID_LEN),
	CABI_C(VGPU_QOS_GUARANTEED),
	CABI_C(VGPU_QOS_BURSTABLE),
	CABI_C(VGPU_QOS_BEST_EFFORT),
	CABI_C(VGPU_TOKEN_WAVE_NS),
	CABI_C(VGPU_TOKEN_BURST_DIV),
	CABI_C(VGPU_TOKEN_BURST_MIN_WAVES),
	CABI_C(VGPU_DEFAULT_TOKEN_BURST(0)),
	CABI_C(VGPU_DEFAULT_TOKEN_BURST(1000000)),
	CABI_C(VGPU_DEFAULT_TOKEN_BURST(3000000000)),
	CABI_C(VGPU_POLICY_CAP),
	CABI_C(VGPU_POLICY_SHARE),
	CABI_C(VGPU_BUDGET_F_ELASTIC),
	CABI_C(VGPU_BUDGET_F_MANAGED),
	CABI_C(VGPU_ELASTIC_WAIT_MS_DEFAULT),
	CABI_C(VGPU_MARKER_STRIDE),
	CABI_C(VGPU_SLOT_FREE),
	CABI_C(VGPU_SLOT_CLAIMING),
	CABI_C(VGPU_SLOT_LIVE),
	CABI_C(VGPU_SLOT_RECLAIMING),
	CABI_C(VGPU_SLOT_STATE_MASK),
	CABI_C(VGPU_SLOT_PID_SHIFT),
	CABI_C(VGPU_BUDGET_SIZE),
	{ "VGPU_USAGE_SIZE(0)", VGPU_USAGE_SIZE(0) },
	{ "VGPU_USAGE_SIZE(1)", VGPU_USAGE_SIZE(1) },
	{ "VGPU_USAGE_SIZE(VGPU_DEFAULT_SLOTS)", VGPU_USAGE_SIZE(VGPU_DEFAULT_SLOTS) },
	{ "VGPU_USAGE_SIZE(VGPU_MAX_SLOTS)", VGPU_USAGE_SIZE(VGPU_MAX_SLOTS) },
};

static size_t cabi_nconsts(void) { return sizeof(cabi_consts) / sizeof(cabi_consts[0]); }
static const struct cabi_const *cabi_const_at(size_t i) { return &cabi_consts[i]; }

struct cabi_str {
	const char *name;
	const char *value;
};

static const struct cabi_str cabi_strs[] = {
	{ "VGPU_BUDGET_FILE", VGPU_BUDGET_FILE },
	{ "VGPU_USAGE_FILE", VGPU_USAGE_FILE },
	{ "VGPU_CONTAINER_SLICE_DIR", VGPU_CONTAINER_SLICE_DIR },
};

static size_t cabi_nstrs(void) { return sizeof(cabi_strs) / sizeof(cabi_strs[0]); }
static const struct cabi_str *cabi_str_at(size_t i) { return &cabi_strs[i]; }
*/
import "C"

// Field is one struct member as the C compiler lays it out.
type Field struct {
	Struct string // C struct tag, e.g. "vgpu_slot"
	Name   string // C member name, e.g. "used_bytes"
	Offset uintptr
	Size   uintptr // 0 for the flexible array member vgpu_usage.slots
	Signed bool    // a scalar of a signed integer type
}

// StructSize is the size and alignment of a C struct.
type StructSize struct {
	Size  uintptr
	Align uintptr
}

// Fields returns every listed member of every struct of vgpu_shm.h, in
// declaration order.
func Fields() []Field {
	n := int(C.cabi_nfields())
	out := make([]Field, 0, n)
	for i := 0; i < n; i++ {
		f := C.cabi_field_at(C.size_t(i))
		out = append(out, Field{
			Struct: C.GoString(f.strct),
			Name:   C.GoString(f.name),
			Offset: uintptr(f.off),
			Size:   uintptr(f.size),
			Signed: f.is_signed != 0,
		})
	}
	return out
}

// Sizes returns sizeof/_Alignof of every struct, by C struct tag.
func Sizes() map[string]StructSize {
	n := int(C.cabi_nsizes())
	out := make(map[string]StructSize, n)
	for i := 0; i < n; i++ {
		s := C.cabi_size_at(C.size_t(i))
		out[C.GoString(s.name)] = StructSize{Size: uintptr(s.size), Align: uintptr(s.align)}
	}
	return out
}

// Constants returns every integer macro of the header, by macro name (and a few
// VGPU_USAGE_SIZE(n) evaluations).
func Constants() map[string]uint64 {
	n := int(C.cabi_nconsts())
	out := make(map[string]uint64, n)
	for i := 0; i < n; i++ {
		c := C.cabi_const_at(C.size_t(i))
		out[C.GoString(c.name)] = uint64(c.value)
	}
	return out
}

// Strings returns every string macro of the header, by macro name.
func Strings() map[string]string {
	n := int(C.cabi_nstrs())
	out := make(map[string]string, n)
	for i := 0; i < n; i++ {
		s := C.cabi_str_at(C.size_t(i))
		out[C.GoString(s.name)] = C.GoString(s.value)
	}
	return out
}
