use super::*;
use vvram_cuda::result;
use vvram_policy::size::{GIB, MIB};
use vvram_policy::{Machine, Plan, Tier, parse_policy, resolve};

fn plan(toml: &str) -> Plan {
    let policy = parse_policy("test.toml", toml).unwrap();
    resolve(&policy, &Machine { devices: vec![24 * GIB, 24 * GIB], host: 64 * GIB, ..Machine::default() }).unwrap()
}

const LOCAL_THEN_HOST: &str = "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n[host_pool]\npin_ahead = \"8MiB\"\n";

fn manager(toml: &str) -> MemoryManager<MemoryDriver> {
    MemoryManager::new(MemoryDriver::new(), plan(toml))
}

fn request(size: u64) -> Request<'static> {
    Request { device: 0, size, phase: None, tag: None }
}

fn used(m: &MemoryManager<MemoryDriver>, tier: Tier) -> u64 {
    m.usage(0).unwrap().tiers.iter().find(|t| t.tier == tier).unwrap().used
}

#[test]
fn buffer_ids_are_vvram_s_own_range_and_never_repeat() {
    let mut m = manager(LOCAL_THEN_HOST);
    let ids: Vec<u64> = [4 * MIB, 1024, 8 * MIB].into_iter().map(|size| {
        let address = m.allocate(request(size)).unwrap();
        m.find(address).unwrap().id
    }).collect();
    assert_eq!(ids, vec![FIRST_BUFFER_ID, FIRST_BUFFER_ID + 1, FIRST_BUFFER_ID + 2]);
}

#[test]
fn allocations_fill_local_then_spill_to_the_host() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(48 * MIB)).unwrap();
    assert_eq!(used(&m, Tier::Local), 48 * MIB);
    let b = m.allocate(request(40 * MIB)).unwrap();
    assert_eq!(used(&m, Tier::Local), 64 * MIB);
    assert_eq!(used(&m, Tier::Host), 24 * MIB);
    // b straddles the seam: its first 16 MiB are local, the rest host and CPU-accessible.
    assert_eq!(m.driver().location_of(b), Some(Location::Device(0)));
    assert_eq!(m.driver().location_of(b + 16 * MIB), Some(Location::Host));
    assert_eq!(m.driver().accessible(b + 16 * MIB), Some(true));
    assert_eq!(m.driver().accessible(b), Some(false));
    let segments = m.segments(b + 8 * MIB, 16 * MIB).unwrap();
    assert_eq!(
        segments,
        vec![
            Segment { address: b + 8 * MIB, len: 8 * MIB, host: false },
            Segment { address: b + 16 * MIB, len: 8 * MIB, host: true },
        ]
    );
    m.free(a).unwrap();
    m.free(b).unwrap();
    assert_eq!((used(&m, Tier::Local), used(&m, Tier::Host)), (0, 0));
    assert_eq!(m.driver().mapping_count(), 0);
}

#[test]
fn exhausting_every_tier_is_out_of_memory_and_takes_nothing() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(150 * MIB)).unwrap();
    assert_eq!(m.allocate(request(64 * MIB)), Err(result::OUT_OF_MEMORY));
    assert_eq!(used(&m, Tier::Local) + used(&m, Tier::Host), 150 * MIB);
    assert_eq!(m.counters().out_of_memory, 1);
    m.free(a).unwrap();
    let b = m.allocate(request(192 * MIB)).unwrap();
    m.free(b).unwrap();
    m.release_all();
    assert_eq!(m.driver().physical_count(), 0);
    assert_eq!(m.driver().used(Location::Device(0)) + m.driver().used(Location::Host), 0);
}

#[test]
fn a_full_card_below_budget_falls_through_to_the_next_tier() {
    let driver = MemoryDriver::new().with_capacity(Location::Device(0), 10 * MIB);
    let mut m = MemoryManager::new(driver, plan(LOCAL_THEN_HOST));
    let a = m.allocate(request(20 * MIB)).unwrap();
    assert_eq!(used(&m, Tier::Local), 10 * MIB);
    assert_eq!(used(&m, Tier::Host), 10 * MIB);
    m.free(a).unwrap();
}

#[test]
fn a_tier_the_driver_cannot_serve_is_skipped_and_counted() {
    let mut m = manager(LOCAL_THEN_HOST);
    m.driver().fail_creates(Location::Host, result::NOT_SUPPORTED);
    let a = m.allocate(request(60 * MIB)).unwrap();
    assert_eq!(m.allocate(request(8 * MIB)), Err(result::OUT_OF_MEMORY));
    assert_eq!(m.counters().errors, 1);
    let driver = MemoryDriver::new();
    let create = |size| {
        let driver = &driver;
        move |at| match at {
            Location::Host => Err(result::NOT_SUPPORTED),
            at => driver.create(size, at),
        }
    };
    assert_eq!(m.create_for_application(request(8 * MIB), create(8 * MIB)), Err(result::OUT_OF_MEMORY));
    assert_eq!(m.counters().errors, 2);
    assert!(m.create_for_application(request(4 * MIB), create(4 * MIB)).is_ok());
    assert_eq!(driver.used(Location::Device(0)), 4 * MIB);
    m.free(a).unwrap();
}

#[test]
fn rules_choose_tiers_by_size_phase_and_tag() {
    let toml = format!(
        "{LOCAL_THEN_HOST}[[rule]]\nphase = \"load\"\ntiers = [\"host\", \"local\"]\n[[rule]]\ntag = \"scratch\"\ntiers = [\"local\"]\n"
    );
    let mut m = manager(&toml);
    let weights = m.allocate(Request { phase: Some("load"), ..request(8 * MIB) }).unwrap();
    assert_eq!(m.driver().location_of(weights), Some(Location::Host));
    let activations = m.allocate(request(8 * MIB)).unwrap();
    assert_eq!(m.driver().location_of(activations), Some(Location::Device(0)));
    // Tag-matched requests may only use local memory: beyond it they fail.
    let scratch = m.allocate(Request { tag: Some("scratch"), ..request(56 * MIB) }).unwrap();
    assert_eq!(m.allocate(Request { tag: Some("scratch"), ..request(2 * MIB) }), Err(result::OUT_OF_MEMORY));
    for a in [weights, activations, scratch] {
        m.free(a).unwrap();
    }
}

#[test]
fn peers_are_device_memory_of_the_other_gpu() {
    let mut m = manager("[[device]]\nindex = 0\nlocal_budget = \"4MiB\"\ndonors = [{ tier = \"peer:1\", capacity = \"8MiB\" }]\n");
    let a = m.allocate(request(10 * MIB)).unwrap();
    assert_eq!(m.driver().location_of(a + 6 * MIB), Some(Location::Device(1)));
    assert_eq!(m.driver().accessible(a + 6 * MIB), Some(false));
    m.free(a).unwrap();
}

#[test]
fn small_requests_share_slabs() {
    let mut m = manager(LOCAL_THEN_HOST);
    let pieces: Vec<u64> = (0..8).map(|_| m.allocate(request(100_000)).unwrap()).collect();
    assert_eq!(used(&m, Tier::Local), 2 * MIB);
    assert!(pieces.windows(2).all(|w| w[1] - w[0] >= 100_000 && (w[1] - w[0]) % SMALL_ALIGN == 0));
    let info = m.find(pieces[3] + 10).unwrap();
    assert_eq!((info.base, info.size), (pieces[3], 100_000));
    for p in &pieces[..7] {
        m.free(*p).unwrap();
    }
    assert_eq!(used(&m, Tier::Local), 2 * MIB);
    m.free(pieces[7]).unwrap();
    assert_eq!(used(&m, Tier::Local), 0);
    assert_eq!(m.driver().mapping_count(), 0);
}

#[test]
fn host_chunks_come_from_and_return_to_the_pool() {
    let toml = "[[device]]\nindex = 0\nlocal_budget = \"2MiB\"\ndonors = [{ tier = \"host\", capacity = \"64MiB\" }]\n[host_pool]\npin_ahead = \"8MiB\"\n";
    let mut m = manager(toml);
    while m.pool_wants_chunk() {
        let handle = m.driver().create(CHUNK, Location::Host).unwrap();
        m.add_to_pool(handle);
    }
    assert_eq!(m.pool_bytes(), 8 * MIB);
    let physical = m.driver().physical_count();
    let late = m.driver().create(CHUNK, Location::Host).unwrap();
    m.add_to_pool(late);
    assert_eq!((m.pool_bytes(), m.driver().physical_count()), (8 * MIB, physical), "a chunk the full pool does not want is released");
    let creates = m.driver().calls().creates;
    let a = m.allocate(request(10 * MIB)).unwrap();
    // One local chunk created; four host chunks taken from the pool.
    assert_eq!(m.driver().calls().creates, creates + 1);
    assert_eq!(m.pool_bytes(), 0);
    m.free(a).unwrap();
    assert_eq!(m.pool_bytes(), 8 * MIB);
    assert_eq!(m.driver().used(Location::Host), 8 * MIB);
}

#[test]
fn stream_ordered_frees_wait_for_their_event() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(32 * MIB)).unwrap();
    m.free_async(a, 7).unwrap();
    assert!(m.owns(a));
    assert_eq!(used(&m, Tier::Local), 32 * MIB);
    let event = m.driver().live_events()[0];
    m.driver().complete_event(event);
    m.reclaim();
    assert!(!m.owns(a));
    assert_eq!(used(&m, Tier::Local), 0);
    assert!(m.driver().live_events().is_empty());
    assert_eq!(m.free_async(a, 7), Err(result::INVALID_VALUE));
}

#[test]
fn out_of_memory_waits_for_pending_frees_first() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(190 * MIB)).unwrap();
    m.free_async(a, 7).unwrap();
    // The stream has not passed the free yet: the request synchronises, then succeeds.
    let b = m.allocate(request(190 * MIB)).unwrap();
    assert_eq!(m.driver().calls().synchronizes, 1);
    m.free(b).unwrap();
    // Without pending frees, out-of-memory comes at once.
    let c = m.allocate(request(190 * MIB)).unwrap();
    assert_eq!(m.allocate(request(8 * MIB)), Err(result::OUT_OF_MEMORY));
    assert_eq!(m.driver().calls().synchronizes, 1);
    m.free(c).unwrap();
}

#[test]
fn virtual_memory_info_reports_the_policy_size() {
    let mut m = manager(LOCAL_THEN_HOST);
    assert_eq!(m.memory_info(0, 24 * GIB, 24 * GIB), Some((192 * MIB, 192 * MIB)));
    let a = m.allocate(request(100 * MIB)).unwrap();
    // 64 MiB local (also missing from the card), 36 MiB host; another process uses 20 MiB.
    let card_free = 24 * GIB - 64 * MIB - 20 * MIB;
    assert_eq!(m.memory_info(0, card_free, 24 * GIB), Some((72 * MIB, 192 * MIB)));
    assert_eq!(m.memory_info(1, 0, 0), None);
    m.free(a).unwrap();
}

#[test]
fn application_created_memory_follows_the_rules() {
    let mut m = manager(LOCAL_THEN_HOST);
    let driver = MemoryDriver::new();
    let local = m.create_for_application(request(60 * MIB), |at| driver.create(60 * MIB, at)).unwrap();
    let host = m.create_for_application(request(20 * MIB), |at| driver.create(20 * MIB, at)).unwrap();
    assert_eq!(driver.used(Location::Host), 20 * MIB);
    assert_eq!(used(&m, Tier::Local), 60 * MIB);
    assert_eq!(m.usage(0).unwrap().allocations, 2, "the application's handles are live allocations");
    assert!(m.forget_application_handle(host));
    assert!(!m.forget_application_handle(host));
    assert_eq!(used(&m, Tier::Host), 0);
    assert_eq!(m.usage(0).unwrap().allocations, 1);
    driver.release(host).unwrap();
    assert!(m.forget_application_handle(local));
    assert_eq!(m.usage(0).unwrap().allocations, 0);
    driver.release(local).unwrap();
}

#[test]
fn a_new_plan_applies_to_new_requests() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(32 * MIB)).unwrap();
    m.set_plan(plan("[[device]]\nindex = 0\nlocal_budget = \"16MiB\"\ndonors = [{ tier = \"host\", capacity = \"64MiB\" }]\n"));
    let b = m.allocate(request(8 * MIB)).unwrap();
    assert_eq!(m.driver().location_of(b), Some(Location::Host));
    assert_eq!(m.usage(0).unwrap().tiers[0], TierUsage { tier: Tier::Local, used: 32 * MIB, capacity: 16 * MIB });
    m.free(a).unwrap();
    m.free(b).unwrap();
}

#[test]
fn sizes_near_two_to_the_64_are_out_of_memory_not_a_wrapped_span() {
    let mut m = manager(LOCAL_THEN_HOST);
    for size in [u64::MAX, u64::MAX - CHUNK + 1, u64::MAX - CHUNK - 1, 1 << 63, MAX_RESERVATION + 1] {
        assert_eq!(m.allocate(request(size)), Err(result::OUT_OF_MEMORY), "{size}");
    }
    let a = m.allocate(request(4 * MIB)).unwrap();
    let b = m.allocate(request(4 * MIB)).unwrap();
    assert_ne!(a, b);
    assert_eq!(m.segments(a, u64::MAX), None);
    assert_eq!(m.segments(a, u64::MAX - a + 1), None);
    m.free(a).unwrap();
    m.free(b).unwrap();
    assert_eq!(m.driver().mapping_count(), 0);
}

#[test]
fn a_failed_unmap_keeps_its_address_range_until_a_retry_succeeds() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(8 * MIB)).unwrap();
    m.driver().fail_next("unmap", result::UNKNOWN, 2);
    m.free(a).unwrap();
    assert_eq!(m.stuck_chunks(), 2);
    assert_eq!(used(&m, Tier::Local), 4 * MIB, "the still-mapped chunks stay counted");
    // The next allocation retries the unmaps first (the injected failures are used up).
    let mut live = Vec::new();
    for _ in 0..256 {
        live.push(m.allocate(request(MIB + 1)).unwrap_or_else(|code| panic!("allocation failed with {code}")));
        m.free(live.pop().unwrap()).unwrap();
    }
    assert_eq!(m.stuck_chunks(), 0);
    assert_eq!((used(&m, Tier::Local), used(&m, Tier::Host)), (0, 0));
    assert_eq!(m.driver().mapping_count(), 0);
    assert_eq!(m.counters().errors, 2);
}

#[test]
fn a_failed_unmap_never_hands_out_a_range_that_is_still_mapped() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(2 * MIB)).unwrap();
    m.driver().fail_next("unmap", result::UNKNOWN, 1_000);
    m.free(a).unwrap();
    // The in-memory driver asserts that nothing is mapped over a live mapping.
    let b = m.allocate(request(2 * MIB)).unwrap();
    assert_ne!(a, b);
    m.driver().fail_next("unmap", result::UNKNOWN, 0);
    m.free(b).unwrap();
    m.reclaim();
    assert_eq!((m.stuck_chunks(), m.driver().mapping_count(), used(&m, Tier::Local)), (0, 0, 0));
}

#[test]
fn a_failed_release_stays_counted_and_is_retried() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(16 * MIB)).unwrap();
    m.driver().fail_next("release", result::UNKNOWN, 3);
    m.free(a).unwrap();
    assert_eq!(m.stuck_chunks(), 3);
    assert_eq!(used(&m, Tier::Local), 6 * MIB);
    assert_eq!(m.driver().used(Location::Device(0)), 6 * MIB);
    m.reclaim();
    assert_eq!((m.stuck_chunks(), used(&m, Tier::Local), m.driver().used(Location::Device(0))), (0, 0, 0));
    assert_eq!(m.memory_info(0, 24 * GIB, 24 * GIB), Some((192 * MIB, 192 * MIB)));
}

#[test]
fn freeing_what_was_freed_stream_ordered_is_invalid() {
    let mut m = manager(LOCAL_THEN_HOST);
    let a = m.allocate(request(32 * MIB)).unwrap();
    m.free_async(a, 7).unwrap();
    assert_eq!(m.free(a), Err(result::INVALID_VALUE));
    m.driver().complete_event(m.driver().live_events()[0]);
    m.reclaim();
    assert_eq!(m.counters().errors, 0);
    assert_eq!((used(&m, Tier::Local), m.counters().frees), (0, 1));
}

#[test]
fn failed_maps_and_access_grants_give_everything_back() {
    for (operation, times) in [("map", 1), ("set_access", 1)] {
        let mut m = manager(LOCAL_THEN_HOST);
        m.driver().fail_next(operation, result::UNKNOWN, times);
        assert_eq!(m.allocate(request(8 * MIB)), Err(result::UNKNOWN), "{operation}");
        assert_eq!((used(&m, Tier::Local), m.driver().mapping_count(), m.stuck_chunks()), (0, 0, 0), "{operation}");
        m.driver().fail_next(operation, result::UNKNOWN, 0);
        let a = m.allocate(request(8 * MIB)).unwrap();
        m.free(a).unwrap();
        m.driver().fail_next(operation, result::UNKNOWN, 1);
        assert_eq!(m.allocate(request(4096)), Err(result::UNKNOWN), "{operation} of a slab");
        assert_eq!((used(&m, Tier::Local), m.driver().mapping_count()), (0, 0), "{operation}");
    }
}

#[test]
fn the_engine_cache_is_local_and_donor_extents_are_listed_with_their_tier() {
    let mut m = manager("[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n[[rule]]\ntiers = [\"host\", \"local\"]\n");
    let cache = m.allocate_local(0, 16 * MIB).unwrap();
    assert_eq!(m.driver().location_of(cache), Some(Location::Device(0)));
    let weight = m.allocate(request(4 * MIB)).unwrap();
    let small = m.allocate(request(4096)).unwrap();
    let mut expected = vec![(weight, 4 * MIB, Tier::Host), (small, 4096, Tier::Host)];
    expected.sort_unstable();
    assert_eq!(m.donor_extents(0), expected);
    assert_eq!(m.allocate_local(0, 64 * MIB), Err(result::OUT_OF_MEMORY), "the rules do not send it to the host");
}

/// 64 MiB card with an 8 MiB staging cache: the default reserve is a quarter of the
/// 56 MiB left, 14 MiB, so loading keeps 64 - 8 - 14 = 42 MiB for extents.
const STREAMING: &str = "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n[streaming]\nenabled = true\nlocal_cache = \"8MiB\"\n";

#[test]
fn while_loading_automatic_extents_leave_the_reserve_free_and_after_settling_they_do_not() {
    let mut m = manager(STREAMING);
    assert_eq!(m.plan().device(0).unwrap().reserve, 14 * MIB);
    let cache = m.allocate_local(0, 8 * MIB).unwrap();
    let a = m.allocate(request(20 * MIB)).unwrap();
    let b = m.allocate(request(20 * MIB)).unwrap();
    let c = m.allocate(request(4 * MIB)).unwrap();
    assert_eq!(m.driver().location_of(a), Some(Location::Device(0)));
    assert_eq!(m.driver().location_of(b), Some(Location::Device(0)));
    assert_eq!(m.driver().location_of(c), Some(Location::Host), "48 MiB would leave less than the reserve");
    let small = m.allocate(request(4096)).unwrap();
    assert_eq!(m.driver().location_of(small), Some(Location::Device(0)), "slab pieces are not held back");
    m.kernels_ran(0);
    let activation = m.allocate(request(4 * MIB)).unwrap();
    assert_eq!(m.driver().location_of(activation), Some(Location::Device(0)), "what computing allocates may use the reserve");
    let next = m.allocate(request(4 * MIB)).unwrap();
    assert_eq!(m.driver().location_of(next), Some(Location::Host), "allocations back to back are loading again");
    m.free(activation).unwrap();
    m.free(next).unwrap();
    assert!(m.extents(0).iter().all(|e| e.movable || e.base == cache));
    assert!(!m.settled(0));
    m.settle(0);
    let d = m.allocate(request(4 * MIB)).unwrap();
    assert_eq!(m.driver().location_of(d), Some(Location::Device(0)));
    assert_eq!(m.local_free(0), 64 * MIB - 8 * MIB - 40 * MIB - 2 * MIB - 4 * MIB);
    assert_eq!(m.shortfall(request(16 * MIB)), Some(6 * MIB));
    assert_eq!(m.shortfall(request(8 * MIB)), None);
    assert_eq!(m.shortfall(request(4096)), None, "slab pieces are never moved");
}

#[test]
fn an_explicit_rule_places_exactly_and_its_extents_never_move() {
    let mut m = manager(&format!("{STREAMING}[[rule]]\nname = \"spill\"\ntiers = [\"local\", \"host\"]\n"));
    let a = m.allocate(request(40 * MIB)).unwrap();
    let b = m.allocate(request(20 * MIB)).unwrap();
    assert_eq!(m.driver().location_of(b), Some(Location::Device(0)), "the rule says local first: no reserve");
    assert!(m.extents(0).iter().all(|e| !e.movable));
    assert_eq!(m.begin_move(a, MoveTarget::Donors).unwrap_err(), result::INVALID_VALUE);
    m.settle(0);
    assert_eq!(m.shortfall(request(16 * MIB)), None);
}

#[test]
fn automatic_off_or_streaming_off_places_as_the_rules_say() {
    for toml in [format!("{STREAMING}[placement]\nautomatic = false\n"), LOCAL_THEN_HOST.to_string()] {
        let mut m = manager(&toml);
        let a = m.allocate(request(40 * MIB)).unwrap();
        let b = m.allocate(request(20 * MIB)).unwrap();
        assert_eq!(m.driver().location_of(a), Some(Location::Device(0)));
        assert_eq!(m.driver().location_of(b), Some(Location::Device(0)), "{toml}");
        assert!(m.extents(0).iter().all(|e| !e.movable));
    }
}

#[test]
fn a_move_remaps_the_same_addresses_onto_the_other_tier_and_gives_the_old_memory_back() {
    let mut m = manager(STREAMING);
    let a = m.allocate(request(6 * MIB)).unwrap();
    let mappings = m.driver().mapping_count();
    let pending = m.begin_move(a, MoveTarget::Donors).unwrap();
    assert_eq!(pending.span, 6 * MIB);
    assert_eq!(m.driver().location_of(pending.staging), Some(Location::Host));
    assert_eq!(m.driver().accessible(pending.staging), Some(true), "host chunks are granted to the CPU too");
    assert_eq!((used(&m, Tier::Local), used(&m, Tier::Host)), (6 * MIB, 6 * MIB));
    m.finish_move(pending).unwrap();
    assert_eq!(m.driver().location_of(a), Some(Location::Host));
    assert_eq!(m.driver().location_of(a + 5 * MIB), Some(Location::Host));
    assert_eq!((used(&m, Tier::Local), used(&m, Tier::Host)), (0, 6 * MIB));
    assert_eq!(m.driver().mapping_count(), mappings, "the staging mapping is gone");
    assert_eq!(m.find(a + MIB).unwrap().base, a);
    let back = m.begin_move(a, MoveTarget::Local).unwrap();
    m.finish_move(back).unwrap();
    assert_eq!(m.driver().location_of(a), Some(Location::Device(0)));
    assert_eq!(m.extents(0)[0].local_bytes, 6 * MIB);
    m.free(a).unwrap();
    assert_eq!((used(&m, Tier::Local), used(&m, Tier::Host), m.driver().mapping_count()), (0, 0, 0));
}

#[test]
fn a_move_without_room_takes_nothing_and_an_aborted_one_gives_everything_back() {
    let mut m = manager(&STREAMING.replace("128MiB", "4MiB"));
    let a = m.allocate(request(6 * MIB)).unwrap();
    let before = (m.driver().mapping_count(), m.driver().physical_count());
    assert_eq!(m.begin_move(a, MoveTarget::Donors).unwrap_err(), result::OUT_OF_MEMORY);
    let pooled = (m.pool_bytes() / CHUNK) as usize;
    assert_eq!((m.driver().mapping_count(), m.driver().physical_count()), (before.0, before.1 + pooled), "host chunks taken go to the pool");
    assert_eq!(used(&m, Tier::Host), 0);
    let small = m.allocate(request(2 * MIB)).unwrap();
    let pending = m.begin_move(small, MoveTarget::Donors).unwrap();
    m.abort_move(pending);
    assert_eq!(m.driver().location_of(small), Some(Location::Device(0)));
    assert_eq!(used(&m, Tier::Host), 0);
}

#[test]
fn a_failed_remap_puts_the_old_backing_back() {
    let mut m = manager(STREAMING);
    let a = m.allocate(request(4 * MIB)).unwrap();
    let pending = m.begin_move(a, MoveTarget::Donors).unwrap();
    m.driver().fail_next("unmap", result::UNKNOWN, 1);
    assert_eq!(m.finish_move(pending).unwrap_err(), result::UNKNOWN);
    assert_eq!(m.driver().location_of(a), Some(Location::Device(0)));
    assert_eq!(m.driver().location_of(a + 2 * MIB), Some(Location::Device(0)));
    assert_eq!((used(&m, Tier::Local), used(&m, Tier::Host)), (4 * MIB, 0));
    m.free(a).unwrap();
    assert_eq!(m.driver().mapping_count(), 0);
}

#[test]
fn a_failed_map_of_the_new_backing_puts_the_old_one_back_and_gives_the_new_one_back() {
    let mut m = manager(STREAMING);
    let a = m.allocate(request(4 * MIB)).unwrap();
    let pending = m.begin_move(a, MoveTarget::Donors).unwrap();
    m.driver().fail_next("map", result::UNKNOWN, 1);
    assert_eq!(m.finish_move(pending).unwrap_err(), result::UNKNOWN);
    assert_eq!(m.driver().location_of(a), Some(Location::Device(0)));
    assert_eq!(m.driver().location_of(a + 2 * MIB), Some(Location::Device(0)));
    assert_eq!((used(&m, Tier::Local), used(&m, Tier::Host)), (4 * MIB, 0));
    assert_eq!(m.stuck_chunks(), 0);
    m.free(a).unwrap();
    assert_eq!(m.driver().mapping_count(), 0);
}

#[test]
fn the_application_s_own_memory_keeps_the_reserve_while_loading_and_never_moves() {
    let mut m = manager(STREAMING);
    let driver = MemoryDriver::new();
    let mut create = |size: u64| m.create_for_application(request(size), |at| driver.create(size, at)).unwrap();
    create(40 * MIB);
    create(20 * MIB);
    assert_eq!((driver.used(Location::Device(0)), driver.used(Location::Host)), (40 * MIB, 20 * MIB), "60 MiB would eat the reserve");
    m.kernels_ran(0);
    m.create_for_application(request(8 * MIB), |at| driver.create(8 * MIB, at)).unwrap();
    assert_eq!(driver.used(Location::Device(0)), 48 * MIB, "computing's memory may use the reserve");
    assert!(m.extents(0).is_empty(), "the application maps it itself: vvram has no extent to move");
}
