/**
 * BBR congestion control, version 3 (draft-ietf-ccwg-bbr-06, "BBR Congestion
 * Control"; the § numbers below are that revision's). A model-based controller:
 * it estimates the bottleneck bandwidth (a windowed maximum of delivery-rate
 * samples) and the round-trip propagation time (a windowed minimum of RTT
 * samples), and from that model sets a pacing rate and a congestion window.
 * Rates are bytes per millisecond, volumes bytes, times monotonic ms.
 *
 * How the connection calls it (everything through {@linkcode CongestionControl}
 * except the two optional events):
 * - {@linkcode Bbr.onRateSample} for every ACK that newly ACKed or SACKed
 *   data, after loss marking: the draft's UpdateOnACK(). Used fields:
 *   `ackedSacked`, `newlyLost`, `priorInFlight`, `inFlight`,
 *   `totalDelivered`, `priorDelivered` (-1: no sample), `delivered`, `lost`,
 *   `txInFlight`, `deliveryRate` (0: not valid), `rtt` (-1: none),
 *   `isAppLimited`. Read `cwnd`, `pacingRate` and `sendQuantum` afterwards.
 * - {@linkcode Bbr.onCongestion} when fast recovery starts (best before that
 *   ACK's sample), with the bytes in flight after loss marking;
 *   {@linkcode Bbr.onTimeout} on an RTO after marking everything lost;
 *   {@linkcode Bbr.onRecoveryEnd} when either kind of recovery is over.
 * - {@linkcode Bbr.onAck} may be called or not: it only takes the first
 *   smoothed RTT for the initial pacing rate (a sample's `rtt` does too).
 * - Optional: {@linkcode Bbr.onSpuriousLoss} when DSACK/timestamps show a
 *   recovery was spurious, {@linkcode Bbr.onIdleRestart} before sending
 *   into an empty pipe after the application had run dry.
 *
 * Implemented from the draft:
 * - Round counting by P.delivered (§5.5.1), `max_bw` as the maximum over the
 *   current and previous ProbeBW cycle (§5.5.3–5.5.6), app-limited samples
 *   used only when they raise `max_bw`.
 * - `min_rtt` over 10 s and `probe_rtt_min_delay` over 5 s integrated with
 *   ProbeRTT (§5.3.4): cwnd capped at max(0.5·BDP, 4·SMSS) for at least
 *   200 ms and one round, then back to ProbeBW_CRUISE (or Startup).
 * - The state machine Startup → Drain → ProbeBW (DOWN, CRUISE, REFILL, UP)
 *   ⇄ ProbeRTT with the gains of §5.6.1; full-pipe detection by bandwidth
 *   growth below 25 % for 3 non-app-limited rounds (§5.3.1.2) and by loss in
 *   Startup (§5.3.1.3: in recovery for a round, loss rate above 2 %, at least
 *   6 loss events in the round; any loss without SACK); Drain exit at
 *   inflight ≤ BDP or after 3 rounds; ProbeBW timing by the randomized
 *   2–3 s wall clock and the Reno-coexistence round bound (min(BDP in
 *   segments, 62–63) rounds); precautionary bandwidth probing.
 * - The loss response: `inflight_longterm` (formerly inflight_hi) set from
 *   `tx_in_flight` when a bandwidth probe sees a loss rate above
 *   `LossThresh` = 2 % (RS.lost / RS.tx_in_flight), with the β = 0.7 floor,
 *   raised again in ProbeBW_UP by 1, 2, 4, … SMSS per round; the short-term
 *   model `bw_shortterm` / `inflight_shortterm` (formerly bw_lo /
 *   inflight_lo) cut once per round with loss to max(latest, 0.7·bound) when
 *   not probing, and reset in REFILL and on leaving ProbeRTT; the volume caps
 *   of §5.6.4.7 (headroom 15 % in CRUISE and ProbeRTT).
 * - Control parameters: pacing rate = gain · bw · 0.99 (never lowered before
 *   the pipe is full), initial pacing 2.77 · InitialCwnd / (SRTT or 1 ms);
 *   send quantum = pacing rate · 1 ms in [2·SMSS, 64 KB]; cwnd grown by the
 *   data ACKed up to max_inflight = cwnd_gain · BDP + extra_acked, with the
 *   TCP offload budget (3 send quanta), +2·SMSS in ProbeBW_UP and a floor
 *   of 4·SMSS (§5.6.4).
 * - The ACK-aggregation estimate `extra_acked` (§5.5.9): windowed maximum
 *   over 1 round in Startup, 10 rounds after.
 * - Loss recovery (§5.6.4.4): SaveCwnd on fast recovery and RTO, cwnd = 1
 *   SMSS on RTO, RestoreCwnd at the end of recovery. Packet conservation in
 *   the first round of fast recovery (cwnd = inflight + newly ACKed, less
 *   newly lost; from the earlier draft-cardwell-ccwg-bbr text and Linux
 *   BBRv1) is available but off by default
 *   ({@linkcode BbrOptions.packetConservation}): the current draft dropped
 *   it, and with random loss it keeps cwnd from growing (every round is a
 *   first round of recovery), which also drags `inflight_longterm` down.
 * - Undo of a spurious recovery (§5.5.11) through the optional
 *   {@linkcode Bbr.onSpuriousLoss}, restart from idle (§5.4) through the
 *   optional {@linkcode Bbr.onIdleRestart}.
 *
 * Adapted, because the connection gives per-ACK samples only:
 * - The loss-rate check runs per ACK on RS.lost / RS.tx_in_flight of the
 *   sample (as in draft-cardwell-ccwg-bbr), not per lost packet, so the
 *   InflightAtLoss() refinement of `inflight_longterm` is not done.
 * - C.is_cwnd_limited is inferred: a round is cwnd-limited when a
 *   non-app-limited ACK found less than one SMSS of window free.
 * - ProbeRTT's MarkConnectionAppLimited() is done internally: samples of
 *   data sent while in ProbeRTT count as app-limited.
 * - The precautionary exit from ProbeBW_UP compares the inflight before the
 *   ACK with `inflight_longterm` (as Linux BBRv3 does), since after the ACK
 *   a cwnd-limited flow is always a little below it.
 *
 * Our deviations, so that a link's random loss (Wi-Fi, cellular) is not
 * taken for congestion, as Linux's BBRv1 does not take it, while loss that
 * this flow's queue causes still is:
 * - A background-loss estimate ({@linkcode Bbr.backgroundLoss}): the loss
 *   rate of rounds that did not press on the bottleneck (ProbeBW DOWN and
 *   CRUISE, Startup rounds still growing by 25 %); the first 8 of those at
 *   min_rtt are averaged plainly, then an EWMA with gain 1/8.
 * - The loss threshold of IsInflightTooHigh (bandwidth probes, Startup exit)
 *   is LossThresh above that background plus two standard deviations of
 *   random loss over the flight.
 * - The short-term model is cut only in rounds whose loss rate exceeds the
 *   background plus two standard deviations (with no background loss, any
 *   loss, as in the draft).
 * - Full-pipe detection compares `max_bw` with the baseline, as Linux's BBR
 *   does, not the round-start sample RS.delivery_rate: on a lossy path one
 *   sample is often far below what its round delivered, and three such
 *   rounds ended Startup at a tenth of the path's rate.
 *
 * Not implemented: an ECN response (the draft specifies none; it only
 * requires CE marks to count as congestion if we send ECT, which we do
 * not), QUIC offload budgets, per-lost-packet processing (see above).
 *
 * @module
 */

import { type CongestionControl, initialWindow, type RateSample } from "./congestion.ts";
import { TwoCycleMaxFilter, WindowedMaxFilter } from "./windowed_filter.ts";

/** The states of BBR's state machine (draft-ietf-ccwg-bbr §5.1). */
export type BbrState =
  | "startup"
  | "drain"
  | "probe_bw_down"
  | "probe_bw_cruise"
  | "probe_bw_refill"
  | "probe_bw_up"
  | "probe_rtt";

/** Tunables of {@linkcode Bbr}; every default is the draft's value. */
export interface BbrOptions {
  /**
   * Uniform random numbers in [0, 1) for the ProbeBW wait randomization.
   * Default: a small PRNG seeded with {@linkcode BbrOptions.seed}.
   */
  random?: () => number;
  /** Seed of the default PRNG (default 1). */
  seed?: number;
  /** Initial congestion window in bytes (default RFC 6928's, {@linkcode initialWindow}). */
  initialCwnd?: number;
  /** Smoothed RTT already known (e.g. from the handshake), ms; sets the initial pacing rate. */
  srtt?: number;
  /** Highest tolerated per-round loss rate while probing (default 0.02). */
  lossThresh?: number;
  /**
   * React to loss with the BBRv3 bounds (`inflight_longterm`, the short-term
   * model, Startup exit on loss), above the path's learned background loss
   * (see the module documentation). Default true. False keeps only the model
   * (close to BBRv1, Linux's `bbr`, which ignores loss) but also loses
   * BBRv3's protection of shallow buffers.
   */
  lossResponse?: boolean;
  /**
   * Packet conservation in the first round of fast recovery, as in
   * draft-cardwell-ccwg-bbr and Linux BBRv1 (default false, as the current
   * draft).
   */
  packetConservation?: boolean;
  /** The connection uses SACK and can see several losses per round (default true). */
  selectiveAcks?: boolean;
}

/** Rounds averaged by the background-loss estimate (EWMA gain 1/8). */
const BACKGROUND_LOSS_ROUNDS = 8;
/** A round whose RTT samples exceeded min_rtt by more than this share met a queue. */
const QUEUE_FREE_RTT = 1 / 16;
/** Upper bound of the background-loss estimate (a path losing more is broken anyway). */
const MAX_BACKGROUND_LOSS = 0.2;
/** Startup pacing gain 4·ln 2 ≈ 2.77: the rate doubles each round (§2.5). */
const STARTUP_PACING_GAIN = 2.77;
/** Drain pacing gain (§5.3.2). */
const DRAIN_PACING_GAIN = 0.5;
/** cwnd gain in every state but ProbeBW_UP and ProbeRTT (§2.6). */
const DEFAULT_CWND_GAIN = 2;
/** ProbeBW_DOWN pacing gain (§5.3.3.1). */
const PROBE_DOWN_PACING_GAIN = 0.9;
/** ProbeBW_UP pacing and cwnd gains (§5.3.3.4). */
const PROBE_UP_PACING_GAIN = 1.25;
const PROBE_UP_CWND_GAIN = 2.25;
/** Pace 1 % below the estimated bandwidth (§5.6.2). */
const PACING_MARGIN = 0.01;
/** Multiplicative decrease per round with loss (§2.8). */
const BETA = 0.7;
/** Share of inflight_longterm left free for other flows (§2.8). */
const HEADROOM = 0.15;
/** Minimum cwnd in segments (§5.6.4.3). */
const MIN_PIPE_SEGMENTS = 4;
/** ProbeRTT: cwnd gain, minimum duration and interval (§2.16.2). */
const PROBE_RTT_CWND_GAIN = 0.5;
const PROBE_RTT_DURATION = 200;
const PROBE_RTT_INTERVAL = 5000;
/** min_rtt filter length (§2.16.1). */
const MIN_RTT_FILTER_LEN = 10_000;
/** extra_acked filter length in rounds after Startup (§2.12). */
const EXTRA_ACKED_FILTER_LEN = 10;
/** Full-pipe estimator: growth below 25 % for 3 rounds (§5.3.1.2). */
const FULL_BW_GROWTH = 1.25;
const FULL_BW_ROUNDS = 3;
/** Loss events in a round needed to leave Startup on loss (§5.3.1.3). */
const STARTUP_FULL_LOSS_COUNT = 6;
/** Largest send quantum (§5.6.3). */
const MAX_SEND_QUANTUM = 65536;
/** Reno-coexistence bound on rounds between bandwidth probes (§5.3.3.8.2). */
const RENO_MAX_ROUNDS = 63;

/** What the ACKs currently say about bandwidth probing (§2.14). */
type AckPhase = "init" | "refilling" | "probe_starting" | "probe_feedback" | "probe_stopping";

/** A small seeded PRNG (mulberry32) returning floats in [0, 1). */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function isProbeBw(state: BbrState): boolean {
  return state === "probe_bw_down" || state === "probe_bw_cruise" ||
    state === "probe_bw_refill" || state === "probe_bw_up";
}

/**
 * BBRv3 (draft-ietf-ccwg-bbr). See the module documentation for what is
 * implemented and how the connection must call it.
 *
 * @example
 * ```ts
 * import { Bbr } from "./bbr.ts";
 * const cc = new Bbr(1460);
 * cc.onRateSample({
 *   ackedSacked: 1460, newlyLost: 0, priorInFlight: 14600, inFlight: 13140,
 *   totalDelivered: 1460, totalLost: 0, priorDelivered: 0, delivered: 1460,
 *   lost: 0, txInFlight: 14600, interval: 20, deliveryRate: 73, rtt: 20,
 *   isAppLimited: false,
 * }, 20);
 * console.log(cc.state, cc.cwnd, cc.pacingRate);
 * ```
 */
export class Bbr implements CongestionControl {
  /** Always "bbr". */
  readonly name: string = "bbr";
  /** Model-based: cwnd comes from the model, not from ssthresh/PRR. */
  readonly modelBased: boolean = true;
  /** Congestion window in bytes. */
  cwnd: number;
  /**
   * Unused by BBR; kept large while in Startup and set to the estimated BDP
   * when Startup ends, for code that compares cwnd with it.
   */
  ssthresh = 0x7fffffff;

  #mss: number;
  #initialCwnd: number;
  #initialCwndOption: number | undefined;
  readonly #random: () => number;
  readonly #lossThresh: number;
  readonly #lossResponse: boolean;
  readonly #conserve: boolean;
  readonly #sack: boolean;

  // Control parameters.
  #pacingRate = 0;
  #sendQuantum = 0;
  #state: BbrState = "startup";
  #pacingGain = STARTUP_PACING_GAIN;
  #cwndGain = DEFAULT_CWND_GAIN;

  // The sample of the ACK being processed, and connection state it carries.
  #rs!: RateSample;
  #rsAppLimited = false;
  #now = 0;
  #delivered = 0;
  #inflight = 0;

  // Round counting.
  #roundCount = 0;
  #roundStart = false;
  #bgLoss = 0;
  #bgRounds = 0;
  #bgLost = 0;
  #bgSent = 0;
  #roundMaxRtt = 0;
  #roundLostStart = 0;
  #roundDeliveredStart = 0;
  #nextRoundDelivered = 0;

  // Bandwidth model.
  #maxBwFilter = new TwoCycleMaxFilter();
  #maxBw = 0;
  #bw = 0;
  #bwShortterm = Infinity;
  #inflightShortterm = Infinity;
  #inflightLongterm = Infinity;
  #bwLatest = 0;
  #inflightLatest = 0;
  #lossRoundDelivered = 0;
  #lossRoundStart = false;
  #lossRoundLostStart = 0;
  #lossRoundDeliveredStart = 0;
  #isLossInRound = false;
  #lossEventsInRound = 0;

  // RTT model and ProbeRTT.
  #minRtt = Infinity;
  #minRttStamp = 0;
  #probeRttMinDelay = Infinity;
  #probeRttMinStamp = 0;
  #probeRttExpired = false;
  /** False until the first call with a time: BBRInit()'s stamps are taken then. */
  #clockStarted = false;
  #probeRttDoneStamp = -1;
  #probeRttRoundDone = false;
  #appLimitedFrom = -1;
  #appLimitedUntil = -1;
  #hasSeenRtt = false;
  #firstRttSeen = 0;
  #idleRestart = false;

  // ACK aggregation.
  #extraAckedFilter = new WindowedMaxFilter(1);
  #extraAcked = 0;
  #extraAckedIntervalStart = 0;
  #extraAckedDelivered = 0;

  // Full-pipe estimation.
  #fullBwReached = false;
  #fullBwNow = false;
  #fullBw = 0;
  #fullBwCount = 0;
  #drainStartRound = 0;

  // ProbeBW.
  #ackPhase: AckPhase = "init";
  #isBwProbeSample = false;
  #bwProbeUpAcked = 0;
  #probeUpAckedPerInc = Infinity;
  #bwProbeUpRounds = 0;
  #roundsSinceProbeUp = 0;
  #bwProbeWait = 0;
  #cycleStamp = 0;
  #prevProbeTooHigh = false;
  #prevProbePrecautionary = false;

  // Undo of a spurious recovery.
  #undoState: BbrState | null = null;
  #undoBwShortterm = 0;
  #undoInflightShortterm = 0;
  #undoInflightLongterm = 0;

  // Loss recovery and cwnd-limited tracking.
  #priorCwnd = 0;
  #inRecovery = false;
  #recoveryEntering = false;
  #recoveryStartDelivered = 0;
  #conservation = false;
  #conservationEnd = 0;
  #cwndLimitedThisRound = false;
  #cwndLimitedLastRound = false;

  /** A controller for a sender with MSS `mss` bytes, in Startup. */
  constructor(mss: number, options: BbrOptions = {}) {
    if (!(mss > 0)) throw new RangeError("The MSS must be positive");
    const lossThresh = options.lossThresh ?? 0.02;
    if (!(lossThresh > 0 && lossThresh < 1)) {
      throw new RangeError("The loss threshold must be between 0 and 1");
    }
    this.#mss = mss;
    this.#initialCwndOption = options.initialCwnd;
    this.#initialCwnd = options.initialCwnd ?? initialWindow(mss);
    this.cwnd = this.#initialCwnd;
    this.#random = options.random ?? seededRandom(options.seed ?? 1);
    this.#lossThresh = lossThresh;
    this.#lossResponse = options.lossResponse ?? true;
    this.#conserve = options.packetConservation ?? false;
    this.#sack = options.selectiveAcks ?? true;
    const srtt = options.srtt ?? 0;
    this.#initPacingRate(srtt);
    if (srtt > 0) {
      this.#hasSeenRtt = true;
      this.#firstRttSeen = srtt;
      this.#minRtt = srtt;
    }
    this.#setSendQuantum();
  }

  // ---- Read-only view of the model (for the connection's stats and tests).

  /** Pacing rate in bytes per ms; always positive. */
  get pacingRate(): number {
    return this.#pacingRate;
  }
  /** Largest burst to send at once, bytes (C.send_quantum, §5.6.3). */
  get sendQuantum(): number {
    return this.#sendQuantum;
  }
  /** Current state of the state machine. */
  get state(): BbrState {
    return this.#state;
  }
  /** Current pacing gain. */
  get pacingGain(): number {
    return this.#pacingGain;
  }
  /** Current cwnd gain. */
  get cwndGain(): number {
    return this.#cwndGain;
  }
  /** BBR.max_bw: windowed maximum delivery rate, bytes per ms (0 until a sample). */
  get maxBw(): number {
    return this.#maxBw;
  }
  /** BBR.bw = min(max_bw, bw_shortterm), bytes per ms. */
  get bw(): number {
    return this.#bw;
  }
  /** BBR.min_rtt in ms (Infinity until an RTT sample). */
  get minRtt(): number {
    return this.#minRtt;
  }
  /** Estimated BDP, bw · min_rtt, bytes (the initial cwnd until an RTT sample). */
  get bdp(): number {
    return this.#bdp();
  }
  /** BBR.inflight_longterm (inflight_hi), bytes; Infinity when unset. */
  get inflightLongterm(): number {
    return this.#inflightLongterm;
  }
  /** BBR.inflight_shortterm (inflight_lo), bytes; Infinity when unset. */
  get inflightShortterm(): number {
    return this.#inflightShortterm;
  }
  /** BBR.bw_shortterm (bw_lo), bytes per ms; Infinity when unset. */
  get bwShortterm(): number {
    return this.#bwShortterm;
  }
  /** BBR.extra_acked: recent ACK aggregation, bytes. */
  get extraAcked(): number {
    return this.#extraAcked;
  }
  /** Packet-timed rounds counted so far. */
  get roundCount(): number {
    return this.#roundCount;
  }
  /** True once the pipe has been estimated full (Startup has ended). */
  get fullBwReached(): boolean {
    return this.#fullBwReached;
  }
  /** True while the first round of fast recovery limits cwnd (packet conservation). */
  get inPacketConservation(): boolean {
    return this.#conservation;
  }

  // ---- CongestionControl.

  /** Sets the sender MSS; before any delivery also resets the initial window. */
  setMss(mss: number): void {
    if (!(mss > 0)) throw new RangeError("The MSS must be positive");
    this.#mss = mss;
    if (this.#delivered === 0 && this.#initialCwndOption === undefined) {
      this.#initialCwnd = initialWindow(mss);
      this.cwnd = this.#initialCwnd;
      if (this.#maxBw === 0) this.#initPacingRate(this.#firstRttSeen);
    }
  }

  /**
   * Bookkeeping only (BBR grows cwnd in {@linkcode onRateSample}): the first
   * known smoothed RTT `rtt` replaces the 1 ms of the initial pacing rate.
   */
  onAck(_acked: number, rtt: number, _now: number): void {
    if (!this.#hasSeenRtt && rtt > 0) this.#firstRtt(rtt);
  }

  /**
   * The per-ACK step (the draft's UpdateOnACK()): call it for every ACK that
   * newly acknowledged or SACKed data, after loss marking, with `now` the
   * monotonic time in ms.
   */
  onRateSample(rs: RateSample, now: number): void {
    if (!this.#clockStarted) this.#startClock(now);
    this.#rs = rs;
    this.#now = now;
    this.#delivered = rs.totalDelivered;
    this.#inflight = rs.inFlight;
    this.#rsAppLimited = rs.isAppLimited ||
      (this.#appLimitedUntil >= 0 && rs.priorDelivered >= this.#appLimitedFrom &&
        rs.priorDelivered <= this.#appLimitedUntil);
    if (!this.#hasSeenRtt && rs.rtt > 0) this.#firstRtt(rs.rtt);
    if (rs.rtt > this.#roundMaxRtt) this.#roundMaxRtt = rs.rtt;
    if (!rs.isAppLimited && rs.priorInFlight + this.#mss > this.cwnd) {
      this.#cwndLimitedThisRound = true;
    }
    if (rs.newlyLost > 0) {
      this.#noteLoss();
      if (this.#lossEventsInRound < 0xff) this.#lossEventsInRound++;
    }
    if (this.#recoveryEntering) this.#startRecoveryRound();
    // UpdateModelAndState()
    this.#updateLatestDeliverySignals();
    this.#updateCongestionSignals();
    this.#updateAckAggregation();
    this.#checkFullBwReached();
    this.#checkStartupDone();
    this.#checkDrainDone();
    this.#updateProbeBwCyclePhase();
    this.#updateMinRtt();
    this.#checkProbeRtt();
    this.#advanceLatestDeliverySignals();
    this.#boundBwForModel();
    // UpdateControlParameters()
    this.#setPacingRate(this.#pacingGain);
    this.#setSendQuantum();
    this.#setCwnd();
  }

  /**
   * Fast recovery entered (OnEnterFastRecovery): saves cwnd for the end of
   * recovery and, with packet conservation, limits cwnd to `flight` (bytes
   * in flight after loss marking) + 1 SMSS for the first round. No
   * multiplicative decrease: the loss response is in the model.
   */
  onCongestion(flight: number, _now: number): void {
    this.#enterRecovery();
    if (this.#conserve) {
      this.#conservation = true;
      this.cwnd = Math.max(flight + this.#mss, this.#mss);
    }
  }

  /**
   * Loss recovery (fast or RTO) ended: cwnd returns to the last known good
   * value (RestoreCwnd), within the model's current bounds.
   */
  onRecoveryEnd(_now: number): void {
    this.#endRecovery();
    this.#boundCwndForProbeRtt();
    this.#boundCwndForModel();
  }

  /**
   * The retransmission timer expired (OnEnterRTO): saves cwnd and sets it to
   * 1 SMSS (the connection has marked everything in flight lost, so this is
   * the draft's C.inflight + 1); it grows back per ACK and is restored at
   * {@linkcode onRecoveryEnd}.
   */
  onTimeout(_flight: number, _now: number): void {
    this.#enterRecovery();
    this.#noteLoss();
    this.#conservation = false;
    this.cwnd = this.#mss;
  }

  // ---- Optional events beyond CongestionControl.

  /**
   * Optional: the last loss recovery was spurious (DSACK, or an RTO undone
   * by timestamps). Restores cwnd and the model saved when it started
   * (HandleSpuriousLossDetection, §5.5.11.2) and ends recovery.
   */
  onSpuriousLoss(_now: number): void {
    this.#endRecovery();
    this.#isLossInRound = false;
    this.#resetFullBw();
    this.#bwShortterm = Math.max(this.#bwShortterm, this.#undoBwShortterm);
    this.#inflightShortterm = Math.max(this.#inflightShortterm, this.#undoInflightShortterm);
    this.#inflightLongterm = Math.max(this.#inflightLongterm, this.#undoInflightLongterm);
    if (this.#undoState === "startup" && this.#state !== "startup") {
      this.#fullBwReached = false;
      if (this.#state !== "probe_rtt") this.#enterStartup();
    } else if (this.#undoState === "probe_bw_up" && this.#state !== "probe_bw_up") {
      if (this.#state !== "probe_rtt") this.#startProbeBwRefill();
    }
    this.#undoState = null;
  }

  /**
   * Optional: call before sending when nothing is in flight and the sender
   * had been application-limited (HandleRestartFromIdle, §5.4). Paces at
   * exactly bw in ProbeBW, may end a finished ProbeRTT, and skips the next
   * ProbeRTT entry (the idle period drained the queue).
   */
  onIdleRestart(now: number): void {
    if (!this.#clockStarted) this.#startClock(now);
    this.#now = now;
    this.#idleRestart = true;
    this.#extraAckedIntervalStart = now;
    if (isProbeBw(this.#state)) this.#setPacingRate(1);
    else if (this.#state === "probe_rtt") this.#checkProbeRttDone();
  }

  // ---- Helpers on the model.

  #minPipeCwnd(): number {
    return MIN_PIPE_SEGMENTS * this.#mss;
  }

  #bdp(): number {
    return this.#minRtt === Infinity ? this.#initialCwnd : this.#bw * this.#minRtt;
  }

  /** BDPMultiple(): gain · BDP (the initial cwnd before an RTT sample). */
  #bdpMultiple(bw: number, gain: number): number {
    if (this.#minRtt === Infinity) return this.#initialCwnd;
    return gain * bw * this.#minRtt;
  }

  /** QuantizationBudget(): room for offload quanta and the minimum pipe. */
  #quantizationBudget(cap: number): number {
    const offloadBudget = 3 * this.#sendQuantum;
    cap = Math.max(cap, offloadBudget, this.#minPipeCwnd());
    if (this.#state === "probe_bw_up") cap += 2 * this.#mss;
    return cap;
  }

  /** Inflight(bw, gain). */
  #inflightFor(bw: number, gain: number): number {
    return this.#quantizationBudget(this.#bdpMultiple(bw, gain));
  }

  /** TargetInflight(): our BDP, unless congestion cut cwnd. */
  #targetInflight(): number {
    return Math.min(this.#bdp(), this.cwnd);
  }

  #isCwndLimited(): boolean {
    return this.#cwndLimitedThisRound || this.#cwndLimitedLastRound;
  }

  #isProbingBw(): boolean {
    const s = this.#state;
    return s === "startup" || s === "probe_bw_refill" || s === "probe_bw_up";
  }

  #firstRtt(rtt: number): void {
    this.#hasSeenRtt = true;
    this.#firstRttSeen = rtt;
    if (this.#maxBw === 0) this.#initPacingRate(rtt);
  }

  #initPacingRate(srtt: number): void {
    const nominal = this.#initialCwnd / (srtt > 0 ? srtt : 1);
    this.#pacingRate = STARTUP_PACING_GAIN * nominal;
  }

  // ---- Rounds and the bandwidth model.

  #startRound(): void {
    this.#nextRoundDelivered = this.#delivered;
  }

  #updateRound(): void {
    const rs = this.#rs;
    if (rs.priorDelivered >= 0 && rs.priorDelivered >= this.#nextRoundDelivered) {
      this.#updateBackgroundLoss();
      this.#startRound();
      this.#roundCount++;
      this.#roundsSinceProbeUp++;
      this.#roundStart = true;
      this.#cwndLimitedLastRound = this.#cwndLimitedThisRound;
      this.#cwndLimitedThisRound = false;
    } else {
      this.#roundStart = false;
    }
  }

  #updateMaxBw(): void {
    this.#updateRound();
    const rate = this.#rs.deliveryRate;
    if (rate > 0 && (rate >= this.#maxBw || !this.#rsAppLimited)) {
      this.#maxBw = this.#maxBwFilter.update(rate);
    }
  }

  #updateLatestDeliverySignals(): void {
    const rs = this.#rs;
    this.#lossRoundStart = false;
    this.#bwLatest = Math.max(this.#bwLatest, rs.deliveryRate);
    this.#inflightLatest = Math.max(this.#inflightLatest, rs.delivered);
    if (rs.priorDelivered >= 0 && rs.priorDelivered >= this.#lossRoundDelivered) {
      this.#lossRoundDelivered = this.#delivered;
      this.#lossRoundStart = true;
    }
  }

  #advanceLatestDeliverySignals(): void {
    if (this.#lossRoundStart) {
      this.#bwLatest = this.#rs.deliveryRate;
      this.#inflightLatest = this.#rs.delivered;
    }
  }

  #resetCongestionSignals(): void {
    this.#isLossInRound = false;
    this.#bwLatest = 0;
    this.#inflightLatest = 0;
  }

  #updateCongestionSignals(): void {
    this.#updateMaxBw();
    if (!this.#lossRoundStart) return;
    const congested = this.#lossRoundCongested();
    if (this.#lossResponse && congested) this.#adaptLowerBoundsFromCongestion();
    this.#isLossInRound = false;
  }

  /**
   * At a loss round's end: did it lose more than the path's background loss
   * explains? Our deviation from the draft, which cuts the short-term model
   * in every round with any loss: with random loss of p, a round delivers
   * (1 − p) of what was sent, so `bw_latest` is always below the pacing rate
   * and the cut ratchets the model down by p per round (5 % loss halved the
   * rate within 15 rounds in simulation). A round counts as congested when
   * its loss rate is above the background estimate plus two standard
   * deviations of random loss over that round; with no background loss
   * (a clean path) any loss does, as in the draft.
   */
  #lossRoundCongested(): boolean {
    const rs = this.#rs;
    const lost = rs.totalLost - this.#lossRoundLostStart;
    const delivered = rs.totalDelivered - this.#lossRoundDeliveredStart;
    this.#lossRoundLostStart = rs.totalLost;
    this.#lossRoundDeliveredStart = rs.totalDelivered;
    if (!this.#isLossInRound) return false;
    if (lost <= 0) return true; // a loss seen only as an event (RTO): take it
    return lost / (lost + delivered) > this.#randomLossBound(lost + delivered);
  }

  /**
   * The loss rate that random loss at the background rate stays below over
   * `bytes` (95 %): the background plus two standard deviations,
   * √(p(1−p)/n) for n packets.
   */
  #randomLossBound(bytes: number): number {
    const bg = this.#bgLoss;
    const n = Math.max(1, bytes / this.#mss);
    return bg + 2 * Math.sqrt((bg * (1 - bg)) / n);
  }

  /** Once per congested round, when not probing: cut the short-term model. */
  #adaptLowerBoundsFromCongestion(): void {
    if (this.#isProbingBw()) return;
    if (this.#bwShortterm === Infinity) this.#bwShortterm = this.#maxBw;
    if (this.#inflightShortterm === Infinity) this.#inflightShortterm = this.cwnd;
    this.#bwShortterm = Math.max(this.#bwLatest, BETA * this.#bwShortterm);
    this.#inflightShortterm = Math.max(this.#inflightLatest, BETA * this.#inflightShortterm);
  }

  #resetShortTermModel(): void {
    this.#bwShortterm = Infinity;
    this.#inflightShortterm = Infinity;
  }

  #boundBwForModel(): void {
    this.#bw = Math.min(this.#maxBw, this.#bwShortterm);
  }

  #updateAckAggregation(): void {
    const now = this.#now;
    let expected = this.#bw * (now - this.#extraAckedIntervalStart);
    if (this.#extraAckedDelivered <= expected) {
      // The ACK rate fell to the expected rate: the aggregation episode ended.
      this.#extraAckedDelivered = 0;
      this.#extraAckedIntervalStart = now;
      expected = 0;
    }
    this.#extraAckedDelivered += this.#rs.ackedSacked;
    const extra = Math.min(this.#extraAckedDelivered - expected, this.cwnd);
    this.#extraAckedFilter.window = this.#fullBwReached ? EXTRA_ACKED_FILTER_LEN : 1;
    this.#extraAcked = this.#extraAckedFilter.update(extra, this.#roundCount);
  }

  // ---- Losses.

  /**
   * Do the losses of this sample say inflight was too high? (IsInflightTooHigh)
   * Our deviation: the threshold is LossThresh above the background loss
   * rate, the loss seen in rounds that did not push the bottleneck (see
   * {@linkcode Bbr.backgroundLoss}), plus two standard deviations of that
   * random loss over the flight, so that a link's random loss is not taken
   * for congestion while loss that appears when probing still is.
   */
  #isInflightTooHigh(): boolean {
    const rs = this.#rs;
    // A flight's bad luck at the background rate is not taken for a queue.
    return rs.lost > rs.txInFlight * (this.#lossThresh + this.#randomLossBound(rs.txInFlight)) ||
      (rs.lost > 0 && !this.#sack);
  }

  /**
   * At a round's end: its loss rate feeds the background-loss estimate when
   * the round did not press on the bottleneck (ProbeBW DOWN/CRUISE, or a
   * Startup round whose delivery rate still grew by 25 %: below capacity,
   * any loss there is the link's own). An EWMA with gain 1/8, at most 20 %,
   * raised to the plain mean of the first 8 such rounds whose RTT stayed
   * within 1/16 of min_rtt. The RTT condition matters: without it the fast
   * start also took the losses a competing CUBIC flow causes in a shallow
   * buffer for the path's own (CUBIC's share fell from 38 % to 26 % in
   * simulation); with it, 10 % random loss no longer ends Startup at a
   * tenth of the link.
   */
  #updateBackgroundLoss(): void {
    const rs = this.#rs;
    const lost = rs.totalLost - this.#roundLostStart;
    const delivered = rs.totalDelivered - this.#roundDeliveredStart;
    this.#roundLostStart = rs.totalLost;
    this.#roundDeliveredStart = rs.totalDelivered;
    // Each round's own maximum RTT: a skipped (app-limited) round's does
    // not carry into the next.
    const queued = this.#roundMaxRtt > this.#minRtt * (1 + QUEUE_FREE_RTT);
    this.#roundMaxRtt = 0;
    if (delivered <= 0 || this.#rsAppLimited) return;
    const calm = this.#state === "probe_bw_down" || this.#state === "probe_bw_cruise" ||
      (this.#state === "startup" && this.#maxBw >= this.#fullBw * FULL_BW_GROWTH);
    if (!calm) return;
    const rate = lost / (lost + delivered);
    let estimate = this.#bgLoss + (rate - this.#bgLoss) / BACKGROUND_LOSS_ROUNDS;
    if (this.#bgRounds < BACKGROUND_LOSS_ROUNDS && !queued) {
      // The first rounds whose RTT stayed at min_rtt (no queue, so no loss
      // of ours) are averaged plainly: an EWMA from 0 would need ~16 rounds
      // to see a link's loss, and Startup is over by then.
      this.#bgRounds++;
      this.#bgLost += lost;
      this.#bgSent += lost + delivered;
      // The plain mean itself, not the larger of it and the EWMA: a first
      // round of a few segments (2 of 9 lost at 10 % loss) otherwise set
      // the EWMA's start, and it decayed by only 1/8 per round.
      estimate = this.#bgLost / this.#bgSent;
    }
    this.#bgLoss = Math.min(MAX_BACKGROUND_LOSS, estimate);
  }

  /** Estimated loss rate of the path itself (not caused by this flow), 0–0.2. */
  get backgroundLoss(): number {
    return this.#bgLoss;
  }

  #noteLoss(): void {
    if (!this.#isLossInRound) {
      this.#lossRoundDelivered = this.#delivered;
      this.#saveStateUponLoss();
    }
    this.#isLossInRound = true;
  }

  #handleInflightTooHigh(): boolean {
    this.#prevProbeTooHigh = true;
    this.#isBwProbeSample = false; // react once per bandwidth probe
    if (!this.#rsAppLimited) {
      this.#inflightLongterm = Math.max(this.#rs.txInFlight, this.#targetInflight() * BETA);
    }
    if (this.#state === "probe_bw_up") {
      this.#undoState = "probe_bw_up";
      this.#startProbeBwDown();
      return true;
    }
    return false;
  }

  #saveStateUponLoss(): void {
    this.#saveCwnd();
    this.#undoState = null;
    this.#undoBwShortterm = this.#bwShortterm;
    this.#undoInflightShortterm = this.#inflightShortterm;
    this.#undoInflightLongterm = this.#inflightLongterm;
  }

  #saveCwnd(): void {
    if (!this.#inRecovery && this.#state !== "probe_rtt") this.#priorCwnd = this.cwnd;
    else this.#priorCwnd = Math.max(this.#priorCwnd, this.cwnd);
  }

  #restoreCwnd(): void {
    this.cwnd = Math.max(this.cwnd, this.#priorCwnd);
  }

  /** First sample after entering recovery: the conservation round starts. */
  #startRecoveryRound(): void {
    this.#recoveryEntering = false;
    this.#recoveryStartDelivered = this.#delivered;
    if (this.#conservation) {
      this.#conservationEnd = this.#delivered;
      this.cwnd = this.#inflight + Math.max(this.#rs.ackedSacked, this.#mss);
    }
  }

  /** OnEnterFastRecovery / OnEnterRTO: remember what to restore or undo. */
  #enterRecovery(): void {
    this.#saveStateUponLoss(); // SaveCwnd() and the undo state
    this.#inRecovery = true;
    this.#recoveryEntering = true;
  }

  /** Recovery is over (repaired or undone): RestoreCwnd(). */
  #endRecovery(): void {
    this.#inRecovery = false;
    this.#recoveryEntering = false;
    this.#conservation = false;
    this.#restoreCwnd();
  }

  // ---- Startup and Drain.

  #enterStartup(): void {
    this.#state = "startup";
    this.#pacingGain = STARTUP_PACING_GAIN;
    this.#cwndGain = DEFAULT_CWND_GAIN;
  }

  #resetFullBw(): void {
    this.#fullBw = 0;
    this.#fullBwCount = 0;
    this.#fullBwNow = false;
  }

  #checkFullBwReached(): void {
    if (this.#fullBwNow || !this.#roundStart || this.#rsAppLimited) return;
    // max_bw, not the round-start sample (our deviation, see the module
    // doc): measured through wireguard-go at 5 % loss and 50 ms, samples of
    // 0.2–1.4 Mbit/s came in rounds that delivered 20 Mbit/s.
    if (this.#maxBw >= this.#fullBw * FULL_BW_GROWTH) {
      this.#resetFullBw();
      this.#fullBw = this.#maxBw;
      return;
    }
    this.#fullBwCount++;
    this.#fullBwNow = this.#fullBwCount >= FULL_BW_ROUNDS;
    if (this.#fullBwNow) this.#fullBwReached = true;
  }

  #checkStartupDone(): void {
    this.#checkStartupHighLoss();
    if (this.#state === "startup" && this.#fullBwReached) this.#enterDrain();
  }

  /** Leave Startup on loss (§5.3.1.3), judged once per loss round. */
  #checkStartupHighLoss(): void {
    if (!this.#lossRoundStart) return;
    const events = this.#lossEventsInRound;
    this.#lossEventsInRound = 0;
    if (this.#fullBwReached || this.#state !== "startup" || !this.#lossResponse) return;
    if (!this.#inRecovery || this.#recoveryEntering) return;
    const rs = this.#rs;
    if (this.#sack) {
      // In recovery for a full round, loss rate above the threshold, enough events.
      if (rs.priorDelivered < this.#recoveryStartDelivered) return;
      if (events < STARTUP_FULL_LOSS_COUNT || !this.#isInflightTooHigh()) return;
    } else if (events === 0) {
      return;
    }
    this.#undoState = "startup";
    this.#fullBwReached = true;
    this.#inflightLongterm = Math.max(this.#bdp(), this.#inflightLatest);
  }

  #enterDrain(): void {
    this.#state = "drain";
    this.#pacingGain = DRAIN_PACING_GAIN;
    this.#cwndGain = DEFAULT_CWND_GAIN;
    this.#drainStartRound = this.#roundCount;
    this.ssthresh = Math.round(this.#inflightFor(this.#bw, 1));
  }

  #checkDrainDone(): void {
    if (
      this.#state === "drain" &&
      (this.#inflight <= this.#inflightFor(this.#bw, 1) ||
        this.#roundCount > this.#drainStartRound + 3)
    ) {
      this.#enterProbeBw();
    }
  }

  // ---- ProbeBW.

  #enterProbeBw(): void {
    this.#cwndGain = DEFAULT_CWND_GAIN;
    this.#startProbeBwDown();
  }

  #startProbeBwDown(): void {
    this.#resetCongestionSignals();
    this.#probeUpAckedPerInc = Infinity;
    this.#pickProbeWait();
    this.#cycleStamp = this.#now;
    this.#ackPhase = "probe_stopping";
    this.#startRound();
    this.#state = "probe_bw_down";
    this.#pacingGain = PROBE_DOWN_PACING_GAIN;
    this.#cwndGain = DEFAULT_CWND_GAIN;
  }

  #startProbeBwCruise(): void {
    this.#state = "probe_bw_cruise";
    this.#pacingGain = 1;
    this.#cwndGain = DEFAULT_CWND_GAIN;
  }

  #startProbeBwRefill(): void {
    this.#resetShortTermModel();
    this.#bwProbeUpRounds = 0;
    this.#bwProbeUpAcked = 0;
    this.#prevProbePrecautionary = false;
    this.#ackPhase = "refilling";
    this.#startRound();
    this.#state = "probe_bw_refill";
    this.#pacingGain = 1;
    this.#cwndGain = DEFAULT_CWND_GAIN;
  }

  #startProbeBwUp(): void {
    this.#ackPhase = "probe_starting";
    this.#startRound();
    this.#resetFullBw();
    this.#fullBw = this.#rs.deliveryRate;
    this.#state = "probe_bw_up";
    this.#pacingGain = PROBE_UP_PACING_GAIN;
    this.#cwndGain = PROBE_UP_CWND_GAIN;
    this.#raiseInflightLongtermSlope();
  }

  /** Randomized wait until the next probe: 0–1 extra rounds, 2–3 s. */
  #pickProbeWait(): void {
    this.#roundsSinceProbeUp = this.#random() < 0.5 ? 0 : 1;
    this.#bwProbeWait = 2000 + 1000 * this.#random();
  }

  #hasElapsedInPhase(interval: number): boolean {
    return this.#now > this.#cycleStamp + interval;
  }

  #isRenoCoexistenceProbeTime(): boolean {
    const renoRounds = this.#targetInflight() / this.#mss;
    return this.#roundsSinceProbeUp >= Math.min(renoRounds, RENO_MAX_ROUNDS);
  }

  #isTimeToProbeBw(): boolean {
    if (this.#hasElapsedInPhase(this.#bwProbeWait) || this.#isRenoCoexistenceProbeTime()) {
      this.#startProbeBwRefill();
      return true;
    }
    return false;
  }

  #inflightWithHeadroom(): number {
    if (this.#inflightLongterm === Infinity) return Infinity;
    const headroom = Math.max(this.#mss, HEADROOM * this.#inflightLongterm);
    return Math.max(this.#inflightLongterm - headroom, this.#minPipeCwnd());
  }

  #isTimeToCruise(): boolean {
    if (this.#inflight > this.#inflightWithHeadroom()) return false;
    return this.#inflight <= this.#inflightFor(this.#maxBw, 1);
  }

  #isTimeToGoDown(): boolean {
    // Inflight before this ACK: after it, inflight is below a full cwnd (=
    // inflight_longterm) by the data just ACKed and would never reach it.
    if (this.#prevProbeTooHigh && this.#rs.priorInFlight >= this.#inflightLongterm) {
      this.#prevProbePrecautionary = true;
      return true;
    }
    if (this.#isCwndLimited() && this.cwnd >= this.#inflightLongterm) {
      // Bandwidth is limited by inflight_longterm: keep looking for a plateau.
      this.#resetFullBw();
      this.#fullBw = this.#rs.deliveryRate;
      return false;
    }
    return this.#fullBwNow;
  }

  #raiseInflightLongtermSlope(): void {
    const growthThisRound = 2 ** this.#bwProbeUpRounds;
    this.#bwProbeUpRounds = Math.min(this.#bwProbeUpRounds + 1, 30);
    this.#probeUpAckedPerInc = Math.max(this.cwnd / growthThisRound, this.#mss);
  }

  #probeInflightLongtermUpward(): void {
    if (!this.#isCwndLimited() || this.cwnd < this.#inflightLongterm) return;
    this.#bwProbeUpAcked += this.#rs.ackedSacked;
    if (this.#bwProbeUpAcked >= this.#probeUpAckedPerInc) {
      const delta = Math.floor(this.#bwProbeUpAcked / this.#probeUpAckedPerInc);
      this.#bwProbeUpAcked -= delta * this.#probeUpAckedPerInc;
      this.#inflightLongterm += delta * this.#mss;
    }
    if (this.#roundStart) this.#raiseInflightLongtermSlope();
  }

  /** AdaptLongTermModel(); true when it decided a state transition. */
  #adaptLongTermModel(): boolean {
    if (this.#ackPhase === "probe_starting" && this.#roundStart) {
      this.#ackPhase = "probe_feedback"; // samples from the probe arrive
    }
    if (this.#ackPhase === "probe_stopping" && this.#roundStart) {
      // The samples of the probe are over: one ProbeBW cycle has passed.
      this.#isBwProbeSample = false;
      this.#ackPhase = "init";
      if (isProbeBw(this.#state) && !this.#rsAppLimited) {
        this.#maxBwFilter.advance();
        this.#maxBw = this.#maxBwFilter.best;
      }
      if (isProbeBw(this.#state) && this.#prevProbePrecautionary && !this.#prevProbeTooHigh) {
        this.#startProbeBwRefill();
        return true;
      }
    }
    if (this.#lossResponse && this.#isInflightTooHigh()) {
      return this.#isBwProbeSample ? this.#handleInflightTooHigh() : false;
    }
    if (this.#inflightLongterm === Infinity) return false;
    if (this.#rs.txInFlight > this.#inflightLongterm) this.#inflightLongterm = this.#rs.txInFlight;
    if (this.#state === "probe_bw_up") this.#probeInflightLongtermUpward();
    return false;
  }

  #updateProbeBwCyclePhase(): void {
    if (!this.#fullBwReached) return;
    if (this.#adaptLongTermModel()) return;
    switch (this.#state) {
      case "probe_bw_down":
        if (this.#isTimeToProbeBw()) return;
        if (this.#isTimeToCruise()) this.#startProbeBwCruise();
        return;
      case "probe_bw_cruise":
        this.#isTimeToProbeBw();
        return;
      case "probe_bw_refill":
        if (this.#roundStart) {
          this.#isBwProbeSample = true;
          this.#startProbeBwUp();
        }
        return;
      case "probe_bw_up":
        if (this.#isTimeToGoDown()) {
          this.#prevProbeTooHigh = false;
          this.#startProbeBwDown();
        }
        return;
    }
  }

  // ---- min_rtt and ProbeRTT.

  /**
   * BBRInit()'s timestamps (min_rtt_stamp, probe_rtt_min_stamp, the
   * extra_acked interval), taken at the first time the controller is given:
   * the constructor has no clock. Left at 0, every connection opened more
   * than ProbeRTTInterval after the clock's origin entered ProbeRTT (four
   * packets per round) on its first ACK.
   */
  #startClock(now: number): void {
    this.#clockStarted = true;
    this.#minRttStamp = now;
    this.#probeRttMinStamp = now;
    this.#extraAckedIntervalStart = now;
  }

  #updateMinRtt(): void {
    const now = this.#now, rtt = this.#rs.rtt;
    this.#probeRttExpired = now > this.#probeRttMinStamp + PROBE_RTT_INTERVAL;
    if (rtt >= 0 && (rtt < this.#probeRttMinDelay || this.#probeRttExpired)) {
      this.#probeRttMinDelay = rtt;
      this.#probeRttMinStamp = now;
    }
    const minRttExpired = now > this.#minRttStamp + MIN_RTT_FILTER_LEN;
    if (this.#probeRttMinDelay < this.#minRtt || minRttExpired) {
      this.#minRtt = this.#probeRttMinDelay;
      this.#minRttStamp = this.#probeRttMinStamp;
    }
  }

  #checkProbeRtt(): void {
    if (this.#state !== "probe_rtt" && this.#probeRttExpired && !this.#idleRestart) {
      this.#enterProbeRtt();
      this.#saveCwnd();
      this.#probeRttDoneStamp = -1;
      this.#ackPhase = "probe_stopping";
      this.#startRound();
      this.#appLimitedFrom = this.#delivered;
    }
    if (this.#state === "probe_rtt") this.#handleProbeRtt();
    if (this.#rs.delivered > 0) this.#idleRestart = false;
  }

  #enterProbeRtt(): void {
    this.#state = "probe_rtt";
    this.#pacingGain = 1;
    this.#cwndGain = PROBE_RTT_CWND_GAIN;
  }

  #probeRttCwnd(): number {
    return Math.max(this.#bdpMultiple(this.#bw, PROBE_RTT_CWND_GAIN), this.#minPipeCwnd());
  }

  #handleProbeRtt(): void {
    // MarkConnectionAppLimited(): samples of data sent now are not the path's.
    this.#appLimitedUntil = Math.max(this.#delivered + this.#inflight, 1);
    if (this.#probeRttDoneStamp < 0 && this.#inflight <= this.#probeRttCwnd()) {
      // Hold for ProbeRTTDuration and at least one round.
      this.#probeRttDoneStamp = this.#now + PROBE_RTT_DURATION;
      this.#probeRttRoundDone = false;
      this.#startRound();
    } else if (this.#probeRttDoneStamp >= 0) {
      if (this.#roundStart) this.#probeRttRoundDone = true;
      if (this.#probeRttRoundDone) this.#checkProbeRttDone();
    }
  }

  #checkProbeRttDone(): void {
    if (this.#probeRttDoneStamp >= 0 && this.#now > this.#probeRttDoneStamp) {
      this.#probeRttMinStamp = this.#now; // schedule the next ProbeRTT
      this.#restoreCwnd();
      this.#exitProbeRtt();
    }
  }

  #exitProbeRtt(): void {
    this.#resetShortTermModel();
    if (this.#fullBwReached) {
      this.#startProbeBwDown();
      this.#startProbeBwCruise(); // inflight is already below the BDP
    } else {
      this.#enterStartup();
    }
  }

  // ---- Control parameters.

  #setPacingRate(gain: number): void {
    const rate = gain * this.#bw * (1 - PACING_MARGIN);
    if (rate > 0 && (this.#fullBwReached || rate > this.#pacingRate)) this.#pacingRate = rate;
  }

  #setSendQuantum(): void {
    const q = Math.min(this.#pacingRate * 1, MAX_SEND_QUANTUM);
    this.#sendQuantum = Math.max(q, 2 * this.#mss);
  }

  #maxInflight(): number {
    const cap = this.#bdpMultiple(this.#bw, this.#cwndGain) + this.#extraAcked;
    return this.#quantizationBudget(cap);
  }

  #setCwnd(): void {
    const rs = this.#rs;
    const maxInflight = this.#maxInflight();
    if (this.#inRecovery && this.#conserve) {
      // ModulateCwndForRecovery (draft-cardwell-ccwg-bbr §4.6.4.4).
      if (rs.newlyLost > 0) this.cwnd = Math.max(this.cwnd - rs.newlyLost, this.#mss);
      if (this.#conservation) {
        if (rs.priorDelivered >= this.#conservationEnd) this.#conservation = false;
        else this.cwnd = Math.max(this.cwnd, this.#inflight + rs.ackedSacked);
      }
    }
    if (!this.#conservation) {
      if (this.#fullBwReached) {
        this.cwnd = Math.min(this.cwnd + rs.ackedSacked, maxInflight);
      } else if (this.cwnd < maxInflight || this.#delivered < this.#initialCwnd) {
        this.cwnd += rs.ackedSacked;
      }
      this.cwnd = Math.max(this.cwnd, this.#minPipeCwnd());
    }
    this.#boundCwndForProbeRtt();
    this.#boundCwndForModel();
  }

  #boundCwndForProbeRtt(): void {
    if (this.#state === "probe_rtt") this.cwnd = Math.min(this.cwnd, this.#probeRttCwnd());
  }

  #boundCwndForModel(): void {
    let cap = Infinity;
    const s = this.#state;
    if (isProbeBw(s) && s !== "probe_bw_cruise") cap = this.#inflightLongterm;
    else if (s === "probe_rtt" || s === "probe_bw_cruise") cap = this.#inflightWithHeadroom();
    cap = Math.min(cap, this.#inflightShortterm);
    cap = Math.max(cap, this.#minPipeCwnd());
    this.cwnd = Math.min(this.cwnd, cap);
  }
}
