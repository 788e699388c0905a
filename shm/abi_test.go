package shm

import (
	"reflect"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/shm/internal/cabi"
)

// goMirrors maps each C struct of vgpu_shm.h to its Go mirror.
var goMirrors = map[string]reflect.Type{
	"vgpu_header":        reflect.TypeFor[ShmHeader](),
	"vgpu_budget_device": reflect.TypeFor[ShmBudgetDevice](),
	"vgpu_budget":        reflect.TypeFor[ShmBudget](),
	"vgpu_usage_device":  reflect.TypeFor[ShmUsageDevice](),
	"vgpu_slot":          reflect.TypeFor[ShmSlot](),
	"vgpu_usage":         reflect.TypeFor[ShmUsage](),
}

// TestABIStructSizes: every C struct has a Go mirror of the same size and
// alignment, and vice versa.
func TestABIStructSizes(t *testing.T) {
	sizes := cabi.Sizes()
	require.Len(t, sizes, len(goMirrors), "C structs and Go mirrors differ in number")
	for name, cs := range sizes {
		gt, ok := goMirrors[name]
		require.True(t, ok, "struct %s has no Go mirror", name)
		require.Equal(t, cs.Size, gt.Size(), "sizeof(struct %s) vs %s", name, gt.Name())
		require.Equal(t, cs.Align, uintptr(gt.Align()), "_Alignof(struct %s) vs %s", name, gt.Name())
	}
}

// TestABIFieldsTileCStructs: the field table of the cgo helper covers every
// byte of every C struct exactly once, so a member added to the header but not
// to the table cannot go unnoticed (it leaves a gap or changes a reserved
// field's size).
func TestABIFieldsTileCStructs(t *testing.T) {
	byStruct := map[string][]cabi.Field{}
	for _, f := range cabi.Fields() {
		byStruct[f.Struct] = append(byStruct[f.Struct], f)
	}
	sizes := cabi.Sizes()
	require.Len(t, byStruct, len(sizes), "every struct has fields listed")
	for name, fields := range byStruct {
		sort.Slice(fields, func(i, j int) bool { return fields[i].Offset < fields[j].Offset })
		var end uintptr
		for _, f := range fields {
			require.Equal(t, end, f.Offset, "struct %s: gap or overlap before %s", name, f.Name)
			end = f.Offset + f.Size
		}
		require.Equal(t, sizes[name].Size, end, "struct %s: fields do not reach its end", name)
	}
}

// TestABIFieldOffsets: every C member has a Go field (matched by its `c` tag)
// at the same offset with the same size and signedness, and every Go field has
// a C member.
func TestABIFieldOffsets(t *testing.T) {
	type goField struct {
		name         string
		offset, size uintptr
		signed       bool
	}
	goFields := map[string]map[string]goField{}
	for cname, gt := range goMirrors {
		m := map[string]goField{}
		for i := 0; i < gt.NumField(); i++ {
			sf := gt.Field(i)
			tag := sf.Tag.Get("c")
			require.NotEmpty(t, tag, "%s.%s has no c tag", gt.Name(), sf.Name)
			_, dup := m[tag]
			require.False(t, dup, "%s: two fields tagged %q", gt.Name(), tag)
			k := sf.Type.Kind()
			m[tag] = goField{name: sf.Name, offset: sf.Offset, size: sf.Type.Size(),
				signed: k >= reflect.Int && k <= reflect.Int64}
		}
		goFields[cname] = m
	}

	seen := map[string]map[string]bool{}
	for _, f := range cabi.Fields() {
		if seen[f.Struct] == nil {
			seen[f.Struct] = map[string]bool{}
		}
		seen[f.Struct][f.Name] = true
		if f.Struct == "vgpu_usage" && f.Name == "slots" {
			// Flexible array member: Go maps the slots separately, right after
			// the fixed part.
			require.Equal(t, f.Offset, uintptr(usageSlotsStart), "vgpu_usage.slots offset")
			require.Equal(t, f.Offset, reflect.TypeFor[ShmUsage]().Size(), "slots follow the fixed part")
			continue
		}
		gf, ok := goFields[f.Struct][f.Name]
		require.True(t, ok, "C member %s.%s has no Go field", f.Struct, f.Name)
		require.Equal(t, f.Offset, gf.offset, "offset of %s.%s (Go %s)", f.Struct, f.Name, gf.name)
		require.Equal(t, f.Size, gf.size, "size of %s.%s (Go %s)", f.Struct, f.Name, gf.name)
		require.Equal(t, f.Signed, gf.signed, "signedness of %s.%s (Go %s)", f.Struct, f.Name, gf.name)
	}
	for cname, m := range goFields {
		for tag, gf := range m {
			require.True(t, seen[cname][tag], "Go field %s (c:%q) has no C member in struct %s", gf.name, tag, cname)
		}
	}
}

// TestABIConstants: every macro of the header has the same value in Go.
func TestABIConstants(t *testing.T) {
	want := map[string]uint64{
		"VGPU_BUDGET_MAGIC":          BudgetMagic,
		"VGPU_USAGE_MAGIC":           UsageMagic,
		"VGPU_ABI_MAJOR":             ABIMajor,
		"VGPU_ABI_MINOR":             ABIMinor,
		"VGPU_MAX_DEVICES":           MaxDevices,
		"VGPU_DEFAULT_SLOTS":         DefaultSlots,
		"VGPU_MAX_SLOTS":             MaxSlots,
		"VGPU_UUID_LEN":              UUIDLen,
		"VGPU_SLICE_ID_LEN":          SliceIDLen,
		"VGPU_QOS_GUARANTEED":        QoSGuaranteed,
		"VGPU_QOS_BURSTABLE":         QoSBurstable,
		"VGPU_QOS_BEST_EFFORT":       QoSBestEffort,
		"VGPU_TOKEN_WAVE_NS":         TokenWaveNs,
		"VGPU_TOKEN_BURST_DIV":       TokenBurstDiv,
		"VGPU_TOKEN_BURST_MIN_WAVES": TokenBurstMinWaves,
		// The default burst: the same formula on both sides, below, at and
		// above the floor.
		"VGPU_DEFAULT_TOKEN_BURST(0)":          DefaultTokenBurst(0),
		"VGPU_DEFAULT_TOKEN_BURST(1000000)":    DefaultTokenBurst(1000000),
		"VGPU_DEFAULT_TOKEN_BURST(3000000000)": DefaultTokenBurst(3000000000),
		"VGPU_POLICY_CAP":                      PolicyCap,
		"VGPU_POLICY_SHARE":                    PolicyShare,
		"VGPU_BUDGET_F_ELASTIC":                BudgetFlagElastic,
		"VGPU_BUDGET_F_MANAGED":                BudgetFlagManaged,
		"VGPU_MARKER_STRIDE":                   MarkerStride,
		"VGPU_ELASTIC_WAIT_MS_DEFAULT":         ElasticWaitDefaultMs,
		"VGPU_SLOT_FREE":                       SlotFree,
		"VGPU_SLOT_CLAIMING":                   SlotClaiming,
		"VGPU_SLOT_LIVE":                       SlotLive,
		"VGPU_SLOT_RECLAIMING":                 SlotReclaiming,
		"VGPU_SLOT_STATE_MASK":                 SlotStateMask,
		"VGPU_SLOT_PID_SHIFT":                  SlotPIDShift,
		"VGPU_BUDGET_SIZE":                     BudgetSize,
		"VGPU_USAGE_SIZE(0)":                   UsageSize(0),
		"VGPU_USAGE_SIZE(1)":                   UsageSize(1),
		"VGPU_USAGE_SIZE(VGPU_DEFAULT_SLOTS)":  UsageSize(DefaultSlots),
		"VGPU_USAGE_SIZE(VGPU_MAX_SLOTS)":      UsageSize(MaxSlots),
	}
	require.Equal(t, want, cabi.Constants())

	require.Equal(t, map[string]string{
		"VGPU_BUDGET_FILE":         BudgetFile,
		"VGPU_USAGE_FILE":          UsageFile,
		"VGPU_CONTAINER_SLICE_DIR": ContainerSliceDir,
	}, cabi.Strings())

	// The magics spell their names in file order (little-endian).
	le := func(v uint64) string {
		b := make([]byte, 8)
		for i := range b {
			b[i] = byte(v >> (8 * i))
		}
		return string(b)
	}
	require.Equal(t, "VGPUBDGT", le(BudgetMagic))
	require.Equal(t, "VGPUUSAG", le(UsageMagic))
}
