//! The engine on a simulated GPU: streams are queues of operations on one byte array,
//! run by an adversarial scheduler (copies as early as their waits allow and kernels as
//! late, or the other way round). Every kernel's result is compared with a run where it
//! reads the extents in place in program order; a missing wait shows up as a wrong value.

use crate::{Engine, Settings, Source, Transfers, Translation};
use std::collections::VecDeque;
use vvram_cuda::CUresult;

const STAGE: usize = 0;
const WRITE_BACK: usize = 1;
const APP: usize = 2;

type Kernel = Box<dyn FnOnce(&mut [u8], &mut Vec<u64>)>;

enum Op {
    Copy { dst: u64, src: u64, len: u64 },
    Kernel(Kernel),
    Record,
    Wait(usize, u64),
}

/// A simulated device: streams of operations and events as (stream, sequence) points.
struct Gpu {
    memory: Vec<u8>,
    queues: Vec<VecDeque<(u64, Op)>>,
    submitted: Vec<u64>,
    completed: Vec<u64>,
    events: Vec<Option<(usize, u64)>>,
    results: Vec<u64>,
    copies_first: bool,
    released: Vec<usize>,
}

impl Gpu {
    fn new(streams: usize, copies_first: bool) -> Gpu {
        Gpu {
            memory: vec![0; 1 << 16],
            queues: (0..streams).map(|_| VecDeque::new()).collect(),
            submitted: vec![0; streams],
            completed: vec![0; streams],
            events: Vec::new(),
            results: Vec::new(),
            copies_first,
            released: Vec::new(),
        }
    }

    fn push(&mut self, stream: usize, op: Op) {
        self.submitted[stream] += 1;
        self.queues[stream].push_back((self.submitted[stream], op));
    }

    fn runnable(&self, stream: usize) -> bool {
        match self.queues[stream].front() {
            Some((_, Op::Wait(s, seq))) => self.completed[*s] >= *seq,
            Some(_) => true,
            None => false,
        }
    }

    /// Runs one operation, choosing the stream by the schedule; false when nothing can run.
    fn step(&mut self) -> bool {
        let mut order: Vec<usize> = (0..self.queues.len()).collect();
        if !self.copies_first {
            order.reverse();
        }
        let Some(stream) = order.into_iter().find(|s| self.runnable(*s)) else { return false };
        let (seq, op) = self.queues[stream].pop_front().unwrap();
        match op {
            Op::Copy { dst, src, len } => self.memory.copy_within(src as usize..(src + len) as usize, dst as usize),
            Op::Kernel(kernel) => kernel(&mut self.memory, &mut self.results),
            Op::Record | Op::Wait(..) => {}
        }
        self.completed[stream] = seq;
        true
    }

    fn drain(&mut self) {
        while self.step() {}
        assert!(self.queues.iter().all(|q| q.is_empty()), "deadlock: work waits for an event that never passes");
    }

    fn point(&self, event: usize) -> (usize, u64) {
        self.events[event].expect("a recorded event")
    }
}

impl Transfers for Gpu {
    type Stream = usize;
    type Event = usize;

    fn stage(&mut self, dst: u64, src: u64, len: u64, after: &[usize]) -> Result<usize, CUresult> {
        self.copy_on(STAGE, dst, src, len, after)
    }

    fn write_back(&mut self, dst: u64, src: u64, len: u64, after: &[usize]) -> Result<usize, CUresult> {
        self.copy_on(WRITE_BACK, dst, src, len, after)
    }

    fn record(&mut self, stream: usize, reuse: Option<usize>) -> Result<usize, CUresult> {
        let event = reuse.unwrap_or_else(|| {
            self.events.push(None);
            self.events.len() - 1
        });
        assert!(!self.released.contains(&event), "a released event was recorded again");
        self.push(stream, Op::Record);
        self.events[event] = Some((stream, self.submitted[stream]));
        Ok(event)
    }

    fn wait(&mut self, stream: usize, event: usize) -> Result<(), CUresult> {
        assert!(!self.released.contains(&event), "waiting on a released event");
        let (s, seq) = self.point(event);
        self.push(stream, Op::Wait(s, seq));
        Ok(())
    }

    fn synchronize(&mut self, event: usize) -> Result<(), CUresult> {
        let (s, seq) = self.point(event);
        while self.completed[s] < seq {
            assert!(self.step(), "synchronize would wait forever");
        }
        Ok(())
    }

    fn passed(&mut self, event: usize) -> bool {
        let (s, seq) = self.point(event);
        self.completed[s] >= seq
    }

    fn release(&mut self, event: usize) {
        assert!(!self.released.contains(&event), "event released twice");
        self.released.push(event);
    }
}

impl Gpu {
    fn copy_on(&mut self, stream: usize, dst: u64, src: u64, len: u64, after: &[usize]) -> Result<usize, CUresult> {
        for &event in after {
            self.wait(stream, event)?;
        }
        self.push(stream, Op::Copy { dst, src, len });
        self.record(stream, None)
    }
}

const CACHE: u64 = 0x8000;

/// Extents of 0x400 bytes at 0x1000, 0x1400, ... filled with distinct bytes.
fn extents(count: u64) -> Vec<(u64, u64, Source)> {
    (0..count).map(|i| (0x1000 + i * 0x400, 0x400, Source::Host)).collect()
}

fn fill(memory: &mut [u8], extents: &[(u64, u64, Source)]) {
    for (i, (base, len, _)) in extents.iter().enumerate() {
        for j in 0..*len {
            memory[(base + j) as usize] = (i as u64 * 7 + j) as u8;
        }
    }
}

fn engine(gpu: Gpu, extents: &[(u64, u64, Source)], cache: u64, write_back: bool) -> Engine<Gpu> {
    let mut engine = Engine::new(gpu, Settings { cache_base: CACHE, cache_bytes: cache, lookahead: 2, write_back });
    engine.sync_extents(extents);
    let memory = &mut engine.transfers().memory;
    fill(memory, extents);
    engine
}

/// What a launch does, given the address it reads.
#[derive(Clone, Copy)]
enum Work {
    /// Pushes the sum of the extent's bytes.
    Sum,
    /// Adds one to each byte of the extent.
    Increment,
}

fn kernel(work: Work, address: u64, len: u64) -> Kernel {
    let range = address as usize..(address + len) as usize;
    match work {
        Work::Sum => Box::new(move |m, out| out.push(m[range].iter().map(|b| *b as u64).sum())),
        Work::Increment => Box::new(move |m, _| m[range].iter_mut().for_each(|b| *b = b.wrapping_add(1))),
    }
}

/// Launches `work` on extent `base` through the engine; the kernel gets the translated address.
fn launch(engine: &mut Engine<Gpu>, stream: usize, base: u64, work: Work) -> Translation {
    let mut translations = Vec::new();
    engine.prepare_launch(stream, &[base], &mut translations).unwrap();
    let t = translations[0];
    let address = t.copy.unwrap_or(t.base);
    engine.transfers().push(stream, Op::Kernel(kernel(work, address, t.end - t.base)));
    engine.finish_launch(stream, &translations).unwrap();
    t
}

/// The same launches read in place, in program order: the expected results.
fn reference(extents: &[(u64, u64, Source)], launches: &[(u64, Work)]) -> (Vec<u64>, Vec<u8>) {
    let mut memory = vec![0u8; 1 << 16];
    fill(&mut memory, extents);
    let mut out = Vec::new();
    for &(base, work) in launches {
        kernel(work, base, 0x400)(&mut memory, &mut out);
    }
    (out, memory)
}

fn run(launches: &[(u64, Work)], count: u64, cache: u64, write_back: bool, copies_first: bool) -> (Engine<Gpu>, Vec<u64>) {
    let extents = extents(count);
    let mut engine = engine(Gpu::new(3, copies_first), &extents, cache, write_back);
    for &(base, work) in launches {
        launch(&mut engine, APP, base, work);
        // Let the simulated device make some progress between launches.
        engine.transfers().step();
    }
    engine.transfers().drain();
    let (expected, _) = reference(&extents, launches);
    let results = engine.transfers().results.clone();
    assert_eq!(results, expected, "copies_first={copies_first}");
    (engine, expected)
}

fn steps(count: u64, steps: usize, work: Work) -> Vec<(u64, Work)> {
    (0..steps).flat_map(|_| (0..count).map(move |i| (0x1000 + i * 0x400, work))).collect()
}

#[test]
fn a_repeating_scan_larger_than_the_cache_reads_right_under_both_schedules() {
    for copies_first in [true, false] {
        let (engine, _) = run(&steps(12, 6, Work::Sum), 12, 0x1000, true, copies_first);
        let counters = engine.counters();
        assert_eq!(counters.donor_launches, 72);
        assert_eq!(counters.translated_launches, 72, "{counters:?}");
        assert!(engine.predictor().locked);
        assert!(counters.prefetch_copies > counters.demand_copies, "{counters:?}");
    }
}

#[test]
fn a_working_set_that_fits_is_staged_once() {
    let (engine, _) = run(&steps(4, 5, Work::Sum), 4, 0x1000, false, true);
    assert_eq!(engine.counters().staged_host_bytes, 4 * 0x400);
    assert_eq!(engine.cache().copies, 4);
    assert_eq!(engine.cache().occupied, 0x1000);
}

#[test]
fn writes_through_translated_pointers_survive_eviction() {
    for copies_first in [true, false] {
        let mut launches = steps(6, 3, Work::Increment);
        launches.extend(steps(6, 1, Work::Sum));
        let (engine, _) = run(&launches, 6, 0x800, true, copies_first);
        assert!(engine.counters().written_back_bytes > 0);
    }
}

#[test]
fn a_read_by_a_copy_sees_what_kernels_wrote_and_a_write_drops_the_copy() {
    for copies_first in [true, false] {
        let extents = extents(2);
        let mut engine = engine(Gpu::new(3, copies_first), &extents, 0x1000, true);
        let base = 0x1000;
        launch(&mut engine, APP, base, Work::Increment);
        // An application copy reads the extent: the kernel's write must be there.
        engine.before_host_read(base, 0x400, Some(APP)).unwrap();
        engine.transfers().push(APP, Op::Copy { dst: 0x6000, src: base, len: 0x400 });
        // An application copy writes the extent (a LoRA patch).
        engine.before_host_write(base, 0x400, Some(APP)).unwrap();
        engine.transfers().push(APP, Op::Kernel(Box::new(|m, _| m[0x1000..0x1400].fill(9))));
        engine.after_host_write(base, 0x400, APP).unwrap();
        launch(&mut engine, APP, base, Work::Sum);
        engine.transfers().drain();
        let gpu = engine.transfers();
        let mut expected = vec![0u8; 0x400];
        fill(&mut expected, &[(0, 0x400, Source::Host)]);
        expected.iter_mut().for_each(|b| *b = b.wrapping_add(1));
        assert_eq!(&gpu.memory[0x6000..0x6400], &expected[..], "copies_first={copies_first}");
        assert_eq!(gpu.results, vec![9 * 0x400], "copies_first={copies_first}");
        assert_eq!(engine.counters().dropped_copies, 1);
    }
}

#[test]
fn a_cpu_write_waits_for_the_write_back_first() {
    let extents = extents(1);
    let mut engine = engine(Gpu::new(3, false), &extents, 0x1000, true);
    launch(&mut engine, APP, 0x1000, Work::Increment);
    engine.before_host_write(0x1000, 0x10, None).unwrap();
    // The CPU now writes the first 16 bytes; the kernel's increments must be in the rest.
    let gpu = engine.transfers();
    gpu.memory[0x1000..0x1010].fill(0xee);
    gpu.drain();
    assert_eq!(gpu.memory[0x1000], 0xee);
    assert_eq!(gpu.memory[0x1010], 0x10 + 1, "the write-back landed before the CPU write, not after");
}

#[test]
fn read_only_weights_are_never_written_back() {
    let (engine, _) = run(&steps(6, 3, Work::Sum), 6, 0x800, false, true);
    assert_eq!(engine.counters().written_back_bytes, 0);
}

#[test]
fn an_extent_larger_than_the_cache_is_read_in_place_and_counted() {
    let extents = vec![(0x1000, 0x2000, Source::Host)];
    let mut engine = engine(Gpu::new(3, true), &extents, 0x1000, true);
    let mut out = Vec::new();
    engine.prepare_launch(APP, &[0x1000], &mut out).unwrap();
    assert_eq!(out, vec![Translation { base: 0x1000, end: 0x3000, copy: None }]);
    engine.finish_launch(APP, &out).unwrap();
    assert_eq!(engine.counters().missed_launches, 1);
}

#[test]
fn a_launch_on_a_second_stream_is_ordered_too() {
    for copies_first in [true, false] {
        let extents = extents(6);
        let mut engine = engine(Gpu::new(4, copies_first), &extents, 0x800, true);
        let launches = steps(6, 3, Work::Sum);
        for (i, &(base, work)) in launches.iter().enumerate() {
            launch(&mut engine, APP + i % 2, base, work);
        }
        engine.transfers().drain();
        let mut results = engine.transfers().results.clone();
        let (mut expected, _) = reference(&extents, &launches);
        results.sort_unstable();
        expected.sort_unstable();
        assert_eq!(results, expected, "copies_first={copies_first}");
    }
}

#[test]
fn graph_launches_see_written_back_data_and_later_copies_wait_for_them() {
    let extents = extents(2);
    let mut engine = engine(Gpu::new(3, true), &extents, 0x1000, true);
    launch(&mut engine, APP, 0x1000, Work::Increment);
    engine.before_graph(APP).unwrap();
    engine.transfers().push(APP, Op::Kernel(kernel(Work::Increment, 0x1000, 0x400)));
    engine.after_graph(APP).unwrap();
    launch(&mut engine, APP, 0x1000, Work::Sum);
    engine.transfers().drain();
    let (expected, _) = reference(&extents, &[(0x1000, Work::Increment), (0x1000, Work::Increment), (0x1000, Work::Sum)]);
    assert_eq!(engine.transfers().results, expected);
    assert_eq!(engine.counters().graph_launches, 1);
}

#[test]
fn freed_extents_leave_their_slot_until_its_users_are_done() {
    let extents = extents(3);
    let mut engine = engine(Gpu::new(3, true), &extents, 0x800, true);
    launch(&mut engine, APP, 0x1000, Work::Sum);
    engine.sync_extents(&extents[1..]);
    assert!(engine.extents().all(|(base, _)| base != 0x1000));
    launch(&mut engine, APP, 0x1400, Work::Sum);
    launch(&mut engine, APP, 0x1800, Work::Sum);
    engine.transfers().drain();
    let (expected, _) = reference(&extents, &[(0x1000, Work::Sum), (0x1400, Work::Sum), (0x1800, Work::Sum)]);
    assert_eq!(engine.transfers().results, expected);
}
