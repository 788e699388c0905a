package dra

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// PluginConfig is what Serve needs besides its clients (vgpu-dra's flags).
type PluginConfig struct {
	DriverName   string
	NodeName     string
	RegistrarDir string // the kubelet's plugins_registry
	PluginsDir   string // the kubelet's plugins dir: the socket goes into <dir>/<driver>
	PodUID       string // non-empty: the kubelet's seamless plugin upgrades
	PollInterval time.Duration
	// PodSyncInterval is how often the claims of vgpud's claim slices are
	// read for pods that joined them (SyncPods).
	PodSyncInterval time.Duration
}

// Serve runs the kubelet plugin until ctx ends (nil) or the helper fails
// fatally (its error): it registers with the kubelet, serves
// NodePrepareResources/NodeUnprepareResources and keeps the node's
// ResourceSlice in step with vgpud.
func Serve(ctx context.Context, cfg PluginConfig, kube kubernetes.Interface, vgpud *api.Client, log *zap.Logger) error {
	pluginDir := filepath.Join(cfg.PluginsDir, cfg.DriverName)
	// The helper needs it to exist (the kubelet does not make it).
	if err := os.MkdirAll(pluginDir, 0o750); err != nil {
		return fmt.Errorf("plugin dir: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	driver := New(cfg.DriverName, cfg.NodeName, vgpud, log, func(err error) { cancel(err) })
	driver.readopt(ctx)

	opts := []kubeletplugin.Option{
		kubeletplugin.DriverName(cfg.DriverName),
		kubeletplugin.NodeName(cfg.NodeName),
		kubeletplugin.KubeClient(kube),
		kubeletplugin.RegistrarDirectoryPath(cfg.RegistrarDir),
		kubeletplugin.PluginDataDirectoryPath(pluginDir),
	}
	if cfg.PodUID != "" {
		opts = append(opts, kubeletplugin.RollingUpdate(types.UID(cfg.PodUID)))
	}
	helper, err := kubeletplugin.Start(ctx, driver, opts...)
	if err != nil {
		return fmt.Errorf("start the kubelet plugin: %w", err)
	}
	defer helper.Stop()
	log.Info("kubelet plugin started", zap.String("driver", cfg.DriverName), zap.String("node", cfg.NodeName),
		zap.String("plugin_dir", pluginDir), zap.String("registrar_dir", cfg.RegistrarDir),
		zap.String("vgpud", vgpud.Socket()))

	go driver.SyncPods(ctx, KubeClaims(kube), cfg.PodSyncInterval)
	driver.Publish(ctx, helper, cfg.PollInterval)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopping")
	return nil
}

// readopt says what vgpud holds for claims at start: those slices are this
// plugin's (unprepare finds each by its claim's uid), nothing else to do.
func (d *Driver) readopt(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	if _, err := d.vgpud.Health(ctx); err != nil {
		d.log.Warn("vgpud is not answering yet: claims cannot be prepared until it does", zap.Error(err))
		return
	}
	slices, err := d.Claims(ctx)
	if err != nil {
		d.log.Warn("cannot list vgpud's slices", zap.Error(err))
		return
	}
	for _, sl := range slices {
		d.log.Info("claim slice re-adopted", zap.String("slice", sl.ID),
			zap.String("claim", sl.Owner.ClaimNamespace+"/"+sl.Owner.ClaimName), zap.String("uid", sl.Owner.ClaimUID))
	}
	d.log.Info("vgpud reached", zap.Int("claim_slices", len(slices)))
}
