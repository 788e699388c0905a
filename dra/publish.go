package dra

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"
	"k8s.io/dynamic-resource-allocation/resourceslice"
)

// Publisher publishes the driver's ResourceSlices (kubeletplugin.Helper).
type Publisher interface {
	PublishResources(ctx context.Context, resources resourceslice.DriverResources) error
}

// Publish keeps the node's ResourceSlice in step with vgpud: every
// interval it asks vgpud for its GPUs and slices and republishes when what
// a GPU offers DRA changed (a slice made or released outside DRA, memory
// taken by a process in no slice). It returns when ctx ends.
func (d *Driver) Publish(ctx context.Context, pub Publisher, interval time.Duration) {
	var last string
	d.every(ctx, interval, "publish the GPUs", func() error { return d.publishOnce(ctx, pub, &last) })
}

// every runs step now and then every interval until ctx ends, logging the
// first failure of a run of them (what it could not do) and the recovery.
func (d *Driver) every(ctx context.Context, interval time.Duration, what string, step func() error) {
	var failing bool
	for {
		err := step()
		switch {
		case err != nil && !failing:
			d.log.Warn("cannot "+what+" (retrying every interval)", zap.Duration("interval", interval), zap.Error(err))
		case err == nil && failing:
			d.log.Info("could " + what + " again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// publishOnce publishes the GPUs if they changed since last (a digest of
// what was published).
func (d *Driver) publishOnce(ctx context.Context, pub Publisher, last *string) error {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	res, err := d.Resources(ctx)
	if err != nil {
		return err
	}
	digest, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode the pool: %w", err)
	}
	if string(digest) == *last {
		return nil
	}
	if err := pub.PublishResources(ctx, res); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	*last = string(digest)
	var lines []string
	for _, dev := range res.Pools[d.pool].Slices[0].Devices {
		lines = append(lines, describe(dev))
	}
	d.log.Info("GPUs published", zap.String("pool", d.pool), zap.Strings("devices", lines))
	return nil
}

// Resources is the node's pool as vgpud describes it now.
func (d *Driver) Resources(ctx context.Context) (resourceslice.DriverResources, error) {
	devs, err := d.vgpud.Devices(ctx)
	if err != nil {
		return resourceslice.DriverResources{}, fmt.Errorf("ask vgpud for its GPUs: %w", err)
	}
	slices, err := d.vgpud.Slices(ctx)
	if err != nil {
		return resourceslice.DriverResources{}, fmt.Errorf("ask vgpud for its slices: %w", err)
	}
	return Resources(d.pool, devs, slices), nil
}
