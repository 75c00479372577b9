/**
 * A pcap file writer for the decrypted inner packets: the classic libpcap
 * format (microsecond timestamps, little-endian) with link type
 * `LINKTYPE_RAW` (101), whose records start with the IPv4 or IPv6 header, so
 * tshark and Wireshark read both families from one file.
 *
 * @module
 */

/** Link type of records that are bare IPv4 or IPv6 packets. */
export const LINKTYPE_RAW = 101;

/** The pcap magic number (microsecond timestamps). */
export const PCAP_MAGIC = 0xa1b2c3d4;

/** Length of the file header. */
export const PCAP_HEADER_LENGTH = 24;

/** Length of each record header. */
export const PCAP_RECORD_HEADER_LENGTH = 16;

/**
 * The 24-byte pcap file header: magic, version 2.4, zone 0, sigfigs 0,
 * `snaplen`, `linktype`; little-endian.
 */
export function pcapFileHeader(snaplen = 65535, linktype = LINKTYPE_RAW): Uint8Array {
  const out = new Uint8Array(PCAP_HEADER_LENGTH);
  const view = new DataView(out.buffer);
  view.setUint32(0, PCAP_MAGIC, true);
  view.setUint16(4, 2, true);
  view.setUint16(6, 4, true);
  view.setInt32(8, 0, true);
  view.setUint32(12, 0, true);
  view.setUint32(16, snaplen, true);
  view.setUint32(20, linktype, true);
  return out;
}

/**
 * Writes the 16-byte record header (seconds, microseconds, captured length,
 * original length; little-endian) into `out` at `offset`.
 */
export function writeRecordHeader(
  out: Uint8Array,
  offset: number,
  record: { timeMicros: number; capturedLength: number; originalLength: number },
): void {
  const view = new DataView(out.buffer, out.byteOffset + offset, PCAP_RECORD_HEADER_LENGTH);
  const seconds = Math.floor(record.timeMicros / 1_000_000);
  view.setUint32(0, seconds >>> 0, true);
  view.setUint32(4, Math.floor(record.timeMicros - seconds * 1_000_000), true);
  view.setUint32(8, record.capturedLength, true);
  view.setUint32(12, record.originalLength, true);
}

/** The sink of a {@linkcode PcapWriter}: a synchronous file-like writer. */
export interface PcapSink {
  /** Writes some of `bytes`, returning how many. */
  writeSync(bytes: Uint8Array): number;
  /** Closes the sink. */
  close(): void;
}

/** Options of {@linkcode PcapWriter}. */
export interface PcapWriterOptions {
  /** Longest record kept; longer packets are cut. Default 65535. */
  snaplen?: number;
  /** Bytes buffered before they are written out. Default 256 KiB. */
  bufferSize?: number;
  /** Wall clock in microseconds. Default from `performance.timeOrigin + performance.now()`. */
  nowMicros?: () => number;
  /**
   * Largest file size in bytes: a packet that would go past it is not
   * written, nor any later one ({@linkcode PcapWriter.full} turns true).
   * Default 0: no limit.
   */
  maxBytes?: number;
}

/**
 * Buffers packets as pcap records and writes them out when the buffer fills,
 * on {@linkcode PcapWriter.flush} and on {@linkcode PcapWriter.close}. Each
 * packet is copied, so callers may reuse their buffers after {@linkcode PcapWriter.write}.
 *
 * @example
 * ```ts ignore
 * const pcap = PcapWriter.create("tunnel.pcap");
 * pcap.write(ipPacket);
 * pcap.close();
 * ```
 */
export class PcapWriter {
  #sink: PcapSink;
  #buffer: Uint8Array;
  #used = 0;
  #snaplen: number;
  #nowMicros: () => number;
  #closed = false;
  #packets = 0;
  #maxBytes: number;
  #bytes = PCAP_HEADER_LENGTH;
  #full = false;

  /** Starts a capture on `sink`, writing the file header first. */
  constructor(sink: PcapSink, options: PcapWriterOptions = {}) {
    this.#sink = sink;
    this.#snaplen = options.snaplen ?? 65535;
    this.#buffer = new Uint8Array(
      Math.max(options.bufferSize ?? 256 * 1024, this.#snaplen + PCAP_RECORD_HEADER_LENGTH),
    );
    this.#nowMicros = options.nowMicros ??
      (() => Math.round((performance.timeOrigin + performance.now()) * 1000));
    this.#maxBytes = options.maxBytes ?? 0;
    this.#buffer.set(pcapFileHeader(this.#snaplen), 0);
    this.#used = PCAP_HEADER_LENGTH;
  }

  /**
   * Creates (or truncates) `path` with mode 0600 and starts a capture into
   * it. An existing regular file gets mode 0600 too (the capture holds
   * decrypted traffic).
   *
   * @throws {Deno.errors.NotFound} and other file errors when it cannot be opened.
   */
  static create(path: string, options?: PcapWriterOptions): PcapWriter {
    const file = Deno.openSync(path, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      // Only a regular file (never a device such as /dev/full or a FIFO).
      if (Deno.build.os !== "windows" && file.statSync().isFile) Deno.chmodSync(path, 0o600);
    } catch (error) {
      file.close();
      throw error;
    }
    return new PcapWriter(file, options);
  }

  /** True once {@linkcode PcapWriterOptions.maxBytes} stopped the capture. */
  get full(): boolean {
    return this.#full;
  }

  /** Packets written so far. */
  get packets(): number {
    return this.#packets;
  }

  /** Appends one packet as a record, timestamped now. Ignored after close. */
  write(packet: Uint8Array): void {
    if (this.#closed || this.#full) return;
    const captured = Math.min(packet.length, this.#snaplen);
    if (this.#maxBytes > 0) {
      if (this.#bytes + PCAP_RECORD_HEADER_LENGTH + captured > this.#maxBytes) {
        this.#full = true;
        return;
      }
      this.#bytes += PCAP_RECORD_HEADER_LENGTH + captured;
    }
    if (this.#used + PCAP_RECORD_HEADER_LENGTH + captured > this.#buffer.length) this.flush();
    writeRecordHeader(this.#buffer, this.#used, {
      timeMicros: this.#nowMicros(),
      capturedLength: captured,
      originalLength: packet.length,
    });
    this.#used += PCAP_RECORD_HEADER_LENGTH;
    this.#buffer.set(
      captured === packet.length ? packet : packet.subarray(0, captured),
      this.#used,
    );
    this.#used += captured;
    this.#packets++;
  }

  /** Writes the buffered records to the sink. */
  flush(): void {
    let offset = 0;
    while (offset < this.#used) {
      offset += this.#sink.writeSync(this.#buffer.subarray(offset, this.#used));
    }
    this.#used = 0;
  }

  /**
   * Flushes and closes the sink. The sink is closed even when the flush
   * fails (and its error is thrown).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.flush();
    } finally {
      this.#used = 0;
      this.#sink.close();
    }
  }
}
