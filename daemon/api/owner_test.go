package api

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOwnerLabels: vgpud takes namespace, pod and container labels only,
// valid UTF-8 of 1..253 bytes (they become metric label values).
func TestOwnerLabels(t *testing.T) {
	ok := AllocRequest{MemoryBytes: 1 << 30, Owner: Owner{Kind: OwnerContainer, ContainerID: "c",
		Labels: map[string]string{"namespace": "ml", "pod": strings.Repeat("p", 253), "container": "w"}}}
	require.NoError(t, ok.Validate())
	for _, labels := range []map[string]string{
		{"node": "n1"},
		{"pod": ""},
		{"pod": strings.Repeat("p", 254)},
		{"container": "\xff"},
	} {
		r := ok
		r.Owner.Labels = labels
		var re *RequestError
		require.ErrorAs(t, r.Validate(), &re, "%v", labels)
		require.Equal(t, "owner.labels", re.Field)
	}
}
