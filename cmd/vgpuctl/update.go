package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/vgpu-project/vgpu/daemon/api"
)

const updateHelp = `Usage:
  vgpuctl update ID [--compute PCT] [--compute-policy cap|share] [--json] [--socket PATH]

Changes a running slice's compute share and/or policy, without restarting its
processes, and prints the slice as it is now. The share is per device, on every
device of the slice: 0 < PCT <= 100, or 0 for no share (not throttled, nothing
reserved). A guaranteed slice's new share must fit beside the other slices'
guaranteed shares on each of its devices; otherwise nothing changes and the
refusal says what each device has free.

The change is recorded on disk before it is answered (it survives a vgpud
restart) and the slice's budget holds it at once: libvgpu throttles by the new
share from the next launch, and vgpud's controller steps to it within a tick
(50 ms), keeping what it learnt of the slice's kernels.

Examples:
  vgpuctl update train-1 --compute 70
  vgpuctl update train-1 --compute-policy share
  vgpuctl update train-1 --compute 20 --compute-policy cap

Flags:
`

func updateCommand() *command {
	return &command{name: "update", run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl update", flag.ContinueOnError)
		socket := socketFlag(fs)
		compute := fs.Float64("compute", 0, "the new compute share per device in percent, 0 < `PCT` <= 100 (0: no share)")
		policy := fs.String("compute-policy", "", "the new compute policy: `cap` (a ceiling, even alone on the device) or share (a guarantee; idle capacity may be used)")
		asJSON := fs.Bool("json", false, "print the slice as JSON")
		pos, err := parseWithArgs(fs, updateHelp, args, stdout)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("update: want one slice id (vgpuctl update ID --compute PCT), got %d arguments", len(pos))
		}
		var req api.UpdateRequest
		if flagGiven(fs, "compute") {
			if *compute < 0 || *compute > 100 {
				return usagef("--compute %g out of range (0, 100]", *compute)
			}
			req.ComputePercent = compute
		}
		if *policy != "" {
			if _, err := api.ParseComputePolicy(*policy); err != nil {
				return usagef("--compute-policy %q: want cap or share", *policy)
			}
			req.ComputePolicy = api.ComputePolicy(*policy)
		}
		if req.ComputePercent == nil && req.ComputePolicy == "" {
			return usagef("update: nothing to change: give --compute and/or --compute-policy")
		}
		ctx, cancel := callCtx()
		defer cancel()
		c := api.NewClient(*socket)
		defer c.Close()
		s, err := c.Update(ctx, pos[0], req)
		if err != nil {
			return apiError("update "+pos[0], err)
		}
		if *asJSON {
			return jsonOut(stdout, s)
		}
		_, err = fmt.Fprintf(stdout, "%s compute %s policy %s\n", s.ID, sliceCompute(s), dash(string(s.ComputePolicy)))
		return err
	}}
}
