import assert from "node:assert/strict";
import { Bbr, type BbrOptions, type BbrState } from "./bbr.ts";
import { type CongestionControl, Cubic, initialWindow, type RateSample } from "./congestion.ts";
import { xorshift32 } from "../../tests/_prng.ts";

const MSS = 1000;

/** One data packet of the simulated sender (draft-cheng per-packet state). */
interface Packet {
  id: number;
  size: number;
  sendTime: number;
  delivered: number;
  deliveredTime: number;
  firstSentTime: number;
  txInFlight: number;
  lostAtSend: number;
  appLimited: boolean;
  /** When its ACK arrives; NaN when the link dropped it. */
  ackTime: number;
}

/** What the test sees after each ACK. */
interface Tick {
  now: number;
  rs: RateSample;
  state: BbrState;
}

interface LinkOptions {
  /** Bottleneck rate, bytes per ms. */
  rate: number;
  /** Two-way propagation delay, ms (the RTT is this plus one serialization time). */
  delay: number;
  /** Bottleneck buffer, bytes (default: unbounded). */
  buffer?: number;
  /** Random loss probability per packet (default 0). */
  loss?: number;
  /** Application supply of the first flow in bytes per ms (default: unlimited). */
  appRate?: number;
  /** ACKs are held and released together every this many ms (default 0: none). */
  ackBatch?: number;
  seed?: number;
  bbr?: BbrOptions;
}

/** The shared bottleneck: a FIFO served at `rate`, a buffer, random loss, a delay. */
class Path {
  rate: number;
  delay: number;
  buffer: number;
  loss: number;
  ackBatch: number;
  dropped = 0;
  #free = 0;
  readonly #next: () => number;

  constructor(o: LinkOptions) {
    this.rate = o.rate;
    this.delay = o.delay;
    this.buffer = o.buffer ?? Infinity;
    this.loss = o.loss ?? 0;
    this.ackBatch = o.ackBatch ?? 0;
    this.#next = xorshift32(o.seed ?? 7);
  }

  /** A packet of `size` bytes enters at `now`: the time its ACK arrives, or NaN if dropped. */
  carry(size: number, now: number): number {
    const backlog = Math.max(0, this.#free - now) * this.rate;
    if (this.#next() / 4294967296 < this.loss || backlog > this.buffer) {
      this.dropped++;
      return NaN;
    }
    this.#free = Math.max(this.#free, now) + size / this.rate;
    const ack = this.#free + this.delay;
    return this.ackBatch > 0 ? Math.ceil(ack / this.ackBatch) * this.ackBatch : ack;
  }
}

/**
 * One sender over the path. It keeps the per-packet delivery-rate state of
 * draft-cheng-iccrg-delivery-rate-estimation, detects loss when a packet 3
 * later is ACKed (or by RTO when nothing is left), honours cwnd and the
 * pacing rate, and calls the controller as the connection will:
 * onCongestion / onRecoveryEnd / onTimeout, onAck outside recovery, then
 * onRateSample.
 */
class Flow {
  delivered = 0;
  deliveredTime = 0;
  firstSentTime = 0;
  lost = 0;
  inflight = 0;
  appLimitedMark = 0;
  nextSendTime = 0;
  appRate = Infinity;
  appBudget = 0;
  minRtt = Infinity;
  srtt = 0;
  inRecovery = false;
  /** Recovery ends when a packet with this id or later is ACKed. */
  recoveryPoint = 0;
  sent = 0;
  timeouts = 0;
  /**
   * The loss timer, restarted by each ACK and by sending into an empty pipe:
   * first a tail loss probe (2 SRTT, RFC 8985), then the RTO (200 ms or 2 SRTT).
   */
  rtoAt = Infinity;
  #probed = false;
  /** Tail losses found by the probe, reported with the next ACK. */
  #tailLost = 0;
  readonly ticks: Tick[] = [];
  #nextId = 0;
  /** Packets in flight, in send order. */
  #out: Packet[] = [];

  constructor(readonly cc: CongestionControl, readonly path: Path) {}

  /** Adds application data for `dt` ms. */
  supply(dt: number): void {
    if (this.appRate !== Infinity) {
      this.appBudget = Math.min(this.appBudget + this.appRate * dt, 1e9);
    }
  }

  #hasData(): boolean {
    return this.appRate === Infinity || this.appBudget >= MSS - 1e-6;
  }

  /** Sends what cwnd, pacing and the application allow at `now`. */
  send(now: number): void {
    while (this.inflight + MSS <= this.cc.cwnd && now >= this.nextSendTime) {
      if (!this.#hasData()) {
        // CheckIfApplicationLimited(): no data while cwnd and pacing allow.
        this.appLimitedMark = Math.max(this.delivered + this.inflight, 1);
        return;
      }
      if (this.appRate !== Infinity) this.appBudget -= MSS;
      if (this.inflight === 0) {
        this.firstSentTime = this.deliveredTime = now;
        this.rtoAt = now + this.#timer();
      }
      this.inflight += MSS;
      this.#out.push({
        id: this.#nextId++,
        size: MSS,
        sendTime: now,
        delivered: this.delivered,
        deliveredTime: this.deliveredTime,
        firstSentTime: this.firstSentTime,
        txInFlight: this.inflight,
        lostAtSend: this.lost,
        appLimited: this.appLimitedMark !== 0,
        ackTime: this.path.carry(MSS, now),
      });
      this.sent++;
      const pacing = this.cc.pacingRate;
      if (pacing > 0) this.nextSendTime = Math.max(this.nextSendTime, now) + MSS / pacing;
    }
  }

  /** When this flow next needs attention. */
  nextEvent(now: number): number {
    let t = Infinity;
    const next = this.#out.find((p) => !Number.isNaN(p.ackTime));
    if (next) t = next.ackTime;
    if (this.inflight + MSS <= this.cc.cwnd) {
      if (this.#hasData()) t = Math.min(t, Math.max(this.nextSendTime, now));
      else if (this.appRate > 0) t = Math.min(t, now + (MSS - this.appBudget) / this.appRate);
    }
    if (!next && this.#out.length > 0) t = Math.min(t, this.rtoAt);
    return t;
  }

  #timer(): number {
    return this.#probed ? Math.max(200, 2 * this.srtt) : Math.max(10, 2 * this.srtt);
  }

  /** Processes the ACKs due at `now`, one at a time; fires the RTO when nothing else is left. */
  ackUpTo(now: number, each?: (t: Tick) => void): void {
    const out = this.#out;
    if (out.length > 0 && out.every((p) => Number.isNaN(p.ackTime))) {
      if (now >= this.rtoAt) {
        if (this.#probed) this.#timeout(now);
        else this.#tailLossProbe(now);
      }
      return;
    }
    for (;;) {
      const i = out.findIndex((p) => !Number.isNaN(p.ackTime));
      if (i < 0 || out[i].ackTime > now) return;
      this.#ack(i, now, each);
    }
  }

  /** The probe's SACK shows the whole tail lost: fast recovery, not an RTO. */
  #tailLossProbe(now: number): void {
    this.#probed = true;
    for (const p of this.#out) {
      this.lost += p.size;
      this.#tailLost += p.size;
      this.inflight -= p.size;
      if (this.appRate !== Infinity) this.appBudget += p.size;
    }
    this.#out = [];
    if (!this.inRecovery) {
      this.inRecovery = true;
      this.recoveryPoint = this.#nextId;
      this.cc.onCongestion(this.inflight, now);
    } else {
      this.recoveryPoint = this.#nextId;
    }
    this.rtoAt = now + this.#timer();
  }

  #timeout(now: number): void {
    const flight = this.inflight;
    for (const p of this.#out) {
      this.lost += p.size;
      if (this.appRate !== Infinity) this.appBudget += p.size;
    }
    this.#out = [];
    this.inflight = 0;
    this.inRecovery = true;
    this.recoveryPoint = this.#nextId;
    this.timeouts++;
    this.rtoAt = Infinity;
    this.cc.onTimeout(flight, now);
  }

  #ack(i: number, now: number, each?: (t: Tick) => void): void {
    const out = this.#out;
    const p = out[i];
    const priorInFlight = this.inflight;
    // Loss detection: dropped packets at least 3 older than the ACKed one.
    let newlyLost = this.#tailLost;
    this.#tailLost = 0;
    let k = 0;
    while (k < i) {
      const q = out[k];
      if (p.id - q.id >= 3) {
        out.splice(k, 1);
        i--;
        newlyLost += q.size;
        // SND.UNA passes the recovery point only when this hole's
        // retransmission (the next packet sent) is ACKed.
        if (this.inRecovery && q.id < this.recoveryPoint) this.recoveryPoint = this.#nextId;
        this.lost += q.size;
        this.inflight -= q.size;
        if (this.appRate !== Infinity) this.appBudget += q.size; // retransmission
      } else {
        k++;
      }
    }
    out.splice(i, 1);
    this.#probed = false;
    this.rtoAt = now + this.#timer();
    this.delivered += p.size;
    this.deliveredTime = now;
    this.inflight -= p.size;
    this.firstSentTime = p.sendTime;
    if (this.appLimitedMark && this.delivered > this.appLimitedMark) this.appLimitedMark = 0;
    const rtt = Math.round((now - p.sendTime) * 1e6) / 1e6; // as a µs clock would
    this.minRtt = Math.min(this.minRtt, rtt);
    this.srtt = this.srtt === 0 ? rtt : 0.875 * this.srtt + 0.125 * rtt;
    const interval = Math.max(p.sendTime - p.firstSentTime, now - p.deliveredTime);
    const delivered = this.delivered - p.delivered;
    const valid = interval >= this.minRtt && interval > 0;
    const rs: RateSample = {
      ackedSacked: p.size,
      newlyLost,
      priorInFlight,
      inFlight: this.inflight,
      totalDelivered: this.delivered,
      totalLost: this.lost,
      priorDelivered: p.delivered,
      delivered,
      lost: this.lost - p.lostAtSend,
      txInFlight: p.txInFlight,
      interval: valid ? interval : 0,
      deliveryRate: valid ? delivered / interval : 0,
      rtt,
      isAppLimited: p.appLimited,
    };
    if (this.inRecovery && p.id >= this.recoveryPoint) {
      this.inRecovery = false;
      this.cc.onRecoveryEnd(now);
    }
    if (newlyLost > 0 && !this.inRecovery) {
      this.inRecovery = true;
      this.recoveryPoint = this.#nextId;
      this.cc.onCongestion(this.inflight, now);
    }
    if (!this.inRecovery) this.cc.onAck(p.size, this.srtt, now);
    this.cc.onRateSample(rs, now);
    const state = this.cc instanceof Bbr ? this.cc.state : "probe_bw_cruise";
    const tick = { now, rs, state };
    this.ticks.push(tick);
    if (this.ticks.length > 4096) this.ticks.splice(0, 2048);
    each?.(tick);
  }
}

/**
 * A BBR sender (and optionally competing flows) over one bottleneck; the
 * first flow's numbers are exposed directly for the tests.
 */
class Link {
  readonly path: Path;
  readonly main: Flow;
  readonly flows: Flow[];
  now = 0;

  constructor(o: LinkOptions, others: CongestionControl[] = []) {
    this.path = new Path(o);
    this.main = new Flow(new Bbr(MSS, o.bbr), this.path);
    this.main.appRate = o.appRate ?? Infinity;
    this.flows = [this.main, ...others.map((cc) => new Flow(cc, this.path))];
  }

  get cc(): Bbr {
    return this.main.cc as Bbr;
  }
  get rate(): number {
    return this.path.rate;
  }
  set rate(v: number) {
    this.path.rate = v;
  }
  get delay(): number {
    return this.path.delay;
  }
  set delay(v: number) {
    this.path.delay = v;
  }
  get loss(): number {
    return this.path.loss;
  }
  set loss(v: number) {
    this.path.loss = v;
  }
  set appRate(v: number) {
    this.main.appRate = v;
  }
  set appBudget(v: number) {
    this.main.appBudget = v;
  }
  get dropped(): number {
    return this.path.dropped;
  }
  get delivered(): number {
    return this.main.delivered;
  }
  get inflight(): number {
    return this.main.inflight;
  }
  get sent(): number {
    return this.flows.reduce((n, f) => n + f.sent, 0);
  }
  get timeouts(): number {
    return this.main.timeouts;
  }
  get ticks(): Tick[] {
    return this.main.ticks;
  }

  /** The path's BDP in bytes. */
  get bdp(): number {
    return this.rate * (this.delay + MSS / this.rate);
  }

  /** Runs the simulation until `until` ms, calling `each` after every ACK of the first flow. */
  run(until: number, each?: (t: Tick) => void): void {
    while (this.now < until) {
      for (const f of this.flows) f.send(this.now);
      let next = until;
      for (const f of this.flows) next = Math.min(next, f.nextEvent(this.now));
      if (!(next > this.now)) next = Math.min(until, this.now + 1e-6);
      for (const f of this.flows) f.supply(next - this.now);
      this.now = next;
      for (const f of this.flows) f.ackUpTo(this.now, f === this.main ? each : undefined);
    }
  }

  /** Runs until `pred` holds after an ACK (or fails at `limit` ms). */
  runUntil(pred: (t: Tick) => boolean, limit: number, each?: (t: Tick) => void): Tick {
    let hit: Tick | undefined;
    const start = this.now;
    while (!hit && this.now < start + limit) {
      this.run(Math.min(this.now + 1, start + limit), (t) => {
        each?.(t);
        if (!hit && pred(t)) hit = t;
      });
    }
    assert.ok(hit, `condition not reached within ${limit} ms (state ${this.cc.state})`);
    return hit;
  }
}

/** A rate sample for driving the model by hand. */
function sample(fields: Partial<RateSample>): RateSample {
  return {
    ackedSacked: MSS,
    newlyLost: 0,
    priorInFlight: 0,
    inFlight: 0,
    totalDelivered: 0,
    totalLost: 0,
    priorDelivered: 0,
    delivered: MSS,
    lost: 0,
    txInFlight: 0,
    interval: 0,
    deliveryRate: 0,
    rtt: -1,
    isAppLimited: false,
    ...fields,
  };
}

/** A 1000 B/ms (8 Mbit/s) bottleneck with 40 ms RTT: BDP = 41 segments. */
function steadyLink(o: Partial<LinkOptions> = {}): Link {
  return new Link({ rate: 1000, delay: 40, ...o });
}

/** Runs a link until it has left Startup and Drain. */
function toProbeBw(link: Link): void {
  link.runUntil((t) => t.state.startsWith("probe_bw"), 5000);
}

Deno.test("Bbr: initial values", async (t) => {
  await t.step("Startup, cwnd = the RFC 6928 window, pacing 2.77 × IW / 1 ms", () => {
    const cc = new Bbr(1460);
    assert.equal(cc.name, "bbr");
    assert.equal(cc.modelBased, true);
    assert.equal(cc.state, "startup");
    assert.equal(cc.cwnd, initialWindow(1460));
    assert.ok(cc.ssthresh >= 0x7fffffff);
    assert.ok(Math.abs(cc.pacingRate - 2.77 * initialWindow(1460)) < 1e-6);
    assert.equal(cc.pacingGain, 2.77);
    assert.equal(cc.cwndGain, 2);
    assert.equal(cc.minRtt, Infinity);
    assert.equal(cc.inflightLongterm, Infinity);
    assert.equal(cc.sendQuantum, cc.pacingRate * 1); // one ms of pacing, ≤ 64 KB
  });

  await t.step("a known SRTT, or the first RTT seen, sets the initial pacing rate", () => {
    const known = new Bbr(1000, { srtt: 50 });
    assert.ok(Math.abs(known.pacingRate - (2.77 * 10000) / 50) < 1e-9);
    const cc = new Bbr(1000);
    cc.onAck(1000, 20, 20);
    assert.ok(Math.abs(cc.pacingRate - (2.77 * 10000) / 20) < 1e-9);
    cc.onAck(1000, 5, 25); // only the first RTT replaces the 1 ms
    assert.ok(Math.abs(cc.pacingRate - (2.77 * 10000) / 20) < 1e-9);
  });

  await t.step("setMss before any delivery resets the initial window", () => {
    const cc = new Bbr(536);
    cc.onAck(0, 20, 0); // the handshake's RTT
    cc.setMss(1460);
    assert.equal(cc.cwnd, 14600);
    assert.ok(Math.abs(cc.pacingRate - (2.77 * 14600) / 20) < 1e-9);
    assert.throws(() => cc.setMss(0), RangeError);
    assert.throws(() => new Bbr(-1), RangeError);
    assert.throws(() => new Bbr(1000, { lossThresh: 1 }), RangeError);
  });
});

Deno.test("Bbr: Startup and Drain on an ideal link", async (t) => {
  await t.step("Startup paces at 2.77 × max_bw and max_bw about doubles per round", () => {
    // 80 Mbit/s × 41 ms: a BDP of 410 segments takes several doubling rounds.
    const link = new Link({ rate: 10_000, delay: 40 });
    const perRound: number[] = [];
    let round = -1;
    link.run(2000, (tick) => {
      const cc = link.cc;
      if (tick.state !== "startup") return;
      // Once the estimate passes the initial rate, pacing is gain × bw × 0.99.
      if (2.77 * 0.99 * cc.maxBw > (2.77 * 10 * MSS) / (40 + MSS / 10_000) + 1e-9) {
        assert.ok(
          Math.abs(cc.pacingRate - 2.77 * 0.99 * cc.bw) < 1e-9,
          `${cc.pacingRate} ${cc.bw} ${cc.maxBw} ${tick.now}`,
        );
      }
      if (cc.roundCount !== round) {
        round = cc.roundCount;
        perRound.push(cc.maxBw);
      }
    });
    // While well below the bottleneck rate, each round's estimate grows by
    // 1.4–2.8× (the cwnd doubles per round, pacing allows up to 2.77×), about
    // 2× on average. The first round ends at the first ACK, so it is skipped.
    const growing = perRound.slice(1).filter((bw) => bw > 0 && bw < 0.6 * link.rate);
    assert.ok(growing.length >= 5, `rounds: ${perRound}`);
    for (let i = 1; i < growing.length; i++) {
      const ratio = growing[i] / growing[i - 1];
      assert.ok(ratio >= 1.4 && ratio <= 2.8, `round ${i}: ×${ratio.toFixed(2)} (${perRound})`);
    }
    const mean = (growing.at(-1)! / growing[0]) ** (1 / (growing.length - 1));
    assert.ok(mean >= 1.8 && mean <= 2.2, `mean growth ×${mean.toFixed(2)}`);
  });

  await t.step("Startup ends 3 rounds after bw stops growing by 25 %; max_bw within 2 %", () => {
    const link = steadyLink();
    let plateauRound = -1;
    const exit = link.runUntil((tick) => tick.state !== "startup", 3000, () => {
      if (plateauRound < 0 && link.cc.maxBw >= 0.8 * link.rate) plateauRound = link.cc.roundCount;
    });
    assert.equal(exit.state, "drain");
    assert.equal(link.cc.fullBwReached, true);
    const rounds = link.cc.roundCount - plateauRound;
    assert.ok(rounds >= 3 && rounds <= 5, `left Startup ${rounds} rounds after the plateau`);
    assert.ok(Math.abs(link.cc.maxBw - link.rate) <= 0.02 * link.rate, `max_bw ${link.cc.maxBw}`);
    assert.equal(link.cc.inflightLongterm, Infinity, "no loss: no inflight_longterm");
    assert.equal(link.dropped, 0);
  });

  await t.step("a connection opened long after the clock's origin starts in Startup", () => {
    // BBRInit()'s stamps are taken at the first ACK; left at the clock's
    // origin, the first ACK found ProbeRTT 55 s overdue (cwnd 4 segments).
    const link = steadyLink();
    link.now = 60_000;
    const states: string[] = [];
    link.run(61_000, (tick) => {
      if (states.at(-1) !== tick.state) states.push(tick.state);
    });
    assert.equal(states[0], "startup");
    assert.ok(!states.includes("probe_rtt"), states.join(" → "));
    assert.ok(link.cc.fullBwReached, states.join(" → "));
  });

  await t.step("Drain paces at 0.5 × bw and ends when inflight ≤ BDP", () => {
    const link = steadyLink();
    link.runUntil((tick) => tick.state === "drain", 3000);
    assert.equal(link.cc.pacingGain, 0.5);
    assert.equal(link.cc.cwndGain, 2);
    const startRound = link.cc.roundCount;
    const queued = link.inflight;
    assert.ok(queued > 1.5 * link.bdp, `inflight at Drain ${queued}, BDP ${link.bdp}`);
    const exit = link.runUntil((tick) => tick.state !== "drain", 1000);
    assert.ok(exit.state.startsWith("probe_bw"), exit.state);
    const budget = 3 * link.cc.sendQuantum; // Inflight(1.0) = max(BDP, offload budget)
    assert.ok(exit.rs.inFlight <= Math.max(link.cc.bdp, budget), `inflight ${exit.rs.inFlight}`);
    assert.ok(link.cc.roundCount - startRound <= 3, "drained within the 3-round limit");
    assert.ok(link.cc.ssthresh < 0x7fffffff, "ssthresh shows the BDP once Startup is over");
  });
});

Deno.test("Bbr: ProbeBW", async (t) => {
  await t.step("cycles DOWN → CRUISE → REFILL → UP → DOWN with the draft's gains", () => {
    const link = steadyLink();
    toProbeBw(link);
    const seen: { state: BbrState; now: number; round: number }[] = [];
    link.run(link.now + 12000, (tick) => {
      const cc = link.cc;
      const gains: Partial<Record<BbrState, [number, number]>> = {
        probe_bw_down: [0.9, 2],
        probe_bw_cruise: [1, 2],
        probe_bw_refill: [1, 2],
        probe_bw_up: [1.25, 2.25],
        probe_rtt: [1, 0.5],
      };
      assert.deepEqual([cc.pacingGain, cc.cwndGain], gains[tick.state], tick.state);
      if (seen.at(-1)?.state !== tick.state) {
        seen.push({ state: tick.state, now: tick.now, round: cc.roundCount });
      }
    });
    const next: Partial<Record<BbrState, BbrState[]>> = {
      probe_bw_down: ["probe_bw_cruise", "probe_bw_refill"],
      probe_bw_cruise: ["probe_bw_refill"],
      probe_bw_refill: ["probe_bw_up"],
      probe_bw_up: ["probe_bw_down"],
      probe_rtt: ["probe_bw_cruise"], // ProbeRTT (from any state) returns to CRUISE
    };
    for (let i = 1; i < seen.length; i++) {
      const [a, b] = [seen[i - 1].state, seen[i].state];
      assert.ok(b === "probe_rtt" || next[a]?.includes(b), `${a} → ${b}`);
    }
    const ups = seen.filter((s) => s.state === "probe_bw_up");
    assert.ok(ups.length >= 3, `UP phases: ${ups.length}`);
    // REFILL lasts exactly one round.
    for (let i = 1; i < seen.length; i++) {
      if (seen[i].state === "probe_bw_up") {
        assert.equal(seen[i - 1].state, "probe_bw_refill");
        assert.equal(seen[i].round - seen[i - 1].round, 1);
      }
    }
    // Probes are at most ~3 s apart (the wall-clock bound; the Reno bound of
    // 41 rounds × 41 ms = 1.7 s usually fires first).
    for (let i = 1; i < ups.length; i++) {
      const gap = ups[i].now - ups[i - 1].now;
      assert.ok(gap <= 3000 + 500, `probe gap ${gap} ms`);
    }
  });

  await t.step("a clean link keeps inflight within ~2 BDP and loses nothing", () => {
    const link = steadyLink();
    toProbeBw(link);
    let maxInflight = 0;
    let rttMax = 0;
    link.run(link.now + 10000, (tick) => {
      maxInflight = Math.max(maxInflight, tick.rs.priorInFlight);
      rttMax = Math.max(rttMax, tick.rs.rtt);
    });
    assert.ok(maxInflight <= 2.3 * link.bdp, `max inflight ${maxInflight / link.bdp} BDP`);
    assert.ok(rttMax <= 2.3 * 41, `max RTT ${rttMax}`);
    assert.equal(link.dropped, 0);
    const tput = link.delivered / link.now;
    assert.ok(tput >= 0.9 * link.rate, `throughput ${tput}`);
  });

  await t.step("max_bw follows a doubled rate within one probe cycle", () => {
    const link = steadyLink();
    toProbeBw(link);
    link.run(link.now + 3000);
    link.rate = 2000;
    const from = link.now;
    link.runUntil(() => link.cc.maxBw >= 0.95 * 2000, 4000);
    assert.ok(link.now - from <= 4000);
    assert.ok(link.cc.maxBw <= 2000 * 1.02, `max_bw ${link.cc.maxBw}`);
  });

  await t.step("max_bw keeps a halved rate's old value for the filter window, then drops", () => {
    const link = steadyLink();
    toProbeBw(link);
    link.run(link.now + 3000);
    link.rate = 500;
    // The two-cycle window still holds the old maximum for a while …
    link.run(link.now + 500);
    assert.ok(link.cc.maxBw >= 0.95 * 1000, `max_bw ${link.cc.maxBw} forgot too early`);
    // … and forgets it after two ProbeBW cycles.
    link.runUntil(() => link.cc.maxBw <= 1.05 * 500, 12000);
    link.run(link.now + 5000);
    assert.ok(link.cc.maxBw <= 1.1 * 500 && link.cc.maxBw >= 0.9 * 500, `${link.cc.maxBw}`);
  });

  await t.step("app-limited samples below max_bw do not lower it", () => {
    const link = steadyLink();
    toProbeBw(link);
    link.run(link.now + 2000);
    link.appRate = 300;
    link.appBudget = 0;
    let appLimited = 0;
    link.run(link.now + 15000, (tick) => {
      if (tick.rs.isAppLimited) appLimited++;
    });
    assert.ok(appLimited > 1000, `app-limited samples: ${appLimited}`);
    assert.ok(link.cc.maxBw >= 0.98 * 1000, `max_bw ${link.cc.maxBw}`);
    assert.ok(link.cc.pacingRate >= 0.85 * 1000, `pacing ${link.cc.pacingRate}`);
  });

  await t.step("by hand: app-limited samples count only when above max_bw", () => {
    const cc = new Bbr(MSS);
    let delivered = 0;
    const ack = (rate: number, appLimited: boolean) => {
      const prior = delivered;
      delivered += MSS;
      cc.onRateSample(
        sample({
          totalDelivered: delivered,
          priorDelivered: prior,
          deliveryRate: rate,
          interval: 10,
          rtt: 10,
          isAppLimited: appLimited,
          inFlight: 5 * MSS,
          priorInFlight: 6 * MSS,
          txInFlight: 6 * MSS,
        }),
        delivered,
      );
    };
    ack(100, false);
    assert.equal(cc.maxBw, 100);
    ack(50, true);
    assert.equal(cc.maxBw, 100);
    ack(150, true);
    assert.equal(cc.maxBw, 150);
    ack(0, false); // no valid sample
    assert.equal(cc.maxBw, 150);
  });
});

Deno.test("Bbr: ProbeRTT", async (t) => {
  await t.step("entered 5 s after the last lower RTT; cwnd 0.5 BDP; ≥ 200 ms and a round", () => {
    const link = steadyLink();
    let lowest = Infinity;
    let lowestAt = 0;
    const enter = link.runUntil((tick) => tick.state === "probe_rtt", 8000, (tick) => {
      if (tick.rs.rtt < lowest) [lowest, lowestAt] = [tick.rs.rtt, tick.now];
    });
    assert.ok(enter.now > lowestAt + 5000 && enter.now <= lowestAt + 5005, `${enter.now}`);
    const cc = link.cc;
    assert.equal(cc.pacingGain, 1);
    assert.equal(cc.cwndGain, 0.5);
    const probeCwnd = Math.max(0.5 * cc.bdp, 4 * MSS);
    assert.ok(cc.cwnd <= probeCwnd + 1e-6, `cwnd ${cc.cwnd} > ${probeCwnd}`);
    const cwndBefore = 2 * cc.bdp; // ProbeBW's cwnd on a clean link
    let drainedAt = -1;
    let drainedRound = -1;
    const exit = link.runUntil((tick) => tick.state !== "probe_rtt", 2000, (tick) => {
      if (tick.state !== "probe_rtt") return;
      assert.ok(link.cc.cwnd <= probeCwnd + 1e-6);
      if (drainedAt < 0 && tick.rs.inFlight <= probeCwnd) {
        [drainedAt, drainedRound] = [tick.now, link.cc.roundCount];
      }
    });
    assert.equal(exit.state, "probe_bw_cruise");
    assert.ok(exit.now - drainedAt > 200, `held ${exit.now - drainedAt} ms`);
    assert.ok(link.cc.roundCount > drainedRound, "held at least one round");
    assert.ok(exit.now - enter.now < 400, `ProbeRTT lasted ${exit.now - enter.now} ms`);
    assert.ok(link.cc.cwnd >= 0.9 * cwndBefore, `cwnd restored: ${link.cc.cwnd}`);
    // The next ProbeRTT is 5 s after this one ended.
    const again = link.runUntil((tick) => tick.state === "probe_rtt", 8000);
    assert.ok(again.now - exit.now > 5000 && again.now - exit.now <= 5005, `${again.now}`);
  });

  await t.step("on a tiny BDP the ProbeRTT cwnd is 4 segments", () => {
    const link = new Link({ rate: 100, delay: 30 }); // BDP 4 segments
    link.runUntil((tick) => tick.state === "probe_rtt", 12_000);
    link.run(link.now + 100);
    assert.equal(link.cc.state, "probe_rtt");
    assert.equal(link.cc.cwnd, 4 * MSS);
  });

  await t.step("a lower RTT (a shorter path) postpones ProbeRTT", () => {
    const link = steadyLink();
    link.run(3000);
    link.delay = 30;
    const enter = link.runUntil((tick) => tick.state === "probe_rtt", 10_000);
    assert.ok(enter.now > 8000, `ProbeRTT at ${enter.now}`);
    assert.equal(link.cc.minRtt, 31);
  });
});

Deno.test("Bbr: loss", async (t) => {
  // BBRv3 as drafted cuts its short-term model in every round with a loss,
  // and at this BDP (41 segments) one loss in a flight is already above the
  // 2 % bound. Our loss threshold sits above the background loss rate, so
  // random loss costs little. Bounds: [loss, throughput share, lowest
  // pacing share, lowest cwnd in BDPs].
  const cases = [[0.01, 0.7, 0.3, 0.15], [0.02, 0.45, 0.15, 0.1]];
  for (const [loss, tput, pacing, cwnd] of cases) {
    await t.step(`random loss ${loss * 100} %: no collapse of cwnd or pacing`, () => {
      for (const seed of [7, 8, 9]) {
        const link = steadyLink({ loss, seed });
        link.run(5000);
        const d0 = link.delivered;
        link.run(30_000, () => {
          const cc = link.cc;
          assert.ok(cc.pacingRate >= pacing * link.rate && cc.pacingRate <= 1.3 * link.rate);
          assert.ok(cc.cwnd >= cwnd * link.bdp && cc.cwnd <= 3.5 * link.bdp, `${cc.cwnd}`);
        });
        const got = (link.delivered - d0) / 25_000 / link.rate;
        assert.ok(got >= tput, `seed ${seed}: throughput ${got.toFixed(2)} of the link`);
        assert.equal(link.timeouts, 0);
      }
    });
  }

  await t.step("without the loss response (BBRv1-like) random loss costs little", () => {
    for (const loss of [0.02, 0.05]) {
      const link = steadyLink({ loss, bbr: { lossResponse: false } });
      link.run(5000);
      const d0 = link.delivered;
      link.run(25_000);
      const got = (link.delivered - d0) / 20_000 / link.rate;
      assert.ok(got >= 0.85, `loss ${loss}: throughput ${got.toFixed(2)}`);
      assert.equal(link.cc.inflightLongterm, Infinity);
      assert.equal(link.cc.bwShortterm, Infinity);
    }
  });

  await t.step("a shallow buffer (0.25 BDP) sees little sustained loss", () => {
    const link = steadyLink({ buffer: 10_000 });
    link.run(10_000);
    const [d0, s0, x0] = [link.delivered, link.sent, link.dropped];
    link.run(30_000);
    const lossRate = (link.dropped - x0) / (link.sent - s0);
    assert.ok(lossRate <= 0.01, `loss ${lossRate}`);
    assert.ok((link.delivered - d0) / 20_000 >= 0.9 * link.rate);
    assert.ok(link.cc.inflightLongterm < Infinity, "losses in Startup/UP set inflight_longterm");
  });

  await t.step("loss above 2 % in ProbeBW_UP sets inflight_longterm and goes DOWN", () => {
    const link = steadyLink();
    toProbeBw(link);
    link.runUntil((tick) => tick.state === "probe_bw_up", 5000);
    const cwnd = link.cc.cwnd;
    let maxTx = 0;
    link.loss = 0.1;
    const down = link.runUntil((tick) => tick.state !== "probe_bw_up", 500, (tick) => {
      maxTx = Math.max(maxTx, tick.rs.txInFlight);
    });
    assert.equal(down.state, "probe_bw_down");
    const ilt = link.cc.inflightLongterm;
    assert.ok(ilt <= maxTx && ilt >= 0.7 * Math.min(link.cc.bdp, cwnd) - 1, `${ilt}`);
    assert.ok(down.rs.lost > 0.02 * down.rs.txInFlight);
    assert.ok(link.cc.cwnd <= ilt, "cwnd is cut to inflight_longterm");
    // After the loss stops, cwnd respects the bound (with 15 % headroom in
    // CRUISE), and the next probe is precautionary: UP → DOWN → REFILL.
    link.loss = 0;
    const states: BbrState[] = [];
    link.run(link.now + 6000, (tick) => {
      const cc = link.cc;
      if (states.at(-1) !== tick.state) states.push(tick.state);
      if (tick.state === "probe_bw_cruise") {
        const bound = Math.max(
          cc.inflightLongterm - Math.max(MSS, 0.15 * cc.inflightLongterm),
          4 * MSS,
        );
        assert.ok(cc.cwnd <= bound + 1e-6, `cruise cwnd ${cc.cwnd} > ${bound}`);
      } else if (tick.state !== "probe_rtt") {
        assert.ok(cc.cwnd <= Math.max(cc.inflightLongterm, 4 * MSS) + 1e-6);
      }
    });
    const seq = states.join(" ");
    assert.ok(seq.includes("probe_bw_up probe_bw_down probe_bw_refill"), seq);
    assert.ok(link.cc.inflightLongterm > ilt, "inflight_longterm grows back in UP");
  });

  await t.step("the path's own steady loss does not ratchet the short-term model down", () => {
    // Every round loses ~5 %, so each delivers less than was paced; taken as
    // congestion, bw_shortterm would follow the delivery rate down round
    // after round until REFILL.
    const link = steadyLink({ loss: 0.05 });
    toProbeBw(link);
    link.run(link.now + 6000); // the background estimate learns the loss
    assert.ok(link.cc.backgroundLoss > 0.03, `background ${link.cc.backgroundLoss}`);
    let low = Infinity;
    link.run(link.now + 4000, (tick) => {
      if (tick.state === "probe_bw_cruise") low = Math.min(low, link.cc.bw);
    });
    assert.ok(low !== Infinity, "cruised");
    assert.ok(low >= 0.8 * link.rate, `bw fell to ${low} of ${link.rate}`);
  });

  await t.step(
    "loss while cruising cuts bw_shortterm by at most 30 % a round; REFILL resets it",
    () => {
      const link = steadyLink();
      toProbeBw(link);
      link.runUntil((tick) => tick.state === "probe_bw_cruise" && link.now > 1000, 5000);
      link.loss = 0.05;
      let prev = Infinity;
      let cuts = 0;
      link.runUntil((tick) => tick.state === "probe_bw_refill", 5000, () => {
        const lo = link.cc.bwShortterm;
        if (lo !== prev && prev !== Infinity && link.cc.state === "probe_bw_cruise") {
          assert.ok(lo >= 0.7 * prev - 1e-9, `${prev} → ${lo}`);
          cuts++;
        }
        prev = lo;
        assert.ok(link.cc.bw <= link.cc.bwShortterm);
      });
      assert.ok(cuts >= 2, `cuts: ${cuts}`);
      assert.equal(link.cc.bwShortterm, Infinity);
      assert.equal(link.cc.inflightShortterm, Infinity);
    },
  );

  await t.step("congestive loss (a shallow buffer overflowing) ends Startup", () => {
    // A buffer of a quarter BDP overflows while Startup still doubles.
    const link = new Link({ rate: 10_000, delay: 40, buffer: 100_000 });
    const exit = link.runUntil((tick) => tick.state !== "startup", 5000);
    assert.equal(exit.state, "drain");
    assert.ok(link.dropped > 0);
    assert.ok(link.cc.inflightLongterm < Infinity, "Startup ended on loss");
    assert.ok(link.cc.inflightLongterm >= link.cc.bdp);
  });

  await t.step("random loss alone does not end Startup early (background loss)", () => {
    // 10 % loss with no queue: the first rounds, at min_rtt, teach the
    // background estimate the path's loss, so Startup runs to the plateau.
    const link = new Link({ rate: 10_000, delay: 40, loss: 0.1 });
    const exit = link.runUntil((tick) => tick.state !== "startup", 5000);
    assert.equal(exit.state, "drain");
    assert.ok(link.cc.maxBw >= 0.8 * link.rate, `max_bw ${link.cc.maxBw}`);
    assert.ok(
      Math.abs(link.cc.backgroundLoss - 0.1) < 0.04,
      `background ${link.cc.backgroundLoss}`,
    );
  });
});

/** Feeds hand-made ACKs to a controller, keeping the delivery counters consistent. */
class Acker {
  delivered: number;
  constructor(readonly cc: Bbr, delivered = 0, public now = 0) {
    this.delivered = delivered;
  }
  /** One ACK of `acked` bytes for data sent when `sentAt` bytes had been delivered. */
  ack(fields: Partial<RateSample> & { sentAt?: number }): RateSample {
    const acked = fields.ackedSacked ?? MSS;
    const prior = fields.sentAt ?? this.delivered;
    this.delivered += acked;
    this.now += 1;
    const rs = sample({
      ackedSacked: acked,
      totalDelivered: this.delivered,
      priorDelivered: prior,
      delivered: this.delivered - prior,
      ...fields,
    });
    this.cc.onRateSample(rs, this.now);
    return rs;
  }
}

Deno.test("Bbr: loss recovery and timeouts", async (t) => {
  await t.step("fast recovery does not cut cwnd or pacing; the end restores cwnd", () => {
    const link = steadyLink();
    toProbeBw(link);
    link.run(link.now + 1000);
    const cc = link.cc;
    const [cwnd, pacing] = [cc.cwnd, cc.pacingRate];
    cc.onCongestion(link.inflight, link.now);
    assert.equal(cc.cwnd, cwnd, "no multiplicative decrease");
    assert.equal(cc.pacingRate, pacing);
    assert.equal(cc.inPacketConservation, false);
    cc.cwnd = 10 * MSS; // say the ACKs in recovery brought it down
    cc.onRecoveryEnd(link.now);
    assert.equal(cc.cwnd, cwnd, "RestoreCwnd");
  });

  await t.step("packet conservation (option): the first round sends what is ACKed", () => {
    const cc = new Bbr(MSS, { packetConservation: true });
    const a = new Acker(cc);
    for (let i = 0; i < 30; i++) {
      a.ack({ inFlight: 20 * MSS, priorInFlight: 21 * MSS, deliveryRate: 100, rtt: 40 });
    }
    const before = cc.cwnd;
    assert.ok(before > 30 * MSS, `Startup cwnd ${before}`);
    const start = a.delivered;
    cc.onCongestion(18 * MSS, a.now);
    assert.equal(cc.cwnd, 19 * MSS, "flight + 1 SMSS");
    assert.equal(cc.inPacketConservation, true);
    // First ACK of the round: cwnd = inflight + newly ACKed.
    a.ack({ sentAt: start - 15 * MSS, inFlight: 17 * MSS, deliveryRate: 100, rtt: 40 });
    assert.equal(cc.cwnd, 18 * MSS);
    // Newly lost data is taken off, but never below inflight + ACKed.
    a.ack({
      sentAt: start - 14 * MSS,
      inFlight: 15 * MSS,
      newlyLost: 2 * MSS,
      deliveryRate: 100,
      rtt: 40,
    });
    assert.equal(cc.cwnd, 16 * MSS);
    a.ack({ sentAt: start - 13 * MSS, inFlight: 15 * MSS, deliveryRate: 100, rtt: 40 });
    assert.equal(cc.cwnd, 16 * MSS, "no growth during the conservation round");
    // A packet sent after recovery started is ACKed: the round is over.
    a.ack({ sentAt: start + MSS, inFlight: 15 * MSS, deliveryRate: 100, rtt: 40 });
    assert.equal(cc.inPacketConservation, false);
    assert.equal(cc.cwnd, 17 * MSS, "grows by the ACKed data again");
    cc.onRecoveryEnd(a.now);
    assert.equal(cc.cwnd, before, "RestoreCwnd");
  });

  await t.step("RTO: cwnd 1 SMSS, back to 4 SMSS and up per ACK, restored at the end", () => {
    const link = steadyLink({ bbr: { lossResponse: false } });
    toProbeBw(link);
    link.run(link.now + 1000);
    const cc = link.cc;
    const [cwnd, pacing] = [cc.cwnd, cc.pacingRate];
    cc.onTimeout(link.inflight, link.now);
    assert.equal(cc.cwnd, MSS);
    assert.equal(cc.pacingRate, pacing);
    const a = new Acker(cc, link.delivered, link.now);
    a.ack({ inFlight: 0, priorInFlight: MSS, deliveryRate: 900, rtt: 41 });
    assert.equal(cc.cwnd, 4 * MSS, "the minimum pipe");
    a.ack({ inFlight: 0, priorInFlight: MSS, deliveryRate: 900, rtt: 41 });
    assert.equal(cc.cwnd, 5 * MSS, "+ the ACKed data");
    cc.onRecoveryEnd(a.now);
    assert.equal(cc.cwnd, cwnd, "RestoreCwnd");
  });

  await t.step("the simulated link survives an outage through RTOs", () => {
    const link = steadyLink();
    toProbeBw(link);
    link.run(link.now + 1000);
    link.loss = 1;
    const outage = link.now;
    link.run(outage + 1000);
    assert.ok(link.timeouts >= 2, `RTOs: ${link.timeouts}`);
    assert.equal(link.cc.cwnd, MSS);
    link.loss = 0;
    link.run(link.now + 1000);
    assert.ok(link.cc.cwnd >= 4 * MSS);
    const d0 = link.delivered;
    link.run(link.now + 5000);
    const tput = (link.delivered - d0) / 5000;
    assert.ok(tput >= 0.8 * link.rate, `throughput after the outage ${tput}`);
  });

  await t.step("a spurious recovery is undone: inflight_longterm and the probe return", () => {
    const link = steadyLink();
    toProbeBw(link);
    link.runUntil((tick) => tick.state === "probe_bw_up", 5000);
    link.loss = 0.1;
    link.runUntil((tick) => tick.state === "probe_bw_down", 500);
    assert.ok(link.cc.inflightLongterm < Infinity);
    link.cc.onSpuriousLoss(link.now);
    assert.equal(link.cc.inflightLongterm, Infinity);
    assert.equal(link.cc.state, "probe_bw_refill", "the bandwidth probe restarts");
  });

  await t.step("a spurious Startup exit returns to Startup", () => {
    const link = new Link({ rate: 10_000, delay: 40, buffer: 100_000 });
    link.runUntil((tick) => tick.state !== "startup", 5000);
    assert.equal(link.cc.fullBwReached, true);
    link.cc.onSpuriousLoss(link.now);
    assert.equal(link.cc.state, "startup");
    assert.equal(link.cc.fullBwReached, false);
  });
});

Deno.test("Bbr: restart from idle and determinism", async (t) => {
  await t.step("an idle restart paces at bw and skips the due ProbeRTT", () => {
    for (const idle of [true, false]) {
      const link = steadyLink();
      toProbeBw(link);
      link.run(2000);
      const cc = link.cc;
      // The application stops; 6 s later it sends again.
      const now = link.now + 6000;
      if (idle) {
        cc.onIdleRestart(now);
        assert.ok(Math.abs(cc.pacingRate - 0.99 * cc.bw) < 1e-9);
      }
      const a = new Acker(cc, link.delivered + link.inflight, now);
      a.ack({ inFlight: 0, priorInFlight: MSS, deliveryRate: 20, rtt: 41, isAppLimited: true });
      assert.equal(cc.state === "probe_rtt", !idle, `idle restart ${idle}: ${cc.state}`);
    }
  });

  await t.step("the same inputs give the same run; the random source is injectable", () => {
    const trace = (options?: BbrOptions) => {
      const link = steadyLink({ loss: 0.01, bbr: options });
      const out: string[] = [];
      link.run(12_000, (tick) => out.push(`${tick.state}:${link.cc.cwnd}:${link.cc.pacingRate}`));
      return out.join(",");
    };
    assert.equal(trace(), trace());
    assert.equal(trace({ seed: 9 }), trace({ seed: 9 }));
    assert.notEqual(trace(), trace({ random: () => 0.999 }));
  });
});

Deno.test("Bbr: cases from the draft's test appendix (appendix A)", async (t) => {
  await t.step("Drain ends after 3 rounds even if inflight stays above the BDP", () => {
    const cc = new Bbr(MSS);
    const a = new Acker(cc);
    const ack = () =>
      a.ack({ inFlight: 100 * MSS, priorInFlight: 100 * MSS, deliveryRate: 100, rtt: 40 });
    // Every ACK here ends a round; the rate stops growing: 3 rounds to Drain.
    for (let i = 0; i < 4; i++) ack();
    assert.equal(cc.state, "drain");
    const round = cc.roundCount;
    for (let i = 0; i < 3; i++) {
      ack();
      assert.equal(cc.state, "drain", `round ${cc.roundCount - round}`);
    }
    ack();
    assert.ok(cc.state.startsWith("probe_bw"), cc.state);
    assert.equal(cc.roundCount - round, 4);
  });

  await t.step("ProbeRTT during a long Startup returns to Startup", () => {
    const cc = new Bbr(MSS);
    const a = new Acker(cc);
    let rate = 10;
    a.ack({ inFlight: 10 * MSS, deliveryRate: rate, rtt: 40 });
    while (cc.state === "startup") {
      a.now += 100;
      rate *= 1.3; // still growing by more than 25 % a round
      a.ack({ inFlight: 10 * MSS, deliveryRate: rate, rtt: 50 });
      assert.ok(a.now < 6000);
    }
    assert.equal(cc.state, "probe_rtt");
    assert.ok(a.now > 5040);
    assert.equal(cc.fullBwReached, false);
    while (cc.state === "probe_rtt") {
      a.now += 50;
      a.ack({ inFlight: 2 * MSS, priorInFlight: 3 * MSS, deliveryRate: rate, rtt: 40 });
      assert.ok(a.now < 7000);
    }
    assert.equal(cc.state, "startup");
  });

  await t.step("a BDP below one segment keeps cwnd at 4 segments and still fills the link", () => {
    const link = new Link({ rate: 10, delay: 40 }); // RTT 140 ms, BDP 1.4 segments
    link.run(2000);
    const d0 = link.delivered;
    link.run(30_000, () => assert.ok(link.cc.cwnd >= 4 * MSS));
    assert.ok(link.cc.state.startsWith("probe"), link.cc.state);
    const tput = (link.delivered - d0) / 28_000;
    assert.ok(tput >= 0.9 * link.rate, `throughput ${tput}`);
    assert.ok(link.cc.pacingRate <= 1.3 * link.rate, `pacing ${link.cc.pacingRate}`);
  });

  await t.step(
    "aggregated ACKs: extra_acked grows cwnd beyond 2 BDP and keeps the link full",
    () => {
      const link = steadyLink({ ackBatch: 20 }); // ACKs every 20 ms, half an RTT
      toProbeBw(link);
      link.run(link.now + 2000);
      let over = 0;
      const d0 = link.delivered, t0 = link.now;
      link.run(t0 + 10_000, (tick) => {
        const cc = link.cc;
        if (tick.state === "probe_bw_cruise" && cc.cwnd > 2 * cc.bdp + MSS) over++;
      });
      assert.ok(link.cc.extraAcked >= 10 * MSS, `extra_acked ${link.cc.extraAcked}`);
      assert.ok(over > 0, "cwnd above 2 BDP in CRUISE");
      const tput = (link.delivered - d0) / 10_000;
      assert.ok(tput >= 0.9 * link.rate, `throughput ${tput}`);
    },
  );

  await t.step("a 10× rate increase is found within a few probes", () => {
    const link = steadyLink();
    toProbeBw(link);
    link.run(link.now + 2000);
    link.rate = 10_000;
    const from = link.now;
    // Found in the next ProbeBW_UP (at most ~3 s away) after a few rounds.
    link.runUntil(() => link.cc.maxBw >= 0.9 * 10_000, 4000);
    assert.ok(link.now - from < 4000);
  });
});

Deno.test("Bbr: sharing a bottleneck", async (t) => {
  /** Shares of the link over 30 s, the second flow starting at 2 s. */
  const shares = (other: CongestionControl, buffer: number) => {
    const link = new Link({ rate: 1000, delay: 40, buffer }, [other]);
    link.flows[1].appRate = 0;
    link.run(2000);
    link.flows[1].appRate = Infinity;
    link.run(10_000);
    const d = link.flows.map((f) => f.delivered);
    link.run(40_000);
    return link.flows.map((f, i) => (f.delivered - d[i]) / 30_000 / link.rate);
  };

  await t.step("two BBR flows converge to similar shares and fill the link", () => {
    for (const buffer of [20_000, 41_000, Infinity]) {
      const [a, b] = shares(new Bbr(MSS, { seed: 5 }), buffer);
      assert.ok(a >= 0.35 && b >= 0.35, `buffer ${buffer}: ${a.toFixed(2)} / ${b.toFixed(2)}`);
      assert.ok(a + b >= 0.9, `buffer ${buffer}: utilization ${(a + b).toFixed(2)}`);
    }
  });

  await t.step("BBR does not starve a CUBIC flow (buffers of 0.5–2 BDP)", () => {
    for (const buffer of [20_000, 41_000, 82_000]) {
      const [bbr, cubic] = shares(new Cubic(MSS), buffer);
      assert.ok(cubic >= 0.3, `buffer ${buffer}: CUBIC ${cubic.toFixed(2)}, BBR ${bbr.toFixed(2)}`);
      assert.ok(bbr >= 0.2, `buffer ${buffer}: BBR ${bbr.toFixed(2)}`);
      assert.ok(bbr + cubic >= 0.9);
    }
  });
});
