package gpucdi

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"
)

// NodeCache keeps the node's GPU specs loaded for a long-lived reader
// (vgpud publishes a spec per slice, each from the node's): it reads them
// again only when a spec file in the dirs changed — added, removed, replaced
// (a new inode) or rewritten (size or modification time). Load's scan
// otherwise parsed the node's specs on every allocation. Safe for concurrent
// use; the Node it returns is shared and must not be changed.
type NodeCache struct {
	dirs []string
	kind string
	mu   sync.Mutex
	seen string // the fingerprint of the files node was read from
	node *Node
}

// NewNodeCache makes a cache of Load(dirs, kind).
func NewNodeCache(dirs []string, kind string) *NodeCache {
	return &NodeCache{dirs: append([]string(nil), dirs...), kind: kind}
}

// Load is Load(dirs, kind) as of now: the node read last time when no spec
// file changed since. An error is never cached.
func (c *NodeCache) Load() (*Node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen, err := fingerprint(c.dirs)
	if err == nil && c.node != nil && seen == c.seen {
		return c.node, nil
	}
	c.node, c.seen = nil, ""
	n, lerr := Load(c.dirs, c.kind)
	if lerr != nil {
		return nil, lerr
	}
	if err == nil {
		c.node, c.seen = n, seen
	}
	return n, nil
}

// fingerprint names every spec file Load would read in dirs with its inode,
// size and modification time.
func fingerprint(dirs []string) (string, error) {
	var b strings.Builder
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		for _, e := range entries {
			if !nodeSpecFile(e) {
				continue
			}
			info, err := e.Info()
			if err != nil {
				return "", err
			}
			var ino uint64
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				ino = st.Ino
			}
			fmt.Fprintf(&b, "%s/%s %d %d %d\n", dir, e.Name(), ino, info.Size(), info.ModTime().UnixNano())
		}
	}
	return b.String(), nil
}
