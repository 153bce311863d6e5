package stream

import (
	"runtime"
	"sync"
)

// slot is one chunk on its way through the pipeline: its buffers, its place in the stream, and
// the outcome of sealing or opening it, which may be read once done is closed.
type slot struct {
	buf     []byte // Writer: plaintext, sealed in place; Reader: the sealed chunk as read
	out     []byte // Reader: the opened plaintext, in buf or in apart
	apart   []byte // Reader: where a full last chunk opens, so that a failure leaves buf intact
	counter uint64
	last    bool
	err     error
	done    chan struct{}
}

// slots recycles chunk buffers between streams, so that a batch of small files does not
// allocate, and the garbage collector does not sweep, 64 KiB per file. A slot is zeroed before it
// goes back (see wipe), so no plaintext ever sits in the pool.
var slots = sync.Pool{New: func() any { return &slot{buf: make([]byte, 0, ChunkSize+Overhead)} }}

// closed is the done channel of work that ran inline.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// pipeline runs work on up to depth chunks at once and gives them back in submission order.
//
// Chunks run on up to workers goroutines (see workQueue); the caller's goroutine reads input and
// writes output meanwhile.
type pipeline struct {
	workers int     // 1: run every chunk inline, exactly like a sequential stream
	depth   int     // chunks submitted and not yet retired, at most
	queue   []*slot // submitted, oldest first
	free    []*slot
	all     []*slot // every slot taken, to zero them all on Close
	made    int     // len(all) before Close, for the tests' memory bound
	work    *workQueue
}

// workQueue hands submitted chunks to at most workers goroutines. A goroutine exits as soon as
// it finds the queue empty, so none outlives the work: a stream abandoned after an error leaks
// nothing, and a stream that goes idle holds no goroutine. While chunks keep coming, the same
// goroutines keep running, which keeps the cores busy without a goroutine start per chunk.
type workQueue struct {
	mu      sync.Mutex
	todo    []*slot
	running int
	workers int
	work    func(*slot)
}

// add queues s and starts a goroutine if fewer than workers are running.
func (q *workQueue) add(s *slot) {
	q.mu.Lock()
	q.todo = append(q.todo, s)
	start := q.running < q.workers
	if start {
		q.running++
	}
	q.mu.Unlock()
	if start {
		go q.run()
	}
}

// take removes and returns the next queued chunk, or nil.
func (q *workQueue) take() *slot {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.todo) == 0 {
		return nil
	}
	s := q.todo[0]
	q.todo[0] = nil
	q.todo = q.todo[1:]
	return s
}

// run works until the queue is empty. The check and the exit happen under the lock that add
// holds, so a chunk is never queued with no goroutine left to take it.
func (q *workQueue) run() {
	for {
		q.mu.Lock()
		if len(q.todo) == 0 {
			q.running--
			q.mu.Unlock()
			return
		}
		s := q.todo[0]
		q.todo[0] = nil
		q.todo = q.todo[1:]
		q.mu.Unlock()
		q.work(s)
		close(s.done)
	}
}

// help runs queued chunks on the caller's goroutine until s is done or nothing is queued.
func (q *workQueue) help(s *slot) {
	for {
		select {
		case <-s.done:
			return
		default:
		}
		t := q.take()
		if t == nil {
			return
		}
		q.work(t)
		close(t.done)
	}
}

// Workers is how many chunks a stream seals or opens at once: one per core Go may use.
func Workers() int { return runtime.GOMAXPROCS(0) }

// newPipeline keeps four chunks per worker in flight, so that a worker finds its next chunk ready
// while the caller reads input or writes output. Memory stays bounded: a Reader or Writer never
// holds more than depth+3 slots (see maxSlots).
func newPipeline(workers int, work func(*slot)) pipeline {
	depth := 1
	if workers > 1 {
		depth = 4 * workers
	}
	// The caller's goroutine helps while it waits (see oldest), so it is one of the workers.
	return pipeline{workers: workers, depth: depth, work: &workQueue{workers: max(1, workers-1), work: work}}
}

// maxSlots bounds the slots a stream ever allocates: depth in flight, plus the chunk being filled
// or returned, one held back or read ahead, and one being read.
func (p *pipeline) maxSlots() int { return p.depth + 3 }

// full says that the oldest chunk must be retired before another is submitted.
func (p *pipeline) full() bool { return len(p.queue) >= p.depth }

// pending says whether any submitted chunk is not yet retired.
func (p *pipeline) pending() bool { return len(p.queue) > 0 }

// take returns an empty slot, reusing a retired one when it can.
func (p *pipeline) take() *slot {
	if n := len(p.free); n > 0 {
		s := p.free[n-1]
		p.free = p.free[:n-1]
		return s
	}
	s := slots.Get().(*slot)
	s.buf, s.out, s.err = s.buf[:0], nil, nil
	p.all = append(p.all, s)
	p.made++
	return s
}

// release gives a retired slot back for reuse.
func (p *pipeline) release(s *slot) { p.free = append(p.free, s) }

// submit queues s and runs work on it, in a goroutine unless the stream is sequential or s is
// the only chunk in flight and the last one: a one-chunk file never starts a goroutine.
func (p *pipeline) submit(s *slot) {
	p.queue = append(p.queue, s)
	if p.workers <= 1 || (s.last && len(p.queue) == 1) {
		p.work.work(s)
		s.done = closed
		return
	}
	s.done = make(chan struct{})
	p.work.add(s)
}

// oldest waits for the oldest submitted chunk and removes it from the queue. While it waits,
// the caller seals or opens queued chunks itself: with one goroutine per core and the caller
// as a third, the caller would otherwise wait for a core while it holds up the output. The caller
// releases it when it has used its result.
func (p *pipeline) oldest() *slot {
	s := p.queue[0]
	p.work.help(s)
	<-s.done
	p.queue[0] = nil
	p.queue = p.queue[1:]
	return s
}

// wipe waits for every chunk in flight, so that no goroutine still writes a buffer, then zeroes
// every buffer of every slot and gives the slots back for other streams. The stream must not
// touch its slots afterwards; Reader and Writer refuse use after Close.
func (p *pipeline) wipe() {
	for _, s := range p.queue {
		<-s.done
	}
	p.queue, p.free = nil, nil
	for _, s := range p.all {
		clear(s.buf[:cap(s.buf)])
		clear(s.apart)
		s.out = nil
		slots.Put(s)
	}
	p.all = nil // a second Close must not give the same slots back twice
}
