package daemon

import (
	"errors"
	"fmt"
	"path/filepath"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/procfs"
)

// ownerWatch tells whether a slice's owner process is still alive.
//
// It holds a pidfd of the process when the kernel has them (Linux >= 5.3): a
// pidfd becomes readable when its process exits, so one poll(2) over every
// owner's pidfd answers "who died?" for all slices at once, instead of reading
// /proc/<pid>/stat of every owner on every tick. A pidfd also cannot be fooled
// by pid reuse: it names the process, not the number. Where pidfd_open is not
// available (old kernel, fd limit), the watch falls back to reading
// /proc/<pid>/stat with the recorded start time on each check.
type ownerWatch struct {
	pid   int
	start uint64
	pidfd int // -1: no pidfd, check through /proc
}

// errOwnerGone: the owner process no longer exists (or the pid now names
// another process).
var errOwnerGone = errors.New("owner process is not running")

// resolveOwner checks a request's owner and fills in what vgpud records about
// it: for a pid owner, the process's start time (read now when the request
// leaves it 0; checked against /proc when it is given).
func resolveOwner(o *api.Owner) error {
	switch o.Kind {
	case api.OwnerNone:
		if o.PID != 0 || o.StartTime != 0 || o.ContainerID != "" || o.RuncRoot != "" || hasClaim(o) {
			return fmt.Errorf("owner: pid/start_time/container_id/runc_root/claim_* given without a kind (want kind %q, %q or %q)",
				api.OwnerPID, api.OwnerContainer, api.OwnerClaim)
		}
		return nil
	case api.OwnerClaim:
		return checkClaimOwner(o)
	case api.OwnerPID:
		if o.PID <= 0 {
			return fmt.Errorf("owner: kind %q needs a pid > 0", api.OwnerPID)
		}
		if o.ContainerID != "" || o.RuncRoot != "" || hasClaim(o) {
			return fmt.Errorf("owner: kind %q takes no container_id/runc_root/claim_*", api.OwnerPID)
		}
		id, err := procfs.IdentityOf(o.PID)
		if err != nil {
			return fmt.Errorf("owner pid %d: %w: %w", o.PID, errOwnerGone, err)
		}
		if o.StartTime == 0 {
			o.StartTime = id.StartTime
		} else if o.StartTime != id.StartTime {
			return fmt.Errorf("owner pid %d: %w (start time %d, the request says %d)",
				o.PID, errOwnerGone, id.StartTime, o.StartTime)
		}
		return nil
	case api.OwnerContainer:
		if o.ContainerID == "" {
			return fmt.Errorf("owner: kind %q needs a container_id", api.OwnerContainer)
		}
		if o.PID != 0 || o.StartTime != 0 || hasClaim(o) {
			return fmt.Errorf("owner: kind %q takes no pid/start_time/claim_*", api.OwnerContainer)
		}
		if o.RuncRoot != "" && !filepath.IsAbs(o.RuncRoot) {
			return fmt.Errorf("owner: runc_root %q is not an absolute path", o.RuncRoot)
		}
		return nil
	}
	return fmt.Errorf("owner: unknown kind %q (want %q, %q, %q or none)", o.Kind, api.OwnerPID, api.OwnerContainer, api.OwnerClaim)
}

func hasClaim(o *api.Owner) bool {
	return o.ClaimUID != "" || o.ClaimNamespace != "" || o.ClaimName != "" || len(o.PodUIDs) > 0
}

// checkClaimOwner checks a ResourceClaim owner: a uid, and nothing of the
// other kinds. The names are recorded and shown, so they are bounded like
// the labels (Kubernetes names are at most 253 bytes).
func checkClaimOwner(o *api.Owner) error {
	if o.ClaimUID == "" {
		return fmt.Errorf("owner: kind %q needs a claim_uid", api.OwnerClaim)
	}
	if o.PID != 0 || o.StartTime != 0 || o.ContainerID != "" || o.RuncRoot != "" {
		return fmt.Errorf("owner: kind %q takes no pid/start_time/container_id/runc_root", api.OwnerClaim)
	}
	for key, v := range map[string]string{"claim_uid": o.ClaimUID, "claim_namespace": o.ClaimNamespace,
		"claim_name": o.ClaimName} {
		if len(v) > api.MaxOwnerLabelLen || !utf8.ValidString(v) {
			return fmt.Errorf("owner: %s %q: want valid UTF-8 of at most %d bytes", key, v, api.MaxOwnerLabelLen)
		}
	}
	if len(o.PodUIDs) > api.MaxOwnerPods {
		return fmt.Errorf("owner: %d pod_uids, at most %d", len(o.PodUIDs), api.MaxOwnerPods)
	}
	for _, uid := range o.PodUIDs {
		// They are matched against cgroup path components: no separators.
		if !validPodUID(uid) {
			return fmt.Errorf("owner: pod uid %q: want 1..64 of [0-9a-zA-Z-]", uid)
		}
	}
	return nil
}

// watchOwner starts watching a pid owner. It returns errOwnerGone (wrapped)
// when the process is already gone or the pid names another process.
func watchOwner(pid int, start uint64) (*ownerWatch, error) {
	w := &ownerWatch{pid: pid, start: start, pidfd: -1}
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case err == nil:
		w.pidfd = fd
	case errors.Is(err, unix.ESRCH):
		return nil, fmt.Errorf("owner pid %d: %w", pid, errOwnerGone)
	default:
		// ENOSYS (kernel < 5.3), EMFILE, ...: fall back to /proc.
	}
	// The pidfd was opened before this check, so if the pid was reused since
	// the owner was recorded, the check sees the new process's start time and
	// says gone; if it passes, the pidfd names the owner itself.
	if !procfs.Alive(procfs.Identity{PID: pid, StartTime: start}) {
		w.close()
		return nil, fmt.Errorf("owner pid %d: %w", pid, errOwnerGone)
	}
	return w, nil
}

func (w *ownerWatch) close() {
	if w != nil && w.pidfd >= 0 {
		unix.Close(w.pidfd)
		w.pidfd = -1
	}
}

// ownerPoller checks many owner watches at once. It is used by one goroutine
// (the enforcer loop) and reuses its buffers between ticks.
type ownerPoller struct {
	fds []unix.PollFd
	idx []int // idx[j]: the index in watches of fds[j]
}

// dead returns the indexes (into watches) of the owners that are gone.
// watches may contain nil (no pid owner): never dead.
func (p *ownerPoller) dead(watches []*ownerWatch, out []int) []int {
	p.fds, p.idx = p.fds[:0], p.idx[:0]
	for i, w := range watches {
		switch {
		case w == nil:
		case w.pidfd >= 0:
			p.fds = append(p.fds, unix.PollFd{Fd: int32(w.pidfd), Events: unix.POLLIN})
			p.idx = append(p.idx, i)
		case !procfs.Alive(procfs.Identity{PID: w.pid, StartTime: w.start}):
			out = append(out, i)
		}
	}
	if len(p.fds) == 0 {
		return out
	}
	for {
		_, err := unix.Poll(p.fds, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			// Cannot poll (should not happen): judge each owner through /proc.
			for j := range p.fds {
				p.fds[j].Revents = 0
				w := watches[p.idx[j]]
				if !procfs.Alive(procfs.Identity{PID: w.pid, StartTime: w.start}) {
					p.fds[j].Revents = unix.POLLIN
				}
			}
			break
		}
	}
	for j := range p.fds {
		switch ev := p.fds[j].Revents; {
		case ev&unix.POLLNVAL != 0:
			// Our pidfd is not valid (a bug): never release a slice on that
			// alone, ask /proc.
			w := watches[p.idx[j]]
			if !procfs.Alive(procfs.Identity{PID: w.pid, StartTime: w.start}) {
				out = append(out, p.idx[j])
			}
		case ev != 0: // POLLIN: the process exited
			out = append(out, p.idx[j])
		}
	}
	return out
}

func validPodUID(uid string) bool {
	if uid == "" || len(uid) > 64 {
		return false
	}
	for _, c := range uid {
		alnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !alnum && c != '-' {
			return false
		}
	}
	return true
}
