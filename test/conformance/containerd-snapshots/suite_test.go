// containerd's own snapshotter test suite (snapshots/testsuite, as Debian ships it in
// golang-github-containerd-containerd-dev) against `starlight snapshotter`, through containerd's
// proxy client (snapshots/proxy) over the daemon's gRPC socket — what containerd itself uses for a
// proxy_plugins snapshotter. The suite's checks run as they are; each gets a fresh daemon and root.
//
// Built offline in GOPATH mode against /usr/share/gocode (no module downloads): see
// test/e2e/containerd-snapshot-suite.test.ts, which builds and runs it. Needs root (real mounts).
//
// Environment: STARLIGHT_CLI = path of bin/starlight.js; STARLIGHT_NODE = node binary (default "node").
package containerdsnapshots

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// lockedBuffer collects the daemon's stderr for failure messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newStarlight starts `starlight snapshotter` with its state under root and returns containerd's
// proxy snapshotter connected to it; cleanup closes the client and stops the daemon (SIGTERM,
// SIGKILL after stopTimeout).
func newStarlight(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	cli := os.Getenv("STARLIGHT_CLI")
	if cli == "" {
		return nil, nil, fmt.Errorf("STARLIGHT_CLI (path of bin/starlight.js) is not set")
	}
	node := os.Getenv("STARLIGHT_NODE")
	if node == "" {
		node = "node"
	}
	socket := filepath.Join(root, "snapshotter.sock")
	cmd := exec.Command(node, cli, "snapshotter", "--socket", socket, "--root", filepath.Join(root, "state"),
		"--api-socket", filepath.Join(root, "api.sock"), "--trace-window", "0")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s snapshotter: %w", cli, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("starlight snapshotter exited badly: %v; stderr:\n%s", err, stderr)
			}
			return nil
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("starlight snapshotter did not stop within %s; stderr:\n%s", stopTimeout, stderr)
		}
	}

	dialCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var conn *grpc.ClientConn
	for {
		// The daemon's readiness line: from then on it also handles SIGTERM (it may accept on the
		// socket a moment earlier, while SIGTERM would still kill it outright).
		if strings.Contains(stderr.String(), "serving on "+socket) {
			c, err := grpc.DialContext(dialCtx, "passthrough:///"+socket, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithAuthority("localhost"),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", socket)
				}))
			if err == nil {
				conn = c
				break
			}
		}
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("starlight snapshotter exited before serving: %v; stderr:\n%s", err, stderr)
		case <-dialCtx.Done():
			stopErr := stop()
			return nil, nil, fmt.Errorf("starlight snapshotter not serving on %s within %s (%v)", socket, startTimeout, stopErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "starlight")
	return sn, func() error {
		conn.Close()
		return stop()
	}, nil
}

func TestContainerdSnapshotterSuite(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: the suite mounts the snapshots")
	}
	testsuite.SnapshotterSuite(t, "Starlight", newStarlight)
}
