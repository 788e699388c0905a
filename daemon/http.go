package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/allocator"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/metrics"
	"github.com/vgpu-project/vgpu/daemon/store"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/internal/units"
)

// maxRequestBytes bounds a request body: an AllocRequest is a few hundred
// bytes. A longer body is refused with 413 (bodyError).
const maxRequestBytes = 1 << 20

// apiHandler routes the API of package daemon/api.
func (s *Server) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.health())
	})
	mux.HandleFunc("GET /v1/devices", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.devicesView())
	})
	mux.HandleFunc("GET /v1/slices", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.list())
	})
	mux.HandleFunc("POST /v1/slices", s.handleAlloc)
	mux.HandleFunc("GET /v1/slices/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		sl, ok := s.get(id)
		if !ok {
			writeError(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("slice %s: %v", id, errNotFound)})
			return
		}
		writeJSON(w, http.StatusOK, sl)
	})
	mux.HandleFunc("PATCH /v1/slices/{id}", s.handleUpdate)
	mux.HandleFunc("DELETE /v1/slices/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.release(r.PathValue("id"), "released through the API"); err != nil {
			s.writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/top", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.top())
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.loop.elastic.events.list())
	})
	mux.HandleFunc("GET /v1/processes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.tracker.processes())
	})
	// Quarantined slices (quarantine.go).
	mux.HandleFunc("GET /v1/quarantine", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.quarantineList())
	})
	mux.HandleFunc("DELETE /v1/quarantine/{name}", s.handleQuarantineRelease)
	mux.HandleFunc("POST /v1/quarantine/{name}/restore", s.handleQuarantineRestore)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no route %s %s (see package daemon/api)", r.Method, r.URL.Path)})
	})
	return mux
}

// decodeRequest reads a request body of exactly one JSON value into v,
// refusing unknown fields; on failure it has answered and returns false.
func decodeRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		status, e := bodyError(err)
		writeError(w, status, e)
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		status, e := http.StatusBadRequest, api.Error{Error: "bad request body: more than one JSON value"}
		if err != nil {
			if st, be := bodyError(err); st != http.StatusBadRequest {
				status, e = st, be // too long, or stalled, after the first value
			}
		}
		writeError(w, status, e)
		return false
	}
	return true
}

func (s *Server) handleAlloc(w http.ResponseWriter, r *http.Request) {
	var req api.AllocRequest
	if !decodeRequest(w, r, &req) {
		return
	}
	if req.ID == "" {
		req.ID = newSliceID()
	}
	start := time.Now()
	sl, err := s.allocate(req)
	if err != nil {
		s.log.Info("allocation refused", zap.String("slice", req.ID), zap.Error(err))
		s.writeErr(w, err)
		return
	}
	s.log.Debug("allocation answered", zap.String("slice", sl.ID), zap.Duration("took", time.Since(start)))
	writeJSON(w, http.StatusCreated, sl)
}

// bodyError is the answer to a request body that could not be read or
// decoded: 413 past maxRequestBytes, 408 when the client stopped sending
// before the server's read deadline (apiReadTimeout), 400 otherwise.
func bodyError(err error) (int, api.Error) {
	var tooLong *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooLong):
		return http.StatusRequestEntityTooLarge, api.Error{Error: fmt.Sprintf(
			"request body too large: more than %s (%d bytes)", sizeString(uint64(tooLong.Limit)), tooLong.Limit)}
	case errors.As(err, &netErr) && netErr.Timeout():
		return http.StatusRequestTimeout, api.Error{Error: fmt.Sprintf(
			"request body not received within %s", apiReadTimeout)}
	}
	return http.StatusBadRequest, api.Error{Error: "bad request body: " + err.Error()}
}

// writeErr answers err with the status it deserves.
func (s *Server) writeErr(w http.ResponseWriter, err error) {
	var refused *allocator.RefusedError
	switch {
	case errors.As(err, &refused):
		writeError(w, http.StatusUnprocessableEntity, api.Error{Error: "the slice does not fit", Reasons: refused.Reasons})
	case errors.Is(err, allocator.ErrInvalidRequest), errors.Is(err, store.ErrInvalidID):
		writeError(w, http.StatusBadRequest, api.Error{Error: err.Error()})
	case errors.Is(err, allocator.ErrExists), errors.Is(err, store.ErrExists):
		writeError(w, http.StatusConflict, api.Error{Error: err.Error()})
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, api.Error{Error: err.Error()})
	case errors.Is(err, errClosing):
		writeError(w, http.StatusServiceUnavailable, api.Error{Error: err.Error()})
	default:
		s.log.Error("request failed", zap.Error(err))
		writeError(w, http.StatusInternalServerError, api.Error{Error: err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a client gone away is not our error
}

func writeError(w http.ResponseWriter, status int, e api.Error) { writeJSON(w, status, e) }

// health is vgpud's own state (/v1/health).
func (s *Server) health() api.Health {
	h := api.Health{
		Status:       "ok",
		Version:      Version,
		StartedAt:    s.startedAt,
		Devices:      len(s.devs),
		EnforcerMode: s.cfg.EnforcerMode,
		Tracker:      s.tracker.kind(),
	}
	s.mu.Lock()
	h.Slices = len(s.slices)
	h.Quarantined = len(s.quarantined)
	s.mu.Unlock()
	if st := s.loop.latest.Load(); st != nil {
		h.LastTick, h.LastTickError = st.at, st.err
	}
	return h
}

// top builds every slice's usage from the last tick's report. A slice
// allocated since that tick is listed with no usage yet.
func (s *Server) top() []api.SliceUsage {
	snaps := map[string]*enforcer.SliceSnapshot{}
	if st := s.loop.latest.Load(); st != nil {
		for i := range st.report.Slices {
			snaps[st.report.Slices[i].ID] = &st.report.Slices[i]
		}
	}
	compute := s.computeByDevice()
	activity := s.loop.activity.Status()
	slices := s.list()
	out := make([]api.SliceUsage, 0, len(slices))
	for _, sl := range slices {
		n := len(sl.Devices)
		u := api.SliceUsage{
			Slice:     sl,
			UsedBytes: make([]uint64, n),
			PeakBytes: make([]uint64, n),
			Refused:   make([]uint64, n),
			Processes: []api.ProcessUsage{},
			Compute:   make([]api.ComputeUsage, n),
		}
		for d, sd := range sl.Devices {
			u.Compute[d] = computeUsage(sd, compute[sliceDev{sl.ID, sd.UUID}])
		}
		if a, ok := activity[sl.ID]; ok {
			u.Activity = &a
		}
		if snap := snaps[sl.ID]; snap != nil {
			for d := range snap.Devices {
				if d >= n {
					break
				}
				u.UsedBytes[d] = snap.Devices[d].UsedBytes
				u.PeakBytes[d] = snap.Devices[d].PeakBytes
				u.Refused[d] = snap.Devices[d].RefusedAllocs
			}
			for _, p := range snap.Processes {
				pu := api.ProcessUsage{PID: p.PID, HostPID: p.HostPID, UsedBytes: p.UsedBytes, DriverBytes: p.DriverBytes}
				if pu.UsedBytes == nil {
					pu.UsedBytes = make([]uint64, n)
				}
				u.Processes = append(u.Processes, pu)
			}
		}
		out = append(out, u)
	}
	return out
}

// computeByDevice indexes the compute status of the last tick by slice and device.
func (s *Server) computeByDevice() map[sliceDev]*ComputeStatus {
	st := s.ComputeStatus()
	m := make(map[sliceDev]*ComputeStatus, len(st))
	for i := range st {
		m[sliceDev{st[i].Slice, st[i].UUID}] = &st[i]
	}
	return m
}

// computeUsage is a slice device's compute share for the API. The target is
// the slice's configured share, not the controller's: a slice with no share
// runs at 100% in the controller, and so does one that asked for 100%. A
// slice the controller has not stepped yet (created since the last tick) has
// its target only.
func computeUsage(sd api.SliceDevice, st *ComputeStatus) api.ComputeUsage {
	cu := api.ComputeUsage{UUID: sd.UUID, TargetPercent: sd.ComputePercent}
	if st == nil {
		return cu
	}
	cu.TokenRate, cu.Throttled, cu.Held = st.Rate, st.Throttled, st.Held
	if sd.ComputePercent != 0 || st.Rate != 0 {
		// No share and no rate: not throttled at all, nothing is "allowed".
		cu.AllowedPercent = st.AllowedPct
	}
	if st.Measured {
		cu.Measured, cu.AchievedPercent = true, st.AvgAchievedPct
	}
	return cu
}

// metricsHandler serves /metrics and /healthz.
func (s *Server) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// Healthy while the enforcer loop keeps ticking: a stalled loop means
		// dead processes' memory is not returned and the backstop is blind.
		stall := max(10*time.Duration(s.cfg.EnforcerInterval), 2*time.Second)
		st := s.loop.latest.Load()
		switch {
		case st == nil:
			http.Error(w, "starting: no enforcer tick yet", http.StatusServiceUnavailable)
		case time.Since(st.at) > stall:
			http.Error(w, fmt.Sprintf("enforcer loop stalled: last tick %s ago", time.Since(st.at).Round(time.Millisecond)),
				http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	return mux
}

// metricsInput is what the collector reads on each scrape.
func (s *Server) metricsInput() metrics.Input {
	in := metrics.Input{
		Devices:     s.alloc.Devices(),
		Slices:      s.list(),
		Utilization: make(map[string]float64, len(s.devs)),
		Activity:    s.loop.activity.Status(),
		Elastic:     s.loop.elastic.counts.totals(),
		Health: metrics.Health{
			Version:      Version,
			StartTime:    s.startedAt,
			EnforcerMode: s.cfg.EnforcerMode,
			Tracker:      s.tracker.kind(),
			TrackerLost:  s.tracker.lost(),
		},
	}
	compute := s.computeByDevice()
	for _, sl := range in.Slices {
		for _, sd := range sl.Devices {
			st := compute[sliceDev{sl.ID, sd.UUID}]
			if st == nil {
				continue // not stepped yet: no series rather than zeros
			}
			cu := computeUsage(sd, st)
			in.Compute = append(in.Compute, metrics.SliceCompute{
				Slice: sl.ID, UUID: sd.UUID, QoS: sl.QoS,
				Target: cu.TargetPercent / 100, Allowed: cu.AllowedPercent / 100,
				Achieved: cu.AchievedPercent / 100, Measured: cu.Measured, TokenRate: cu.TokenRate,
			})
		}
	}
	for _, d := range s.devs {
		// A device that cannot tell (no permission, not supported) is simply
		// not exported.
		if pct, err := s.gpus.Utilization(d.UUID); err == nil {
			in.Utilization[d.UUID] = float64(pct) / 100
		}
	}
	return in
}

func sizeString(n uint64) string { return units.HumanSize(n) }
