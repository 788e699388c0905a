package api

import "time"

// Kinds of ElasticEvent.
const (
	ElasticGrant    = "grant"    // a request granted (Bytes more)
	ElasticRefuse   = "refuse"   // a request answered without a grant
	ElasticShrink   = "shrink"   // a grant taken back: a guaranteed slice needed the memory
	ElasticCallback = "callback" // a loan returned to its lender (Lender), which woke or went
	ElasticEvict    = "evict"    // a borrower over its limit handed to the backstop: the device was short
)

// ElasticEvent is one decision of vgpud's elastic-memory broker (GET
// /v1/events: the latest ones, oldest first).
type ElasticEvent struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Slice  string    `json:"slice"`
	Device string    `json:"device"` // uuid
	Bytes  uint64    `json:"bytes"`
	Lender string    `json:"lender,omitempty"`
	Why    string    `json:"why"`
}
