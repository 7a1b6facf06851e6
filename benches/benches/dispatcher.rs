//! Dispatcher throughput, pick cost and memory, each against a baseline measured in the same
//! run. Reported, never asserted.
//!
//! - `drain_100k_cold` and `drain_100k_warm`: 100,000 queued jobs (five priorities, ten types)
//!   drained by 1,000 workers of capacity 4 with mixed type lists, driven submit → assign → ack
//!   → result; cold on a fresh dispatcher (its first-touch page faults included), warm on one
//!   that already drained a batch, as a running host is.
//! - `heap_floor_100k`: a bare `BinaryHeap` push and pop of the same 100,000 (priority, seq)
//!   keys: the least any priority queue must pay.
//! - `pick/10k` and `pick/1m`: one submit → result → pick cycle with 10,000 and 1,000,000 jobs
//!   queued, beside `pick_floor/10k` and `pick_floor/1m`: one push and one pop on a bare heap of
//!   the same size, which shows how much of any growth is the memory hierarchy. Every 10,000
//!   cycles the finished jobs are forgotten, untimed, so that the dispatcher's table of
//!   finished ids keeps its size too; the summary times those forgets on their own.
//!
//! After the criterion groups a summary line gives jobs/s, the floor, their ratio, the two pick
//! costs and the bytes of memory per queued job (payload excluded: the payload type is `()`),
//! counted by a global allocator that tracks live bytes. It counts only during the memory pass,
//! which comes last: the timed runs pay one plain load per allocation, not an atomic add.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use dispatcher::{Config, Dispatcher, Input, Millis, NewJob, Output, Report};
use proto::{JobId, PeerId};

/// Counts live heap bytes so memory per job is measured, not guessed.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Off while timing: a locked add per allocation would be charged to the dispatcher.
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(delta, Ordering::Relaxed);
    }
}

#[expect(
    unsafe_code,
    reason = "a global allocator can only be written with unsafe"
)]
// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const JOBS: usize = 100_000;
const WORKERS: u32 = 1_000;
const CAPACITY: u32 = 4;
const TYPES: usize = 10;

type Disp = Dispatcher<(), ()>;

/// A small deterministic generator for the workload.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn type_name(ty: usize) -> String {
    format!("type{ty}")
}

fn peer(n: u32) -> PeerId {
    format!("12D3KooWbenchworker{n:06}")
        .parse()
        .expect("valid peer id")
}

/// Jobs numbered from `first`, of five priorities and ten types.
fn jobs(first: u64, count: usize, rng: &mut Lcg) -> Vec<NewJob<()>> {
    (0..count as u64)
        .map(|n| {
            let mut job = NewJob::new(
                JobId::from_u64(first + n),
                type_name(rng.next() as usize % TYPES),
                (),
            );
            job.priority = (rng.next() % 5) as i32;
            job.timeout_s = 60;
            job.max_retry = 2;
            job
        })
        .collect()
}

fn config() -> Config {
    Config {
        max_live_jobs: 2_000_000,
        ..Config::default()
    }
}

/// A dispatcher that already drained one batch and forgot it: its slab, maps and buffers are
/// grown, as in a host that has been running for a while.
fn warmed() -> Disp {
    let mut d = with_workers();
    let mut rng = Lcg(99);
    let warmup = jobs(1 << 40, JOBS, &mut rng);
    let ids: Vec<JobId> = warmup.iter().map(|j| j.id).collect();
    assert_eq!(drain(&mut d, warmup), JOBS);
    for id in ids {
        d.step(Millis(2), Input::Forget(id)).expect("forget");
    }
    d.drain_outputs().for_each(drop);
    d
}

/// A dispatcher with 1,000 verified workers of capacity 4: a quarter run every type, the rest
/// one, two or three types.
fn with_workers() -> Disp {
    let mut d = Disp::new(config(), 7);
    for w in 0..WORKERS {
        let kinds = (w % 4) as usize;
        let types = (0..kinds)
            .map(|k| type_name((w as usize + 3 * k) % TYPES))
            .collect();
        d.step(
            Millis(0),
            Input::WorkerVerified {
                worker: peer(w),
                types,
                capacity: CAPACITY,
            },
        )
        .expect("worker verifies");
    }
    d
}

/// Submits the batch, then acks and completes every assignment until the queue is empty.
/// Returns how many jobs completed.
///
/// The outputs are taken after each job's reports, as a host carries them out after each
/// message it handles: they stay in cache instead of piling up over a whole round.
fn drain(d: &mut Disp, batch: Vec<NewJob<()>>) -> usize {
    let mut now = 1;
    let mut work = Vec::with_capacity(16 * 1024);
    let mut next = Vec::with_capacity(16 * 1024);
    let take = |d: &mut Disp, into: &mut Vec<_>| {
        for output in d.drain_outputs() {
            if let Output::Assign(a) = output {
                into.push(a);
            }
        }
    };
    d.step(Millis(now), Input::SubmitBatch(batch))
        .expect("batch accepted");
    take(d, &mut work);
    let mut done = 0;
    while !work.is_empty() {
        now += 1;
        for a in work.drain(..) {
            let worker: PeerId = (*a.worker).clone();
            d.step(
                Millis(now),
                Input::Ack {
                    worker: worker.clone(),
                    job: a.job,
                    attempt: a.attempt,
                },
            )
            .expect("ack applies");
            d.step(
                Millis(now),
                Input::Result {
                    worker,
                    job: a.job,
                    attempt: a.attempt,
                    report: Report::Completed(()),
                },
            )
            .expect("result applies");
            take(d, &mut next);
            done += 1;
        }
        std::mem::swap(&mut work, &mut next);
    }
    done
}

/// The floor: push and pop the same (priority, seq) keys through a bare binary heap.
fn heap_floor(keys: &[(i32, u64)]) -> u64 {
    let mut heap = BinaryHeap::with_capacity(keys.len());
    for &(priority, seq) in keys {
        heap.push((priority, Reverse(seq)));
    }
    let mut sum = 0u64;
    while let Some((priority, Reverse(seq))) = heap.pop() {
        sum = sum.wrapping_add(seq ^ priority as u64);
    }
    sum
}

fn keys_of(batch: &[NewJob<()>]) -> Vec<(i32, u64)> {
    batch
        .iter()
        .enumerate()
        .map(|(seq, job)| (job.priority, seq as u64))
        .collect()
}

/// A dispatcher with `queued` jobs waiting and one busy worker of capacity 1, ready for pick
/// cycles.
struct PickBench {
    d: Disp,
    rng: Lcg,
    next_id: u64,
    current: (JobId, proto::Attempt),
    worker: PeerId,
    outputs: Vec<Output<(), ()>>,
    /// Jobs completed since the last `forget_finished`.
    finished: Vec<JobId>,
}

/// Pick cycles run between two `forget_finished`.
const PICK_CHUNK: u64 = 10_000;

impl PickBench {
    fn new(queued: usize) -> Self {
        let mut rng = Lcg(11);
        let mut d = Disp::new(config(), 3);
        d.step(Millis(0), Input::SubmitBatch(jobs(1, queued, &mut rng)))
            .expect("batch accepted");
        let worker = peer(0);
        d.step(
            Millis(0),
            Input::WorkerVerified {
                worker: worker.clone(),
                types: Vec::new(),
                capacity: 1,
            },
        )
        .expect("worker verifies");
        let mut bench = Self {
            d,
            rng,
            next_id: queued as u64 + 1,
            current: (JobId::from_u64(0), proto::Attempt(0)),
            worker,
            outputs: Vec::new(),
            finished: Vec::with_capacity(PICK_CHUNK as usize),
        };
        bench.current = bench.assigned().expect("one job assigned");
        bench
    }

    fn assigned(&mut self) -> Option<(JobId, proto::Attempt)> {
        self.d.take_outputs(&mut self.outputs);
        let found = self.outputs.iter().find_map(|o| match o {
            Output::Assign(a) => Some((a.job, a.attempt)),
            _ => None,
        });
        self.outputs.clear();
        found
    }

    /// Submit one job and complete the running one, which picks the next: the queue keeps its
    /// size.
    fn cycle(&mut self) {
        let now = Millis(1);
        let job = jobs(self.next_id, 1, &mut self.rng).pop().expect("one job");
        self.next_id += 1;
        self.d.step(now, Input::Submit(job)).expect("submit");
        let (job, attempt) = self.current;
        self.d
            .step(
                now,
                Input::Result {
                    worker: self.worker.clone(),
                    job,
                    attempt,
                    report: Report::Completed(()),
                },
            )
            .expect("result applies");
        self.finished.push(job);
        self.current = self.assigned().expect("next job assigned");
    }

    /// Forgets the jobs completed so far, as a shell does when their records are deleted.
    fn forget_finished(&mut self) {
        for job in self.finished.drain(..) {
            self.d.step(Millis(1), Input::Forget(job)).expect("forget");
        }
    }

    /// Runs `cycles` pick cycles and returns the time they took, without the forgets run
    /// every `PICK_CHUNK` cycles, and the time those took, with how many there were.
    fn timed(&mut self, cycles: u64) -> (Duration, Duration, usize) {
        let (mut picking, mut forgetting, mut forgotten) = (Duration::ZERO, Duration::ZERO, 0);
        let mut left = cycles;
        while left > 0 {
            let chunk = left.min(PICK_CHUNK);
            let start = Instant::now();
            for _ in 0..chunk {
                self.cycle();
            }
            picking += start.elapsed();
            left -= chunk;
            forgotten += self.finished.len();
            let start = Instant::now();
            self.forget_finished();
            forgetting += start.elapsed();
        }
        (picking, forgetting, forgotten)
    }
}

/// The floor for a pick: a heap of `queued` (priority, seq) keys, one push and one pop.
struct HeapCycle {
    heap: BinaryHeap<(i32, Reverse<u64>)>,
    rng: Lcg,
    seq: u64,
}

impl HeapCycle {
    fn new(queued: usize) -> Self {
        let mut rng = Lcg(11);
        let heap = (0..queued as u64)
            .map(|seq| ((rng.next() % 5) as i32, Reverse(seq)))
            .collect();
        Self {
            heap,
            rng,
            seq: queued as u64,
        }
    }

    fn cycle(&mut self) {
        self.heap
            .push(((self.rng.next() % 5) as i32, Reverse(self.seq)));
        self.seq += 1;
        black_box(self.heap.pop());
    }
}

fn benches(c: &mut Criterion) {
    let mut rng = Lcg(1);
    let batch = jobs(1, JOBS, &mut rng);
    let keys = keys_of(&batch);

    let mut group = c.benchmark_group("dispatcher");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(JOBS as u64));
    group.bench_function("drain_100k_warm", |b| {
        b.iter_batched(
            || (warmed(), batch.clone()),
            |(mut d, batch)| {
                let done = drain(&mut d, batch);
                (d, black_box(done))
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("drain_100k_cold", |b| {
        b.iter_batched(
            || (with_workers(), batch.clone()),
            |(mut d, batch)| {
                let done = drain(&mut d, batch);
                // Returned, so that dropping it is not timed.
                (d, black_box(done))
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("heap_floor_100k", |b| {
        b.iter(|| black_box(heap_floor(&keys)));
    });
    group.finish();

    let mut group = c.benchmark_group("pick");
    group.sample_size(20);
    for (name, queued) in [("10k", 10_000), ("1m", 1_000_000)] {
        let mut bench = PickBench::new(queued);
        group.bench_function(name, |b| b.iter_custom(|cycles| bench.timed(cycles).0));
    }
    group.finish();
    let mut group = c.benchmark_group("pick_floor");
    group.sample_size(20);
    for (name, queued) in [("10k", 10_000), ("1m", 1_000_000)] {
        let mut floor = HeapCycle::new(queued);
        group.bench_function(name, |b| b.iter(|| floor.cycle()));
    }
    group.finish();
}

/// The fastest of several runs: on a shared machine, the least disturbed one.
fn fastest(samples: impl Iterator<Item = Duration>) -> Duration {
    samples.min().unwrap_or_default()
}

/// Measures again, by hand, what the ratios need, and prints one summary.
fn summary() {
    let mut rng = Lcg(1);
    let batch = jobs(1, JOBS, &mut rng);
    let keys = keys_of(&batch);
    let timed_drain = |mut d: Disp| {
        let batch = batch.clone();
        let start = Instant::now();
        let done = drain(&mut d, batch);
        let elapsed = start.elapsed();
        assert_eq!(done, JOBS, "every job completes");
        drop(d);
        elapsed
    };
    let cold = fastest((0..7).map(|_| timed_drain(with_workers())));
    let warm = fastest((0..7).map(|_| timed_drain(warmed())));
    let floor_time = fastest((0..25).map(|_| {
        let start = Instant::now();
        black_box(heap_floor(black_box(&keys)));
        start.elapsed()
    }));
    let per_cycle = |mut cycle: Box<dyn FnMut()>| {
        for _ in 0..10_000 {
            cycle();
        }
        fastest((0..9).map(|_| {
            let start = Instant::now();
            for _ in 0..10_000 {
                cycle();
            }
            start.elapsed() / 10_000
        }))
    };
    // Per pick cycle and per forget, each the fastest of 9 runs of 4 chunks.
    let pick = |queued| {
        let mut bench = PickBench::new(queued);
        bench.timed(PICK_CHUNK);
        let runs: Vec<_> = (0..9).map(|_| bench.timed(4 * PICK_CHUNK)).collect();
        let picking = fastest(runs.iter().map(|r| r.0)) / (4 * PICK_CHUNK as u32);
        let forgetting = fastest(runs.iter().map(|r| r.1 / r.2.max(1) as u32));
        (picking, forgetting)
    };
    let heap = |queued| {
        let mut floor = HeapCycle::new(queued);
        per_cycle(Box::new(move || floor.cycle()))
    };
    let ((pick_10k, forget_10k), (pick_1m, forget_1m)) = (pick(10_000), pick(1_000_000));
    let (heap_10k, heap_1m) = (heap(10_000), heap(1_000_000));

    let bytes_per_job = |queued: usize| {
        let mut rng = Lcg(5);
        // Submitted in batches of 1,000 with the outputs drained in between, as a shell does,
        // so the output buffer stays small. The batches themselves are the shell's memory:
        // their bytes are added back after the dispatcher consumed (and freed) them.
        let batches: Vec<Vec<NewJob<()>>> = (0..queued / 1_000)
            .map(|k| jobs(1 + (k * 1_000) as u64, 1_000, &mut rng))
            .collect();
        let batch_bytes: usize = batches
            .iter()
            .map(|b| {
                b.capacity() * std::mem::size_of::<NewJob<()>>()
                    + b.iter().map(|j| j.job_type.capacity()).sum::<usize>()
            })
            .sum();
        let mut sink = Vec::with_capacity(2_000);
        // Counting starts here and the dispatcher is built after, so whatever it frees was
        // counted when it was allocated (the batches are added back below).
        COUNTING.store(true, Ordering::Relaxed);
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        let mut d = Disp::new(config(), 1);
        for batch in batches {
            d.step(Millis(0), Input::SubmitBatch(batch))
                .expect("batch accepted");
            d.take_outputs(&mut sink);
            sink.clear();
        }
        let after = LIVE_BYTES.load(Ordering::Relaxed);
        let kept = after - before + batch_bytes as isize;
        drop(d);
        COUNTING.store(false, Ordering::Relaxed);
        kept as f64 / queued as f64
    };
    let bytes_100k = bytes_per_job(100_000);
    let bytes_1m = bytes_per_job(1_000_000);

    let per_job = |d: Duration| d.as_nanos() as f64 / JOBS as f64;
    let floor_ns = per_job(floor_time);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!();
    println!("dispatcher summary (fastest of several runs, same process):");
    for (name, time) in [("warm", warm), ("cold", cold)] {
        println!(
            "  drain 100k jobs, 1000 workers x4, {name}: {:.0} jobs/s, {:.0} ns/job, {:.1}x the floor",
            JOBS as f64 / time.as_secs_f64(),
            per_job(time),
            per_job(time) / floor_ns
        );
    }
    println!("  floor: BinaryHeap push+pop of the same 100k keys: {floor_ns:.1} ns/job");
    println!(
        "  pick cycle: {} ns at 10k queued, {} ns at 1M ({:.2}x); bare heap push+pop: {} ns, {} ns ({:.2}x)",
        pick_10k.as_nanos(),
        pick_1m.as_nanos(),
        ratio(pick_1m, pick_10k),
        heap_10k.as_nanos(),
        heap_1m.as_nanos(),
        ratio(heap_1m, heap_10k)
    );
    println!(
        "  forgetting a finished job (between pick cycles, untimed there): {} ns at 10k queued, {} ns at 1M ({:.2}x)",
        forget_10k.as_nanos(),
        forget_1m.as_nanos(),
        ratio(forget_1m, forget_10k)
    );
    println!(
        "  memory per queued job (payload excluded): {bytes_100k:.0} B at 100k, {bytes_1m:.0} B at 1M"
    );
}

criterion_group!(dispatcher_benches, benches);

fn main() {
    // `DISPATCHER_BENCH_PROFILE=drain` (or `=drain-warm`, `=pick`, `=pick-1m`) only drains
    // batches (or runs pick cycles with 10k or 1M queued), for a profiler to look at.
    let pick_queued = match std::env::var("DISPATCHER_BENCH_PROFILE").as_deref() {
        Ok("pick") => Some(10_000),
        Ok("pick-1m") => Some(1_000_000),
        _ => None,
    };
    if let Some(queued) = pick_queued {
        // `DISPATCHER_BENCH_CYCLES` shortens the run for slow profilers (callgrind).
        let cycles = std::env::var("DISPATCHER_BENCH_CYCLES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(3_000_000);
        let mut bench = PickBench::new(queued);
        bench.timed(cycles);
        return;
    }
    if std::env::var_os("DISPATCHER_BENCH_PROFILE").is_some() {
        let mut rng = Lcg(1);
        let batch = jobs(1, JOBS, &mut rng);
        let warm = std::env::var("DISPATCHER_BENCH_PROFILE").as_deref() == Ok("drain-warm");
        for _ in 0..20 {
            // `drain-warm` also drains and forgets a warm-up batch first, each time.
            let mut d = if warm { warmed() } else { with_workers() };
            black_box(drain(&mut d, batch.clone()));
        }
        return;
    }
    dispatcher_benches();
    summary();
    Criterion::default().configure_from_args().final_summary();
}
