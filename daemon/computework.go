package daemon

import (
	"time"
)

// Completed work over the driver's measured span.
//
// NVML counts a slice's work when it runs and publishes it per sample period
// (1/6 s and up), long after libvgpu charged the launches their tokens; with a
// deep device queue the tokens spent in a step are not the tokens whose work
// the step's figure measured, and a scale learnt from the two swings with the
// queue. libvgpu's completion markers count the tokens whose work completed
// (usage token_done). The controller divides the busy time of a span by the
// tokens completed within that same span: vgpud reads token_done every tick
// and interpolates it at the span's ends.

// doneHistoryLen is how many ticks of token_done readings a slice device
// keeps: enough to reach back over the longest span a figure may stand for
// (maxSamplePeriod) at a 50 ms tick, with room.
const doneHistoryLen = 48

// doneReading is one tick's token_done of a slice device.
type doneReading struct {
	at   time.Time
	done uint64
}

// doneHistory is a ring of a slice device's recent token_done readings, oldest
// first from start.
type doneHistory struct {
	r        [doneHistoryLen]doneReading
	start    int
	n        int
	seenMark // read in the latest step (others are dropped)
}

// add appends a reading. A counter that went back (the region was recreated)
// starts the history afresh.
func (h *doneHistory) add(at time.Time, done uint64) {
	if h.n > 0 && done < h.at(h.n-1).done {
		h.n = 0
	}
	if h.n == doneHistoryLen {
		h.start = (h.start + 1) % doneHistoryLen
		h.n--
	}
	h.r[(h.start+h.n)%doneHistoryLen] = doneReading{at, done}
	h.n++
}

func (h *doneHistory) at(i int) doneReading { return h.r[(h.start+i)%doneHistoryLen] }

// valueAt is token_done at time t, interpolated between the readings around
// it; false when t is older than the history, or nothing completed yet (an
// older libvgpu writes no markers). A t past the newest reading takes the
// newest: the driver's span ends before the tick that reads it.
func (h *doneHistory) valueAt(t time.Time) (float64, bool) {
	if h.n == 0 || h.at(h.n-1).done == 0 || t.Before(h.at(0).at) {
		return 0, false
	}
	for i := 1; i < h.n; i++ {
		a, b := h.at(i-1), h.at(i)
		if t.After(b.at) {
			continue
		}
		if !b.at.After(a.at) {
			return float64(b.done), true
		}
		f := float64(t.Sub(a.at)) / float64(b.at.Sub(a.at))
		return float64(a.done) + f*(float64(b.done)-float64(a.done)), true
	}
	return float64(h.at(h.n - 1).done), true
}

// doneWithin is the tokens completed in [from, to]; false when the history
// cannot say.
func (h *doneHistory) doneWithin(from, to time.Time) (uint64, bool) {
	a, okA := h.valueAt(from)
	b, okB := h.valueAt(to)
	if !okA || !okB || b < a {
		return 0, false
	}
	return uint64(b - a + 0.5), true
}

// workWithin returns, for one device's step, what records each slice's
// token_done reading at now and answers the tokens it completed within the
// driver's span [from, to] (measured: the step has a span at all).
func (c *computeShares) workWithin(uuid string, now, from, to time.Time, measured bool) func(slice string, done uint64) (uint64, bool) {
	return func(slice string, done uint64) (uint64, bool) {
		key := sliceDev{slice, uuid}
		h := c.done[key]
		if h == nil {
			h = &doneHistory{}
			c.done[key] = h
		}
		h.mark()
		h.add(now, done)
		if !measured {
			return 0, false
		}
		return h.doneWithin(from, to)
	}
}

// dropStaleHistories forgets the histories of slice devices not stepped this
// time and clears the mark on the others.
func (c *computeShares) dropStaleHistories() { dropUnseen(c.done) }
