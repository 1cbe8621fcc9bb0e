use super::*;

const S: Duration = Duration::from_secs(1);

fn node(number: u32, speed: u32, runnable: u64) -> Node {
    Node {
        number,
        cores: 1,
        speed,
        runnable_milli: runnable * 1000,
        mem_free_kib: 1 << 20,
        mem_total_kib: 1536 << 10,
        accepts_guests: true,
    }
}

fn cpu_job(id: &str, home: u32, age_s: u64) -> Job {
    Job {
        id: id.into(),
        home,
        mem_kib: 2048,
        cpu_milli: 1000,
        age: Duration::from_secs(age_s),
        here_for: Duration::from_secs(age_s),
        output_bps: 0,
        stuck: None,
    }
}

fn here(n: Node) -> Here {
    Here {
        node: n,
        draining: false,
        balancing: true,
    }
}

#[test]
fn a_busy_loop_on_the_slow_node_moves_to_the_fast_one_and_one_on_the_fast_stays() {
    let mut b = Balancer::new(Policy::default(), 7);
    let slow = node(1, 500, 1);
    let fast = node(2, 1000, 0);
    let d = b.decide(
        60 * S,
        &here(slow.clone()),
        std::slice::from_ref(&fast),
        &[cpu_job("a", 1, 30)],
    );
    assert_eq!(
        d.mv,
        Some(Move {
            job: "a".into(),
            to: 2,
            why: Why::Faster
        })
    );
    let mut b = Balancer::new(Policy::default(), 7);
    let fast_busy = node(2, 1000, 1);
    let slow_idle = node(1, 500, 0);
    let d = b.decide(60 * S, &here(fast_busy), &[slow_idle], &[cpu_job("b", 2, 30)]);
    assert_eq!(d.mv, None);
}

#[test]
fn equal_idle_nodes_and_a_young_job_stay_still() {
    let mut b = Balancer::new(Policy::default(), 7);
    // One job on one of equal nodes: it has its core already.
    let d = b.decide(
        60 * S,
        &here(node(1, 1000, 1)),
        &[node(2, 1000, 0)],
        &[cpu_job("a", 1, 300)],
    );
    assert_eq!(d.mv, None);
    // Overloaded, but the job is too young to pay for its move.
    let d = b.decide(
        60 * S,
        &here(node(1, 1000, 3)),
        &[node(2, 1000, 0)],
        &[cpu_job("a", 1, 1)],
    );
    assert_eq!(d.mv, None);
    // A sleeping job gains nothing from another CPU.
    let mut idle = cpu_job("s", 1, 300);
    idle.cpu_milli = 10;
    let d = b.decide(60 * S, &here(node(1, 1000, 3)), &[node(2, 1000, 0)], &[idle]);
    assert_eq!(d.mv, None);
}

#[test]
fn locked_pinned_and_settling_jobs_stay_and_moves_are_spaced() {
    let mut b = Balancer::new(Policy::default(), 7);
    let mut locked = cpu_job("l", 1, 300);
    locked.stuck = Some("locked by its user".into());
    let mut new_here = cpu_job("n", 1, 300);
    new_here.here_for = 3 * S;
    let h = here(node(1, 1000, 4));
    let others = [node(2, 1000, 0), node(3, 1000, 0)];
    assert_eq!(b.decide(60 * S, &h, &others, &[locked, new_here]).mv, None);
    let jobs = [cpu_job("a", 1, 300), cpu_job("b", 1, 300)];
    assert!(b.decide(60 * S, &h, &others, &jobs).mv.is_some());
    // Within the minimum interval nothing else moves for load.
    assert_eq!(b.decide(61 * S, &h, &others, &jobs).mv, None);
    assert!(b.decide(63 * S, &h, &others, &jobs).mv.is_some());
}

#[test]
fn an_io_heavy_job_stays_home_with_a_note_and_an_io_heavy_guest_goes_home() {
    let mut b = Balancer::new(Policy::default(), 7);
    let mut noisy = cpu_job("p", 1, 300);
    noisy.output_bps = 200 * 1024;
    let h = here(node(1, 500, 3));
    let d = b.decide(60 * S, &h, &[node(2, 1000, 0)], std::slice::from_ref(&noisy));
    assert_eq!(d.mv, None);
    assert!(d.notes[0].1.contains("200 KiB/s"), "{:?}", d.notes);
    // Away from home, the same job goes back (even to a slower, busier home).
    let away = here(node(2, 1000, 1));
    let d = b.decide(60 * S, &away, &[node(1, 500, 3)], &[noisy]);
    assert_eq!(d.mv.map(|m| (m.to, m.why)), Some((1, Why::Io)));
}

#[test]
fn short_memory_moves_the_largest_job_that_can_be_staged_to_where_it_fits() {
    let mut b = Balancer::new(Policy::default(), 7);
    let mut h = here(node(1, 1000, 2));
    h.node.mem_total_kib = 4 << 20;
    h.node.mem_free_kib = 400 << 10; // under 15 % of 4 GiB: room to stage 184 MiB
    let mut big = cpu_job("big", 1, 300);
    big.mem_kib = 300 << 10; // cannot be staged in half of 400 MiB
    let mut mid = cpu_job("mid", 1, 300);
    mid.mem_kib = 150 << 10;
    let mut small = cpu_job("small", 1, 300);
    small.mem_kib = 20 << 10;
    let mut roomy = node(2, 1000, 1);
    roomy.mem_free_kib = 1200 << 10;
    let mut tight = node(3, 1000, 0);
    tight.mem_free_kib = 300 << 10; // 150 MiB would leave it under its own low mark
    let d = b.decide(
        60 * S,
        &h,
        &[roomy, tight.clone()],
        &[big.clone(), mid.clone(), small],
    );
    assert_eq!(
        d.mv.map(|m| (m.job, m.to, m.why)),
        Some(("mid".into(), 2, Why::Memory))
    );
    // With only the tight node, mid does not go there; small does.
    let mut b = Balancer::new(Policy::default(), 7);
    let mut small = cpu_job("small", 1, 300);
    small.mem_kib = 20 << 10;
    let d = b.decide(60 * S, &h, &[tight], &[big, mid, small]);
    assert_eq!(d.mv.map(|m| (m.job, m.to)), Some(("small".into(), 3)));
}

#[test]
fn draining_sends_guests_home_or_elsewhere_and_keeps_own_jobs() {
    let mut b = Balancer::new(Policy::default(), 7);
    let mut h = here(node(2, 1000, 2));
    h.draining = true;
    let jobs = [cpu_job("own", 2, 300), cpu_job("g", 1, 2)];
    let d = b.decide(60 * S, &h, &[node(1, 1000, 5), node(3, 1000, 0)], &jobs);
    assert_eq!(
        d.mv.map(|m| (m.job, m.to, m.why)),
        Some(("g".into(), 1, Why::Drain))
    );
    // Home gone: another node that takes guests.
    let d = b.decide(61 * S, &h, &[node(3, 1000, 0)], &jobs);
    assert_eq!(d.mv.map(|m| (m.job, m.to)), Some(("g".into(), 3)));
    // Only own jobs: nothing to do.
    let d = b.decide(62 * S, &h, &[node(3, 1000, 0)], &jobs[..1]);
    assert_eq!(d.mv, None);
    // With the balancer off a drain still moves guests, and nothing else moves.
    let mut off = h.clone();
    off.balancing = false;
    let d = b.decide(63 * S, &off, &[node(3, 1000, 0)], &jobs);
    assert_eq!(d.mv.map(|m| m.job), Some("g".into()));
    off.draining = false;
    let d = b.decide(70 * S, &off, &[node(3, 2000, 0)], &[cpu_job("own", 2, 300)]);
    assert_eq!(d.mv, None);
}

#[test]
fn blocked_nodes_take_no_guests_but_home_takes_its_own() {
    let mut b = Balancer::new(Policy::default(), 7);
    let mut blocked = node(3, 2000, 0);
    blocked.accepts_guests = false;
    let d = b.decide(
        60 * S,
        &here(node(2, 500, 1)),
        std::slice::from_ref(&blocked),
        &[cpu_job("a", 1, 300)],
    );
    assert_eq!(d.mv, None);
    let d = b.decide(
        60 * S,
        &here(node(2, 500, 1)),
        &[blocked],
        &[cpu_job("a", 3, 300)],
    );
    assert_eq!(d.mv.map(|m| m.to), Some(3));
    assert_eq!(b.place(70 * S, &here(node(2, 500, 1)), &[]), None);
}

#[test]
fn a_failed_move_is_not_retried_to_that_node_soon() {
    let mut b = Balancer::new(Policy::default(), 7);
    let h = here(node(1, 500, 1));
    let jobs = [cpu_job("a", 1, 300)];
    assert_eq!(
        b.decide(60 * S, &h, &[node(2, 1000, 0)], &jobs).mv.map(|m| m.to),
        Some(2)
    );
    b.failed(60 * S, "a", 2);
    assert_eq!(b.decide(70 * S, &h, &[node(2, 1000, 0)], &jobs).mv, None);
    assert!(b.decide(130 * S, &h, &[node(2, 1000, 0)], &jobs).mv.is_some());
}

#[test]
fn the_cost_model_learns_the_bandwidth_and_keeps_big_young_jobs_home() {
    let mut b = Balancer::new(Policy::default(), 7);
    // A small move teaches the fixed cost, a large one the bandwidth past it.
    b.moved(300 << 10, Duration::from_millis(3300));
    assert!(
        (3200..=3300).contains(&(b.overhead().as_millis() as u64)),
        "{:?}",
        b.overhead()
    );
    b.moved(10 << 20, Duration::from_millis(3300 + 10_000)); // 1 MiB/s
    assert!(
        ((1 << 20) - 40_000..=(1 << 20) + 40_000).contains(&b.bandwidth()),
        "{}",
        b.bandwidth()
    );
    let mut big = cpu_job("big", 1, 120);
    big.mem_kib = 512 << 10; // 512 s at 1 MiB/s: more than it saves in 2 minutes
    let h = here(node(1, 1000, 3));
    assert_eq!(
        b.decide(600 * S, &h, &[node(2, 1000, 0)], &[big.clone()]).mv,
        None
    );
    big.age = Duration::from_secs(3600);
    assert!(b.decide(600 * S, &h, &[node(2, 1000, 0)], &[big]).mv.is_some());
}

#[test]
fn a_new_job_goes_where_it_clearly_gets_more_cpu() {
    let mut b = Balancer::new(Policy::default(), 7);
    let t = |i: u64| Duration::from_secs(100 * i);
    // Idle and alike: stay. Home busy, the other idle: go. Twice as fast: go; barely: stay.
    assert_eq!(b.place(t(1), &here(node(1, 1000, 0)), &[node(2, 1000, 0)]), None);
    assert_eq!(
        b.place(t(2), &here(node(1, 1000, 1)), &[node(2, 1000, 0)]),
        Some(2)
    );
    assert_eq!(
        b.place(t(3), &here(node(1, 1000, 0)), &[node(2, 2000, 0)]),
        Some(2)
    );
    assert_eq!(b.place(t(4), &here(node(1, 1000, 0)), &[node(2, 1100, 0)]), None);
    // A node short of memory or taking no guests is no candidate.
    let mut full = node(2, 4000, 0);
    full.mem_free_kib = 10 << 10;
    let mut blocked = node(3, 4000, 0);
    blocked.accepts_guests = false;
    assert_eq!(b.place(t(5), &here(node(1, 1000, 2)), &[full, blocked]), None);
}

#[test]
fn placement_counts_what_it_sent_until_the_target_shows_it() {
    let mut b = Balancer::new(Policy::default(), 7);
    let h = here(node(1, 1000, 0));
    let others = [node(2, 1000, 0), node(3, 1000, 0)];
    // Six jobs in a row on idle equal nodes with stale figures: spread 2, 2, 2.
    let mut count = [0u32; 4];
    for i in 0..6 {
        let to = b
            .place(10 * S + Duration::from_millis(100 * i), &h, &others)
            .unwrap_or(1);
        count[to as usize] += 1;
    }
    assert_eq!(&count[1..], &[2, 2, 2]);
    // Once the reservations are old, the targets' own figures count again.
    assert_eq!(b.place(60 * S, &h, &others), None);
}

/// A cluster of nodes each running its own balancer over exact figures of the others, with
/// moves done at once: what the e2e lab shows, in virtual time.
struct Sim {
    speeds: Vec<u32>,
    jobs: Vec<Vec<Job>>,
    balancers: Vec<Balancer>,
    moves: Vec<(u64, u32, u32)>,
}

impl Sim {
    fn new(speeds: &[u32], seed: u64) -> Sim {
        Sim {
            speeds: speeds.to_vec(),
            jobs: vec![Vec::new(); speeds.len()],
            balancers: (0..speeds.len())
                .map(|i| Balancer::new(Policy::default(), seed + i as u64))
                .collect(),
            moves: Vec::new(),
        }
    }

    fn node(&self, i: usize) -> Node {
        node(i as u32 + 1, self.speeds[i], self.jobs[i].len() as u64)
    }

    fn step(&mut self, t: u64) {
        let now = Duration::from_secs(t);
        for i in 0..self.speeds.len() {
            for j in &mut self.jobs[i] {
                j.age += S;
                j.here_for += S;
            }
            let others: Vec<Node> = (0..self.speeds.len())
                .filter(|k| *k != i)
                .map(|k| self.node(k))
                .collect();
            let h = here(self.node(i));
            let jobs = self.jobs[i].clone();
            if let Some(m) = self.balancers[i].decide(now, &h, &others, &jobs).mv {
                let at = self.jobs[i].iter().position(|j| j.id == m.job).unwrap();
                let mut j = self.jobs[i].remove(at);
                j.here_for = Duration::ZERO;
                self.jobs[m.to as usize - 1].push(j);
                self.moves.push((t, i as u32 + 1, m.to));
            }
        }
    }

    fn counts(&self) -> Vec<usize> {
        self.jobs.iter().map(Vec::len).collect()
    }
}

#[test]
fn six_jobs_on_one_of_three_spread_two_per_node_and_then_stay_still() {
    for seed in 1..20 {
        let mut sim = Sim::new(&[1000, 1000, 1000], seed);
        sim.jobs[0] = (0..6).map(|i| cpu_job(&format!("j{i}"), 1, 0)).collect();
        for t in 1..=120 {
            sim.step(t);
        }
        assert_eq!(sim.counts(), [2, 2, 2], "seed {seed}: {:?}", sim.moves);
        assert!(
            sim.moves.iter().all(|(t, ..)| *t < 90),
            "seed {seed}: {:?}",
            sim.moves
        );
        assert!(sim.moves.len() <= 6, "seed {seed}: {:?}", sim.moves);
    }
}

#[test]
fn work_goes_to_the_fast_nodes_first() {
    // Speeds 500, 1000, 2000; four jobs on the slow node end where each gets the most.
    let mut sim = Sim::new(&[500, 1000, 2000], 3);
    sim.jobs[0] = (0..4).map(|i| cpu_job(&format!("j{i}"), 1, 0)).collect();
    for t in 1..=200 {
        sim.step(t);
    }
    let c = sim.counts();
    assert!(c[2] >= 2 && c[0] <= 1, "{c:?} {:?}", sim.moves);
    let last = sim.moves.last().map_or(0, |m| m.0);
    assert!(last < 150, "still moving at {last}: {:?}", sim.moves);
}

#[test]
fn many_overloaded_nodes_do_not_all_pile_onto_one_idle_newcomer() {
    let mut total = 0;
    for seed in 1..=50 {
        let mut sim = Sim::new(&[1000; 9], seed);
        for i in 0..8 {
            sim.jobs[i] = (0..3)
                .map(|k| cpu_job(&format!("n{i}j{k}"), i as u32 + 1, 300))
                .collect();
        }
        // One round where all see the same idle node 9.
        let now = Duration::from_secs(400);
        let others: Vec<Node> = (0..9).map(|k| sim.node(k)).collect();
        for i in 0..8 {
            let h = here(sim.node(i));
            let o: Vec<Node> = others
                .iter()
                .filter(|n| n.number != h.node.number)
                .cloned()
                .collect();
            let jobs = sim.jobs[i].clone();
            if sim.balancers[i].decide(now, &h, &o, &jobs).mv.is_some() {
                total += 1;
            }
        }
    }
    // Node 9 has room for 2.7 of the cluster's 2.7 tasks per core: about 2.7 of 8 move a round.
    let mean = total as f64 / 50.0;
    assert!((1.0..=4.5).contains(&mean), "mean movers per round {mean}");
}
