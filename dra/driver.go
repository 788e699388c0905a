package dra

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

// Driver is the kubelet plugin (kubeletplugin.DRAPlugin): prepare and
// unprepare talk to vgpud; it keeps no state of its own, vgpud's store is
// the truth. The helper serializes its calls.
type Driver struct {
	name  string
	pool  string
	vgpud *api.Client
	log   *zap.Logger
	// fatal is called on an error the helper cannot recover from (the
	// process should stop and be restarted).
	fatal func(error)
}

// New makes a driver named name (vgpu.io) for the node node (its pool).
func New(name, node string, vgpud *api.Client, log *zap.Logger, fatal func(error)) *Driver {
	return &Driver{name: name, pool: node, vgpud: vgpud, log: log, fatal: fatal}
}

var _ kubeletplugin.DRAPlugin = (*Driver)(nil)

// PrepareResourceClaims makes (or finds) each claim's slice. A vgpud that
// cannot be asked fails the whole call (the kubelet retries); a claim vgpud
// or the checks refuse fails that claim only, with the reason.
func (d *Driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	devs, err := d.vgpud.Devices(ctx)
	if err != nil {
		return nil, fmt.Errorf("ask vgpud for its GPUs: %w", err)
	}
	slices, err := d.vgpud.Slices(ctx)
	if err != nil {
		return nil, fmt.Errorf("ask vgpud for its slices: %w", err)
	}
	out := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	for _, c := range claims {
		res, err := d.prepareClaim(ctx, c, devs, slices)
		if err != nil {
			d.log.Warn("claim not prepared", zap.String("claim", c.Namespace+"/"+c.Name),
				zap.String("uid", string(c.UID)), zap.Error(err))
			res = kubeletplugin.PrepareResult{Err: fmt.Errorf("vgpu.io: claim %s/%s: %w", c.Namespace, c.Name, err)}
		}
		out[c.UID] = res
	}
	return out, nil
}

func (d *Driver) prepareClaim(ctx context.Context, c *resourceapi.ResourceClaim, devs []api.Device,
	slices []api.Slice) (kubeletplugin.PrepareResult, error) {
	capacityOf := func(dev api.Device) uint64 {
		m, _ := Available(dev, slices)
		return m
	}
	p, err := planClaim(c, d.name, d.pool, devs, capacityOf)
	if err != nil {
		return kubeletplugin.PrepareResult{}, err
	}
	if p.Req.ID == "" {
		return kubeletplugin.PrepareResult{}, nil // nothing of ours in it
	}
	sl, err := d.vgpud.Alloc(ctx, p.Req)
	var se *api.StatusError
	switch {
	case err == nil:
		d.log.Info("claim prepared", zap.String("claim", c.Namespace+"/"+c.Name), zap.String("uid", string(c.UID)),
			zap.String("slice", sl.ID), zap.Strings("gpus", p.Req.UUIDs), zap.String("memory", units.FormatSize(sl.Devices[0].MemoryBytes)),
			zap.Float64("compute_percent", p.Req.ComputePercent), zap.String("qos", string(sl.QoS)), zap.Bool("whole", p.Whole))
	case errors.As(err, &se) && se.StatusCode == http.StatusConflict:
		// A repeated prepare: the slice must be the one this allocation
		// asks for, never silently a different one.
		if sl, err = d.vgpud.Get(ctx, p.Req.ID); err != nil {
			return kubeletplugin.PrepareResult{}, fmt.Errorf("slice %s exists but cannot be read: %w", p.Req.ID, err)
		}
		if err := p.matches(sl); err != nil {
			return kubeletplugin.PrepareResult{}, err
		}
		d.log.Info("claim already prepared", zap.String("claim", c.Namespace+"/"+c.Name), zap.String("slice", sl.ID))
		if err := d.syncSlicePods(ctx, sl, c); err != nil {
			d.log.Warn("claim's pods not brought up to date (the next sync retries)", zap.Error(err))
		}
	default:
		return kubeletplugin.PrepareResult{}, fmt.Errorf("vgpud refused slice %s (%s on %d GPU(s)): %w", p.Req.ID,
			units.FormatSize(p.Req.MemoryBytes), len(p.Req.UUIDs), err)
	}
	return kubeletplugin.PrepareResult{Devices: p.Devices}, nil
}

// UnprepareResourceClaims releases each claim's slice. A claim with no
// slice is done already (idempotent); a slice with the claim's id that
// vgpud records for someone else is left alone and reported.
func (d *Driver) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := make(map[types.UID]error, len(claims))
	for _, c := range claims {
		err := d.unprepareClaim(ctx, c)
		if errors.Is(err, api.ErrNotRunning) {
			return nil, fmt.Errorf("release claim %s: %w", c.String(), err)
		}
		if err != nil {
			d.log.Warn("claim not unprepared", zap.String("claim", c.String()), zap.String("uid", string(c.UID)), zap.Error(err))
			err = fmt.Errorf("vgpu.io: claim %s: %w", c.String(), err)
		}
		out[c.UID] = err
	}
	return out, nil
}

func (d *Driver) unprepareClaim(ctx context.Context, c kubeletplugin.NamespacedObject) error {
	id := SliceID(c.UID)
	sl, err := d.vgpud.Get(ctx, id)
	if api.IsNotFound(err) {
		d.log.Info("claim not prepared here, nothing to release", zap.String("claim", c.String()), zap.String("slice", id))
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up slice %s: %w", id, err)
	}
	if sl.Owner.Kind != api.OwnerClaim || sl.Owner.ClaimUID != string(c.UID) {
		return fmt.Errorf("slice %s belongs to %s %q, not this claim: left alone", id, sl.Owner.Kind, sl.Owner.ClaimUID)
	}
	if err := d.vgpud.Release(ctx, id); err != nil && !api.IsNotFound(err) {
		return fmt.Errorf("release slice %s: %w", id, err)
	}
	d.log.Info("claim unprepared", zap.String("claim", c.String()), zap.String("slice", id))
	return nil
}

// HandleError logs a background error of the helper (publishing the
// ResourceSlice, its gRPC servers). Fields the apiserver dropped mean the
// cluster lacks a feature gate; anything not recoverable stops the plugin.
func (d *Driver) HandleError(_ context.Context, err error, msg string) {
	var dropped interface{ DisabledFeatures() []string }
	if errors.As(err, &dropped) {
		d.log.Error("the apiserver dropped fields of the ResourceSlice: without feature gate DRAConsumableCapacity "+
			"each GPU goes to one claim at a time, whole", zap.String("what", msg), zap.Error(err))
		return
	}
	if errors.Is(err, kubeletplugin.ErrRecoverable) {
		d.log.Warn(msg, zap.Error(err))
		return
	}
	d.log.Error(msg+": stopping", zap.Error(err))
	d.fatal(fmt.Errorf("%s: %w", msg, err))
}

// Claims lists the slices vgpud holds for claims (what a restarted plugin
// re-adopts: nothing to do but know them, since unprepare finds a slice by
// the claim's uid).
func (d *Driver) Claims(ctx context.Context) ([]api.Slice, error) {
	all, err := d.vgpud.Slices(ctx)
	if err != nil {
		return nil, fmt.Errorf("ask vgpud for its slices: %w", err)
	}
	var out []api.Slice
	for _, sl := range all {
		if sl.Owner.Kind == api.OwnerClaim {
			out = append(out, sl)
		}
	}
	return out, nil
}

// pollTimeout bounds one round of questions to vgpud.
const pollTimeout = 10 * time.Second
