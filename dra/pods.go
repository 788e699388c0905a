package dra

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// A claim's pods. vgpud counts the processes of the pods a claim is reserved
// for as its slice's members (the backstop judges them, DRA's capacity does
// not count their memory as held outside DRA). The kubelet prepares a claim
// once per node: a pod that joins a shared claim afterwards (the scheduler
// adds it to status.reservedFor) reaches no prepare call. So the plugin reads
// the claims of its slices every interval and tells vgpud when their pods
// changed (PATCH /v1/slices/{id} pod_uids). Until then the new pod's
// processes still run under libvgpu, capped by the slice's budget, but are
// not the slice's members.

// ClaimGetter reads a ResourceClaim (from the apiserver).
type ClaimGetter func(ctx context.Context, namespace, name string) (*resourceapi.ResourceClaim, error)

// KubeClaims reads claims through client-go.
func KubeClaims(kube kubernetes.Interface) ClaimGetter {
	return func(ctx context.Context, namespace, name string) (*resourceapi.ResourceClaim, error) {
		return kube.ResourceV1().ResourceClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	}
}

// SyncPods keeps every claim slice's pods in step with its claim's
// status.reservedFor, every interval, until ctx ends.
func (d *Driver) SyncPods(ctx context.Context, get ClaimGetter, interval time.Duration) {
	d.every(ctx, interval, "bring the claims' pods up to date", func() error { return d.syncPodsOnce(ctx, get) })
}

// syncPodsOnce updates the pods of every claim slice vgpud holds whose claim
// names others now. A claim gone or replaced (another uid under the name) is
// left to unprepare; the first error is returned after trying them all.
func (d *Driver) syncPodsOnce(ctx context.Context, get ClaimGetter) error {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	held, err := d.Claims(ctx)
	if err != nil {
		return err
	}
	var first error
	for _, sl := range held {
		if sl.Owner.ClaimNamespace == "" || sl.Owner.ClaimName == "" {
			continue
		}
		claim, err := get(ctx, sl.Owner.ClaimNamespace, sl.Owner.ClaimName)
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			first = cmp.Or(first, fmt.Errorf("read claim %s/%s: %w", sl.Owner.ClaimNamespace, sl.Owner.ClaimName, err))
			continue
		case string(claim.UID) != sl.Owner.ClaimUID:
			continue
		}
		if err := d.syncSlicePods(ctx, sl, claim); err != nil {
			first = cmp.Or(first, err)
		}
	}
	return first
}

// syncSlicePods tells vgpud the pods claim is reserved for, when they are not
// those slice sl records (in any order).
func (d *Driver) syncSlicePods(ctx context.Context, sl api.Slice, claim *resourceapi.ResourceClaim) error {
	want := claimOwner(claim).PodUIDs
	if sameSet(want, sl.Owner.PodUIDs) {
		return nil
	}
	if want == nil {
		want = []string{}
	}
	if _, err := d.vgpud.Update(ctx, sl.ID, api.UpdateRequest{PodUIDs: &want}); err != nil {
		return fmt.Errorf("tell vgpud the pods of claim %s/%s (slice %s): %w", claim.Namespace, claim.Name, sl.ID, err)
	}
	d.log.Info("claim's pods changed", zap.String("claim", claim.Namespace+"/"+claim.Name),
		zap.String("slice", sl.ID), zap.Strings("was", sl.Owner.PodUIDs), zap.Strings("now", want))
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
