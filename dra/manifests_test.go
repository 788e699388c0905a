package dra

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/dynamic-resource-allocation/cel"
)

// decodeManifests strictly decodes every document of every YAML file under
// deploy/kubernetes into the Kubernetes Go types (unknown or duplicate
// fields are errors), as the apiserver would read them.
func decodeManifests(t *testing.T) []runtime.Object {
	t.Helper()
	files, err := filepath.Glob("../deploy/kubernetes/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		r := utilyaml.NewYAMLReader(bufioReader(data))
		for {
			doc, err := r.Read()
			if err != nil {
				break
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			require.NoError(t, err, "%s", f)
			objs = append(objs, obj)
		}
	}
	return objs
}

// TestManifests: the manifests are what the driver expects — the
// DeviceClass selects driver vgpu.io with a CEL expression that compiles,
// the example claim asks for memory (and compute) by consumable capacity and
// gives a SliceConfig the driver accepts, the plugin gets its node name and
// the kubelet's directories, and its role covers what the helper does.
func TestManifests(t *testing.T) {
	kinds := map[string]int{}
	for _, obj := range decodeManifests(t) {
		kinds[obj.GetObjectKind().GroupVersionKind().Kind]++
		switch o := obj.(type) {
		case *resourceapi.DeviceClass:
			require.Equal(t, "vgpu.io", o.Name)
			require.Len(t, o.Spec.Selectors, 1)
			res := cel.GetCompiler(cel.Features{}).CompileCELExpression(o.Spec.Selectors[0].CEL.Expression, cel.Options{})
			require.Nil(t, res.Error)
		case *resourceapi.ResourceClaimTemplate:
			req := o.Spec.Spec.Devices.Requests[0]
			require.Equal(t, "vgpu.io", req.Exactly.DeviceClassName)
			require.Contains(t, req.Exactly.Capacity.Requests, CapacityMemory)
			cfg := o.Spec.Spec.Devices.Config[0].Opaque
			require.Equal(t, "vgpu.io", cfg.Driver)
			_, err := DecodeConfig(cfg.Parameters.Raw)
			require.NoError(t, err)
		case *appsv1.DaemonSet:
			checkDaemonSet(t, o)
		}
	}
	for _, k := range []string{"DeviceClass", "ResourceClaimTemplate", "Pod", "DaemonSet", "ServiceAccount",
		"ClusterRole", "ClusterRoleBinding", "Namespace"} {
		require.Equal(t, 1, kinds[k], "one %s", k)
	}
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	c := ds.Spec.Template.Spec.Containers[0]
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name)
		if e.Name == "NODE_NAME" {
			require.Equal(t, "spec.nodeName", e.ValueFrom.FieldRef.FieldPath)
		}
	}
	require.Contains(t, env, "NODE_NAME")
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
	}
	for _, p := range []string{"/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins", "/run/vgpu"} {
		require.True(t, mounts[p], "mounts %s", p)
	}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		require.NotNil(t, v.HostPath, v.Name)
		require.Contains(t, []corev1.HostPathType{corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate}, *v.HostPath.Type)
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
