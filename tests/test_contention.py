"""Threads on a busy machine: the default count, clamping, and the slowdown detector as a pure
state machine driven by injected pass timings (no clocks, no llama.cpp)."""
from mtpchat.contention import Event, Governor, SlowdownDetector, adapt_message, clamp_threads, physical_cores, usable_cpus


def _sysfs(tmp_path, topo):
    """A fake /sys/devices/system/cpu: topo[cpu] = (package, core)."""
    for cpu, (pkg, core) in enumerate(topo):
        d = tmp_path / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "core_id").write_text(f"{core}\n")
        (d / "physical_package_id").write_text(f"{pkg}\n")
    return str(tmp_path)


def test_physical_cores_count_hyperthreads_once(tmp_path):
    fs = _sysfs(tmp_path, [(0, 0), (0, 1), (0, 0), (0, 1), (1, 0), (1, 0)])
    assert physical_cores([0, 1, 2, 3, 4, 5], sysfs=fs) == 3
    assert physical_cores([0, 2], sysfs=fs) == 1          # two siblings of one core
    # without topology: llama.cpp's fallback (logical CPUs, halved above 4)
    assert physical_cores([0, 1, 2], sysfs=str(tmp_path / "none")) == 3
    assert physical_cores(list(range(8)), sysfs=str(tmp_path / "none")) == 4


def test_clamp_threads():
    n = len(usable_cpus())
    assert clamp_threads(1) == (1, None)
    t, warn = clamp_threads(n + 7)
    assert t == n and f"--threads {n + 7}" in warn and f"using {n}" in warn
    t, warn = clamp_threads(None)
    assert 1 <= t <= n and warn is None


class Machine:
    """Seconds of an n-token pass at t threads: `fast[t]` per token, times `busy[t]` while
    another program holds a core."""

    def __init__(self, fast, busy=None):
        self.fast, self.busy, self.load = fast, busy or {}, False

    def __call__(self, t, n=1):
        return self.fast[t] * n * (self.busy.get(t, 1.0) if self.load else 1.0)


def run(det, machine, passes, n=1):
    """Decode `passes` passes, applying the detector's decisions as the Governor does."""
    events = []
    for _ in range(passes):
        ev = det.observe(n, machine(det.current, n))
        if ev:
            events.append(ev)
    return events


TWO_CORES = Machine({2: 0.008, 1: 0.013}, busy={2: 40.0, 1: 1.6})   # the 2-core numbers


def test_idle_machine_keeps_its_threads():
    det = SlowdownDetector(2)
    ev = run(det, TWO_CORES, 400)
    # one look at fewer threads after the first window, found slower, and nothing after that
    assert [e.kind for e in ev] == ["explore", "revert"] and det.current == 2
    assert det.adapted is None


def test_busy_core_makes_it_use_fewer_threads_and_say_so_once():
    det = SlowdownDetector(2, unit_s=0.008)
    run(det, TWO_CORES, 100)
    TWO_CORES.load = True
    try:
        ev = run(det, TWO_CORES, 40)
        kinds = [e.kind for e in ev]
        assert kinds[:2] == ["trial", "adapt"] and det.current == 1
        adapt = ev[1]
        assert adapt.slowdown > 30 and adapt.gain > 10 and det.adapted is adapt
        # later tries of the configured count find the machine still busy and go back at once
        ev = run(det, TWO_CORES, 2000)
        assert {e.kind for e in ev} <= {"probe", "revert"} and det.current == 1
        assert sum(e.kind == "probe" for e in ev) <= 8        # they thin out (doubling intervals)
    finally:
        TWO_CORES.load = False
    # the load is gone: the next try of 2 threads is faster, and it stays there
    ev = run(det, TWO_CORES, 6000)
    assert "restore" in [e.kind for e in ev] and det.current == 2
    msg = adapt_message(det.adapted, 2)
    assert "below this machine's measured speed" in msg and "1 thread instead of 2" in msg and "using 1" in msg


def test_busy_from_the_start_with_a_calibration_measured_under_load():
    """The calibration (unit_s) was measured under the same load, so nothing looks slow; the
    first-window look at fewer threads still finds the 40x."""
    m = Machine({2: 0.008, 1: 0.013}, busy={2: 40.0, 1: 1.6})
    m.load = True
    det = SlowdownDetector(2, unit_s=0.32)
    ev = run(det, m, 30)
    assert [e.kind for e in ev] == ["explore", "adapt"] and det.current == 1
    assert ev[1].gain > 10 and (ev[1].slowdown is None or ev[1].slowdown < 1.5)
    assert "with 2 threads ran" in adapt_message(ev[1], 2) and "using 1" in adapt_message(ev[1], 2)


def test_a_slowdown_fewer_threads_do_not_fix_is_left_alone():
    """Everything 4x slower whatever the thread count (thermal limits, a long context): a trial,
    no gain, back to the configured count, and trials thin out."""
    m = Machine({4: 0.01, 3: 0.013}, busy={4: 4.0, 3: 4.0})
    det = SlowdownDetector(4, unit_s=0.01, explore=False)
    run(det, m, 50)
    m.load = True
    ev = run(det, m, 3000)
    kinds = [e.kind for e in ev]
    assert "adapt" not in kinds and det.current == 4
    assert kinds.count("trial") == kinds.count("revert") and 1 <= kinds.count("trial") <= 8


def test_short_slowdowns_are_not_sustained():
    det = SlowdownDetector(2, unit_s=0.008, explore=False)
    ev = []
    for i in range(2000):
        t = 0.5 if i % 50 == 0 else 0.008   # a hiccup now and then (page faults, another tab)
        e = det.observe(1, t)
        ev += [e] if e else []
    assert ev == []


def test_passes_of_different_sizes_are_compared_by_their_cost():
    """A 25-token tree pass is not a slowdown when the calibration says it costs 10 one-token
    passes; without a cost model it counts as 25."""
    rel = {1: 1.0, 25: 10.0}
    det = SlowdownDetector(2, unit_s=0.008, relative_cost=rel.__getitem__, explore=False)
    assert all(det.observe(n, 0.008 * rel[n]) is None for n in [1, 25, 25, 1] * 200)
    det = SlowdownDetector(2, unit_s=0.008, explore=False)
    assert all(det.observe(25, 0.08) is None for _ in range(200))


def test_a_crawl_is_noticed_in_seconds_not_in_passes():
    """3 s a pass: windows close on time (2 passes), so the trial starts after 4 passes."""
    m = Machine({2: 3.0, 1: 0.02})
    det = SlowdownDetector(2, unit_s=0.008, explore=False)
    ev = run(det, m, 4)
    assert [e.kind for e in ev] == ["trial"]


def test_many_cores_step_down_by_a_quarter():
    assert [SlowdownDetector.lower(t) for t in (1, 2, 3, 4, 8, 16)] == [1, 1, 2, 3, 6, 12]


class FakeCtx:
    def __init__(self, n):
        self.n_threads, self.calls = n, []

    def set_n_threads(self, n):
        self.calls.append(n)
        self.n_threads = n


class FakeStats:
    def __init__(self):
        self.steps, self.pass_tokens, self.decode_s = 0, 0, 0.0


def test_governor_feeds_the_detector_from_live_stats_and_says_once():
    ctx, said = FakeCtx(2), []
    gov = Governor(ctx, SlowdownDetector(2, unit_s=0.008, explore=False), say=said.append)
    for answer in range(3):
        st = FakeStats()          # a new answer: new statistics, the detector carries on
        for _ in range(40):
            st.steps += 1
            st.pass_tokens += 1
            st.decode_s += 0.3 if ctx.n_threads == 2 else 0.012
            gov.update(st)
    assert ctx.calls[:1] == [1] and ctx.n_threads == 1
    assert len(said) == 1 and "instead of 2" in said[0]


def test_event_is_a_value():
    assert Event("adapt", 1, 3.0, 2.0) == Event("adapt", 1, 3.0, 2.0)
