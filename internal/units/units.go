// Package units parses and formats byte sizes for the vgpu command lines,
// annotations and configuration.
//
// Sizes are Kubernetes quantities, parsed by k8s.io/apimachinery's
// resource.ParseQuantity, so that a size means here what it means in a pod
// spec: "4Gi" is 4·2³⁰ bytes, "4G" is 4·10⁹ bytes, "4096" is bytes, "1.5Gi"
// and "1e9" are allowed; the suffixes are case-sensitive (k, M, G, T, P, E
// decimal; Ki, Mi, Gi, Ti, Pi, Ei binary). The value must come out to a whole
// number of bytes, at least 0 and below 2⁶³ (Kubernetes' own bound), so a
// milli "m" ("512m" is 0.512 bytes) is refused with a hint.
//
// Not Kubernetes, but accepted because our docs and users write them: the
// binary spellings with a "B" ("512MiB", "16GiB", any case: "16gib"), which
// mean the same as "512Mi" and "16Gi"; a decimal suffix with a "B" ("4GB",
// "500MB", "2kB"/"2KB"), which means the same as "4G", "500M", "2k"
// (decimal, as the SI and Kubernetes say); and a plain "B" after a number
// ("4096B"). A space between the number and the unit is allowed.
//
// Before this package followed Kubernetes every unit was binary ("4G" and
// "4GB" were 4 GiB); they are decimal now. Bare "K", "g", "t" and the like,
// which Kubernetes does not know, are refused with the two spellings that
// mean what was probably meant.
package units

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// byteSuffixes maps a unit written with a "B" (lower-cased) to its Kubernetes
// suffix.
var byteSuffixes = map[string]string{
	"b":   "",
	"kib": "Ki", "mib": "Mi", "gib": "Gi", "tib": "Ti", "pib": "Pi", "eib": "Ei",
	"kb": "k", "mb": "M", "gb": "G", "tb": "T", "pb": "P", "eb": "E",
}

// kubeSuffixes are the suffixes resource.ParseQuantity takes for a size
// (its "n" and "u" cannot make whole bytes; "m" gets its own hint).
var kubeSuffixes = map[string]bool{
	"": true, "k": true, "M": true, "G": true, "T": true, "P": true, "E": true,
	"Ki": true, "Mi": true, "Gi": true, "Ti": true, "Pi": true, "Ei": true,
}

// ParseSize parses a size: a Kubernetes quantity ("4Gi", "4G", "1.5Gi",
// "1e9", "4096") or one of the spellings with a "B" ("512MiB", "4GB",
// "4096B"); see the package documentation.
func ParseSize(s string) (uint64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("parse size %q: empty", s)
	}
	num, unit := splitSize(in)
	if num == "" {
		return 0, fmt.Errorf("parse size %q: no number (want e.g. 512Mi, 16Gi or plain bytes)", s)
	}
	if k, ok := byteSuffixes[strings.ToLower(unit)]; ok {
		unit = k
	} else if !kubeSuffixes[unit] && !isExponent(unit) {
		return 0, fmt.Errorf("parse size %q: %s", s, unitHint(num, unit))
	}
	q, err := resource.ParseQuantity(num + unit)
	if err != nil {
		return 0, fmt.Errorf("parse size %q: want a Kubernetes quantity (16Gi, 4G, 512Mi, bytes): %w", s, err)
	}
	r, ok := new(big.Rat).SetString(q.AsDec().String())
	if !ok {
		return 0, fmt.Errorf("parse size %q: not a number", s)
	}
	if r.Sign() < 0 {
		return 0, fmt.Errorf("parse size %q: negative", s)
	}
	if !r.IsInt() {
		return 0, fmt.Errorf("parse size %q: not a whole number of bytes", s)
	}
	n := r.Num()
	// ParseQuantity caps what does not fit an int64 at its largest value:
	// that value itself is refused, so no cap is ever taken for the size.
	if !n.IsInt64() || n.Int64() == math.MaxInt64 {
		return 0, fmt.Errorf("parse size %q: too large", s)
	}
	return n.Uint64(), nil
}

// splitSize splits "1.5 GiB" into "1.5" and "GiB": the number is digits and
// dots with an optional leading sign; an exponent ("1e9") is left in the unit
// (resource.ParseQuantity reads it).
func splitSize(in string) (num, unit string) {
	i := 0
	if i < len(in) && (in[i] == '+' || in[i] == '-') {
		i++
	}
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	if !strings.ContainsAny(in[:i], "0123456789") {
		return "", in
	}
	return in[:i], strings.TrimSpace(in[i:])
}

// isExponent: "e9", "E3", "e+3" (a decimal exponent, as Kubernetes writes
// 1e9).
func isExponent(unit string) bool {
	if len(unit) < 2 || (unit[0] != 'e' && unit[0] != 'E') {
		return false
	}
	_, err := strconv.Atoi(unit[1:])
	return err == nil
}

// unitHint says why a unit is refused and what was probably meant.
func unitHint(num, unit string) string {
	if unit == "m" {
		return fmt.Sprintf("\"m\" is milli in Kubernetes quantities (%sm is a fraction of a byte): write %sMi (binary) or %sM (decimal)",
			num, num, num)
	}
	up := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(unit), "b"), "i"))
	const prefixes = "KMGTPE"
	if p := strings.Index(prefixes, up); len(up) == 1 && p >= 0 {
		dec := up
		if up == "K" {
			dec = "k"
		}
		return fmt.Sprintf("unknown unit %q: write %s%si (binary, %s·2^%d) or %s%s (decimal, %s·10^%d); sizes follow Kubernetes quantities",
			unit, num, up, num, 10*(p+1), num, dec, num, 3*(p+1))
	}
	return fmt.Sprintf("unknown unit %q (want Ki, Mi, Gi, Ti (binary) or k, M, G, T (decimal), as in Kubernetes; MiB, GiB also do)", unit)
}

// FormatSize renders bytes with the largest binary unit that divides it exactly
// ("16GiB", "1536MiB", "1000B"), so that ParseSize(FormatSize(n)) == n.
func FormatSize(n uint64) string {
	units := []struct {
		suffix string
		size   uint64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	if n == 0 {
		return "0B"
	}
	for _, u := range units {
		if n%u.size == 0 {
			return strconv.FormatUint(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

// HumanSize renders bytes approximately for tables ("1.50GiB"); not parseable back
// exactly. Use FormatSize where the value must round-trip.
func HumanSize(n uint64) string {
	units := []struct {
		suffix string
		size   uint64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n >= u.size {
			if n%u.size == 0 {
				return strconv.FormatUint(n/u.size, 10) + u.suffix
			}
			return strconv.FormatFloat(float64(n)/float64(u.size), 'f', 2, 64) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}
