// Command loadgen drives an etcd v3 endpoint (petcd or etcd) with a closed
// loop of requests and prints one line of figures.
//
// It is written in Go on Debian's etcd client library so that the client's
// own cost stays small beside the server's: what the bench measures is the
// server. Every worker sends one request, waits for its answer, and sends
// the next, for a fixed time; throughput is answers per second of wall time,
// latency is the time from send to answer of each request.
//
// The printed line is a list of name=value pairs, for example
//
//	op=put clients=64 conns=8 secs=5.00 ops=51234 ops/s=10246.8 p50_ms=5.912 p99_ms=14.200 errors=0
//
// and, for -op watch, also watchers=, events= and events/s=. The first
// request error (if any) goes to stderr; the exit status is 1 when no
// request succeeded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.uber.org/zap"
)

// options are the command-line settings of one run.
type options struct {
	endpoints []string
	op        string
	clients   int
	conns     int
	duration  time.Duration
	timeout   time.Duration
	keys      int
	valSize   int
	watchers  int
	leases    int
	leaseTTL  int64
	prefix    string
	user      string
}

// tally is what one worker measured: requests answered, requests failed,
// and the latency of every answered request.
type tally struct {
	ok       int64
	failed   int64
	lat      []time.Duration
	firstErr error
}

func (t *tally) record(start time.Time, err error) {
	if err != nil {
		t.failed++
		if t.firstErr == nil {
			t.firstErr = err
		}
		return
	}
	t.ok++
	t.lat = append(t.lat, time.Since(start))
}

// request is one closed-loop step of a worker: it issues one request on cli
// and returns its error. rnd is the worker's own random source.
type request func(ctx context.Context, cli *clientv3.Client, rnd *rand.Rand) error

var ops = map[string]string{
	"fill":            "put every key of the key space once, then stop (the duration is a cap)",
	"put":             "put a random key of the key space",
	"range":           "linearizable get of a random key",
	"range-s":         "serializable get of a random key",
	"txn":             "compare-and-put: if the key's version > 0 then put it, else get it",
	"watch":           "puts under a prefix while -watchers watchers on that prefix count the events they receive",
	"lease-keepalive": "renew -leases leases over one LeaseKeepAlive stream per worker",
}

func main() {
	o, err := parseOptions()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	conns, err := dial(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	if !run(o, conns) {
		os.Exit(1)
	}
}

func parseOptions() (options, error) {
	var o options
	var endpoints string
	var names []string
	for name := range ops {
		names = append(names, name)
	}
	sort.Strings(names)
	flag.StringVar(&endpoints, "endpoints", "127.0.0.1:2379", "comma-separated host:port list; connection i goes to endpoint i mod len")
	flag.StringVar(&o.op, "op", "put", "workload: "+strings.Join(names, ", "))
	flag.IntVar(&o.clients, "clients", 64, "concurrent workers, each waiting for its answer before the next request")
	flag.IntVar(&o.conns, "conns", 8, "gRPC connections the workers share (worker i uses connection i mod conns)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to send requests")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Second, "deadline of each request")
	flag.IntVar(&o.keys, "keys", 10000, "key-space size: keys <prefix>00000000 onwards")
	flag.IntVar(&o.valSize, "val", 256, "value size in bytes")
	flag.IntVar(&o.watchers, "watchers", 100, "watchers on the prefix for -op watch")
	flag.IntVar(&o.leases, "leases", 0, "leases renewed by -op lease-keepalive (default: one per worker)")
	flag.Int64Var(&o.leaseTTL, "lease-ttl", 300, "TTL in seconds of the leases -op lease-keepalive grants")
	flag.StringVar(&o.prefix, "prefix", "loadgen/", "prefix of every key written or read")
	flag.StringVar(&o.user, "user", "", "name:password to authenticate as (auth enabled on the server)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: loadgen [flags]\n\nworkloads (-op):\n")
		for _, name := range names {
			fmt.Fprintf(flag.CommandLine.Output(), "  %-16s %s\n", name, ops[name])
		}
		fmt.Fprintf(flag.CommandLine.Output(), "\nflags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		return o, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			o.endpoints = append(o.endpoints, e)
		}
	}
	switch {
	case ops[o.op] == "":
		return o, fmt.Errorf("unknown -op %q", o.op)
	case len(o.endpoints) == 0:
		return o, errors.New("-endpoints is empty")
	case o.clients < 1 || o.conns < 1 || o.keys < 1 || o.valSize < 0:
		return o, errors.New("-clients, -conns and -keys must be at least 1, -val at least 0")
	case o.duration <= 0 || o.timeout <= 0:
		return o, errors.New("-duration and -timeout must be positive")
	case o.op == "watch" && o.watchers < 1:
		return o, errors.New("-op watch needs -watchers of at least 1")
	}
	if o.leases <= 0 {
		o.leases = o.clients
	}
	return o, nil
}

// dial opens o.conns clients, each with one endpoint, so that load spreads
// evenly over the members of a cluster instead of following the client
// library's balancer.
func dial(o options) ([]*clientv3.Client, error) {
	logCfg := zap.NewProductionConfig()
	logCfg.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	conns := make([]*clientv3.Client, 0, o.conns)
	for i := 0; i < o.conns; i++ {
		cfg := clientv3.Config{
			Endpoints:   []string{o.endpoints[i%len(o.endpoints)]},
			DialTimeout: 10 * time.Second,
			LogConfig:   &logCfg,
		}
		if name, password, ok := strings.Cut(o.user, ":"); ok {
			cfg.Username, cfg.Password = name, password
		}
		cli, err := clientv3.New(cfg)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, fmt.Errorf("connecting to %s: %w", o.endpoints[i%len(o.endpoints)], err)
		}
		conns = append(conns, cli)
	}
	return conns, nil
}

func (o options) key(i int) string { return fmt.Sprintf("%s%08d", o.prefix, i) }

// run performs the workload and prints its line; false when nothing succeeded.
func run(o options, conns []*clientv3.Client) bool {
	value := strings.Repeat("v", o.valSize)
	var extra string
	var tallies []*tally
	var secs float64
	switch o.op {
	case "fill":
		var next int64 = -1
		tallies, secs = closedLoop(o, conns, func(ctx context.Context, cli *clientv3.Client, _ *rand.Rand) error {
			i := atomic.AddInt64(&next, 1)
			if i >= int64(o.keys) {
				return errDone
			}
			_, err := cli.Put(ctx, o.key(int(i)), value)
			return err
		})
	case "put":
		tallies, secs = closedLoop(o, conns, func(ctx context.Context, cli *clientv3.Client, rnd *rand.Rand) error {
			_, err := cli.Put(ctx, o.key(rnd.Intn(o.keys)), value)
			return err
		})
	case "range", "range-s":
		var opts []clientv3.OpOption
		if o.op == "range-s" {
			opts = append(opts, clientv3.WithSerializable())
		}
		tallies, secs = closedLoop(o, conns, func(ctx context.Context, cli *clientv3.Client, rnd *rand.Rand) error {
			_, err := cli.Get(ctx, o.key(rnd.Intn(o.keys)), opts...)
			return err
		})
	case "txn":
		tallies, secs = closedLoop(o, conns, func(ctx context.Context, cli *clientv3.Client, rnd *rand.Rand) error {
			k := o.key(rnd.Intn(o.keys))
			_, err := cli.Txn(ctx).
				If(clientv3.Compare(clientv3.Version(k), ">", 0)).
				Then(clientv3.OpPut(k, value)).
				Else(clientv3.OpGet(k)).
				Commit()
			return err
		})
	case "watch":
		var err error
		tallies, secs, extra, err = watchLoad(o, conns, value)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return false
		}
	case "lease-keepalive":
		var err error
		tallies, secs, err = keepAliveLoad(o, conns)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return false
		}
	}
	return report(o, tallies, secs, extra)
}

// errDone ends a worker's loop without counting as a request (fill is done).
var errDone = errors.New("done")

// closedLoop runs o.clients workers, worker i on conns[i mod len], each
// repeating req until o.duration has passed or req returns errDone. It
// returns each worker's tally and the wall time the run took in seconds.
func closedLoop(o options, conns []*clientv3.Client, req request) ([]*tally, float64) {
	tallies := make([]*tally, o.clients)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(o.duration)
	for w := 0; w < o.clients; w++ {
		t := &tally{}
		tallies[w] = t
		cli := conns[w%len(conns)]
		rnd := rand.New(rand.NewSource(int64(w) + 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
				t0 := time.Now()
				err := req(ctx, cli, rnd)
				cancel()
				if errors.Is(err, errDone) {
					return
				}
				t.record(t0, err)
			}
		}()
	}
	wg.Wait()
	return tallies, time.Since(start).Seconds()
}

// watchLoad opens o.watchers watchers on the watch prefix (spread over the
// connections, each connection multiplexing its watchers on one stream, as
// etcd's client does), waits until every one is created, then runs puts
// under that prefix and counts the events the watchers receive while the
// puts run. Events still in flight when the puts stop are not counted.
func watchLoad(o options, conns []*clientv3.Client, value string) ([]*tally, float64, string, error) {
	prefix := o.prefix + "watch/"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var counting int32 // 1 while the puts run
	var events int64
	var wg sync.WaitGroup
	created := make(chan error, o.watchers)
	for i := 0; i < o.watchers; i++ {
		wch := conns[i%len(conns)].Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for resp := range wch {
				if first {
					first = false
					if err := resp.Err(); err != nil {
						created <- err
						return
					}
					created <- nil
				}
				if atomic.LoadInt32(&counting) == 1 {
					atomic.AddInt64(&events, int64(len(resp.Events)))
				}
			}
			if first {
				created <- errors.New("watch channel closed before the watcher was created")
			}
		}()
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for i := 0; i < o.watchers; i++ {
		select {
		case err := <-created:
			if err != nil {
				return nil, 0, "", fmt.Errorf("creating watcher: %w", err)
			}
		case <-timer.C:
			return nil, 0, "", fmt.Errorf("only %d of %d watchers created after 30s", i, o.watchers)
		}
	}
	atomic.StoreInt32(&counting, 1)
	tallies, secs := closedLoop(o, conns, func(ctx context.Context, cli *clientv3.Client, rnd *rand.Rand) error {
		_, err := cli.Put(ctx, fmt.Sprintf("%s%08d", prefix, rnd.Intn(o.keys)), value)
		return err
	})
	atomic.StoreInt32(&counting, 0)
	got := atomic.LoadInt64(&events)
	cancel()
	wg.Wait()
	extra := fmt.Sprintf(" watchers=%d events=%d events/s=%.1f", o.watchers, got, float64(got)/secs)
	return tallies, secs, extra, nil
}

// keepAliveLoad grants o.leases leases, deals them out to the workers, and
// has each worker renew its leases in turn over its own LeaseKeepAlive
// stream, one request in flight at a time. The leases are revoked after.
func keepAliveLoad(o options, conns []*clientv3.Client) ([]*tally, float64, error) {
	ids, err := grantAll(o, conns)
	defer revokeAll(o, conns, ids)
	if err != nil {
		return nil, 0, err
	}
	tallies := make([]*tally, o.clients)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(o.duration)
	for w := 0; w < o.clients; w++ {
		t := &tally{}
		tallies[w] = t
		var mine []clientv3.LeaseID
		for i := w; i < len(ids); i += o.clients {
			mine = append(mine, ids[i])
		}
		if len(mine) == 0 {
			continue
		}
		lc := pb.NewLeaseClient(conns[w%len(conns)].ActiveConnection())
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stream, err := lc.LeaseKeepAlive(ctx)
			if err != nil {
				t.record(time.Now(), err)
				return
			}
			for n := 0; time.Now().Before(deadline); n++ {
				t0 := time.Now()
				err := stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(mine[n%len(mine)])})
				if err == nil {
					var resp *pb.LeaseKeepAliveResponse
					resp, err = stream.Recv()
					if err == nil && resp.TTL <= 0 {
						err = fmt.Errorf("lease %x not found", resp.ID)
					}
				}
				t.record(t0, err)
				if err != nil {
					return // the stream is broken; the error is counted
				}
			}
			_ = stream.CloseSend()
		}()
	}
	wg.Wait()
	return tallies, time.Since(start).Seconds(), nil
}

// grantAll grants o.leases leases, one granting goroutine per connection.
// It returns every lease granted, also when some grant failed.
func grantAll(o options, conns []*clientv3.Client) ([]clientv3.LeaseID, error) {
	granted := make([]clientv3.LeaseID, o.leases) // 0: not granted
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; i < o.leases; i += len(conns) {
				ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
				g, err := conns[c].Grant(ctx, o.leaseTTL)
				cancel()
				if err != nil {
					errs[c] = fmt.Errorf("granting a lease: %w", err)
					return
				}
				granted[i] = g.ID
			}
		}(c)
	}
	wg.Wait()
	ids := make([]clientv3.LeaseID, 0, o.leases)
	for _, id := range granted {
		if id != 0 {
			ids = append(ids, id)
		}
	}
	for _, err := range errs {
		if err != nil {
			return ids, err
		}
	}
	return ids, nil
}

// revokeAll revokes the leases the run granted, best effort, so that a
// following workload does not pay for their expiry.
func revokeAll(o options, conns []*clientv3.Client, ids []clientv3.LeaseID) {
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; i < len(ids); i += len(conns) {
				ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
				_, _ = conns[c].Revoke(ctx, ids[i])
				cancel()
			}
		}(c)
	}
	wg.Wait()
}

// report prints the run's line and returns whether any request succeeded.
func report(o options, tallies []*tally, secs float64, extra string) bool {
	var ok, failed int64
	var lat []time.Duration
	var firstErr error
	for _, t := range tallies {
		ok += t.ok
		failed += t.failed
		lat = append(lat, t.lat...)
		if firstErr == nil {
			firstErr = t.firstErr
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("op=%s clients=%d conns=%d secs=%.2f ops=%d ops/s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d%s\n",
		o.op, o.clients, o.conns, secs, ok, float64(ok)/secs, millis(quantile(lat, 0.50)),
		millis(quantile(lat, 0.99)), failed, extra)
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, "loadgen: first error:", firstErr)
	}
	return ok > 0
}

// quantile is the q-quantile of sorted (nearest rank); 0 when empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
