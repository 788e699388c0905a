package daemon

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// TestResolveClaimOwner: a ResourceClaim owner needs its uid and takes
// nothing of the other kinds; claim fields without the kind are refused.
func TestResolveClaimOwner(t *testing.T) {
	ok := api.Owner{Kind: api.OwnerClaim, ClaimUID: "0b7f1c2e-5d1a-4c56-9a43-2f8a0e0c1d11", ClaimNamespace: "ml",
		ClaimName: "train-gpu"}
	o := ok
	require.NoError(t, resolveOwner(&o))
	require.Equal(t, ok, o, "nothing is filled in for a claim")

	for name, bad := range map[string]api.Owner{
		"no uid":           {Kind: api.OwnerClaim, ClaimName: "x"},
		"with a pid":       {Kind: api.OwnerClaim, ClaimUID: "u", PID: 1},
		"with a container": {Kind: api.OwnerClaim, ClaimUID: "u", ContainerID: "c"},
		"long name":        {Kind: api.OwnerClaim, ClaimUID: "u", ClaimName: strings.Repeat("n", 254)},
		"no kind":          {ClaimUID: "u"},
		"container+claim":  {Kind: api.OwnerContainer, ContainerID: "c", ClaimUID: "u"},
	} {
		o := bad
		require.Error(t, resolveOwner(&o), name)
	}
}
