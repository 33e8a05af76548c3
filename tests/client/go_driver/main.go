// Command go_driver drives an etcd v3 endpoint (petcd or etcd) through
// etcd's own Go client, clientv3 and clientv3/concurrency, as Debian ships
// them, and prints a JSON transcript of every call.
//
//	go_driver ENDPOINT SCENARIO
//
// The transcript is a list of [step, result] pairs: a result is the call's
// response reduced to plain data, or its error as {"err": {...}} with the
// error's Go type, gRPC code and message. Values that differ between two
// servers by nature are left out or masked: cluster and member ids, raft
// terms and indexes, database sizes, and lease ids (which etcd draws at
// random), which are replaced everywhere in the output, in decimal and in
// the hex form concurrency's keys embed, by "lease#N" in order of grant.
// Two transcripts are equal when the servers behaved alike.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/clientv3util"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/clientv3/leasing"
	"go.etcd.io/etcd/clientv3/mirror"
	"go.etcd.io/etcd/clientv3/namespace"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
	"go.etcd.io/etcd/mvcc/mvccpb"
	"google.golang.org/grpc/status"
)

// deadline bounds every wait below on a loaded machine; none is a fixed sleep.
const deadline = 30 * time.Second

type step struct {
	name   string
	result interface{}
}

// transcript collects the steps of one scenario and the lease ids to mask.
type transcript struct {
	mu     sync.Mutex
	steps  []step
	leases []clientv3.LeaseID
}

func (t *transcript) note(name string, v interface{}) {
	if os.Getenv("GO_DRIVER_TRACE") != "" { // where a scenario that hangs got to
		fmt.Fprintln(os.Stderr, "step:", name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.steps = append(t.steps, step{name, v})
}

// lease remembers a lease id so that it is masked in the output.
func (t *transcript) lease(id clientv3.LeaseID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.leases {
		if l == id {
			return
		}
	}
	t.leases = append(t.leases, id)
}

// errOf is an error as data: its Go type, and its gRPC code and message.
func errOf(err error) map[string]interface{} {
	out := map[string]interface{}{"type": fmt.Sprintf("%T", err), "msg": err.Error()}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		out["code"] = ee.Code().String()
	} else if s, ok := status.FromError(err); ok {
		out["code"] = s.Code().String()
	}
	return out
}

// call records fn's shaped result, or its error.
func call(t *transcript, name string, fn func() (interface{}, error)) interface{} {
	v, err := fn()
	if err != nil {
		t.note(name, map[string]interface{}{"err": errOf(err)})
		return nil
	}
	t.note(name, v)
	return v
}

// text is bytes as a JSON-safe string: quoted when not UTF-8, so that
// binary keys compare byte for byte.
func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strconv.Quote(string(b))
}

func kvOf(k *mvccpb.KeyValue) map[string]interface{} {
	if k == nil {
		return nil
	}
	v := text(k.Value)
	if len(v) > 64 { // large values: their length is what matters
		v = fmt.Sprintf("<%d bytes>", len(k.Value))
	}
	return map[string]interface{}{"key": text(k.Key), "value": v, "create": k.CreateRevision,
		"mod": k.ModRevision, "version": k.Version, "lease": k.Lease}
}

func kvsOf(kvs []*mvccpb.KeyValue) []interface{} {
	out := []interface{}{}
	for _, k := range kvs {
		out = append(out, kvOf(k))
	}
	return out
}

func getOf(r *clientv3.GetResponse) map[string]interface{} {
	return map[string]interface{}{"rev": r.Header.Revision, "kvs": kvsOf(r.Kvs), "more": r.More,
		"count": r.Count}
}

func putOf(r *clientv3.PutResponse) map[string]interface{} {
	return map[string]interface{}{"rev": r.Header.Revision, "prev": kvOf(r.PrevKv)}
}

func delOf(r *clientv3.DeleteResponse) map[string]interface{} {
	return map[string]interface{}{"rev": r.Header.Revision, "deleted": r.Deleted, "prev": kvsOf(r.PrevKvs)}
}

func txnOf(r *clientv3.TxnResponse) map[string]interface{} {
	resps := []interface{}{}
	for _, op := range r.Responses {
		switch {
		case op.GetResponseRange() != nil:
			g := op.GetResponseRange()
			resps = append(resps, map[string]interface{}{"range": kvsOf(g.Kvs), "count": g.Count,
				"more": g.More})
		case op.GetResponsePut() != nil:
			resps = append(resps, map[string]interface{}{"put": kvOf(op.GetResponsePut().PrevKv)})
		case op.GetResponseDeleteRange() != nil:
			d := op.GetResponseDeleteRange()
			resps = append(resps, map[string]interface{}{"delete": d.Deleted, "prev": kvsOf(d.PrevKvs)})
		case op.GetResponseTxn() != nil:
			resps = append(resps, map[string]interface{}{"txn": txnOf((*clientv3.TxnResponse)(op.GetResponseTxn()))})
		default:
			resps = append(resps, "unknown")
		}
	}
	return map[string]interface{}{"rev": r.Header.Revision, "succeeded": r.Succeeded, "responses": resps}
}

func eventOf(e *clientv3.Event) map[string]interface{} {
	return map[string]interface{}{"type": e.Type.String(), "kv": kvOf(e.Kv), "prev": kvOf(e.PrevKv),
		"create": e.IsCreate(), "modify": e.IsModify()}
}

func watchRespOf(r clientv3.WatchResponse) map[string]interface{} {
	evs := []interface{}{}
	for _, e := range r.Events {
		evs = append(evs, eventOf(e))
	}
	out := map[string]interface{}{"rev": r.Header.Revision, "events": evs, "created": r.Created,
		"canceled": r.Canceled, "compact": r.CompactRevision, "progress": r.IsProgressNotify()}
	if err := r.Err(); err != nil {
		out["err"] = errOf(err)
	}
	return out
}

// events reads n events from ch, however the server batches them into
// responses (batching is timing, not behaviour).
func events(ch clientv3.WatchChan, n int) (interface{}, error) {
	out := []interface{}{}
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for len(out) < n {
		select {
		case r, ok := <-ch:
			if !ok {
				return append(out, "closed"), nil
			}
			if err := r.Err(); err != nil {
				return append(out, watchRespOf(r)), nil
			}
			for _, e := range r.Events {
				out = append(out, eventOf(e))
			}
		case <-timer.C:
			return nil, fmt.Errorf("timed out after %d of %d events", len(out), n)
		}
	}
	return out, nil
}

// next is the next response on ch.
func next(ch clientv3.WatchChan) (interface{}, error) {
	select {
	case r, ok := <-ch:
		if !ok {
			return "closed", nil
		}
		return watchRespOf(r), nil
	case <-time.After(deadline):
		return nil, errors.New("timed out waiting for a watch response")
	}
}

func ctxT() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), deadline)
}

func mustPut(c *clientv3.Client, k, v string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	ctx, cancel := ctxT()
	defer cancel()
	r, err := c.Put(ctx, k, v, opts...)
	if err != nil {
		panic(fmt.Sprintf("put %q: %v", k, err))
	}
	return r
}

func waitFor(what string, cond func() bool) {
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			panic("timed out waiting for " + what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freshSecond waits for the wall clock's next second (and a little), so
// that a few quick calls after it fall within one second.
func freshSecond() {
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second + 20*time.Millisecond).Sub(now))
}

// ---------------------------------------------------------------- scenarios

func scenarioKV(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	for i, k := range []string{"k/a", "k/b", "k/c", "k/d", "zz"} {
		v := strconv.Itoa(5 - i)
		call(t, "put "+k, func() (interface{}, error) { r, err := c.Put(ctx, k, v); return okPut(r, err) })
	}
	mustPut(c, "k/b", "2b")
	mustPut(c, "k/b", "2c")
	call(t, "put prev_kv", func() (interface{}, error) {
		r, err := c.Put(ctx, "k/a", "1b", clientv3.WithPrevKV())
		return okPut(r, err)
	})
	call(t, "put prev_kv new key", func() (interface{}, error) {
		r, err := c.Put(ctx, "k/e", "0", clientv3.WithPrevKV())
		return okPut(r, err)
	})
	call(t, "put ignore_value", func() (interface{}, error) {
		r, err := c.Put(ctx, "k/a", "", clientv3.WithIgnoreValue(), clientv3.WithPrevKV())
		return okPut(r, err)
	})
	call(t, "put ignore_value missing key", func() (interface{}, error) {
		r, err := c.Put(ctx, "nokey", "", clientv3.WithIgnoreValue())
		return okPut(r, err)
	})
	call(t, "put ignore_lease without lease", func() (interface{}, error) {
		r, err := c.Put(ctx, "k/a", "1c", clientv3.WithIgnoreLease())
		return okPut(r, err)
	})
	call(t, "put ignore_lease missing key", func() (interface{}, error) {
		r, err := c.Put(ctx, "nokey", "x", clientv3.WithIgnoreLease())
		return okPut(r, err)
	})
	call(t, "put ignore_value and value", func() (interface{}, error) {
		r, err := c.Put(ctx, "k/a", "x", clientv3.WithIgnoreValue())
		return okPut(r, err)
	})
	gets := []struct {
		name string
		key  string
		opts []clientv3.OpOption
	}{
		{"get", "k/a", nil},
		{"get missing", "nope", nil},
		{"get serializable", "k/a", []clientv3.OpOption{clientv3.WithSerializable()}},
		{"get prefix", "k/", []clientv3.OpOption{clientv3.WithPrefix()}},
		{"get from key", "k/c", []clientv3.OpOption{clientv3.WithFromKey()}},
		{"get from key all", "\x00", []clientv3.OpOption{clientv3.WithFromKey()}},
		{"get range", "k/b", []clientv3.OpOption{clientv3.WithRange("k/d")}},
		{"get range end before key", "k/d", []clientv3.OpOption{clientv3.WithRange("k/b")}},
		{"get limit", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(2)}},
		{"get limit exact", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(5)}},
		{"get rev", "k/a", []clientv3.OpOption{clientv3.WithRev(1)}},
		{"get prefix rev", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(3)}},
		{"get keys only", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}},
		{"get count only", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}},
		{"get count only limit", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithLimit(1)}},
		{"get min mod", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinModRev(6)}},
		{"get max mod", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMaxModRev(3)}},
		{"get min create", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinCreateRev(3)}},
		{"get max create", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMaxCreateRev(2)}},
		{"get min max mod limit", "k/", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinModRev(2), clientv3.WithMaxModRev(7), clientv3.WithLimit(1)}},
		{"get first create", "k/", append(clientv3.WithFirstCreate(), clientv3.WithPrefix())},
		{"get last create", "k/", append(clientv3.WithLastCreate(), clientv3.WithPrefix())},
		{"get first key", "k/", append(clientv3.WithFirstKey(), clientv3.WithPrefix())},
		{"get last key", "k/", append(clientv3.WithLastKey(), clientv3.WithPrefix())},
		{"get first rev", "k/", append(clientv3.WithFirstRev(), clientv3.WithPrefix())},
		{"get last rev", "k/", append(clientv3.WithLastRev(), clientv3.WithPrefix())},
	}
	for _, g := range gets {
		g := g
		call(t, g.name, func() (interface{}, error) { r, err := c.Get(ctx, g.key, g.opts...); return okGet(r, err) })
	}
	for _, order := range []clientv3.SortOrder{clientv3.SortNone, clientv3.SortAscend, clientv3.SortDescend} {
		for _, target := range []clientv3.SortTarget{clientv3.SortByKey, clientv3.SortByVersion,
			clientv3.SortByCreateRevision, clientv3.SortByModRevision, clientv3.SortByValue} {
			order, target := order, target
			call(t, fmt.Sprintf("get sort %v %v", order, target), func() (interface{}, error) {
				r, err := c.Get(ctx, "k/", clientv3.WithPrefix(), clientv3.WithSort(target, order),
					clientv3.WithKeysOnly())
				return okGet(r, err)
			})
			call(t, fmt.Sprintf("get sort %v %v limit", order, target), func() (interface{}, error) {
				r, err := c.Get(ctx, "k/", clientv3.WithPrefix(), clientv3.WithSort(target, order),
					clientv3.WithLimit(2))
				return okGet(r, err)
			})
		}
	}
	call(t, "delete", func() (interface{}, error) { r, err := c.Delete(ctx, "k/e"); return okDel(r, err) })
	call(t, "delete missing", func() (interface{}, error) { r, err := c.Delete(ctx, "k/e"); return okDel(r, err) })
	call(t, "delete range prev_kv", func() (interface{}, error) {
		r, err := c.Delete(ctx, "k/c", clientv3.WithRange("k/e"), clientv3.WithPrevKV())
		return okDel(r, err)
	})
	call(t, "delete from key", func() (interface{}, error) {
		r, err := c.Delete(ctx, "z", clientv3.WithFromKey(), clientv3.WithPrevKV())
		return okDel(r, err)
	})
	call(t, "delete prefix", func() (interface{}, error) {
		r, err := c.Delete(ctx, "k/", clientv3.WithPrefix())
		return okDel(r, err)
	})
	call(t, "compact", func() (interface{}, error) {
		r, err := c.Compact(ctx, 4)
		if err != nil {
			return nil, err
		}
		return r.Header.Revision, nil
	})
	call(t, "compact physical", func() (interface{}, error) {
		r, err := c.Compact(ctx, 5, clientv3.WithCompactPhysical())
		if err != nil {
			return nil, err
		}
		return r.Header.Revision, nil
	})
	call(t, "get after delete at old rev", func() (interface{}, error) {
		r, err := c.Get(ctx, "k/", clientv3.WithPrefix(), clientv3.WithRev(6))
		return okGet(r, err)
	})
	call(t, "do get", func() (interface{}, error) {
		r, err := c.Do(ctx, clientv3.OpGet("k/", clientv3.WithPrefix(), clientv3.WithRev(7)))
		if err != nil {
			return nil, err
		}
		return getOf(r.Get()), nil
	})
}

func okPut(r *clientv3.PutResponse, err error) (interface{}, error) {
	if err != nil {
		return nil, err
	}
	return putOf(r), nil
}

func okGet(r *clientv3.GetResponse, err error) (interface{}, error) {
	if err != nil {
		return nil, err
	}
	return getOf(r), nil
}

func okDel(r *clientv3.DeleteResponse, err error) (interface{}, error) {
	if err != nil {
		return nil, err
	}
	return delOf(r), nil
}

func okTxn(r *clientv3.TxnResponse, err error) (interface{}, error) {
	if err != nil {
		return nil, err
	}
	return txnOf(r), nil
}

func scenarioTxn(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	mustPut(c, "t/a", "1")
	mustPut(c, "t/b", "2")
	mustPut(c, "t/b", "3")
	lr, err := c.Grant(ctx, 60)
	if err != nil {
		panic(err)
	}
	t.lease(lr.ID)
	mustPut(c, "t/l", "leased", clientv3.WithLease(lr.ID))
	type cmpCase struct {
		name string
		cmp  clientv3.Cmp
	}
	cmps := []cmpCase{
		{"value =", clientv3.Compare(clientv3.Value("t/a"), "=", "1")},
		{"value !=", clientv3.Compare(clientv3.Value("t/a"), "!=", "1")},
		{"value >", clientv3.Compare(clientv3.Value("t/a"), ">", "0")},
		{"value <", clientv3.Compare(clientv3.Value("t/a"), "<", "0")},
		{"value missing key", clientv3.Compare(clientv3.Value("t/none"), "=", "")},
		{"version =", clientv3.Compare(clientv3.Version("t/b"), "=", 2)},
		{"version missing =0", clientv3.Compare(clientv3.Version("t/none"), "=", 0)},
		{"create <", clientv3.Compare(clientv3.CreateRevision("t/b"), "<", 3)},
		{"create missing =0", clientv3.Compare(clientv3.CreateRevision("t/none"), "=", 0)},
		{"mod >", clientv3.Compare(clientv3.ModRevision("t/b"), ">", 2)},
		{"mod =", clientv3.Compare(clientv3.ModRevision("t/a"), "=", 2)},
		{"lease =", clientv3.Compare(clientv3.LeaseValue("t/l"), "=", lr.ID)},
		{"lease = 0", clientv3.Compare(clientv3.LeaseValue("t/a"), "=", 0)},
		{"lease missing", clientv3.Compare(clientv3.LeaseValue("t/none"), "=", 0)},
		{"value prefix all", clientv3.Compare(clientv3.Value("t/"), ">", "0").WithPrefix()},
		{"version range", clientv3.Compare(clientv3.Version("t/a"), ">", 0).WithRange("t/c")},
		{"version range fails", clientv3.Compare(clientv3.Version("t/a"), ">", 1).WithRange("t/c")},
		{"mod range from key", clientv3.Compare(clientv3.ModRevision("t/"), "<", 100).WithRange("\x00")},
	}
	for _, cc := range cmps {
		cc := cc
		call(t, "txn "+cc.name, func() (interface{}, error) {
			r, err := c.Txn(ctx).If(cc.cmp).Then(clientv3.OpGet("t/a")).Else(clientv3.OpGet("t/b")).Commit()
			return okTxn(r, err)
		})
	}
	call(t, "txn empty", func() (interface{}, error) { r, err := c.Txn(ctx).Commit(); return okTxn(r, err) })
	call(t, "txn multi cmp", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Value("t/a"), "=", "1"),
			clientv3.Compare(clientv3.Version("t/b"), "=", 1)).
			Then(clientv3.OpPut("t/x", "then")).Else(clientv3.OpPut("t/x", "else", clientv3.WithPrevKV()),
			clientv3.OpGet("t/", clientv3.WithPrefix(), clientv3.WithCountOnly())).Commit()
		return okTxn(r, err)
	})
	call(t, "txn all ops", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("t/y", "1", clientv3.WithPrevKV()),
			clientv3.OpGet("t/", clientv3.WithPrefix(), clientv3.WithLimit(2)),
			clientv3.OpDelete("t/x", clientv3.WithPrevKV()),
			clientv3.OpGet("t/x")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn nested", func() (interface{}, error) {
		inner := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value("t/y"), "=", "1")},
			[]clientv3.Op{clientv3.OpPut("t/z", "inner-then"), clientv3.OpGet("t/z")},
			[]clientv3.Op{clientv3.OpPut("t/z", "inner-else")})
		inner2 := clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpTxn(nil,
			[]clientv3.Op{clientv3.OpGet("t/a")}, nil)}, nil)
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version("t/a"), ">", 0)).
			Then(inner, inner2, clientv3.OpGet("t/z")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn nested else", func() (interface{}, error) {
		inner := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value("t/y"), "=", "2")},
			[]clientv3.Op{clientv3.OpPut("t/z", "x")},
			[]clientv3.Op{clientv3.OpDelete("t/z", clientv3.WithPrevKV())})
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version("t/a"), "=", 0)).
			Else(inner).Commit()
		return okTxn(r, err)
	})
	call(t, "txn duplicate key", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("t/d", "1"), clientv3.OpPut("t/d", "2")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn duplicate put delete", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("t/d", "1"), clientv3.OpDelete("t/", clientv3.WithPrefix())).Commit()
		return okTxn(r, err)
	})
	call(t, "txn duplicate in nested", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("t/d", "1"),
			clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut("t/d", "2")}, nil)).Commit()
		return okTxn(r, err)
	})
	call(t, "txn duplicate then and else ok", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("t/d", "1")).Else(clientv3.OpPut("t/d", "2")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn delete then put same", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpDelete("t/d"), clientv3.OpPut("t/d", "3")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn put missing lease", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("t/q", "1", clientv3.WithLease(0x1234))).Commit()
		return okTxn(r, err)
	})
	call(t, "txn get future rev", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpGet("t/a", clientv3.WithRev(1000))).Commit()
		return okTxn(r, err)
	})
	call(t, "txn ignore value missing", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("t/none", "", clientv3.WithIgnoreValue())).Commit()
		return okTxn(r, err)
	})
	call(t, "get after", func() (interface{}, error) {
		r, err := c.Get(ctx, "t/", clientv3.WithPrefix())
		return okGet(r, err)
	})
}

func scenarioWatch(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	mustPut(c, "w/0", "base")
	base := mustPut(c, "w/1", "base").Header.Revision

	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	key := c.Watch(wctx, "w/a")
	pfx := c.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	noPut := c.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithFilterPut())
	noDel := c.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithFilterDelete())
	rng := c.Watch(wctx, "w/a", clientv3.WithRange("w/c"))
	from := c.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(1))
	fromKey := c.Watch(wctx, "w/b", clientv3.WithFromKey())
	created := c.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	call(t, "created notify", func() (interface{}, error) { return next(created) })
	// the others are created when their first event arrives; a created
	// notify on the same stream shows all before it are registered too
	mustPut(c, "w/a", "1")
	mustPut(c, "w/a", "2")
	mustPut(c, "w/b", "1")
	call(t, "delete", func() (interface{}, error) {
		r, err := c.Delete(ctx, "w/", clientv3.WithPrefix())
		return okDel(r, err)
	})
	mustPut(c, "w/c", "1")
	call(t, "key events", func() (interface{}, error) { return events(key, 3) })
	call(t, "prefix prev_kv events", func() (interface{}, error) { return events(pfx, 8) })
	call(t, "filter put events", func() (interface{}, error) { return events(noPut, 4) })
	call(t, "filter delete events", func() (interface{}, error) { return events(noDel, 4) })
	call(t, "range events", func() (interface{}, error) { return events(rng, 5) })
	call(t, "start rev events", func() (interface{}, error) { return events(from, 10) })
	call(t, "from key events", func() (interface{}, error) { return events(fromKey, 3) })
	call(t, "created notify events", func() (interface{}, error) { return events(created, 8) })
	_ = base

	// a txn's events arrive in one response, in op order
	txnW := c.Watch(wctx, "x/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	call(t, "txn watch created", func() (interface{}, error) { return next(txnW) })
	if _, err := c.Txn(ctx).Then(clientv3.OpPut("x/b", "1"), clientv3.OpPut("x/a", "1"),
		clientv3.OpDelete("x/c")).Commit(); err != nil {
		panic(err)
	}
	call(t, "txn events one response", func() (interface{}, error) { return next(txnW) })

	// progress: a response with no events at the current revision
	call(t, "request progress", func() (interface{}, error) { return nil, c.RequestProgress(wctx) })
	call(t, "progress response", func() (interface{}, error) { return next(txnW) })

	// cancel one watcher of a shared stream; the others go on
	c1ctx, c1cancel := context.WithCancel(wctx)
	w1 := c.Watch(c1ctx, "y/1", clientv3.WithCreatedNotify())
	w2 := c.Watch(wctx, "y/2", clientv3.WithCreatedNotify())
	call(t, "cancel watcher created", func() (interface{}, error) { return next(w1) })
	call(t, "other watcher created", func() (interface{}, error) { return next(w2) })
	c1cancel()
	call(t, "canceled watcher closes", func() (interface{}, error) {
		for {
			r, err := next(w1)
			if err != nil || r == "closed" {
				return r, err
			}
		}
	})
	mustPut(c, "y/1", "after cancel")
	mustPut(c, "y/2", "v")
	call(t, "other watcher goes on", func() (interface{}, error) { return events(w2, 1) })

	// many watchers on one stream, each sees only its own key
	many := []clientv3.WatchChan{}
	for i := 0; i < 20; i++ {
		many = append(many, c.Watch(wctx, fmt.Sprintf("m/%02d", i), clientv3.WithCreatedNotify()))
	}
	for i, ch := range many {
		if _, err := next(ch); err != nil {
			panic(fmt.Sprintf("watcher %d: %v", i, err))
		}
	}
	for i := 19; i >= 0; i-- {
		mustPut(c, fmt.Sprintf("m/%02d", i), strconv.Itoa(i))
	}
	got := []interface{}{}
	for _, ch := range many {
		r, err := events(ch, 1)
		if err != nil {
			panic(err)
		}
		got = append(got, r)
	}
	t.note("many watchers one stream", got)

	// fragment: history larger than a response may be, reassembled by the client
	big := strings.Repeat("v", 200*1024)
	var first int64
	for i := 0; i < 10; i++ {
		r := mustPut(c, fmt.Sprintf("f/%d", i), big)
		if i == 0 {
			first = r.Header.Revision
		}
	}
	frag := c.Watch(wctx, "f/", clientv3.WithPrefix(), clientv3.WithRev(first), clientv3.WithFragment())
	call(t, "fragmented events", func() (interface{}, error) { return events(frag, 10) })

	// compacted start revision: canceled with the compact revision
	cr, err := c.Compact(ctx, first)
	if err != nil {
		panic(err)
	}
	t.note("compact", cr.Header.Revision)
	cw := c.Watch(wctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(2))
	call(t, "compacted watch", func() (interface{}, error) { return next(cw) })
	call(t, "compacted watch then closed", func() (interface{}, error) { return next(cw) })
	// a watch at the compact revision itself is still served
	aw := c.Watch(wctx, "f/", clientv3.WithPrefix(), clientv3.WithRev(first))
	call(t, "watch at compact revision", func() (interface{}, error) { return events(aw, 10) })
	// a future revision waits for it
	fw := c.Watch(wctx, "g/", clientv3.WithPrefix(), clientv3.WithRev(first+20), clientv3.WithCreatedNotify())
	call(t, "future watch created", func() (interface{}, error) { return next(fw) })
	for i := 0; i < 12; i++ {
		mustPut(c, "g/k", strconv.Itoa(i))
	}
	call(t, "future watch events", func() (interface{}, error) { return events(fw, 2) })
	call(t, "close watcher", func() (interface{}, error) { return nil, c.Watcher.Close() })
}

func scenarioLease(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	grant := func(ttl int64) *clientv3.LeaseGrantResponse {
		r, err := c.Grant(ctx, ttl)
		if err != nil {
			panic(err)
		}
		t.lease(r.ID)
		return r
	}
	g := grant(60)
	t.note("grant", map[string]interface{}{"id": int64(g.ID), "ttl": g.TTL, "error": g.Error})
	g1 := grant(1)
	t.note("grant ttl 1 (raised to the minimum)", g1.TTL)
	call(t, "grant negative ttl", func() (interface{}, error) {
		r, err := c.Grant(ctx, -1)
		if err != nil {
			return nil, err
		}
		t.lease(r.ID)
		return r.TTL, nil
	})
	call(t, "grant huge ttl", func() (interface{}, error) {
		r, err := c.Grant(ctx, 9000000001)
		if err != nil {
			return nil, err
		}
		return r.TTL, nil
	})
	mustPut(c, "l/a", "1", clientv3.WithLease(g.ID))
	mustPut(c, "l/b", "1", clientv3.WithLease(g.ID))
	call(t, "put missing lease", func() (interface{}, error) {
		r, err := c.Put(ctx, "l/c", "1", clientv3.WithLease(0x7777))
		return okPut(r, err)
	})
	call(t, "put ignore_lease keeps lease", func() (interface{}, error) {
		r, err := c.Put(ctx, "l/a", "2", clientv3.WithIgnoreLease(), clientv3.WithPrevKV())
		return okPut(r, err)
	})
	call(t, "put ignore_lease and lease", func() (interface{}, error) {
		r, err := c.Put(ctx, "l/a", "2", clientv3.WithIgnoreLease(), clientv3.WithLease(g.ID))
		return okPut(r, err)
	})
	ttl := func(name string, id clientv3.LeaseID, opts ...clientv3.LeaseOption) {
		call(t, name, func() (interface{}, error) {
			r, err := c.TimeToLive(ctx, id, opts...)
			if err != nil {
				return nil, err
			}
			keys := []string{}
			for _, k := range r.Keys {
				keys = append(keys, string(k))
			}
			// etcd keeps a lease's keys in a Go map and lists them in the
			// map's random order: the set is the behaviour, not the order
			sort.Strings(keys)
			// TTL counts down in seconds: within the granted TTL, not equal to it
			return map[string]interface{}{"id": int64(r.ID), "granted": r.GrantedTTL,
				"ttl_ok": r.TTL > r.GrantedTTL-5 && r.TTL <= r.GrantedTTL || r.TTL == -1, "ttl_missing": r.TTL == -1,
				"keys": keys}, nil
		})
	}
	ttl("ttl", g.ID)
	ttl("ttl with keys", g.ID, clientv3.WithAttachedKeys())
	ttl("ttl missing lease", 0x7777, clientv3.WithAttachedKeys())
	call(t, "leases", func() (interface{}, error) {
		r, err := c.Leases(ctx)
		if err != nil {
			return nil, err
		}
		ids := map[int64]bool{}
		for _, l := range r.Leases {
			ids[int64(l.ID)] = true
		}
		return map[string]interface{}{"count": len(r.Leases), "has grant": ids[int64(g.ID)]}, nil
	})
	call(t, "keepalive once", func() (interface{}, error) {
		r, err := c.KeepAliveOnce(ctx, g.ID)
		if err != nil {
			return nil, err
		}
		return map[string]interface{}{"id": int64(r.ID), "ttl": r.TTL}, nil
	})
	call(t, "keepalive once missing", func() (interface{}, error) {
		r, err := c.KeepAliveOnce(ctx, 0x7777)
		if err != nil {
			return nil, err
		}
		return r.TTL, nil
	})
	kctx, kcancel := context.WithCancel(ctx)
	call(t, "keepalive", func() (interface{}, error) {
		ch, err := c.KeepAlive(kctx, g.ID)
		if err != nil {
			return nil, err
		}
		select {
		case r := <-ch:
			return map[string]interface{}{"id": int64(r.ID), "ttl": r.TTL}, nil
		case <-time.After(deadline):
			return nil, errors.New("no keepalive response")
		}
	})
	call(t, "keepalive missing lease", func() (interface{}, error) {
		ch, err := c.KeepAlive(kctx, 0x7777)
		if err != nil {
			return nil, err
		}
		select {
		case r, ok := <-ch:
			return map[string]interface{}{"ok": ok, "resp": r != nil}, nil
		case <-time.After(deadline):
			return nil, errors.New("keepalive channel of a missing lease stayed open")
		}
	})
	kcancel()
	// a short lease expires and takes its keys with it
	s := grant(2)
	mustPut(c, "e/a", "1", clientv3.WithLease(s.ID))
	mustPut(c, "e/b", "1", clientv3.WithLease(s.ID))
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	ew := c.Watch(wctx, "e/", clientv3.WithPrefix())
	call(t, "expiry deletes keys", func() (interface{}, error) { return events(ew, 2) })
	ttl("ttl after expiry", s.ID)
	call(t, "revoke", func() (interface{}, error) {
		r, err := c.Revoke(ctx, g.ID)
		if err != nil {
			return nil, err
		}
		return r.Header.Revision, nil
	})
	call(t, "keys after revoke", func() (interface{}, error) {
		r, err := c.Get(ctx, "l/", clientv3.WithPrefix())
		return okGet(r, err)
	})
	call(t, "revoke again", func() (interface{}, error) {
		r, err := c.Revoke(ctx, g.ID)
		if err != nil {
			return nil, err
		}
		return r.Header.Revision, nil
	})
	call(t, "revoke expired", func() (interface{}, error) {
		_, err := c.Revoke(ctx, s.ID)
		return "ok", err
	})
	call(t, "lease close", func() (interface{}, error) { return nil, c.Lease.Close() })
}

func scenarioLock(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	s1, err := concurrency.NewSession(c, concurrency.WithTTL(30))
	if err != nil {
		panic(err)
	}
	s2, err := concurrency.NewSession(c, concurrency.WithTTL(30))
	if err != nil {
		panic(err)
	}
	t.lease(s1.Lease())
	t.lease(s2.Lease())
	m1 := concurrency.NewMutex(s1, "/lock/")
	m2 := concurrency.NewMutex(s2, "/lock/")
	call(t, "lock", func() (interface{}, error) { return nil, m1.Lock(ctx) })
	t.note("lock key", m1.Key())
	call(t, "lock again same session", func() (interface{}, error) { return nil, m1.Lock(ctx) })
	call(t, "contended lock times out", func() (interface{}, error) {
		tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		return nil, m2.Lock(tctx)
	})
	waitFor("the timed-out waiter's key to go", func() bool {
		r, err := c.Get(ctx, "/lock/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 1
	})
	call(t, "lock keys", func() (interface{}, error) {
		r, err := c.Get(ctx, "/lock/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		return okGet(r, err)
	})
	done := make(chan error, 1)
	go func() { done <- m2.Lock(ctx) }()
	waitFor("the waiter's key", func() bool {
		r, err := c.Get(ctx, "/lock/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 2
	})
	call(t, "is owner txn", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(m1.IsOwner()).Then(clientv3.OpPut("/guarded", "1")).Commit()
		return okTxn(r, err)
	})
	call(t, "not owner txn", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(m2.IsOwner()).Then(clientv3.OpPut("/guarded", "2")).Commit()
		return okTxn(r, err)
	})
	call(t, "unlock", func() (interface{}, error) { return nil, m1.Unlock(ctx) })
	call(t, "waiter acquires", func() (interface{}, error) {
		select {
		case err := <-done:
			return m2.Key(), err
		case <-time.After(deadline):
			return nil, errors.New("waiter never acquired")
		}
	})
	call(t, "owner after hand-over", func() (interface{}, error) {
		r, err := c.Get(ctx, "/lock/", clientv3.WithFirstCreate()...)
		return okGet(r, err)
	})
	// a session that closes releases its lock
	call(t, "close session releases", func() (interface{}, error) { return nil, s2.Close() })
	call(t, "lock keys after close", func() (interface{}, error) {
		r, err := c.Get(ctx, "/lock/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return okGet(r, err)
	})
	// contention: each of several sessions increments under the lock
	const workers = 5
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := concurrency.NewSession(c, concurrency.WithTTL(30))
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			l := concurrency.NewLocker(s, "/counter-lock/")
			for j := 0; j < 3; j++ {
				l.Lock()
				r, err := c.Get(ctx, "/counter")
				if err != nil {
					errs <- err
				}
				n := 0
				if len(r.Kvs) > 0 {
					n, _ = strconv.Atoi(string(r.Kvs[0].Value))
				}
				if _, err := c.Put(ctx, "/counter", strconv.Itoa(n+1)); err != nil {
					errs <- err
				}
				l.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.note("contention error", errOf(err))
	}
	call(t, "counter under lock", func() (interface{}, error) {
		r, err := c.Get(ctx, "/counter")
		if err != nil {
			return nil, err
		}
		return string(r.Kvs[0].Value), nil
	})
	call(t, "session close", func() (interface{}, error) { return nil, s1.Close() })
	// an orphaned session (keepalives stopped) expires with its lease: the
	// waiter behind its lock acquires
	so, err := concurrency.NewSession(c, concurrency.WithTTL(2))
	if err != nil {
		panic(err)
	}
	t.lease(so.Lease())
	sw, err := concurrency.NewSession(c, concurrency.WithTTL(30))
	if err != nil {
		panic(err)
	}
	t.lease(sw.Lease())
	mo := concurrency.NewMutex(so, "/orphan/")
	call(t, "orphan session lock", func() (interface{}, error) { return nil, mo.Lock(ctx) })
	so.Orphan()
	call(t, "waiter acquires after expiry", func() (interface{}, error) {
		tctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		mw := concurrency.NewMutex(sw, "/orphan/")
		if err := mw.Lock(tctx); err != nil {
			return nil, err
		}
		return mw.Key(), nil
	})
	call(t, "orphan unlock after expiry", func() (interface{}, error) { return nil, mo.Unlock(ctx) })
	_ = sw.Close()
	// a session's lease revoked from outside: Done closes
	s3, err := concurrency.NewSession(c, concurrency.WithTTL(30))
	if err != nil {
		panic(err)
	}
	t.lease(s3.Lease())
	call(t, "revoke session lease", func() (interface{}, error) {
		_, err := c.Revoke(ctx, s3.Lease())
		return nil, err
	})
	call(t, "session done", func() (interface{}, error) {
		select {
		case <-s3.Done():
			return "done", nil
		case <-time.After(deadline):
			return nil, errors.New("session not done after revoke")
		}
	})
	call(t, "lock on dead session", func() (interface{}, error) {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return nil, concurrency.NewMutex(s3, "/lock3/").Lock(tctx)
	})
}

func scenarioElection(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	s1, err := concurrency.NewSession(c, concurrency.WithTTL(30))
	if err != nil {
		panic(err)
	}
	s2, err := concurrency.NewSession(c, concurrency.WithTTL(30))
	if err != nil {
		panic(err)
	}
	t.lease(s1.Lease())
	t.lease(s2.Lease())
	e1 := concurrency.NewElection(s1, "/elect/")
	e2 := concurrency.NewElection(s2, "/elect/")
	call(t, "leader before any", func() (interface{}, error) {
		r, err := e1.Leader(ctx)
		if err != nil {
			return nil, err
		}
		return getOf(r), nil
	})
	call(t, "proclaim before campaign", func() (interface{}, error) { return nil, e1.Proclaim(ctx, "x") })
	call(t, "resign before campaign", func() (interface{}, error) { return nil, e1.Resign(ctx) })
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	call(t, "campaign", func() (interface{}, error) { return nil, e1.Campaign(ctx, "one") })
	t.note("leader key", e1.Key())
	obs := concurrency.NewElection(s2, "/elect/").Observe(octx)
	observe := func(want string) (interface{}, error) {
		for {
			select {
			case r, ok := <-obs:
				if !ok {
					return "closed", nil
				}
				if len(r.Kvs) > 0 && string(r.Kvs[0].Value) == want {
					return kvsOf(r.Kvs), nil
				}
			case <-time.After(deadline):
				return nil, fmt.Errorf("never observed %q", want)
			}
		}
	}
	call(t, "observe first", func() (interface{}, error) { return observe("one") })
	call(t, "campaign again same value", func() (interface{}, error) { return nil, e1.Campaign(ctx, "one") })
	call(t, "proclaim", func() (interface{}, error) { return nil, e1.Proclaim(ctx, "two") })
	call(t, "observe proclaim", func() (interface{}, error) { return observe("two") })
	call(t, "leader", func() (interface{}, error) {
		r, err := e2.Leader(ctx)
		if err != nil {
			return nil, err
		}
		return getOf(r), nil
	})
	call(t, "campaign contended times out", func() (interface{}, error) {
		tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		return nil, e2.Campaign(tctx, "three")
	})
	waitFor("the timed-out candidate's key to go", func() bool {
		r, err := c.Get(ctx, "/elect/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 1
	})
	done := make(chan error, 1)
	go func() { done <- e2.Campaign(ctx, "three") }()
	waitFor("the candidate's key", func() bool {
		r, err := c.Get(ctx, "/elect/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && r.Count == 2
	})
	call(t, "resign", func() (interface{}, error) { return nil, e1.Resign(ctx) })
	call(t, "second wins", func() (interface{}, error) {
		select {
		case err := <-done:
			return e2.Key(), err
		case <-time.After(deadline):
			return nil, errors.New("candidate never won")
		}
	})
	call(t, "observe second", func() (interface{}, error) { return observe("three") })
	call(t, "resign again", func() (interface{}, error) { return nil, e1.Resign(ctx) })
	call(t, "proclaim after resign", func() (interface{}, error) { return nil, e1.Proclaim(ctx, "x") })
	// the leader's session ends: its key goes and the election is empty
	call(t, "close leader session", func() (interface{}, error) { return nil, s2.Close() })
	call(t, "leader after close", func() (interface{}, error) {
		r, err := e1.Leader(ctx)
		if err != nil {
			return nil, err
		}
		return getOf(r), nil
	})
	call(t, "resume election", func() (interface{}, error) {
		if err := e1.Campaign(ctx, "four"); err != nil {
			return nil, err
		}
		re := concurrency.ResumeElection(s1, "/elect/", e1.Key(), e1.Rev())
		if err := re.Proclaim(ctx, "five"); err != nil {
			return nil, err
		}
		r, err := e1.Leader(ctx)
		if err != nil {
			return nil, err
		}
		return getOf(r), nil
	})
	_ = s1.Close()
}

func scenarioSTM(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	levels := []struct {
		name string
		iso  concurrency.Isolation
	}{
		{"serializable_snapshot", concurrency.SerializableSnapshot},
		{"serializable", concurrency.Serializable},
		{"repeatable_reads", concurrency.RepeatableReads},
		{"read_committed", concurrency.ReadCommitted},
	}
	for _, lv := range levels {
		lv := lv
		acct := "s/" + lv.name + "/"
		mustPut(c, acct+"a", "100")
		mustPut(c, acct+"b", "0")
		// one deterministic conflict: a write to a key read, from outside,
		// during the first attempt
		attempts := 0
		call(t, lv.name+" conflict", func() (interface{}, error) {
			r, err := concurrency.NewSTM(c, func(s concurrency.STM) error {
				attempts++
				a, _ := strconv.Atoi(s.Get(acct + "a"))
				if attempts == 1 {
					mustPut(c, acct+"a", "50")
				}
				b, _ := strconv.Atoi(s.Get(acct + "b"))
				s.Put(acct+"a", strconv.Itoa(a-10))
				s.Put(acct+"b", strconv.Itoa(b+10))
				return nil
			}, concurrency.WithIsolation(lv.iso))
			if err != nil {
				return nil, err
			}
			return map[string]interface{}{"succeeded": r.Succeeded, "attempts": attempts}, nil
		})
		call(t, lv.name+" after conflict", func() (interface{}, error) {
			r, err := c.Get(ctx, acct, clientv3.WithPrefix())
			return okGet(r, err)
		})
		// contention: transfers between accounts keep the total
		var wg sync.WaitGroup
		const workers, rounds = 4, 5
		errs := make([]error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < rounds; i++ {
					_, err := concurrency.NewSTM(c, func(s concurrency.STM) error {
						a, _ := strconv.Atoi(s.Get(acct + "a"))
						b, _ := strconv.Atoi(s.Get(acct + "b"))
						s.Put(acct+"a", strconv.Itoa(a-1))
						s.Put(acct+"b", strconv.Itoa(b+1))
						return nil
					}, concurrency.WithIsolation(lv.iso), concurrency.WithPrefetch(acct+"a", acct+"b"))
					if err != nil {
						errs[w] = err
						return
					}
				}
			}(w)
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.note(lv.name+" contention error", errOf(err))
			}
		}
		call(t, lv.name+" total kept", func() (interface{}, error) {
			r, err := c.Get(ctx, acct, clientv3.WithPrefix())
			if err != nil {
				return nil, err
			}
			sum := 0
			for _, k := range r.Kvs {
				n, _ := strconv.Atoi(string(k.Value))
				sum += n
			}
			if lv.iso == concurrency.ReadCommitted {
				// read committed makes no promise under contention
				return len(r.Kvs), nil
			}
			return []int{sum, len(r.Kvs)}, nil
		})
		call(t, lv.name+" apply error", func() (interface{}, error) {
			_, err := concurrency.NewSTM(c, func(s concurrency.STM) error {
				s.Get(acct + "a")
				return errors.New("apply refused")
			}, concurrency.WithIsolation(lv.iso))
			return nil, err
		})
		call(t, lv.name+" delete and rev", func() (interface{}, error) {
			var rev, revMissing int64
			_, err := concurrency.NewSTM(c, func(s concurrency.STM) error {
				rev = s.Rev(acct + "b")
				revMissing = s.Rev(acct + "none")
				s.Del(acct + "b")
				return nil
			}, concurrency.WithIsolation(lv.iso))
			return []interface{}{rev > 0, revMissing}, err
		})
	}
}

func scenarioMaintenance(c *clientv3.Client, t *transcript, ep string) {
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		mustPut(c, fmt.Sprintf("m/%d", i), strconv.Itoa(i))
	}
	call(t, "status", func() (interface{}, error) {
		r, err := c.Status(ctx, ep)
		if err != nil {
			return nil, err
		}
		return map[string]interface{}{"version": r.Version, "leader is self": r.Leader == r.Header.MemberId,
			"db size > 0": r.DbSize > 0, "in use <= size": r.DbSizeInUse <= r.DbSize,
			"learner": r.IsLearner, "errors": r.Errors, "rev": r.Header.Revision}, nil
	})
	call(t, "alarm list", func() (interface{}, error) {
		r, err := c.AlarmList(ctx)
		if err != nil {
			return nil, err
		}
		return len(r.Alarms), nil
	})
	call(t, "alarm disarm none", func() (interface{}, error) {
		r, err := c.AlarmDisarm(ctx, &clientv3.AlarmMember{})
		if err != nil {
			return nil, err
		}
		if r == nil { // the client disarms each alarm listed: none, no call
			return "no call", nil
		}
		return len(r.Alarms), nil
	})
	call(t, "defragment", func() (interface{}, error) {
		r, err := c.Defragment(ctx, ep)
		if err != nil {
			return nil, err
		}
		if r.Header == nil {
			return "no header", nil
		}
		return r.Header.Revision, nil
	})
	call(t, "compact", func() (interface{}, error) {
		r, err := c.Compact(ctx, 3, clientv3.WithCompactPhysical())
		if err != nil {
			return nil, err
		}
		return r.Header.Revision, nil
	})
	call(t, "hashkv", func() (interface{}, error) {
		r, err := c.HashKV(ctx, ep, 0)
		if err != nil {
			return nil, err
		}
		// the hash is of the keys' revisions and encoded values, which
		// are the same on two servers that applied the same requests
		return map[string]interface{}{"compact": r.CompactRevision, "rev": r.Header.Revision,
			"hash": r.Hash}, nil
	})
	call(t, "hashkv stable", func() (interface{}, error) {
		a, err := c.HashKV(ctx, ep, 5)
		if err != nil {
			return nil, err
		}
		b, err := c.HashKV(ctx, ep, 5)
		if err != nil {
			return nil, err
		}
		return []interface{}{a.Hash == b.Hash, a.Hash}, nil
	})
	call(t, "hashkv compacted rev", func() (interface{}, error) {
		r, err := c.HashKV(ctx, ep, 2)
		if err != nil {
			return nil, err
		}
		return r.CompactRevision, nil
	})
	call(t, "hashkv future rev", func() (interface{}, error) {
		r, err := c.HashKV(ctx, ep, 100)
		if err != nil {
			return nil, err
		}
		return r.CompactRevision, nil
	})
	call(t, "snapshot", func() (interface{}, error) {
		rc, err := c.Snapshot(ctx)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := ioutil.ReadAll(rc)
		if err != nil {
			return nil, err
		}
		// etcd's snapshot stream ends with the sha256 of what precedes it
		n := len(b) - sha256.Size
		sum := sha256.Sum256(b[:n])
		return map[string]interface{}{"sha256 trailer": n > 0 && bytes.Equal(sum[:], b[n:])}, nil
	})
	call(t, "member list", func() (interface{}, error) {
		r, err := c.MemberList(ctx)
		if err != nil {
			return nil, err
		}
		ms := []interface{}{}
		for _, m := range r.Members {
			ms = append(ms, map[string]interface{}{"name": m.Name, "peers": len(m.PeerURLs),
				"clients": len(m.ClientURLs), "learner": m.IsLearner, "self": m.ID == r.Header.MemberId})
		}
		return ms, nil
	})
	call(t, "status bad endpoint", func() (interface{}, error) {
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := c.Status(tctx, "127.0.0.1:1")
		return nil, err
	})
}

func scenarioErrors(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		mustPut(c, "e/k", strconv.Itoa(i))
	}
	call(t, "put empty key", func() (interface{}, error) { r, err := c.Put(ctx, "", "v"); return okPut(r, err) })
	call(t, "get empty key", func() (interface{}, error) { r, err := c.Get(ctx, ""); return okGet(r, err) })
	call(t, "delete empty key", func() (interface{}, error) { r, err := c.Delete(ctx, ""); return okDel(r, err) })
	call(t, "txn put empty key", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("", "v")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn compare empty key", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version(""), "=", 0)).Commit()
		return okTxn(r, err)
	})
	call(t, "request too large", func() (interface{}, error) {
		r, err := c.Put(ctx, "big", strings.Repeat("x", 1600*1024))
		return okPut(r, err)
	})
	call(t, "request over grpc limit", func() (interface{}, error) {
		r, err := c.Put(ctx, "big", strings.Repeat("x", 2100*1024))
		return okPut(r, err)
	})
	call(t, "too many ops", func() (interface{}, error) {
		ops := []clientv3.Op{}
		for i := 0; i < 129; i++ {
			ops = append(ops, clientv3.OpGet(fmt.Sprintf("k%d", i)))
		}
		r, err := c.Txn(ctx).Then(ops...).Commit()
		return okTxn(r, err)
	})
	call(t, "max ops", func() (interface{}, error) {
		ops := []clientv3.Op{}
		for i := 0; i < 128; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("k%d", i), "v"))
		}
		r, err := c.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, err
		}
		return r.Header.Revision, nil
	})
	call(t, "too many ops in else", func() (interface{}, error) {
		ops := []clientv3.Op{}
		for i := 0; i < 129; i++ {
			ops = append(ops, clientv3.OpGet(fmt.Sprintf("k%d", i)))
		}
		r, err := c.Txn(ctx).Else(ops...).Commit()
		return okTxn(r, err)
	})
	call(t, "too many compares", func() (interface{}, error) {
		cmps := []clientv3.Cmp{}
		for i := 0; i < 129; i++ {
			cmps = append(cmps, clientv3.Compare(clientv3.Version(fmt.Sprintf("k%d", i)), ">", -1))
		}
		r, err := c.Txn(ctx).If(cmps...).Commit()
		return okTxn(r, err)
	})
	call(t, "future revision", func() (interface{}, error) {
		r, err := c.Get(ctx, "e/k", clientv3.WithRev(1000))
		return okGet(r, err)
	})
	call(t, "compact future", func() (interface{}, error) {
		_, err := c.Compact(ctx, 1000)
		return nil, err
	})
	call(t, "compact", func() (interface{}, error) {
		r, err := c.Compact(ctx, 4)
		if err != nil {
			return nil, err
		}
		return r.Header.Revision, nil
	})
	call(t, "compacted revision", func() (interface{}, error) {
		r, err := c.Get(ctx, "e/k", clientv3.WithRev(2))
		return okGet(r, err)
	})
	call(t, "at compact revision", func() (interface{}, error) {
		r, err := c.Get(ctx, "e/k", clientv3.WithRev(4))
		return okGet(r, err)
	})
	call(t, "compact again", func() (interface{}, error) {
		_, err := c.Compact(ctx, 3)
		return nil, err
	})
	call(t, "txn compacted rev", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpGet("e/k", clientv3.WithRev(2))).Commit()
		return okTxn(r, err)
	})
	call(t, "negative revision", func() (interface{}, error) {
		r, err := c.Get(ctx, "e/k", clientv3.WithRev(-1))
		return okGet(r, err)
	})
	call(t, "lease not found", func() (interface{}, error) {
		r, err := c.Put(ctx, "e/k", "v", clientv3.WithLease(12345))
		return okPut(r, err)
	})
	call(t, "revoke not found", func() (interface{}, error) {
		_, err := c.Revoke(ctx, 12345)
		return nil, err
	})
	call(t, "ignore value missing key", func() (interface{}, error) {
		r, err := c.Put(ctx, "e/none", "", clientv3.WithIgnoreValue())
		return okPut(r, err)
	})
	call(t, "ignore value with value", func() (interface{}, error) {
		r, err := c.Put(ctx, "e/k", "v", clientv3.WithIgnoreValue())
		return okPut(r, err)
	})
	// responses far larger than a request may be: etcd sends them whole
	big := strings.Repeat("b", 1000*1000)
	for i := 0; i < 6; i++ {
		mustPut(c, fmt.Sprintf("big/%d", i), big)
	}
	call(t, "get 6 MB", func() (interface{}, error) { r, err := c.Get(ctx, "big/", clientv3.WithPrefix()); return okGet(r, err) })
	call(t, "txn 6 MB", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpGet("big/", clientv3.WithPrefix()), clientv3.OpDelete("big/", clientv3.WithPrefix(), clientv3.WithPrevKV())).Commit()
		return okTxn(r, err)
	})
	call(t, "txn over request limit in two puts", func() (interface{}, error) {
		half := strings.Repeat("h", 800*1024)
		r, err := c.Txn(ctx).Then(clientv3.OpPut("h1", half), clientv3.OpPut("h2", half)).Commit()
		return okTxn(r, err)
	})
	call(t, "deadline", func() (interface{}, error) {
		tctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
		defer cancel()
		<-tctx.Done()
		r, err := c.Get(tctx, "e/k")
		return okGet(r, err)
	})
	call(t, "canceled", func() (interface{}, error) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		r, err := c.Get(cctx, "e/k")
		return okGet(r, err)
	})
}

func memberOf(m interface {
	GetName() string
	GetPeerURLs() []string
	GetClientURLs() []string
	GetIsLearner() bool
}) map[string]interface{} {
	return map[string]interface{}{"name": m.GetName(), "peers": m.GetPeerURLs(),
		"clients": len(m.GetClientURLs()), "learner": m.GetIsLearner()}
}

func scenarioCluster(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	var self uint64
	call(t, "member list", func() (interface{}, error) {
		r, err := c.MemberList(ctx)
		if err != nil {
			return nil, err
		}
		self = r.Members[0].ID
		return []interface{}{len(r.Members), r.Members[0].Name, r.Members[0].IsLearner}, nil
	})
	// a peer URL nothing listens on, the same on both servers
	peer := "http://127.0.0.1:1"
	var learner uint64
	// etcd derives a new member's id from its peer URLs and the second it
	// is added: adds of the same URLs within one second collide on the id,
	// in different seconds on the URL. Both servers' calls start at the
	// beginning of a second so that the step shows the same one.
	freshSecond()
	call(t, "add learner", func() (interface{}, error) {
		r, err := c.MemberAddAsLearner(ctx, []string{peer})
		if err != nil {
			return nil, err
		}
		learner = r.Member.ID
		return map[string]interface{}{"member": memberOf(r.Member), "members": len(r.Members)}, nil
	})
	call(t, "add same peer again", func() (interface{}, error) {
		_, err := c.MemberAdd(ctx, []string{peer})
		return nil, err
	})
	call(t, "add learner same peer again", func() (interface{}, error) {
		_, err := c.MemberAddAsLearner(ctx, []string{peer})
		return nil, err
	})
	call(t, "member list with learner", func() (interface{}, error) {
		r, err := c.MemberList(ctx)
		if err != nil {
			return nil, err
		}
		out := []interface{}{}
		for _, m := range r.Members {
			if m.ID == learner {
				out = append(out, memberOf(m))
			}
		}
		return []interface{}{len(r.Members), out}, nil
	})
	call(t, "add same peer a second later", func() (interface{}, error) {
		freshSecond()
		_, err := c.MemberAdd(ctx, []string{peer})
		return nil, err
	})
	call(t, "add bad url", func() (interface{}, error) {
		_, err := c.MemberAdd(ctx, []string{"not a url"})
		return nil, err
	})
	call(t, "promote learner not in sync", func() (interface{}, error) {
		_, err := c.MemberPromote(ctx, learner)
		return nil, err
	})
	call(t, "promote voter", func() (interface{}, error) {
		_, err := c.MemberPromote(ctx, self)
		return nil, err
	})
	call(t, "promote unknown", func() (interface{}, error) {
		_, err := c.MemberPromote(ctx, 0x4242)
		return nil, err
	})
	call(t, "move leader to learner", func() (interface{}, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := c.MoveLeader(ctx, learner)
		return nil, err
	})
	call(t, "move leader to unknown", func() (interface{}, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := c.MoveLeader(ctx, 0x4242)
		return nil, err
	})
	call(t, "move leader to self", func() (interface{}, error) {
		r, err := c.MoveLeader(ctx, self)
		if err != nil {
			return nil, err
		}
		return r.Header != nil, nil
	})
	call(t, "update learner", func() (interface{}, error) {
		r, err := c.MemberUpdate(ctx, learner, []string{"http://127.0.0.1:2"})
		if err != nil {
			return nil, err
		}
		return len(r.Members), nil
	})
	call(t, "member list after update", func() (interface{}, error) {
		r, err := c.MemberList(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range r.Members {
			if m.ID == learner {
				return memberOf(m), nil
			}
		}
		return nil, errors.New("updated member not listed")
	})
	call(t, "update unknown", func() (interface{}, error) {
		_, err := c.MemberUpdate(ctx, 0x4242, []string{"http://127.0.0.1:3"})
		return nil, err
	})
	call(t, "update to existing peer", func() (interface{}, error) {
		r, err := c.MemberList(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range r.Members {
			if m.ID == self {
				_, err = c.MemberUpdate(ctx, learner, m.PeerURLs)
				return nil, err
			}
		}
		return nil, errors.New("no self in member list")
	})
	call(t, "remove learner", func() (interface{}, error) {
		r, err := c.MemberRemove(ctx, learner)
		if err != nil {
			return nil, err
		}
		return len(r.Members), nil
	})
	call(t, "remove again", func() (interface{}, error) {
		_, err := c.MemberRemove(ctx, learner)
		return nil, err
	})
	// a removed member's id may never come back: the same URLs added
	// again within the second get that id, and etcd refuses it as not found
	call(t, "add removed id again", func() (interface{}, error) {
		freshSecond()
		r, err := c.MemberAddAsLearner(ctx, []string{"http://127.0.0.1:5"})
		if err != nil {
			return nil, err
		}
		if _, err := c.MemberRemove(ctx, r.Member.ID); err != nil {
			return nil, err
		}
		_, err = c.MemberAddAsLearner(ctx, []string{"http://127.0.0.1:5"})
		return nil, err
	})
	call(t, "add voter", func() (interface{}, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r, err := c.MemberAdd(ctx, []string{"http://127.0.0.1:4"})
		if err != nil {
			return nil, err
		}
		return memberOf(r.Member), nil
	})
}

func scenarioAuth(c *clientv3.Client, t *transcript, ep string) {
	ctx := context.Background()
	ok := func(name string, fn func() error) {
		call(t, name, func() (interface{}, error) { return nil, fn() })
	}
	ok("enable without root", func() error { _, err := c.AuthEnable(ctx); return err })
	ok("add root", func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err })
	ok("add root again", func() error { _, err := c.UserAdd(ctx, "root", "x"); return err })
	ok("add empty user", func() error { _, err := c.UserAdd(ctx, "", "x"); return err })
	ok("add user no password", func() error {
		_, err := c.UserAddWithOptions(ctx, "nopw", "", &clientv3.UserAddOptions{NoPassword: true})
		return err
	})
	ok("enable without root role", func() error { _, err := c.AuthEnable(ctx); return err })
	ok("grant root role", func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err })
	ok("add role", func() error { _, err := c.RoleAdd(ctx, "r"); return err })
	ok("add role again", func() error { _, err := c.RoleAdd(ctx, "r"); return err })
	ok("add empty role", func() error { _, err := c.RoleAdd(ctx, ""); return err })
	ok("grant perm prefix", func() error {
		_, err := c.RoleGrantPermission(ctx, "r", "p/", clientv3.GetPrefixRangeEnd("p/"), clientv3.PermissionType(clientv3.PermReadWrite))
		return err
	})
	ok("grant perm read key", func() error {
		_, err := c.RoleGrantPermission(ctx, "r", "ro", "", clientv3.PermissionType(clientv3.PermRead))
		return err
	})
	ok("grant perm missing role", func() error {
		_, err := c.RoleGrantPermission(ctx, "nope", "a", "", clientv3.PermissionType(clientv3.PermRead))
		return err
	})
	ok("add user empty password", func() error { _, err := c.UserAdd(ctx, "emptypw", ""); return err })
	ok("grant perm from key", func() error {
		_, err := c.RoleGrantPermission(ctx, "r", "t", "\x00", clientv3.PermissionType(clientv3.PermWrite))
		return err
	})
	ok("grant perm empty key", func() error {
		_, err := c.RoleGrantPermission(ctx, "r", "", "", clientv3.PermissionType(clientv3.PermRead))
		return err
	})
	ok("grant perm overlapping", func() error {
		_, err := c.RoleGrantPermission(ctx, "r", "p/x", "", clientv3.PermissionType(clientv3.PermRead))
		return err
	})
	ok("add alice", func() error { _, err := c.UserAdd(ctx, "alice", "alicepw"); return err })
	ok("grant alice", func() error { _, err := c.UserGrantRole(ctx, "alice", "r"); return err })
	ok("grant alice again", func() error { _, err := c.UserGrantRole(ctx, "alice", "r"); return err })
	ok("grant missing role", func() error { _, err := c.UserGrantRole(ctx, "alice", "nope"); return err })
	ok("grant missing user", func() error { _, err := c.UserGrantRole(ctx, "bob", "r"); return err })
	call(t, "user get", func() (interface{}, error) {
		r, err := c.UserGet(ctx, "alice")
		if err != nil {
			return nil, err
		}
		return r.Roles, nil
	})
	call(t, "user get missing", func() (interface{}, error) { _, err := c.UserGet(ctx, "bob"); return nil, err })
	call(t, "user list", func() (interface{}, error) {
		r, err := c.UserList(ctx)
		if err != nil {
			return nil, err
		}
		return r.Users, nil
	})
	call(t, "role get", func() (interface{}, error) {
		r, err := c.RoleGet(ctx, "r")
		if err != nil {
			return nil, err
		}
		perms := []interface{}{}
		for _, p := range r.Perm {
			perms = append(perms, []interface{}{p.PermType.String(), string(p.Key), string(p.RangeEnd)})
		}
		return perms, nil
	})
	call(t, "role list", func() (interface{}, error) {
		r, err := c.RoleList(ctx)
		if err != nil {
			return nil, err
		}
		return r.Roles, nil
	})
	ok("enable", func() error { _, err := c.AuthEnable(ctx); return err })
	ok("enable again", func() error { _, err := c.AuthEnable(ctx); return err })
	call(t, "unauthenticated put", func() (interface{}, error) { r, err := c.Put(ctx, "p/a", "1"); return okPut(r, err) })
	call(t, "unauthenticated get", func() (interface{}, error) { r, err := c.Get(ctx, "p/a"); return okGet(r, err) })
	login := func(user, pw string) (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 10 * time.Second,
			Username: user, Password: pw})
	}
	call(t, "login wrong password", func() (interface{}, error) {
		a, err := login("alice", "wrong")
		if err != nil {
			return nil, err
		}
		defer a.Close()
		_, err = a.Get(ctx, "p/a")
		return nil, err
	})
	call(t, "login unknown user", func() (interface{}, error) {
		a, err := login("bob", "x")
		if err != nil {
			return nil, err
		}
		defer a.Close()
		_, err = a.Get(ctx, "p/a")
		return nil, err
	})
	call(t, "login no password user", func() (interface{}, error) {
		a, err := login("nopw", "")
		if err != nil {
			return nil, err
		}
		defer a.Close()
		_, err = a.Get(ctx, "p/a")
		return nil, err
	})
	alice, err := login("alice", "alicepw")
	if err != nil {
		panic(err)
	}
	defer alice.Close()
	call(t, "alice put inside", func() (interface{}, error) { r, err := alice.Put(ctx, "p/a", "1"); return okPut(r, err) })
	call(t, "alice put outside", func() (interface{}, error) { r, err := alice.Put(ctx, "q", "1"); return okPut(r, err) })
	call(t, "alice put read-only", func() (interface{}, error) { r, err := alice.Put(ctx, "ro", "1"); return okPut(r, err) })
	call(t, "alice get read-only", func() (interface{}, error) { r, err := alice.Get(ctx, "ro"); return okGet(r, err) })
	call(t, "alice get prefix", func() (interface{}, error) {
		r, err := alice.Get(ctx, "p/", clientv3.WithPrefix())
		return okGet(r, err)
	})
	call(t, "alice get all", func() (interface{}, error) {
		r, err := alice.Get(ctx, "", clientv3.WithFromKey())
		return okGet(r, err)
	})
	call(t, "alice delete prefix", func() (interface{}, error) {
		r, err := alice.Delete(ctx, "p/", clientv3.WithPrefix())
		return okDel(r, err)
	})
	call(t, "alice txn inside", func() (interface{}, error) {
		r, err := alice.Txn(ctx).If(clientv3.Compare(clientv3.Version("p/a"), "=", 0)).
			Then(clientv3.OpPut("p/b", "1")).Else(clientv3.OpGet("p/a")).Commit()
		return okTxn(r, err)
	})
	call(t, "alice txn compare outside", func() (interface{}, error) {
		r, err := alice.Txn(ctx).If(clientv3.Compare(clientv3.Version("q"), "=", 0)).
			Then(clientv3.OpPut("p/b", "1")).Commit()
		return okTxn(r, err)
	})
	call(t, "alice watch outside", func() (interface{}, error) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		return next(alice.Watch(wctx, "q", clientv3.WithCreatedNotify()))
	})
	call(t, "alice lease grant", func() (interface{}, error) {
		r, err := alice.Grant(ctx, 60)
		if err != nil {
			return nil, err
		}
		t.lease(r.ID)
		return r.TTL, nil
	})
	call(t, "alice put from-key perm", func() (interface{}, error) { r, err := alice.Put(ctx, "zzz", "1"); return okPut(r, err) })
	call(t, "alice get from-key perm (write only)", func() (interface{}, error) { r, err := alice.Get(ctx, "zzz"); return okGet(r, err) })
	call(t, "alice get range partly outside", func() (interface{}, error) {
		r, err := alice.Get(ctx, "p/", clientv3.WithRange("q/"))
		return okGet(r, err)
	})
	call(t, "alice txn nested outside", func() (interface{}, error) {
		// read-only, so that the two servers' answers (see KNOWN_DIVERGENCES
		// in test_go_client.py) leave the same state behind
		r, err := alice.Txn(ctx).Then(clientv3.OpGet("p/a"),
			clientv3.OpTxn(nil, nil, []clientv3.Op{clientv3.OpGet("q")})).Commit()
		return okTxn(r, err)
	})
	call(t, "alice delete outside prev_kv", func() (interface{}, error) {
		r, err := alice.Delete(ctx, "p/", clientv3.WithPrefix(), clientv3.WithPrevKV())
		return okDel(r, err)
	})
	call(t, "alice revoke lease on a key outside", func() (interface{}, error) {
		ra, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 10 * time.Second,
			Username: "root", Password: "rootpw"})
		if err != nil {
			return nil, err
		}
		defer ra.Close()
		lr, err := ra.Grant(ctx, 60)
		if err != nil {
			return nil, err
		}
		t.lease(lr.ID)
		if _, err := ra.Put(ctx, "q/leased", "1", clientv3.WithLease(lr.ID)); err != nil {
			return nil, err
		}
		if _, err := alice.TimeToLive(ctx, lr.ID, clientv3.WithAttachedKeys()); err != nil {
			return "ttl: " + err.Error(), nil
		}
		_, err = alice.Revoke(ctx, lr.ID)
		return nil, err
	})
	call(t, "alice put own lease", func() (interface{}, error) {
		lr, err := alice.Grant(ctx, 60)
		if err != nil {
			return nil, err
		}
		t.lease(lr.ID)
		r, err := alice.Put(ctx, "p/l", "1", clientv3.WithLease(lr.ID))
		return okPut(r, err)
	})
	call(t, "alice user list", func() (interface{}, error) { _, err := alice.UserList(ctx); return nil, err })
	call(t, "alice user get self", func() (interface{}, error) {
		r, err := alice.UserGet(ctx, "alice")
		if err != nil {
			return nil, err
		}
		return r.Roles, nil
	})
	call(t, "alice member list", func() (interface{}, error) {
		r, err := alice.MemberList(ctx)
		if err != nil {
			return nil, err
		}
		return len(r.Members), nil
	})
	call(t, "alice status", func() (interface{}, error) {
		r, err := alice.Status(ctx, ep)
		if err != nil {
			return nil, err
		}
		return r.Version, nil
	})
	call(t, "alice alarm list", func() (interface{}, error) { _, err := alice.AlarmList(ctx); return nil, err })
	call(t, "alice compact", func() (interface{}, error) { _, err := alice.Compact(ctx, 1); return nil, err })
	call(t, "alice defragment", func() (interface{}, error) { _, err := alice.Defragment(ctx, ep); return nil, err })
	call(t, "alice auth disable", func() (interface{}, error) { _, err := alice.AuthDisable(ctx); return nil, err })
	root, err := login("root", "rootpw")
	if err != nil {
		panic(err)
	}
	defer root.Close()
	call(t, "root put outside", func() (interface{}, error) { r, err := root.Put(ctx, "q", "1"); return okPut(r, err) })
	ok("revoke perm", func() error { _, err := root.RoleRevokePermission(ctx, "r", "ro", ""); return err })
	ok("revoke perm again", func() error { _, err := root.RoleRevokePermission(ctx, "r", "ro", ""); return err })
	call(t, "alice get read-only after revoke", func() (interface{}, error) { r, err := alice.Get(ctx, "ro"); return okGet(r, err) })
	ok("revoke root role from root", func() error { _, err := root.UserRevokeRole(ctx, "root", "root"); return err })
	ok("delete root role", func() error { _, err := root.RoleDelete(ctx, "root"); return err })
	ok("delete root", func() error { _, err := root.UserDelete(ctx, "root"); return err })
	ok("change alice password", func() error { _, err := root.UserChangePassword(ctx, "alice", "new"); return err })
	call(t, "alice after password change", func() (interface{}, error) { r, err := alice.Get(ctx, "p/a"); return okGet(r, err) })
	ok("revoke alice role", func() error { _, err := root.UserRevokeRole(ctx, "alice", "r"); return err })
	ok("revoke alice role again", func() error { _, err := root.UserRevokeRole(ctx, "alice", "r"); return err })
	ok("delete role", func() error { _, err := root.RoleDelete(ctx, "r"); return err })
	ok("delete missing role", func() error { _, err := root.RoleDelete(ctx, "r"); return err })
	ok("delete alice", func() error { _, err := root.UserDelete(ctx, "alice"); return err })
	ok("delete missing user", func() error { _, err := root.UserDelete(ctx, "alice"); return err })
	ok("disable", func() error { _, err := root.AuthDisable(ctx); return err })
	ok("disable again", func() error { _, err := c.AuthDisable(ctx); return err })
	call(t, "put after disable", func() (interface{}, error) { r, err := c.Put(ctx, "q", "2"); return okPut(r, err) })
}

func scenarioRecipes(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	// clientv3util: put if missing
	for _, n := range []string{"first", "second"} {
		n := n
		call(t, "put if missing "+n, func() (interface{}, error) {
			r, err := c.Txn(ctx).If(clientv3util.KeyMissing("u/k")).Then(clientv3.OpPut("u/k", n)).Commit()
			return okTxn(r, err)
		})
	}
	call(t, "delete if exists", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(clientv3util.KeyExists("u/k")).Then(clientv3.OpDelete("u/k")).Commit()
		return okTxn(r, err)
	})
	// namespace: a KV and a Watcher confined under a prefix
	nkv := namespace.NewKV(c.KV, "ns/")
	nw := namespace.NewWatcher(c.Watcher, "ns/")
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	nwc := nw.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithCreatedNotify(), clientv3.WithPrevKV())
	call(t, "namespace watch created", func() (interface{}, error) { return next(nwc) })
	call(t, "namespace put", func() (interface{}, error) { r, err := nkv.Put(ctx, "a", "1"); return okPut(r, err) })
	mustPut(c, "outside", "x")
	call(t, "namespace txn", func() (interface{}, error) {
		r, err := nkv.Txn(ctx).If(clientv3.Compare(clientv3.Value("a"), "=", "1")).
			Then(clientv3.OpPut("b", "2", clientv3.WithPrevKV()), clientv3.OpGet("", clientv3.WithPrefix())).Commit()
		return okTxn(r, err)
	})
	call(t, "namespace get all", func() (interface{}, error) {
		r, err := nkv.Get(ctx, "a", clientv3.WithFromKey())
		return okGet(r, err)
	})
	call(t, "namespace delete all", func() (interface{}, error) {
		r, err := nkv.Delete(ctx, "a", clientv3.WithFromKey(), clientv3.WithPrevKV())
		return okDel(r, err)
	})
	call(t, "namespace events", func() (interface{}, error) { return events(nwc, 4) })
	// mirror: a base snapshot of a prefix in pages, then its updates
	for i := 0; i < 2100; i += 300 {
		ops := []clientv3.Op{}
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("mir/%04d", j), strconv.Itoa(j)))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			panic(err)
		}
	}
	syncer := mirror.NewSyncer(c, "mir/", 0)
	call(t, "mirror base", func() (interface{}, error) {
		respc, errc := syncer.SyncBase(ctx)
		pages, keys := 0, 0
		var last string
		for r := range respc {
			pages++
			keys += len(r.Kvs)
			if len(r.Kvs) > 0 {
				last = string(r.Kvs[len(r.Kvs)-1].Key)
			}
		}
		if err := <-errc; err != nil {
			return nil, err
		}
		return []interface{}{pages, keys, last}, nil
	})
	upd := syncer.SyncUpdates(wctx)
	mustPut(c, "mir/new", "1")
	call(t, "mirror update", func() (interface{}, error) { return events(upd, 1) })
	// leasing: a client-side cache owning keys through leases and txns
	lkv, closeLKV, err := leasing.NewKV(c, "lease-pfx/")
	if err != nil {
		panic(err)
	}
	defer closeLKV()
	mustPut(c, "lk/a", "1")
	call(t, "leasing get (acquires)", func() (interface{}, error) { r, err := lkv.Get(ctx, "lk/a"); return okGet(r, err) })
	call(t, "leasing keys", func() (interface{}, error) {
		r, err := c.Get(ctx, "lease-pfx/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		// the owner's session lease, which the leasing client does not show
		out := []interface{}{}
		for _, k := range r.Kvs {
			out = append(out, []interface{}{string(k.Key), k.CreateRevision, k.Lease != 0})
		}
		return out, nil
	})
	call(t, "leasing get cached", func() (interface{}, error) { r, err := lkv.Get(ctx, "lk/a"); return okGet(r, err) })
	call(t, "leasing put owned", func() (interface{}, error) { r, err := lkv.Put(ctx, "lk/a", "2"); return okPut(r, err) })
	// a second leasing client's write makes the first give the key up
	// (it marks the lease key revoked and waits for the owner to delete it)
	lkv2, closeLKV2, err := leasing.NewKV(c, "lease-pfx/")
	if err != nil {
		panic(err)
	}
	defer closeLKV2()
	call(t, "second client put rescinds", func() (interface{}, error) { r, err := lkv2.Put(ctx, "lk/a", "3"); return okPut(r, err) })
	call(t, "lease keys after rescind", func() (interface{}, error) {
		r, err := c.Get(ctx, "lease-pfx/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		return okGet(r, err)
	})
	call(t, "leasing get after rescind", func() (interface{}, error) { r, err := lkv.Get(ctx, "lk/a"); return okGet(r, err) })
	call(t, "leasing txn", func() (interface{}, error) {
		r, err := lkv.Txn(ctx).If(clientv3.Compare(clientv3.Value("lk/a"), "=", "3")).
			Then(clientv3.OpPut("lk/b", "x"), clientv3.OpGet("lk/a")).Commit()
		return okTxn(r, err)
	})
	call(t, "leasing delete", func() (interface{}, error) {
		r, err := lkv.Delete(ctx, "lk/", clientv3.WithPrefix())
		return okDel(r, err)
	})
	call(t, "leasing get deleted", func() (interface{}, error) { r, err := lkv.Get(ctx, "lk/a"); return okGet(r, err) })
}

// scenarioEdges: less travelled corners of KV, Txn, Watch and Lease.
func scenarioEdges(c *clientv3.Client, t *transcript) {
	ctx := context.Background()
	for _, k := range []string{"\x00", "\x00\x01", "a", "a\xff", "a\xff\xff", "b", "\xff", "\xff\xff", "\xfe"} {
		mustPut(c, k, "v"+k)
	}
	mustPut(c, "empty", "")
	gets := []struct {
		name string
		key  string
		opts []clientv3.OpOption
	}{
		{"prefix xff", "\xff", []clientv3.OpOption{clientv3.WithPrefix()}},
		{"prefix axff", "a\xff", []clientv3.OpOption{clientv3.WithPrefix()}},
		{"prefix x00", "\x00", []clientv3.OpOption{clientv3.WithPrefix()}},
		{"from key x00", "\x00", []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithKeysOnly()}},
		{"from key xff", "\xff", []clientv3.OpOption{clientv3.WithFromKey()}},
		{"range to x00 (from key)", "b", []clientv3.OpOption{clientv3.WithRange("\x00")}},
		{"empty value", "empty", nil},
		{"sort value desc limit rev", "", []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend), clientv3.WithLimit(3), clientv3.WithRev(5)}},
		{"serializable rev", "a", []clientv3.OpOption{clientv3.WithSerializable(), clientv3.WithRev(3)}},
		{"count only keys only", "a", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithKeysOnly()}},
		{"limit negative", "a", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(-1)}},
		{"min mod over max mod", "a", []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithMinModRev(5), clientv3.WithMaxModRev(2)}},
		{"sort none by key limit", "\x00", []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortNone), clientv3.WithLimit(2)}},
		{"sort create desc", "\x00", []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithKeysOnly()}},
	}
	for _, g := range gets {
		g := g
		call(t, "get "+g.name, func() (interface{}, error) { r, err := c.Get(ctx, g.key, g.opts...); return okGet(r, err) })
	}
	call(t, "txn compare prefix lease", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue("a"), "=", 0).WithPrefix()).Commit()
		return okTxn(r, err)
	})
	call(t, "txn compare prefix create", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision("a"), ">", 2).WithPrefix()).Commit()
		return okTxn(r, err)
	})
	call(t, "txn compare range none", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Value("c"), "=", "x").WithRange("d")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn compare value bytes", func() (interface{}, error) {
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Value("\xff"), ">", "v\xfe")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn get sorted in txn", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpGet("a", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(2), clientv3.WithCountOnly())).Commit()
		return okTxn(r, err)
	})
	call(t, "txn delete range in nested then put outside", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpDelete("x", clientv3.WithPrefix())}, nil), clientv3.OpPut("y", "1")).Commit()
		return okTxn(r, err)
	})
	call(t, "txn nested compare fails inner else only", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Version("nokey"), ">", 0)},
			[]clientv3.Op{clientv3.OpPut("y", "2")}, []clientv3.Op{clientv3.OpPut("y", "3", clientv3.WithPrevKV())})).Commit()
		return okTxn(r, err)
	})
	call(t, "txn put then get same key", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpPut("z", "1"), clientv3.OpGet("z"), clientv3.OpPut("zz", "2", clientv3.WithPrevKV())).Commit()
		return okTxn(r, err)
	})
	call(t, "txn only reads rev", func() (interface{}, error) {
		r, err := c.Txn(ctx).Then(clientv3.OpGet("z")).Commit()
		return okTxn(r, err)
	})
	call(t, "delete all from x00", func() (interface{}, error) {
		r, err := c.Delete(ctx, "\x00", clientv3.WithFromKey())
		return okDel(r, err)
	})
	call(t, "compact current", func() (interface{}, error) {
		g, err := c.Get(ctx, "z")
		if err != nil {
			return nil, err
		}
		r, err := c.Compact(ctx, g.Header.Revision)
		if err != nil {
			return nil, err
		}
		return r.Header.Revision, nil
	})
	call(t, "get at compacted current", func() (interface{}, error) {
		r, err := c.Get(ctx, "z", clientv3.WithRev(1))
		return okGet(r, err)
	})
	// watch edge cases
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	both := c.Watch(wctx, "w", clientv3.WithFilterPut(), clientv3.WithFilterDelete(), clientv3.WithCreatedNotify())
	call(t, "watch both filters created", func() (interface{}, error) { return next(both) })
	all := c.Watch(wctx, "\x00", clientv3.WithFromKey(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	call(t, "watch all created", func() (interface{}, error) { return next(all) })
	mustPut(c, "w", "1")
	mustPut(c, "w", "2")
	call(t, "delete w", func() (interface{}, error) { r, err := c.Delete(ctx, "w", clientv3.WithPrevKV()); return okDel(r, err) })
	call(t, "delete w again", func() (interface{}, error) { r, err := c.Delete(ctx, "w"); return okDel(r, err) })
	call(t, "watch all events", func() (interface{}, error) { return events(all, 3) })
	call(t, "request progress with watchers", func() (interface{}, error) { return nil, c.RequestProgress(wctx) })
	call(t, "both filters progress", func() (interface{}, error) { return next(both) })
	call(t, "watch all progress", func() (interface{}, error) { return next(all) })
	pctx, pcancel := context.WithCancel(ctx)
	call(t, "request progress no watchers", func() (interface{}, error) { return nil, c.RequestProgress(pctx) })
	pw := c.Watch(pctx, "p", clientv3.WithCreatedNotify())
	call(t, "watch after progress on new stream", func() (interface{}, error) { return next(pw) })
	pcancel()
	// a watch that starts at revision 0 and one at the current revision
	cur := mustPut(c, "r", "1").Header.Revision
	r0 := c.Watch(wctx, "r", clientv3.WithRev(cur))
	call(t, "watch at current rev", func() (interface{}, error) { return events(r0, 1) })
	// prev_kv where the previous version is compacted away, or a tombstone
	p1 := mustPut(c, "pk", "1").Header.Revision
	mustPut(c, "pk", "2")
	if _, err := c.Delete(ctx, "pk"); err != nil {
		panic(err)
	}
	mustPut(c, "pk", "3")
	p4 := mustPut(c, "pk", "4").Header.Revision
	if _, err := c.Compact(ctx, p1+1); err != nil {
		panic(err)
	}
	pkw := c.Watch(wctx, "pk", clientv3.WithRev(p1+1), clientv3.WithPrevKV())
	call(t, "prev_kv across compaction and delete", func() (interface{}, error) { return events(pkw, int(p4-p1)) })
	pkd := c.Watch(wctx, "pk", clientv3.WithRev(p1+1), clientv3.WithPrevKV(), clientv3.WithFilterPut())
	call(t, "prev_kv on delete only", func() (interface{}, error) { return events(pkd, 1) })
	// a lease's keepalive channel closes when the lease is revoked
	lr, err := c.Grant(ctx, 3)
	if err != nil {
		panic(err)
	}
	t.lease(lr.ID)
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := c.KeepAlive(kctx, lr.ID)
	if err != nil {
		panic(err)
	}
	call(t, "keepalive first", func() (interface{}, error) {
		r := <-ka
		return r.TTL, nil
	})
	mustPut(c, "lk", "1", clientv3.WithLease(lr.ID))
	if _, err := c.Revoke(ctx, lr.ID); err != nil {
		panic(err)
	}
	call(t, "keepalive channel after revoke", func() (interface{}, error) {
		for {
			select {
			case r, ok := <-ka:
				if !ok {
					return "closed", nil
				}
				_ = r
			case <-time.After(deadline):
				return nil, errors.New("keepalive channel still open")
			}
		}
	})
	call(t, "ttl of revoked", func() (interface{}, error) {
		r, err := c.TimeToLive(ctx, lr.ID, clientv3.WithAttachedKeys())
		if err != nil {
			return nil, err
		}
		return []interface{}{r.TTL, r.GrantedTTL, len(r.Keys)}, nil
	})
	call(t, "leases after revoke", func() (interface{}, error) {
		r, err := c.Leases(ctx)
		if err != nil {
			return nil, err
		}
		return len(r.Leases), nil
	})
	// an STM whose abort context is done
	actx, acancel := context.WithCancel(ctx)
	acancel()
	call(t, "stm aborted", func() (interface{}, error) {
		_, err := concurrency.NewSTM(c, func(s concurrency.STM) error {
			s.Put("stm", "1")
			return nil
		}, concurrency.WithAbortContext(actx))
		return nil, err
	})
}

// mask replaces lease ids, in decimal and in hex, with stable stand-ins.
func mask(out []byte, leases []clientv3.LeaseID) []byte {
	s := string(out)
	for i, id := range leases {
		stand := fmt.Sprintf("lease#%d", i)
		s = strings.ReplaceAll(s, strconv.FormatInt(int64(id), 10), `"`+stand+`"`)
		s = strings.ReplaceAll(s, fmt.Sprintf("%x", int64(id)), stand)
	}
	// a decimal id inside a string (an error message) got quotes it should not have
	s = strings.ReplaceAll(s, `""lease#`, `"lease#`)
	return []byte(s)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go_driver ENDPOINT SCENARIO")
		os.Exit(2)
	}
	ep, scenario := os.Args[1], os.Args[2]
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer c.Close()
	t := &transcript{}
	switch scenario {
	case "kv":
		scenarioKV(c, t)
	case "txn":
		scenarioTxn(c, t)
	case "watch":
		scenarioWatch(c, t)
	case "lease":
		scenarioLease(c, t)
	case "lock":
		scenarioLock(c, t)
	case "election":
		scenarioElection(c, t)
	case "stm":
		scenarioSTM(c, t)
	case "maintenance":
		scenarioMaintenance(c, t, ep)
	case "errors":
		scenarioErrors(c, t)
	case "cluster":
		scenarioCluster(c, t)
	case "auth":
		scenarioAuth(c, t, ep)
	case "recipes":
		scenarioRecipes(c, t)
	case "edges":
		scenarioEdges(c, t)
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario", scenario)
		os.Exit(2)
	}
	pairs := [][]interface{}{}
	for _, s := range t.steps {
		pairs = append(pairs, []interface{}{s.name, s.result})
	}
	out, err := json.Marshal(pairs)
	if err != nil {
		panic(err)
	}
	_, _ = io.Copy(os.Stdout, bytes.NewReader(mask(out, t.leases)))
	fmt.Println()
}
